package e2e

import (
	"archive/tar"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/cgroup/own"
	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/throttle"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
)

const sleeper = `  containers:
  - name: main
    image: busybox:e2e
    command: ["sleep", "3600"]
`

// 1. A container runs as a systemd unit, is PID 1 of its own PID namespace,
// has the pod's hostname, and its unit's cgroup holds only the workload.
func TestContainerIsSystemdUnit(t *testing.T) {
	e := newEnv(t)
	e.mustStartPod("web", pod("web", sleeper))
	unit := unitgen.UnitName("default", "web", "main")
	if s := e.show(unit, "ActiveState"); s != "active" {
		t.Fatalf("%s is %s, want active", unit, s)
	}
	if out := e.run("systemctl", "is-active", unit); strings.TrimSpace(out) != "active" {
		t.Fatalf("systemctl is-active %s = %q", unit, out)
	}
	pid := e.mainPID(unit)
	if got := e.inContainer(pid, "cat", "/proc/1/cmdline"); got != "sleep\x003600\x00" {
		t.Errorf("/proc/1/cmdline inside = %q, want the entrypoint", got)
	}
	status := e.run("cat", fmt.Sprintf("/proc/%d/status", pid))
	if !strings.Contains(status, "NSpid:\t"+strconv.Itoa(pid)+"\t1\n") {
		t.Errorf("workload is not PID 1 of its namespace:\n%s", status)
	}
	if got := strings.TrimSpace(e.inContainer(pid, "hostname")); got != "web" {
		t.Errorf("hostname inside = %q, want the pod name", got)
	}
	group := e.show(unit, "ControlGroup")
	if !strings.HasPrefix(group, "/berth.slice/berth-default.slice/") {
		t.Errorf("ControlGroup = %q, want under the namespace slice", group)
	}
	// Only the workload: no stage-1, no berth process left in the unit.
	for _, key := range []string{"memory", "systemd", "pids"} {
		procs := strings.Fields(e.readCgroup(key, group, "cgroup.procs"))
		if len(procs) != 1 {
			t.Errorf("%s cgroup.procs of %s = %v, want only the workload", key, unit, procs)
		}
	}
	sts := e.status("web")
	if len(sts) != 1 || sts[0].State.Running == nil || sts[0].Unit != unit {
		t.Errorf("berthd pod status = %+v", sts)
	}
	e.run("berthd", "pod", "rm", "default/web")
	if s := e.show(unit, "ActiveState"); s == "active" {
		t.Errorf("%s still active after pod rm", unit)
	}
	if out, _ := e.n.Run(e.ctx(), "ls", "/var/lib/berth/containers"); strings.TrimSpace(out) != "" {
		t.Errorf("bundles left after pod rm: %q", out)
	}
	if out, _ := e.n.Run(e.ctx(), "findmnt", "-rn", "-o", "TARGET"); strings.Contains(out, "/run/berth/pods/") {
		t.Errorf("pod namespaces still mounted after pod rm:\n%s", out)
	}
}

