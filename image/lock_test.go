package image

import (
	"os"
	"path/filepath"
	"testing"
)

// A second opener must not empty tmp/ under a live one (a pull in progress
// in berthd while berth-verify opens the store); the first opener after
// everyone closed does.
func TestTmpCleanedOnlyWhenNoOtherOpener(t *testing.T) {
	root := t.TempDir()
	a, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	inflight := filepath.Join(root, "tmp", "pull-in-progress")
	if err := os.Mkdir(inflight, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(inflight); err != nil {
		t.Fatalf("second opener removed another opener's tmp entry: %v", err)
	}
	a.Close()
	b.Close()
	c, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := os.Stat(inflight); !os.IsNotExist(err) {
		t.Fatalf("leftover tmp entry survived an opener with the store to itself: %v", err)
	}
}
