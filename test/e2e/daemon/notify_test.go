package daemon

import (
	"encoding/json"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/test/testenv"
)

// The sd_notify conversation as a service manager sees it, on a socket of
// the test's: READY=1 only once the API socket answers, WATCHDOG=1 while
// running, STOPPING=1 on SIGTERM, then a clean exit.
func TestNotifyConversation(t *testing.T) {
	testenv.RequireRoot(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s", what)
			}
			return m
		case <-time.After(time.Minute):
			t.Fatalf("no %s from berthd", what)
		}
		return ""
	}
	// WATCHDOG_USEC without WATCHDOG_PID: meant for berthd (sd_watchdog_enabled).
	d := startDaemonEnv(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=1000000"}, "--socket-group", "")
	if m := next("READY"); m != "READY=1\nSTATUS=serving on "+d.socket {
		t.Fatalf("first notification %q", m)
	}
	if m := next("WATCHDOG"); m != "WATCHDOG=1" {
		t.Errorf("second notification %q, want WATCHDOG=1", m)
	}
	// The HTTPS listener is off: the kubeconfig endpoint says how to turn
	// it on.
	resp, err := d.client().Get("http://localhost/berth/v1/kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	var st metav1.Status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 404 || st.Reason != metav1.StatusReasonNotFound || st.Message != "the loopback HTTPS listener is off (https.enabled in /etc/berth/berthd.yaml)" {
		t.Errorf("kubeconfig with the listener off: %d %+v", resp.StatusCode, st)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		m := next("STOPPING")
		if m == "WATCHDOG=1" {
			continue // a ping already under way
		}
		if m != "STOPPING=1\nSTATUS=stopping" {
			t.Errorf("after SIGTERM %q, want STOPPING=1", m)
		}
		break
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("berthd exit after SIGTERM: %v", err)
		}
		d.done <- err // for the cleanup
	case <-time.After(time.Minute):
		t.Fatal("berthd did not exit after SIGTERM")
	}
}