// 2. Requests and limits reach the kernel with the kubelet's values
// (docs/cgroups.md, "berth's limits").
func TestLimitsInCgroupFiles(t *testing.T) {
	e := newEnv(t)
	e.mustStartPod("limited", pod("limited", `  containers:
  - name: main
    image: busybox:e2e
    command: ["sleep", "3600"]
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: 500m, memory: 128Mi}
`))
	e.mustStartPod("guaranteed", pod("guaranteed", `  containers:
  - name: main
    image: busybox:e2e
    command: ["sleep", "3600"]
    resources:
      limits: {cpu: "1", memory: 256Mi}
`))
	unit := unitgen.UnitName("default", "limited", "main")
	group := e.show(unit, "ControlGroup")
	type file struct{ key, file, want string }
	files := []file{
		{"cpu", "cpu.shares", "256"},           // MilliCPUToShares(250)
		{"cpu", "cpu.cfs_quota_us", "50000"},   // 500m × 100 ms period
		{"cpu", "cpu.cfs_period_us", "100000"}, // kubelet's default period
		{"memory", "memory.limit_in_bytes", "134217728"},
		{"pids", "pids.max", "4096"}, // berthd --pids-limit default
	}
	if own.Unified() {
		files = []file{
			{"unified", "cpu.weight", "35"},        // 256 shares, runc ≥ 1.3.2's quadratic conversion
			{"unified", "cpu.max", "50000 100000"}, // 500m × 100 ms period
			{"unified", "memory.max", "134217728"}, // limit
			{"unified", "memory.min", "67108864"},  // request (MemoryQoS)
			// MemoryQoS: 64Mi + 0.9 × (128Mi − 64Mi), page-aligned down.
			{"unified", "memory.high", "127504384"},
			{"unified", "pids.max", "4096"}, // berthd --pids-limit default
		}
	}
	for _, c := range files {
		if got := e.readCgroup(c.key, group, c.file); got != c.want {
			t.Errorf("%s of %s = %s, want %s", c.file, unit, got, c.want)
		}
	}
	// Burstable: oom_score_adj = 1000 − 1000·request/capacity (kubelet
	// pkg/kubelet/qos/policy.go GetContainerOOMScoreAdjust).
	var memKB int64
	fmt.Sscanf(e.run("grep", "MemTotal", "/proc/meminfo"), "MemTotal: %d kB", &memKB)
	want := 1000 - 1000*(64<<20)/(memKB*1024)
	if got := strings.TrimSpace(e.run("cat", fmt.Sprintf("/proc/%d/oom_score_adj", e.mainPID(unit)))); got != strconv.FormatInt(want, 10) {
		t.Errorf("burstable oom_score_adj = %s, want %d", got, want)
	}
	g := unitgen.UnitName("default", "guaranteed", "main")
	if got := e.show(g, "OOMScoreAdjust"); got != "-997" {
		t.Errorf("guaranteed unit OOMScoreAdjust = %s, want -997", got)
	}
	// Lowering oom_score_adj below 0 needs CAP_SYS_RESOURCE, which some
	// sandboxes (this workplace's among them) keep out of the bounding set;
	// there the kernel refuses systemd's write and the value stays 0.
	want997 := "-997"
	if !hasCap(24) { // CAP_SYS_RESOURCE
		want997 = "0"
		t.Log("no CAP_SYS_RESOURCE here: checking the unit property, the kernel keeps oom_score_adj at 0")
	}
	if got := strings.TrimSpace(e.run("cat", fmt.Sprintf("/proc/%d/oom_score_adj", e.mainPID(g)))); got != want997 {
		t.Errorf("guaranteed oom_score_adj = %s, want %s", got, want997)
	}
	gg := e.show(g, "ControlGroup")
	files = []file{
		{"cpu", "cpu.shares", "1024"}, // request defaulted from the limit
		{"memory", "memory.limit_in_bytes", "268435456"},
	}
	if own.Unified() {
		files = []file{
			{"unified", "cpu.weight", "100"}, // 1024 shares: systemd's default weight
			{"unified", "cpu.max", "100000 100000"},
			{"unified", "memory.max", "268435456"},
			{"unified", "memory.min", "268435456"},
			{"unified", "memory.high", "max"}, // request == limit: none
		}
	}
	for _, c := range files {
		if got := e.readCgroup(c.key, gg, c.file); got != c.want {
			t.Errorf("guaranteed %s = %s, want %s", c.file, got, c.want)
		}
	}
}

// 3. Exceeding the memory limit: killed, reported OOMKilled with 137.
func TestOOMKilled(t *testing.T) {
	e := newEnv(t)
	e.mustStartPod("hog", pod("hog", `  restartPolicy: Never
  containers:
  - name: main
    image: busybox:e2e
    command: ["tail", "/dev/zero"]
    resources:
      limits: {memory: 32Mi}
`))
	e.waitFor("the hog to be terminated", func() bool {
		sts := e.status("hog")
		return len(sts) == 1 && sts[0].State.Terminated != nil
	})
	term := e.status("hog")[0].State.Terminated
	if term.Reason != "OOMKilled" || term.ExitCode != 137 {
		t.Errorf("terminated = %+v, want OOMKilled with exit code 137", term)
	}
}

