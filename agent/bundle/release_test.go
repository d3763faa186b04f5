package bundle

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The two ends of the release FIFO over a real kernel FIFO: berthd's
// Gate and berth-init's AwaitRelease.

func awaitAsync(bundle string) <-chan error {
	done := make(chan error, 1)
	go func() { done <- AwaitRelease(bundle) }()
	return done
}

// awaitOpened starts AwaitRelease and returns once it holds the FIFO open.
func awaitOpened(t *testing.T, bundle string) <-chan error {
	t.Helper()
	opened := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- awaitRelease(bundle, func() { close(opened) }) }()
	select {
	case <-opened:
	case err := <-done:
		t.Fatalf("AwaitRelease returned before it opened the FIFO: %v", err)
	case <-time.After(30 * time.Second): // a hang, not a timing check
		t.Fatal("AwaitRelease did not open the FIFO")
	}
	return done
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second): // a hang, not a timing check
		t.Fatal("AwaitRelease did not return")
		return nil
	}
}

func TestReleaseNoFIFOIsARestart(t *testing.T) {
	if err := AwaitRelease(t.TempDir()); err != nil {
		t.Fatalf("bundle without the FIFO: %v", err)
	}
}

func TestReleaseWhileWaiting(t *testing.T) {
	bundle := t.TempDir()
	g, err := OpenGate(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	done := awaitOpened(t, bundle)
	select {
	case err := <-done:
		t.Fatalf("returned before the release: %v", err)
	default:
	}
	if err := g.Release(); err != nil {
		t.Fatal(err)
	}
	if err := result(t, done); err != nil {
		t.Fatalf("after the release: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(bundle, ReleaseFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("FIFO left after the release: %v", err)
	}
}

func TestReleasedBeforeBerthInitOpens(t *testing.T) {
	bundle := t.TempDir()
	g, err := OpenGate(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Release(); err != nil {
		t.Fatal(err)
	}
	err = result(t, awaitAsync(bundle))
	g.Close()
	if err != nil {
		t.Fatalf("released byte waiting in the pipe: %v", err)
	}
}

func TestAbandonedBundleFailsTheStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		// closeFirst: berthd gave up before berth-init opened the FIFO;
		// otherwise after (a writer that leaves then raises no POLLHUP for
		// this reader: AwaitRelease must notice by itself).
		closeFirst bool
	}{{"before berth-init opens", true}, {"while berth-init waits", false}} {
		t.Run(tc.name, func(t *testing.T) {
			bundle := t.TempDir()
			g, err := OpenGate(bundle)
			if err != nil {
				t.Fatal(err)
			}
			var done <-chan error
			if tc.closeFirst {
				g.Close()
				done = awaitAsync(bundle)
			} else {
				done = awaitOpened(t, bundle)
				g.Close()
			}
			err = result(t, done)
			if err == nil || !strings.Contains(err.Error(), "without releasing the bundle") {
				t.Fatalf("got %v, want the abandoned-bundle error", err)
			}
			// The FIFO stays: a restart by systemd must fail the same way.
			if err := AwaitRelease(bundle); err == nil {
				t.Error("second start after an abandoned bundle succeeded")
			}
		})
	}
}

func TestReleaseFileMustBeAFIFO(t *testing.T) {
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, ReleaseFile), []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := AwaitRelease(bundle); err == nil || !strings.Contains(err.Error(), "not a FIFO") {
		t.Fatalf("regular file: got %v", err)
	}
}
