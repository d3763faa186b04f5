package systemd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/unitgen"
	"github.com/containerd/errdefs"
)

// helperEnv makes the test binary, run inside a node, act as privateHelper
// instead of running tests: systemd refuses private-socket peers from
// another PID namespace, so that transport can only be tested from inside.
const helperEnv = "BERTH_SYSTEMD_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "private" {
		os.Exit(privateHelper())
	}
	os.Exit(m.Run())
}

// `systemctl daemon-reexec`: systemd serialises its state, execs itself and
// comes back with the same units. Over the bus our connections survive (it
// is dbus-daemon's); calls and the watch must simply go on working.
func TestReexecOverBus(t *testing.T) {
	n, c, ctx, events, a, before := watchedSleeper(t, "reexec", "berth-rx-")
	if _, err := n.Run(ctx, "systemctl", "daemon-reexec"); err != nil {
		t.Fatal(err)
	}
	if j := n.Journal(ctx); !strings.Contains(j, "Reexecuting.") {
		t.Fatalf("systemd did not re-execute:\n%s", j)
	}
	after, err := c.Status(ctx, a)
	if err != nil {
		t.Fatalf("status after daemon-reexec: %v", err)
	}
	if after.ActiveState != "active" || after.MainPID != before.MainPID || after.InvocationID != before.InvocationID {
		t.Errorf("unit across reexec: %+v -> %+v", before, after)
	}
	assertStartAndExitSeen(t, n, c, events, "berth-rx-b.service")
}

// Restarting dbus-daemon closes our bus connections: the next call must
// re-dial (ErrClosed path), wait for systemd to rejoin the new bus, and the
// watch must re-dial and subscribe again.
func TestDBusRestart(t *testing.T) {
	n, c, ctx, events, a, before := watchedSleeper(t, "dbusrestart", "berth-dr-")
	if _, err := n.Run(ctx, "systemctl", "restart", "dbus.service"); err != nil {
		t.Fatal(err)
	}
	gen := c.generation()
	after, err := c.Status(ctx, a)
	if err != nil {
		t.Fatalf("status after a D-Bus restart: %v", err)
	}
	if c.generation() <= gen {
		t.Errorf("no re-dial after the bus went away (generation %d)", c.generation())
	}
	if after.MainPID != before.MainPID || after.ActiveState != "active" {
		t.Errorf("unit across the D-Bus restart: %+v -> %+v", before, after)
	}
	assertStartAndExitSeen(t, n, c, events, "berth-dr-b.service")
}