// 4. A CPU limit throttles: the kernel throttles the busy container (its
// nr_throttled grows) and its CPU usage over the window stays within the
// quota (test/throttle: 200m is 20 ms per 100 ms period, ×1.1 plus two
// periods' quota). The window is 10 throttled periods, waited for, not timed.
func TestCPULimitThrottles(t *testing.T) {
	e := newEnv(t)
	e.mustStartPod("burn", pod("burn", `  containers:
  - name: main
    image: busybox:e2e
    command: ["sh", "-c", "while :; do :; done"]
    resources:
      limits: {cpu: 200m, memory: 64Mi}
`))
	unit := unitgen.UnitName("default", "burn", "main")
	group := e.show(unit, "ControlGroup")
	const quota, period = 20 * time.Millisecond, 100 * time.Millisecond
	read := func() (throttle.Sample, error) {
		st, err := cgroup.ReadStats(group, e.n.Bases())
		if err != nil {
			return throttle.Sample{}, err
		}
		return throttle.Sample{UsageNSec: st.CPUUsageNSec, Throttled: st.CPUThrottled}, nil
	}
	first, last, window, err := throttle.Measure(e.ctx(), period, 10, read)
	if err != nil {
		t.Fatalf("%s under a 200m limit: %v", unit, err)
	}
	if err := throttle.Check(first, last, window, quota, period); err != nil {
		t.Error(err)
	}
	t.Logf("used %v of CPU in %v (bound %v), throttled periods %d → %d",
		time.Duration(last.UsageNSec-first.UsageNSec), window, throttle.Bound(window, quota, period), first.Throttled, last.Throttled)
}

// 5. Stop honours the grace period: a container trapping SIGTERM gets it and
// exits by itself; one ignoring it is SIGKILLed, and only after the period.
// The durations are systemd's own: from ActiveExitTimestamp (the stop job
// began: SIGTERM sent, stop timer armed) to ExecMainExitTimestamp (the main
// process ended), as systemd reports them over D-Bus.
func TestStopHonoursGracePeriod(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		pod, trap string
		grace     time.Duration
		killed    bool // ends by SIGKILL after the grace period, not by its own exit
	}{
		{"polite", "echo got SIGTERM; exit 0", 20 * time.Second, false},
		{"stubborn", "echo ignoring SIGTERM", 3 * time.Second, true},
	} {
		t.Run(tc.pod, func(t *testing.T) {
			e.mustStartPod(tc.pod, pod(tc.pod, fmt.Sprintf(`  terminationGracePeriodSeconds: %d
  containers:
  - name: main
    image: busybox:e2e
    command: ["sh", "-c", "trap '%s' TERM; echo ready; while :; do sleep 0.1; done"]
`, int(tc.grace.Seconds()), tc.trap)))
			unit := unitgen.UnitName("default", tc.pod, "main")
			if got := e.show(unit, "TimeoutStopUSec"); got != tc.grace.String() {
				t.Errorf("%s TimeoutStopUSec = %s, want the pod's %v", unit, got, tc.grace)
			}
			// Stopping before the shell has set its trap would test sh's
			// default SIGTERM action instead.
			e.waitFor(unit+" ready", func() bool { return strings.Contains(e.journal(unit), "ready") })
			ev := e.stopObserved(unit)
			if ev.ActiveExit.IsZero() || ev.ExecMainExit.IsZero() {
				t.Fatalf("systemd reported no stop or exit time: %+v", ev)
			}
			took := ev.ExecMainExit.Sub(ev.ActiveExit)
			j := e.journal(unit)
			want := strings.SplitN(tc.trap, ";", 2)[0][len("echo "):]
			if !strings.Contains(j, want) {
				t.Errorf("%s did not get SIGTERM first (no %q):\n%s", unit, want, j)
			}
			if !tc.killed {
				if ev.ExecMainCode != systemd.CodeExited || ev.ExecMainStatus != 0 || took >= tc.grace {
					t.Errorf("%s: main process %d/%d after %v, want its own exit 0 within the %v grace period", unit, ev.ExecMainCode, ev.ExecMainStatus, took, tc.grace)
				}
				return
			}
			if ev.ExecMainCode != systemd.CodeKilled || ev.ExecMainStatus != int32(syscall.SIGKILL) || ev.Result != "timeout" {
				t.Errorf("%s: main process %d/%d, result %s; want killed by SIGKILL, result timeout", unit, ev.ExecMainCode, ev.ExecMainStatus, ev.Result)
			}
			if took < tc.grace-stampSlack {
				t.Errorf("%s: SIGKILLed %v after the stop began, before the %v grace period", unit, took, tc.grace)
			}
			t.Logf("systemd: %s SIGKILLed %v after the stop began", unit, took)
			if !strings.Contains(j, "SIGKILL") {
				t.Errorf("systemd did not log the SIGKILL of %s:\n%s", unit, j)
			}
			sts := e.status(tc.pod)
			if len(sts) != 1 || sts[0].State.Terminated == nil || sts[0].State.Terminated.ExitCode != 137 {
				t.Errorf("%s status = %+v, want terminated by SIGKILL (137)", tc.pod, sts)
			}
		})
	}
}

