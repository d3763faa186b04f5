package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"

	"github.com/berth-dev/berth/cgroup/own"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/test/throttle"
)

func TestOwnGroupFrom(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cgroup")
	content := "4:memory:/process_api/abc\n2:cpu,cpuacct:/shared\n1:name=systemd:/init.scope\n0::/unified/x\n"
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		controller, want string
	}{
		{"memory", "/process_api/abc"},
		{"cpu", "/shared"},
		{"cpuacct", "/shared"},
		{"name=systemd", "/init.scope"},
		{"systemd", "/init.scope"},
		{"", "/unified/x"},
	} {
		got, err := ownGroupFrom(f, tc.controller)
		if err != nil || got != tc.want {
			t.Errorf("ownGroupFrom(%q) = %q, %v; want %q", tc.controller, got, err, tc.want)
		}
	}
	if _, err := ownGroupFrom(f, "pids"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing controller: err = %v, want fs.ErrNotExist", err)
	}
	v1only := filepath.Join(t.TempDir(), "cgroup")
	if err := os.WriteFile(v1only, []byte("4:memory:/m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ownGroupFrom(v1only, ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no 0:: line: err = %v, want fs.ErrNotExist", err)
	}
}

// testGroup is a child cgroup of this process's own cgroup in several
// hierarchies of the host, removed in t.Cleanup.
type testGroup struct {
	group string            // "/<leaf>", relative to each base
	bases Bases             // hierarchy key → this process's own cgroup there
	dirs  map[string]string // hierarchy key → host directory of the group
	order []string
}

func requireV1(t *testing.T) {
	t.Helper()
	testenv.CgroupTier(t, false)
	testenv.RequireRoot(t)
}

func requireV2(t *testing.T) {
	t.Helper()
	testenv.CgroupTier(t, true)
	testenv.RequireRoot(t)
}

// newTestGroup creates /<own cgroup>/<leaf> in each listed hierarchy ("memory",
// "cpu", … or "unified" for the cgroup2 tree: the hybrid host's, or the whole
// tree of a v2 host, where this process's cgroup first delegates its
// controllers).
func newTestGroup(t *testing.T, keys ...string) *testGroup {
	t.Helper()
	leaf := fmt.Sprintf("berth-cgtest-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))
	g := &testGroup{group: "/" + leaf, bases: Bases{}, dirs: map[string]string{}}
	t.Cleanup(g.remove(t))
	for _, k := range keys {
		mount, ctl := filepath.Join("/sys/fs/cgroup", k), k
		if k == "unified" {
			mount, ctl = unifiedMount, ""
			if IsV2() {
				mount = v2Mount
			}
		}
		mine, err := OwnGroup(ctl)
		if err != nil {
			t.Fatalf("own %s cgroup: %v", k, err)
		}
		if IsV2() {
			mine = own.DelegationParent(mine)
			if err := own.Delegate(filepath.Join(mount, mine), mine == "/"); err != nil {
				t.Fatal(err)
			}
		}
		dir := filepath.Join(mount, mine, leaf)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("create test cgroup: %v", err)
		}
		g.bases[k] = mine
		g.dirs[k] = dir
		g.order = append(g.order, k)
	}
	return g
}

// remove kills whatever still runs in the group and removes its directories.
func (g *testGroup) remove(t *testing.T) func() {
	return func() {
		for i := len(g.order) - 1; i >= 0; i-- {
			dir := g.dirs[g.order[i]]
			var err error
			for try := 0; try < 50; try++ {
				if procs, rerr := os.ReadFile(filepath.Join(dir, "cgroup.procs")); rerr == nil {
					for _, f := range strings.Fields(string(procs)) {
						if pid, perr := strconv.Atoi(f); perr == nil {
							_ = syscall.Kill(pid, syscall.SIGKILL)
						}
					}
				}
				if err = os.Remove(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("remove test cgroup %s: %v", dir, err)
			}
		}
		g.order = nil
	}
}

func (g *testGroup) write(t *testing.T, key, file, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(g.dirs[key], file), []byte(value), 0o644); err != nil {
		t.Fatalf("write %s %s: %v", key, file, err)
	}
}