// watchedSleeper boots a node, watches units named prefix* and starts
// <prefix>a.service, a sleeper: the state the reconnect tests disturb.
func watchedSleeper(t *testing.T, name, prefix string) (*node.Node, *Conn, context.Context, <-chan Event, string, *UnitStatus) {
	t.Helper()
	n := nodetest.New(t, node.Options{Name: name})
	c := dialNode(t, n)
	ctx := testCtx(t)
	events, err := c.Watch(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	a := prefix + "a.service"
	cleanupUnit(t, c, a)
	if err := c.Start(ctx, a, service(sleeper)); err != nil {
		t.Fatal(err)
	}
	before, err := c.Status(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return n, c, ctx, events, a, before
}

// assertStartAndExitSeen starts a unit that exits 7 and expects Start to
// work and the watch to report the exit.
func assertStartAndExitSeen(t *testing.T, n *node.Node, c *Conn, events <-chan Event, name string) {
	t.Helper()
	cleanupUnit(t, c, name)
	if err := c.Start(testCtx(t), name, service(gatedExit(name, 7))); err != nil {
		t.Fatalf("start after reconnect: %v", err)
	}
	release(t, n, name)
	ev, _ := nextExit(t, events, name, 15*time.Second)
	if ev.Result != "exit-code" || ev.ExecMainCode != CodeExited || ev.ExecMainStatus != 7 {
		t.Errorf("exit event after reconnect %+v, want exit-code 1/7", ev)
	}
}

func (c *Conn) generation() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// privateReport is what privateHelper observed, as JSON on stdout.
type privateReport struct {
	Transport            Transport
	Error                string
	PIDBefore, PIDAfter  uint32
	GenBefore, GenAfter  int
	Exit                 *Event
	ListAfterStop        []UnitSummary
	StoppedStatusMissing bool
	PendingStartDone     bool    // a start job pending across the reexec was reported done
	Seen                 []Event // every event, for the failure message
	Stack                string  // goroutines when it failed
}

// TestPrivateSocket runs privateHelper inside a node: Dial must fall back to
// /run/systemd/private when the bus address is missing, Start/Status must
// work there, and survive `systemctl daemon-reexec`, which drops every
// private connection (systemd closes them before exec), with the watch
// delivering after it re-dials.
func TestPrivateSocket(t *testing.T) {
	bin := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := copyFile(self, filepath.Join(bin, "systemd.test")); err != nil {
		t.Fatal(err)
	}
	n := nodetest.New(t, node.Options{Name: "private", BinDir: bin})
	ctx := testCtx(t)
	out, err := n.Run(ctx, helperEnv+"=private", node.BinMount+"/systemd.test")
	if err != nil {
		t.Fatalf("helper: %v\nstdout: %s", err, out)
	}
	var r privateReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	if r.Error != "" {
		t.Fatalf("helper: %s\nevents: %+v\n%s", r.Error, r.Seen, r.Stack)
	}
	if r.Transport != TransportPrivate {
		t.Errorf("transport %q, want private", r.Transport)
	}
	if r.PIDBefore == 0 || r.PIDAfter != r.PIDBefore {
		t.Errorf("main PID before/after reexec %d/%d", r.PIDBefore, r.PIDAfter)
	}
	if r.GenAfter <= r.GenBefore {
		t.Errorf("no re-dial after daemon-reexec dropped the private connection (generation %d -> %d)", r.GenBefore, r.GenAfter)
	}
	if r.Exit == nil || r.Exit.Result != "exit-code" || r.Exit.ExecMainStatus != 7 {
		t.Errorf("exit event after reexec %+v", r.Exit)
	}
	if !r.PendingStartDone {
		t.Error("pending start across the reexec not confirmed")
	}
	if len(r.ListAfterStop) != 0 || !r.StoppedStatusMissing {
		t.Errorf("units left: %+v (status gone: %v)", r.ListAfterStop, r.StoppedStatusMissing)
	}
	if j := n.Journal(ctx); !strings.Contains(j, "Reexecuting.") {
		t.Errorf("systemd did not re-execute")
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// privateHelper runs inside the node (see TestPrivateSocket).
func privateHelper() int {
	var r privateReport
	var stack string
	dump := time.AfterFunc(15*time.Second, func() {
		buf := make([]byte, 1<<20)
		stack = string(buf[:runtime.Stack(buf, true)])
	})
	err := runPrivate(&r)
	dump.Stop()
	if err != nil {
		r.Error = err.Error()
		r.Stack = stack
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

func runPrivate(r *privateReport) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, WithBusAddress("unix:path=/run/berth-test-no-bus"))
	if err != nil {
		return err
	}
	defer c.Close()
	r.Transport = c.Transport()
	events, err := c.Watch(ctx, "berth-priv-")
	if err != nil {
		return err
	}
	a, b, p := "berth-priv-a.service", "berth-priv-b.service", "berth-priv-pending.service"
	if err := c.Start(ctx, a, service(sleeper)); err != nil {
		return err
	}
	st, err := c.Status(ctx, a)
	if err != nil {
		return err
	}
	r.PIDBefore, r.GenBefore = st.MainPID, c.generation()
	// A start job still pending while systemd re-executes: its JobRemoved
	// is lost with the connection, so Start must find the result by polling.
	// Its ExecStartPre= holds the job until the reexec is done (a gate, not
	// a guessed duration).
	slow := make(chan error, 1)
	go func() {
		slow <- c.Start(ctx, p, service(sleeper, unitgen.Property{Name: "ExecStartPre",
			Value: []unitgen.ExecCommand{{Path: "/bin/sh", Args: gatedExit(p, 0)}}}))
	}()
	if err := poll(ctx, func() (bool, error) {
		st, err := c.Status(ctx, p)
		if errors.Is(err, errdefs.ErrNotFound) { // not created yet
			return false, nil
		}
		return err == nil && st.JobID != 0, err
	}); err != nil {
		return fmt.Errorf("%s has no pending start job before the reexec: %w", p, err)
	}
	if out, err := exec.CommandContext(ctx, "systemctl", "daemon-reexec").CombinedOutput(); err != nil {
		return fmt.Errorf("daemon-reexec: %v: %s", err, out)
	}
	if err := os.WriteFile(gatePath(p), nil, 0o644); err != nil {
		return err
	}
	if err := <-slow; err != nil {
		return fmt.Errorf("start whose job outlived the connection: %w", err)
	}
	if st, err := c.Status(ctx, p); err != nil || st.ActiveState != "active" {
		return fmt.Errorf("%s after its start across the reexec: %+v %v", p, st, err)
	}
	r.PendingStartDone = true
	st, err = c.Status(ctx, a)
	if err != nil {
		return fmt.Errorf("status after reexec: %w", err)
	}
	r.PIDAfter, r.GenAfter = st.MainPID, c.generation()
	if err := c.Start(ctx, b, service(gatedExit(b, 7))); err != nil {
		return fmt.Errorf("start after reexec: %w", err)
	}
	if err := os.WriteFile(gatePath(b), nil, 0o644); err != nil {
		return err
	}
	timeout := time.After(15 * time.Second)
	for r.Exit == nil {
		select {
		case ev, ok := <-events:
			if !ok {
				return errors.New("watch closed")
			}
			r.Seen = append(r.Seen, ev)
			if ev.Unit == b && ev.JobResult == "" && ev.Exited() {
				r.Exit = &ev
			}
		case <-timeout:
			return errors.New("no exit event for " + b)
		}
	}
	for _, u := range []string{a, p} {
		if err := c.Stop(ctx, u); err != nil {
			return err
		}
	}
	if err := c.ResetFailed(ctx, b); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	_ = poll(ctx, func() (bool, error) {
		_, err := c.Status(ctx, a)
		r.StoppedStatusMissing = errors.Is(err, errdefs.ErrNotFound)
		return r.StoppedStatusMissing, nil
	})
	r.ListAfterStop, err = c.List(ctx, "berth-priv-")
	return err
}

// poll calls cond every 50 ms until it is true, fails, or ctx ends.
func poll(ctx context.Context, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