// stampSlack: systemd arms the stop timer a few microseconds before it
// records ActiveExitTimestamp, and both timestamps are CLOCK_REALTIME
// readings (docs/systemd.md, "Stop and its timestamps").
const stampSlack = 10 * time.Millisecond

// 6. Inside, the container cannot see host processes, write the host's
// files, reach any network but loopback, load modules or mount. The checks
// run as the workload itself, under its capabilities, seccomp filter and
// no_new_privs.
func TestSandbox(t *testing.T) {
	e := newEnv(t)
	// A listener on the node's loopback: the container must not reach it.
	// It answers every connection with the node's hostname.
	e.run("systemd-run", "--unit=node-listener", "busybox", "nc", "-ll", "-p", "18080", "-e", "/bin/hostname")
	e.waitFor("node listener", func() bool {
		out, _ := e.n.Run(e.ctx(), "sh", "-c", "busybox nc -w 2 127.0.0.1 18080 </dev/null")
		return strings.TrimSpace(out) == e.n.Name
	})
	script := strings.Join([]string{
		`echo "procs=$(cat /proc/[0-9]*/comm | sort -u | tr '\n' ,)"`,
		`echo "ifaces=$(ls /sys/class/net | tr '\n' ,)"`,
		`r=$(nc -w 2 127.0.0.1 18080 </dev/null 2>/dev/null); [ -n "$r" ] && echo "reach=yes" || echo "reach=no"`,
		`echo x > /proc/sysrq-trigger 2>/dev/null && echo "sysrq=yes" || echo "sysrq=no"`,
		`echo 1 > /proc/sys/kernel/panic 2>/dev/null && echo "procsys=yes" || echo "procsys=no"`,
		`touch /sys/berth 2>/dev/null && echo "sys=yes" || echo "sys=no"`,
		`test -e /var/lib/berth && echo "hostvar=yes" || echo "hostvar=no"`,
		`echo "mount=$(mount -t tmpfs none /mnt 2>&1 && echo ok)"`,
		`echo "insmod=$(insmod /bin/busybox 2>&1 && echo ok)"`,
		`echo "keys=$(ls -l /proc/keys | cut -c1)"`,
		`grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr '\t' ' '`,
		`echo done`,
	}, "; ")
	e.mustStartPod("jail", pod("jail", `  restartPolicy: Never
  containers:
  - name: main
    image: busybox:e2e
    command: ["sh", "-c", `+strconv.Quote(script)+`]
`))
	unit := unitgen.UnitName("default", "jail", "main")
	var out string
	e.waitFor("the checks to finish", func() bool {
		out = e.journal(unit)
		return strings.Contains(out, "done")
	})
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			lines[k] = v
		}
		if k, v, ok := strings.Cut(l, ": "); ok {
			lines[k] = strings.TrimSpace(v)
		}
	}
	for _, host := range []string{"systemd", "journald", "dbus"} {
		if strings.Contains(lines["procs"], host) {
			t.Errorf("host process %s visible inside: %s", host, lines["procs"])
		}
	}
	checks := []struct{ key, want string }{
		{"ifaces", "lo,"},
		{"reach", "no"},
		{"sysrq", "no"},
		{"procsys", "no"},
		{"sys", "no"},
		{"hostvar", "no"},
		{"keys", "c"},                  // masked: /dev/null bound over it (a regular file otherwise; this kernel has no /proc/kcore)
		{"CapEff", "00000000a80425fb"}, // Docker's default set
		{"NoNewPrivs", "1"},
		{"Seccomp", "2"},
	}
	for _, c := range checks {
		if lines[c.key] != c.want {
			t.Errorf("%s = %q, want %q\n%s", c.key, lines[c.key], c.want, out)
		}
	}
	for _, k := range []string{"mount", "insmod"} {
		// busybox mount words EPERM as "permission denied (are you root?)".
		if !strings.Contains(lines[k], "not permitted") && !strings.Contains(lines[k], "permission denied") {
			t.Errorf("%s inside = %q, want Operation not permitted", k, lines[k])
		}
	}
}