// start runs /bin/sh -c script inside the group: the shell blocks on stdin
// until it has been moved into every hierarchy, so that all it does is
// accounted to the group. It returns when script is released.
func (g *testGroup) start(t *testing.T, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "read x; "+script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for _, k := range g.order {
		g.write(t, k, "cgroup.procs", strconv.Itoa(cmd.Process.Pid))
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	_ = stdin.Close()
	return cmd
}

const (
	testQuota    = 20000 // µs per 100 ms period: 20 % of one CPU
	testMemLimit = 32 << 20
	testPidsMax  = 16
)

// spin runs a busy loop in g until the kernel has throttled it in
// throttledPeriods periods (test/throttle.Measure: a condition, not a
// guessed duration) and returns the stats at both ends of that window, its
// length, and the stats read just before the loop is killed.
func spin(t *testing.T, g *testGroup) (first, last *Stats, window time.Duration) {
	t.Helper()
	cmd := g.start(t, "while :; do :; done")
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var stats []*Stats
	read := func() (throttle.Sample, error) {
		st, err := ReadStats(g.group, g.bases)
		if err != nil {
			return throttle.Sample{}, err
		}
		stats = append(stats, st)
		return throttle.Sample{UsageNSec: st.CPUUsageNSec, Throttled: st.CPUThrottled}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _, window, err := throttle.Measure(ctx, QuotaPeriod*time.Microsecond, throttledPeriods, read)
	if err != nil {
		t.Fatalf("busy loop under a %d µs / %d µs quota: %v", testQuota, QuotaPeriod, err)
	}
	// Measure's window starts at the first reading that shows throttling.
	for _, st := range stats {
		if st.CPUThrottled > 0 {
			first = st
			break
		}
	}
	return first, stats[len(stats)-1], window
}

// throttledPeriods is the window spin measures: 10 throttled periods, about a
// second under the 100 ms period.
const throttledPeriods = 10

// checkCPU asserts that a busy loop under a 20 % quota shows CPU usage that is
// positive and bounded by the quota over the window (test/throttle.Bound),
// and that the kernel throttled it.
func checkCPU(t *testing.T, first, last *Stats, window time.Duration) {
	t.Helper()
	if last.CPUUsageNSec == 0 {
		t.Errorf("CPUUsageNSec = 0 after spinning")
	}
	err := throttle.Check(throttle.Sample{UsageNSec: first.CPUUsageNSec, Throttled: first.CPUThrottled},
		throttle.Sample{UsageNSec: last.CPUUsageNSec, Throttled: last.CPUThrottled},
		window, testQuota*time.Microsecond, QuotaPeriod*time.Microsecond)
	if err != nil {
		t.Error(err)
	}
	if last.CPUUserNSec+last.CPUSystemNSec == 0 {
		t.Errorf("user+system CPU = 0 while usage = %d", last.CPUUsageNSec)
	}
	if last.CPUPeriods <= first.CPUPeriods || last.CPUThrottledNSec <= first.CPUThrottledNSec {
		t.Errorf("throttling not seen: periods %d → %d, throttled time %d → %d", first.CPUPeriods, last.CPUPeriods, first.CPUThrottledNSec, last.CPUThrottledNSec)
	}
	if last.CPUThrottled > last.CPUPeriods {
		t.Errorf("throttled periods %d > periods %d", last.CPUThrottled, last.CPUPeriods)
	}
}

// TestReadStatsV1 exercises the hybrid layout the way systemd leaves it for a
// unit: memory, cpu and pids groups, a cgroup2 group, but no cpuacct group, so
// CPU usage must come from the unified tree's cpu.stat.
func TestReadStatsV1(t *testing.T) {
	requireV1(t)
	keys := []string{"memory", "cpu", "pids"}
	hybrid := cgroups.Mode() == cgroups.Hybrid
	if hybrid {
		keys = append(keys, "unified")
	}
	g := newTestGroup(t, keys...)
	g.write(t, "memory", "memory.limit_in_bytes", strconv.Itoa(testMemLimit))
	if _, err := os.Stat(filepath.Join(g.dirs["memory"], "memory.memsw.limit_in_bytes")); err == nil {
		// With swap the hog would be swapped out instead of killed.
		g.write(t, "memory", "memory.memsw.limit_in_bytes", strconv.Itoa(testMemLimit))
	}
	g.write(t, "cpu", "cpu.cfs_period_us", strconv.Itoa(QuotaPeriod))
	g.write(t, "cpu", "cpu.cfs_quota_us", strconv.Itoa(testQuota))
	g.write(t, "pids", "pids.max", strconv.Itoa(testPidsMax))

	idle, err := ReadStats(g.group, g.bases)
	if err != nil {
		t.Fatalf("ReadStats of an empty group: %v", err)
	}
	if idle.Pids != 0 || idle.PidsLimit != testPidsMax || idle.MemoryLimit != testMemLimit || idle.OOMKills != 0 {
		t.Errorf("empty group: %+v", idle)
	}

	first, st, window := spin(t, g)
	t.Logf("spinning, over %v: %+v → %+v", window, first, st)
	if st.Pids != 1 || st.PidsLimit != testPidsMax {
		t.Errorf("pids = %d/%d, want 1/%d (one shell)", st.Pids, st.PidsLimit, testPidsMax)
	}
	if hybrid {
		checkCPU(t, first, st, window) // usage from the unified tree, throttling from v1 cpu
		// The fallback is what produced the usage: compare with the unified
		// tree read directly, now that the loop is dead and counters are still.
		after, err := ReadStats(g.group, g.bases)
		if err != nil {
			t.Fatal(err)
		}
		direct, err := readV2(unifiedMount, g.group, g.bases)
		if err != nil {
			t.Fatalf("readV2 on the unified tree: %v", err)
		}
		if after.CPUUsageNSec != direct.CPUUsageNSec || after.CPUUsageNSec < st.CPUUsageNSec {
			t.Errorf("v1 CPU usage %d, unified cpu.stat %d, earlier %d", after.CPUUsageNSec, direct.CPUUsageNSec, st.CPUUsageNSec)
		}
		// The controller-less tree has CPU time only.
		if direct.MemoryUsage != 0 || direct.Pids != 0 || direct.CPUThrottled != 0 {
			t.Errorf("unified tree without controllers reported %+v", direct)
		}
	}

	checkOOM(t, g)
}

// checkOOM runs a memory hog in g (limited to testMemLimit) and checks that
// the kernel killed it and that the stats show it.
func checkOOM(t *testing.T, g *testGroup) {
	t.Helper()
	// A memory hog: tail buffers an endless line from /dev/zero.
	hog := g.start(t, "exec tail /dev/zero")
	done := make(chan error, 1)
	go func() { done <- hog.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("memory hog was not killed within 30 s")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("memory hog ended with %v, want SIGKILL by the OOM killer", err)
	}
	st, err := ReadStats(g.group, g.bases)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the OOM kill: %+v", st)
	if st.OOMKills < 1 {
		t.Errorf("OOMKills = %d, want ≥ 1", st.OOMKills)
	}
	if st.MemoryLimit != testMemLimit {
		t.Errorf("MemoryLimit = %d, want %d", st.MemoryLimit, testMemLimit)
	}
	if st.MemoryPeak < testMemLimit/2 || st.MemoryPeak > testMemLimit {
		t.Errorf("MemoryPeak = %d, want the hog to have reached the %d limit", st.MemoryPeak, testMemLimit)
	}
	if st.MemoryPeak < st.MemoryUsage || st.MemoryWorkingSet > st.MemoryUsage {
		t.Errorf("want working set %d ≤ usage %d ≤ peak %d", st.MemoryWorkingSet, st.MemoryUsage, st.MemoryPeak)
	}
	if st.Pids != 0 {
		t.Errorf("Pids = %d after every process ended", st.Pids)
	}
}

// TestReadStatsV2 exercises a pure cgroup v2 host (make test's v2 tier): a
// group with the cpu, memory and pids controllers, delegated as systemd
// delegates to a unit.
func TestReadStatsV2(t *testing.T) {
	requireV2(t)
	g := newTestGroup(t, "unified")
	ctrls, err := os.ReadFile(filepath.Join(g.dirs["unified"], "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cpu", "memory", "pids"} {
		if !strings.Contains(" "+strings.TrimSpace(string(ctrls))+" ", " "+c+" ") {
			t.Fatalf("test cgroup has controllers %q, no %s", ctrls, c)
		}
	}
	g.write(t, "unified", "cpu.max", fmt.Sprintf("%d %d", testQuota, QuotaPeriod))
	g.write(t, "unified", "memory.max", strconv.Itoa(testMemLimit))
	if _, err := os.Stat(filepath.Join(g.dirs["unified"], "memory.swap.max")); err == nil {
		g.write(t, "unified", "memory.swap.max", "0")
	}
	g.write(t, "unified", "pids.max", strconv.Itoa(testPidsMax))

	idle, err := ReadStats(g.group, g.bases)
	if err != nil {
		t.Fatalf("ReadStats of an empty group: %v", err)
	}
	if idle.Pids != 0 || idle.PidsLimit != testPidsMax || idle.MemoryLimit != testMemLimit || idle.OOMKills != 0 || idle.CPUUsageNSec != 0 {
		t.Errorf("empty group: %+v", idle)
	}
	first, st, window := spin(t, g)
	t.Logf("spinning, over %v: %+v → %+v", window, first, st)
	if st.Pids != 1 || st.PidsLimit != testPidsMax {
		t.Errorf("pids = %d/%d, want 1/%d (one shell)", st.Pids, st.PidsLimit, testPidsMax)
	}
	checkCPU(t, first, st, window)
	// The numbers are the kernel's: compare with cpu.stat read directly.
	after, err := ReadStats(g.group, g.bases)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(g.dirs["unified"], "cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	var usage, throttled uint64
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "usage_usec":
				usage = v
			case "nr_throttled":
				throttled = v
			}
		}
	}
	if after.CPUUsageNSec != usage*1000 || after.CPUThrottled != throttled {
		t.Errorf("ReadStats usage %d ns, throttled %d; cpu.stat usage_usec %d, nr_throttled %d", after.CPUUsageNSec, after.CPUThrottled, usage, throttled)
	}
	checkOOM(t, g)
}

// TestReadStatsV1Cpuacct covers hosts where the group also exists in cpuacct:
// usage comes from cpuacct.usage and must agree with the unified cpu.stat.
func TestReadStatsV1Cpuacct(t *testing.T) {
	requireV1(t)
	testenv.Require(t, cgroups.Mode() == cgroups.Hybrid, "needs the hybrid layout (cgroup2 tree beside v1)")
	if _, err := os.Stat("/sys/fs/cgroup/cpuacct"); err != nil {
		testenv.Require(t, false, "needs cpuacct mounted at /sys/fs/cgroup/cpuacct")
	}
	g := newTestGroup(t, "cpu", "cpuacct", "unified")
	g.write(t, "cpu", "cpu.cfs_period_us", strconv.Itoa(QuotaPeriod))
	g.write(t, "cpu", "cpu.cfs_quota_us", strconv.Itoa(testQuota))
	first, st, window := spin(t, g)
	t.Logf("spinning, over %v: %+v → %+v", window, first, st)
	checkCPU(t, first, st, window)
	after, err := ReadStats(g.group, g.bases)
	if err != nil {
		t.Fatal(err)
	}
	unified, err := readV2(unifiedMount, g.group, g.bases)
	if err != nil {
		t.Fatal(err)
	}
	// cpuacct.usage is in ns, usage_usec in µs: equal up to rounding.
	diff := int64(after.CPUUsageNSec) - int64(unified.CPUUsageNSec)
	if diff < -int64(time.Millisecond) || diff > int64(time.Millisecond) {
		t.Errorf("cpuacct usage %d ns vs unified cpu.stat %d ns", after.CPUUsageNSec, unified.CPUUsageNSec)
	}
}

func TestReadStatsMissingGroup(t *testing.T) {
	testenv.RequireRoot(t)
	keys := []string{"memory", "cpu", "pids"}
	switch cgroups.Mode() {
	case cgroups.Hybrid:
		keys = append(keys, "unified")
	case cgroups.Unified:
		keys = []string{"unified"}
	}
	g := newTestGroup(t, keys...)
	if _, err := ReadStats(g.group, g.bases); err != nil {
		t.Fatalf("ReadStats of an existing group: %v", err)
	}
	g.remove(t)()
	_, err := ReadStats(g.group, g.bases)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadStats of a removed group: err = %v, want fs.ErrNotExist", err)
	}
	if cgroups.Mode() == cgroups.Hybrid {
		if _, err := readV2(unifiedMount, g.group, g.bases); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("readV2 of a removed group: err = %v, want fs.ErrNotExist", err)
		}
	}
	if _, err := ReadStats("/berth-never-created.service", nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadStats of a group never created: err = %v, want fs.ErrNotExist", err)
	}
}

func TestIsV2(t *testing.T) {
	// Cross-check with the file system: a unified host has cgroup.controllers
	// at the top of /sys/fs/cgroup, a v1 host has a tmpfs there.
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	if got, want := IsV2(), err == nil; got != want {
		t.Errorf("IsV2() = %v, but /sys/fs/cgroup/cgroup.controllers present = %v", got, want)
	}
}
