package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/cgroup/own"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/unitgen"
	"github.com/containerd/errdefs"
)

// Tests against a real systemd 252 booted as PID 1 of a disposable node
// (test/node); they skip without root and fail under BERTH_TEST_ALL=1.
// systemd inside refuses /run/systemd/private connections from our PID
// namespace (see TransportPrivate), so host-side tests use the node's bus and
// the private socket is tested from inside the node (private_test.go).

func busAddr(n *node.Node) string {
	return "unix:path=" + n.HostPath("/run/dbus/system_bus_socket")
}

func dialNode(t *testing.T, n *node.Node) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, WithBusAddress(busAddr(n)), WithPrivateAddress(""))
	if err != nil {
		t.Fatal(err)
	}
	if c.Transport() != TransportBus {
		t.Fatalf("transport %s, want bus", c.Transport())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// service is a Type=exec service running argv.
func service(argv []string, extra ...unitgen.Property) []unitgen.Property {
	return append([]unitgen.Property{
		{Name: "Type", Value: "exec"},
		{Name: "ExecStart", Value: []unitgen.ExecCommand{{Path: argv[0], Args: argv}}},
	}, extra...)
}

var sleeper = []string{"/bin/sleep", "300"}

// cleanupUnit stops and unloads name when the test ends, also on failure.
func cleanupUnit(t *testing.T, c *Conn, name string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := c.Stop(ctx, name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := c.ResetFailed(ctx, name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// waitGone polls until systemd has unloaded name.
func waitGone(t *testing.T, c *Conn, name string) {
	t.Helper()
	ctx := testCtx(t)
	var st *UnitStatus
	var err error
	for i := 0; i < 50; i++ {
		st, err = c.Status(ctx, name)
		if errors.Is(err, errdefs.ErrNotFound) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("unit %s still loaded: %+v, %v", name, st, err)
}

func readCgroup(t *testing.T, n *node.Node, key, group, file string) string {
	t.Helper()
	b, err := os.ReadFile(n.CgroupPath(key, group, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// gatedExit is the argv of a service that exits with code once the test
// has released it (release). With Type=exec, a process that exits before
// systemd has seen its exec can fail the start job instead (observed with
// systemd 252 and `sh -c 'exit 3'`), so the exit waits for Start to have
// returned, not for a guessed while. The gate is a file in the node's
// /var/tmp, which the host sees in the node's directory.
func gatedExit(unit string, code int) []string {
	return []string{"/bin/sh", "-c", fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done; exit %d", gatePath(unit), code)}
}

func gatePath(unit string) string { return "/var/tmp/berth-gate-" + unit }

// release lets unit's gatedExit exit.
func release(t *testing.T, n *node.Node, unit string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(n.Dir, gatePath(unit)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// nextExit reads events until unit's first Exited one and returns it with
// the unit's events up to it. systemd 252 opens with inactive/dead for a
// freshly started unit (docs/systemd.md, "Watching units"; observed in
// these tests); were that taken for the exit, the exit checks of the
// callers would fail. An impaired watch (Err) is logged, as a consumer
// must; an overflow fails the test, whose reader is never that slow.
func nextExit(t *testing.T, events <-chan Event, unit string, timeout time.Duration) (Event, []Event) {
	t.Helper()
	var seen []Event
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("watch closed; events of %s: %+v", unit, seen)
			}
			if ev.Err != nil {
				t.Logf("watch: %v", ev.Err)
			}
			if ev.Overflow {
				t.Fatalf("watch overflowed (%d events dropped); events of %s: %+v", ev.Dropped, unit, seen)
			}
			if ev.Unit != unit || ev.JobResult != "" {
				continue
			}
			seen = append(seen, ev)
			if ev.Exited() {
				return ev, seen
			}
		case <-deadline:
			t.Fatalf("no exit event for %s in %v; saw %+v", unit, timeout, seen)
		}
	}
}

func TestNode(t *testing.T) {
	n := nodetest.New(t, node.Options{Name: "unitgen-systemd"})
	c := dialNode(t, n)

	t.Run("Version", func(t *testing.T) {
		v, err := c.Version(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if v < 252 {
			t.Errorf("systemd %d, want >= 252", v)
		}
	})

	t.Run("StartWithLimits", func(t *testing.T) {
		ctx := testCtx(t)
		name := "berth-limits.service"
		cleanupUnit(t, c, name)
		err := c.Start(ctx, name, service(sleeper,
			unitgen.Property{Name: "Description", Value: "berth test: limits"},
			unitgen.Property{Name: "MemoryAccounting", Value: true},
			unitgen.Property{Name: "MemoryMax", Value: uint64(48 << 20)},
			unitgen.Property{Name: "CPUQuotaPerSecUSec", Value: uint64(250000)}, // 25 %
			unitgen.Property{Name: "CPUQuotaPeriodUSec", Value: uint64(50000)},  // 50 ms
			unitgen.Property{Name: "TasksAccounting", Value: true},
			unitgen.Property{Name: "TasksMax", Value: uint64(17)},
		))
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.Status(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if st.LoadState != "loaded" || st.ActiveState != "active" || st.SubState != "running" {
			t.Errorf("state %s/%s/%s, want loaded/active/running", st.LoadState, st.ActiveState, st.SubState)
		}
		if st.MainPID == 0 || st.ControlGroup != "/system.slice/"+name || st.InvocationID == "" || st.ExecMainStart.IsZero() {
			t.Errorf("status %+v", st)
		}
		if st.Description != "berth test: limits" {
			t.Errorf("description %q", st.Description)
		}
		// The kernel's view: 25 % of a 50 ms period = 12.5 ms.
		files := []struct{ key, file, want string }{
			{"memory", "memory.limit_in_bytes", fmt.Sprint(48 << 20)},
			{"cpu", "cpu.cfs_period_us", "50000"},
			{"cpu", "cpu.cfs_quota_us", "12500"},
			{"pids", "pids.max", "17"},
		}
		if own.Unified() {
			files = []struct{ key, file, want string }{
				{"unified", "memory.max", fmt.Sprint(48 << 20)},
				{"unified", "cpu.max", "12500 50000"},
				{"unified", "pids.max", "17"},
			}
		}
		for _, k := range files {
			if got := readCgroup(t, n, k.key, st.ControlGroup, k.file); got != k.want {
				t.Errorf("%s = %s, want %s", k.file, got, k.want)
			}
		}
		// The main process is the one in the unit's cgroup.
		procs := readCgroup(t, n, "pids", st.ControlGroup, "cgroup.procs")
		if len(strings.Fields(procs)) != 1 {
			t.Errorf("cgroup.procs = %q, want the one sleep", procs)
		}
		if err := c.Stop(ctx, name); err != nil {
			t.Fatal(err)
		}
		waitGone(t, c, name)
		if _, err := os.Stat(n.CgroupPath("memory", st.ControlGroup, "")); !os.IsNotExist(err) {
			t.Errorf("cgroup of stopped unit: %v", err)
		}
	})

	t.Run("MissingBinaryFailsJob", func(t *testing.T) {
		ctx := testCtx(t)
		name := "berth-nobinary.service"
		cleanupUnit(t, c, name)
		err := c.Start(ctx, name, service([]string{"/nonexistent/app", "--serve"}))
		var je *JobError
		if !errors.As(err, &je) {
			t.Fatalf("err = %v, want *JobError", err)
		}
		if je.Unit != name || je.Job != "start" || je.Result != "failed" {
			t.Errorf("job error %+v", je)
		}
		if je.Status == nil || je.Status.Result != "exit-code" || je.Status.ExecMainCode != CodeExited || je.Status.ExecMainStatus != 203 {
			t.Errorf("status in job error %+v, want exit-code 1/203 (EXIT_EXEC)", je.Status)
		}
		if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "failed") {
			t.Errorf("message %q", err)
		}
		// Reset-failed: systemd let go of it, and the name is free again.
		waitGone(t, c, name)
	})

	t.Run("InvalidProperties", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			unit  string
			props []unitgen.Property
			want  []string
		}{
			{"unknown property", "berth-badprop.service",
				service(sleeper, unitgen.Property{Name: "Hostname", Value: "x"}),
				[]string{"PropertyReadOnly", "Hostname"}},
			// ProtectSystem is s (no/yes/full/strict); b is refused with a bare ENXIO.
			{"wrong D-Bus type", "berth-badtype.service",
				service(sleeper, unitgen.Property{Name: "ProtectSystem", Value: true}),
				[]string{"ENXIO", "ProtectSystem=b"}},
			{"Go type without signature", "berth-badgo.service",
				service(sleeper, unitgen.Property{Name: "MemoryMax", Value: 64 << 20}),
				[]string{"MemoryMax", "int"}},
			{"bad unit name", "berth bad name.service", service(sleeper),
				[]string{"InvalidArgs"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := testCtx(t)
				err := c.Start(ctx, tc.unit, tc.props)
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want errdefs.ErrInvalidArgument", err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%q does not name %q", err, w)
					}
				}
				if _, err := c.Status(ctx, tc.unit); !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Errorf("unit after a refused start: %v", err)
				}
			})
		}
	})

	t.Run("StartTwice", func(t *testing.T) {
		ctx := testCtx(t)
		name := "berth-twice.service"
		cleanupUnit(t, c, name)
		if err := c.Start(ctx, name, service(sleeper)); err != nil {
			t.Fatal(err)
		}
		before, _ := c.Status(ctx, name)
		err := c.Start(ctx, name, service(sleeper))
		if !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Fatalf("second start: %v, want errdefs.ErrAlreadyExists", err)
		}
		after, err := c.Status(ctx, name)
		if err != nil || after.MainPID != before.MainPID || after.ActiveState != "active" {
			t.Errorf("first unit disturbed: %+v -> %+v (%v)", before, after, err)
		}
	})

	t.Run("FailedLeftoverIsReplaced", func(t *testing.T) {
		ctx := testCtx(t)
		name := "berth-leftover.service"
		cleanupUnit(t, c, name)
		// Type=exec: the job is done once sh runs; only then may it exit.
		if err := c.Start(ctx, name, service(gatedExit(name, 3))); err != nil {
			t.Fatal(err)
		}
		release(t, n, name)
		var st *UnitStatus
		for i := 0; i < 50; i++ {
			st, _ = c.Status(ctx, name)
			if st != nil && st.ActiveState == "failed" {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if st == nil || st.ActiveState != "failed" || st.Result != "exit-code" || st.ExecMainStatus != 3 {
			t.Fatalf("leftover %+v, want failed exit-code 3", st)
		}
		if err := c.Start(ctx, name, service(sleeper)); err != nil {
			t.Fatalf("start over a failed leftover: %v", err)
		}
		if st, err := c.Status(ctx, name); err != nil || st.ActiveState != "active" || st.InvocationID == "" {
			t.Errorf("after restart: %+v %v", st, err)
		}
	})

	t.Run("ExitCodesViaWatch", func(t *testing.T) {
		ctx := testCtx(t)
		events, err := c.Watch(ctx, "berth-exit-")
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			unit          string
			ignoreFailure bool
			active        string
			result        string
		}{
			// The b of a(sasb) is "ignore failure" (docs/systemd.md).
			{"berth-exit-seven.service", false, "failed", "exit-code"},
			{"berth-exit-ignored.service", true, "inactive", "success"},
		} {
			t.Run(tc.unit, func(t *testing.T) {
				cleanupUnit(t, c, tc.unit)
				props := []unitgen.Property{
					{Name: "Type", Value: "exec"},
					{Name: "ExecStart", Value: []unitgen.ExecCommand{{Path: "/bin/sh",
						Args: gatedExit(tc.unit, 7), IgnoreFailure: tc.ignoreFailure}}},
				}
				if err := c.Start(ctx, tc.unit, props); err != nil {
					t.Fatal(err)
				}
				release(t, n, tc.unit)
				ev, seen := nextExit(t, events, tc.unit, 10*time.Second)
				if ev.ActiveState != tc.active || ev.Result != tc.result || ev.ExecMainCode != CodeExited ||
					ev.ExecMainStatus != 7 || ev.MainPID != 0 || ev.ExecMainExit.IsZero() {
					t.Errorf("exit event %+v, want %s/%s code 1 status 7", ev, tc.active, tc.result)
				}
				running := false
				for _, e := range seen {
					running = running || e.ActiveState == "active"
				}
				if !running {
					t.Errorf("no active event before the exit: %+v", seen)
				}
			})
		}
	})

	t.Run("StopGracePeriod", func(t *testing.T) {
		ctx := testCtx(t)
		events, err := c.Watch(ctx, "berth-grace-")
		if err != nil {
			t.Fatal(err)
		}
		t.Run("TERM handled", func(t *testing.T) {
			name := "berth-grace-term.service"
			cleanupUnit(t, c, name)
			err := c.Start(ctx, name, service([]string{"/bin/sh", "-c", `trap "echo TERM; exit 0" TERM; echo ready; while :; do sleep 0.1; done`},
				unitgen.Property{Name: "TimeoutStopUSec", Value: uint64(20 * time.Second / time.Microsecond)}))
			if err != nil {
				t.Fatal(err)
			}
			// Stopping before the shell has set its trap would test sh's
			// default SIGTERM action instead (seen once in CI).
			waitJournal(ctx, t, n, name, "ready")
			if err := c.Stop(ctx, name); err != nil {
				t.Fatal(err)
			}
			ev, _ := nextExit(t, events, name, 10*time.Second)
			if ev.ActiveState != "inactive" || ev.Result != "success" || ev.ExecMainCode != CodeExited || ev.ExecMainStatus != 0 {
				t.Errorf("exit event %+v, want inactive success 1/0", ev)
			}
			// systemd's clock: from the stop (SIGTERM sent) to the exit.
			if ev.ActiveExit.IsZero() || ev.ExecMainExit.IsZero() || ev.ExecMainExit.Sub(ev.ActiveExit) >= 20*time.Second {
				t.Errorf("stop at %v, exit at %v: want the exit on TERM, within the 20 s timeout", ev.ActiveExit, ev.ExecMainExit)
			}
			waitGone(t, c, name)
			var log string
			for i := 0; i < 30 && !strings.Contains(log, "TERM"); i++ {
				log, _ = n.Run(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", name)
				time.Sleep(100 * time.Millisecond)
			}
			if !strings.Contains(log, "TERM") {
				t.Errorf("journal of %s has no TERM line: %q", name, log)
			}
		})
		t.Run("TERM ignored", func(t *testing.T) {
			name := "berth-grace-stubborn.service"
			cleanupUnit(t, c, name)
			grace := 1500 * time.Millisecond
			err := c.Start(ctx, name, service([]string{"/bin/sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.1; done`},
				unitgen.Property{Name: "TimeoutStopUSec", Value: uint64(grace / time.Microsecond)}))
			if err != nil {
				t.Fatal(err)
			}
			waitJournal(ctx, t, n, name, "ready")
			if err := c.Stop(ctx, name); err != nil {
				t.Fatal(err)
			}
			ev, _ := nextExit(t, events, name, 10*time.Second)
			if ev.ActiveState != "failed" || ev.Result != "timeout" || ev.ExecMainCode != CodeKilled || ev.ExecMainStatus != int32(syscall.SIGKILL) {
				t.Errorf("exit event %+v, want failed timeout killed by 9", ev)
			}
			// systemd's clock: the SIGKILL came no sooner than the timeout
			// after the stop began.
			if ev.ActiveExit.IsZero() || ev.ExecMainExit.IsZero() || ev.ExecMainExit.Sub(ev.ActiveExit) < grace-stampSlack {
				t.Errorf("stop at %v, killed at %v: want SIGKILL only after the %v timeout", ev.ActiveExit, ev.ExecMainExit, grace)
			}
			t.Logf("systemd: SIGKILL %v after the stop began", ev.ExecMainExit.Sub(ev.ActiveExit))
			// A failed unit stays loaded until reset.
			if st, err := c.Status(ctx, name); err != nil || st.ActiveState != "failed" {
				t.Fatalf("after stop: %+v %v", st, err)
			}
			if err := c.ResetFailed(ctx, name); err != nil {
				t.Fatal(err)
			}
			waitGone(t, c, name)
		})
		t.Run("not loaded", func(t *testing.T) {
			if err := c.Stop(ctx, "berth-grace-never.service"); err != nil {
				t.Errorf("stop of an unknown unit: %v", err)
			}
		})
	})

	t.Run("Kill", func(t *testing.T) {
		ctx := testCtx(t)
		events, err := c.Watch(ctx, "berth-kill-")
		if err != nil {
			t.Fatal(err)
		}
		name := "berth-kill-a.service"
		cleanupUnit(t, c, name)
		if err := c.Start(ctx, name, service(sleeper)); err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(ctx, name, KillMain, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ev, _ := nextExit(t, events, name, 10*time.Second)
		if ev.ActiveState != "failed" || ev.Result != "signal" || ev.ExecMainCode != CodeKilled || ev.ExecMainStatus != 9 {
			t.Errorf("exit event %+v, want failed signal killed by 9", ev)
		}
		if err := c.Kill(ctx, "berth-kill-never.service", KillAll, syscall.SIGTERM); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("kill of an unknown unit: %v, want errdefs.ErrNotFound", err)
		}
	})

	t.Run("EnsureSlice", func(t *testing.T) {
		ctx := testCtx(t)
		slice := "berth-ns1.slice"
		cleanupUnit(t, c, slice)
		props := func(mem, tasks uint64) []unitgen.Property {
			return []unitgen.Property{
				{Name: "Description", Value: "berth namespace ns1"},
				{Name: "DefaultDependencies", Value: false},
				{Name: "MemoryAccounting", Value: true},
				{Name: "TasksAccounting", Value: true},
				{Name: "MemoryMax", Value: mem},
				{Name: "CPUQuotaPerSecUSec", Value: uint64(1500000)},
				{Name: "TasksMax", Value: tasks},
			}
		}
		if err := c.EnsureSlice(ctx, slice, props(64<<20, 100)); err != nil {
			t.Fatal(err)
		}
		st, err := c.Status(ctx, slice)
		if err != nil {
			t.Fatal(err)
		}
		// The parent berth.slice comes from the dash in the name (systemd.slice(5)).
		if st.ActiveState != "active" || st.ControlGroup != "/berth.slice/berth-ns1.slice" {
			t.Fatalf("slice %+v", st)
		}
		memFile, cpuFile, cpuWant := "memory.limit_in_bytes", "cpu.cfs_quota_us", "150000"
		if own.Unified() {
			memFile, cpuFile, cpuWant = "memory.max", "cpu.max", "150000 100000"
		}
		check := func(mem, tasks string) {
			t.Helper()
			if got := readCgroup(t, n, "memory", st.ControlGroup, memFile); got != mem {
				t.Errorf("%s = %s, want %s", memFile, got, mem)
			}
			if got := readCgroup(t, n, "pids", st.ControlGroup, "pids.max"); got != tasks {
				t.Errorf("pids.max = %s, want %s", got, tasks)
			}
			if got := readCgroup(t, n, "cpu", st.ControlGroup, cpuFile); got != cpuWant {
				t.Errorf("%s = %s, want %s", cpuFile, got, cpuWant)
			}
		}
		check(fmt.Sprint(64<<20), "100")
		// A service in it.
		svc := "berth-ns1-app.service"
		cleanupUnit(t, c, svc)
		if err := c.Start(ctx, svc, service(sleeper, unitgen.Property{Name: "Slice", Value: slice})); err != nil {
			t.Fatal(err)
		}
		// Second time: already there, new limits applied live, creation-only
		// DefaultDependencies left out.
		if err := c.EnsureSlice(ctx, slice, props(128<<20, 200)); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprint(128<<20), "200")
		if s, err := c.Status(ctx, svc); err != nil || s.ActiveState != "active" || s.ControlGroup != "/berth.slice/berth-ns1.slice/"+svc {
			t.Errorf("service in slice: %+v %v", s, err)
		}
		// A property systemd does not take live is refused, named.
		err = c.EnsureSlice(ctx, slice, []unitgen.Property{{Name: "Hostname", Value: "x"}})
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "Hostname") {
			t.Errorf("live unknown property: %v", err)
		}
		// Stopping the slice stops what runs in it.
		if err := c.Stop(ctx, slice); err != nil {
			t.Fatal(err)
		}
		waitGone(t, c, svc)
	})

	t.Run("List", func(t *testing.T) {
		ctx := testCtx(t)
		for _, u := range []string{"berth-list-b.service", "berth-list-a.service"} {
			cleanupUnit(t, c, u)
			if err := c.Start(ctx, u, service(sleeper)); err != nil {
				t.Fatal(err)
			}
		}
		us, err := c.List(ctx, "berth-list-")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, u := range us {
			got = append(got, u.Name+"="+u.ActiveState+"/"+u.SubState)
		}
		if s := strings.Join(got, " "); s != "berth-list-a.service=active/running berth-list-b.service=active/running" {
			t.Errorf("List = %s", s)
		}
		if us, err := c.List(ctx, "berth-nomatch-"); err != nil || len(us) != 0 {
			t.Errorf("List of no match = %+v %v", us, err)
		}
	})

	// Documentation= is what marks a container unit's berth
	// (unitgen.InstanceDoc): systemd 252 takes it on a transient unit and
	// gives it back verbatim, with ExecStart's argv.
	t.Run("Origin", func(t *testing.T) {
		ctx := testCtx(t)
		marked, plain := "berth-origin-marked.service", "berth-origin-plain.service"
		doc := unitgen.InstanceDoc("/var/lib/berth two")
		argv := []string{"/bin/sh", "-c", "exec sleep 300", "/var/lib/berth two/containers/default_x_y"}
		cleanupUnit(t, c, marked)
		if err := c.Start(ctx, marked, service(argv, unitgen.Property{Name: "Documentation", Value: []string{doc}})); err != nil {
			t.Fatal(err)
		}
		cleanupUnit(t, c, plain)
		if err := c.Start(ctx, plain, service(sleeper)); err != nil {
			t.Fatal(err)
		}
		o, err := c.Origin(ctx, marked)
		if err != nil {
			t.Fatal(err)
		}
		// Marked: the mark says it all, ExecStart is not read.
		if fmt.Sprint(o.Documentation) != fmt.Sprint([]string{doc}) || len(o.ExecStart) != 0 {
			t.Errorf("origin of %s = %+v", marked, o)
		}
		if dir, ok := unitgen.UnitInstance(o.Documentation); !ok || dir != "/var/lib/berth two" {
			t.Errorf("instance %q %v", dir, ok)
		}
		if got, err := n.Run(ctx, "systemctl", "show", "-P", "Documentation", marked); err != nil || strings.TrimSpace(got) != doc {
			t.Errorf("systemctl show Documentation = %q (%v), want %q", got, err, doc)
		}
		o, err = c.Origin(ctx, plain)
		if err != nil {
			t.Fatal(err)
		}
		if len(o.Documentation) != 0 || len(o.ExecStart) != 1 || strings.Join(o.ExecStart[0], " ") != strings.Join(sleeper, " ") {
			t.Errorf("origin of %s = %+v", plain, o)
		}
		if _, err := c.Origin(ctx, "berth-never-started.service"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("origin of an unknown unit: %v, want errdefs.ErrNotFound", err)
		}
		// Not a URL systemd accepts: refused, naming the property.
		err = c.Start(ctx, "berth-origin-bad.service", service(sleeper, unitgen.Property{Name: "Documentation", Value: []string{"/var/lib/berth"}}))
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("Documentation without a scheme: %v, want invalid argument", err)
		}
	})

	t.Run("StatusUnknown", func(t *testing.T) {
		if _, err := c.Status(testCtx(t), "berth-never-started.service"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("err = %v, want errdefs.ErrNotFound", err)
		}
		if err := c.ResetFailed(testCtx(t), "berth-never-started.service"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("reset-failed: %v, want errdefs.ErrNotFound", err)
		}
	})
}

// stampSlack: systemd arms the stop timer a few microseconds before it
// records ActiveExitTimestamp, and timestamps are CLOCK_REALTIME readings
// (docs/systemd.md, "Stop and its timestamps").
const stampSlack = 10 * time.Millisecond

// waitJournal waits until the unit's journal has a line containing want.
func waitJournal(ctx context.Context, t *testing.T, n *node.Node, unit, want string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if log, _ := n.Run(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", unit); strings.Contains(log, want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never logged %q", unit, want)
}