// 7. Killing the process that started the containers leaves them running.
func TestContainersSurviveStarterKill(t *testing.T) {
	e := newEnv(t)
	p := podDir + "/survivor.yaml"
	if err := os.WriteFile(e.host(p), []byte(pod("survivor", sleeper)), 0o644); err != nil {
		t.Fatal(err)
	}
	starter := e.n.Command(e.ctx(), "berthd", "--policy", policy, "pod", "run", "--wait", "-f", p, "--layout", layoutDir)
	if err := starter.Start(); err != nil {
		t.Fatal(err)
	}
	defer starter.Wait()
	unit := unitgen.UnitName("default", "survivor", "main")
	e.waitFor(unit+" active", func() bool {
		out, _ := e.n.Run(e.ctx(), "systemctl", "is-active", unit)
		return strings.TrimSpace(out) == "active"
	})
	pid := e.mainPID(unit)
	invocation := e.show(unit, "InvocationID")
	// berthd's connections to systemd, as dbus-daemon lists them.
	onBus := func() bool {
		out := e.run("busctl", "--system", "--no-legend", "list")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[2] == "berthd" {
				return true
			}
		}
		return false
	}
	if !onBus() {
		t.Fatal("berthd --wait is not on the system bus: the barrier below would prove nothing")
	}
	// SIGKILL the berthd process itself (inside the node), not just nsenter.
	e.run("pkill", "-KILL", "-x", "berthd")
	e.waitFor("berthd to die", func() bool {
		_, err := e.n.Run(e.ctx(), "pgrep", "-x", "berthd")
		return err != nil
	})
	// Whatever systemd does about a client that went away, it does when the
	// bus tells it: once dbus-daemon lists no berthd connection, it has sent
	// systemd the NameOwnerChanged, and a call over the bus answered by
	// systemd after that was read after it (one connection, in order; sd-bus
	// runs its peer-tracking callbacks before the next message). A stop
	// would then be a queued job or done.
	e.waitFor("berthd to leave the bus", func() bool { return !onBus() })
	e.run("busctl", "--system", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.DBus.Peer", "Ping")
	if s := e.show(unit, "ActiveState"); s != "active" {
		t.Fatalf("%s is %s after its starter was killed", unit, s)
	}
	if job := e.show(unit, "Job"); job != "" {
		t.Errorf("%s has a pending job %s after its starter was killed", unit, job)
	}
	if got := e.mainPID(unit); got != pid {
		t.Errorf("MainPID changed %d → %d: the container was restarted", pid, got)
	}
	if got := e.show(unit, "InvocationID"); got != invocation {
		t.Errorf("InvocationID changed %s → %s: the container was restarted", invocation, got)
	}
	_ = starter.Process.Signal(syscall.SIGKILL)
}

// 8. Hostile layers are refused, nothing is written outside the store, and
// the pod does not start.
func TestHostileLayersRefused(t *testing.T) {
	e := newEnv(t)
	base, err := imagetest.BusyboxLayers()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, rule string
		entries    []imagetest.Entry
	}{
		{"traversal", "", []imagetest.Entry{{Name: "../../../../../../var/tmp/evil-traversal", Type: tar.TypeReg, Mode: 0o644, Body: []byte("x")}}},
		{"symlink", "", []imagetest.Entry{
			{Name: "escape", Type: tar.TypeSymlink, Linkname: "/var/tmp"},
			{Name: "escape/evil-symlink", Type: tar.TypeReg, Mode: 0o644, Body: []byte("x")}}},
		{"hardlink", "", []imagetest.Entry{{Name: "passwd-link", Type: tar.TypeLink, Linkname: "/etc/passwd"}}},
		{"device", "", []imagetest.Entry{{Name: "dev-sda", Type: tar.TypeBlock, Mode: 0o600}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := imagetest.Layer(c.entries)
			if err != nil {
				t.Fatal(err)
			}
			img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), append(base, l)...)
			if err != nil {
				t.Fatal(err)
			}
			cf, _ := img.ConfigFile()
			cf = cf.DeepCopy()
			cf.OS, cf.Architecture, cf.Config = "linux", "amd64", imagetest.Config()
			img, _ = mutate.ConfigFile(img, cf)
			ref := "hostile:" + c.name
			if _, err := imagetest.WriteLayout(e.host(layoutDir), ref, img); err != nil {
				t.Fatal(err)
			}
			name := "hostile-" + c.name
			out, err := e.startPod(name, pod(name, "  containers:\n  - name: main\n    image: "+ref+"\n    command: [\"sleep\", \"60\"]\n"))
			if err == nil {
				t.Fatalf("pod with a %s layer started:\n%s", c.name, out)
			}
			if !strings.Contains(err.Error(), "refus") {
				t.Errorf("error does not say the layer was refused: %v", err)
			}
			for _, p := range []string{"/var/tmp/evil-traversal", "/var/tmp/evil-symlink", "/evil-traversal"} {
				if _, err := e.n.Run(e.ctx(), "test", "-e", p); err == nil {
					t.Errorf("%s was written outside the store", p)
				}
			}
			if out, _ := e.n.Run(e.ctx(), "systemctl", "list-units", "--all", "--no-legend", "berth-default_"+name+"*"); strings.TrimSpace(out) != "" {
				t.Errorf("a unit exists for the refused pod: %s", out)
			}
		})
	}
}

// hasCap reports whether capability bit n is in this process's bounding set.
func hasCap(n uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:\t"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<n) != 0
		}
	}
	return false
}

// berthd asks systemd for the unit before the bundle is complete and
// releases it through the bundle's FIFO (berthinit.ReleaseFile). If it fails
// meanwhile, berth-init must start nothing: here the pod's namespaces
// cannot be made (a file stands where their directory goes), after the
// unit was requested.
func TestUnfinishedBundleStartsNothing(t *testing.T) {
	e := newEnv(t)
	e.run("sh", "-c", "mkdir -p /run/berth/pods/default_halfway && touch /run/berth/pods/default_halfway/ns")
	_, err := e.startPod("halfway", pod("halfway", `  containers:
  - name: main
    image: `+imageRef+`
    command: ["sh", "-c", "echo WORKLOAD-RAN; sleep 3600"]
`))
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("pod run: got %v, want the namespace directory error", err)
	}
	unit := unitgen.UnitName("default", "halfway", "main")
	// journald may not have written berth-init's line yet.
	var journal string
	e.waitFor("berth-init's refusal in the journal of "+unit, func() bool {
		journal = e.journal(unit)
		return strings.Contains(journal, "without releasing the bundle")
	})
	if strings.Contains(journal, "WORKLOAD-RAN") {
		t.Errorf("the workload ran from an unfinished bundle:\n%s", journal)
	}
	// The failed start was cleaned up: no unit, no bundle, no pod.
	if s := e.show(unit, "LoadState"); s != "not-found" {
		t.Errorf("%s LoadState %s after the failed start", unit, s)
	}
	if out := e.run("sh", "-c", "ls /var/lib/berth/containers /var/lib/berth/pods 2>/dev/null | grep halfway || true"); strings.TrimSpace(out) != "" {
		t.Errorf("left behind: %s", out)
	}
}
