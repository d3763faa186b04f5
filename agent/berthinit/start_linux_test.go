package berthinit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/unitgen/caps"

	"github.com/berth-dev/berth/agent/seccomp"
	"github.com/berth-dev/berth/cgroup/own"
	"github.com/berth-dev/berth/test/testenv"
	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// These tests run the real berth-init binary (built with CGO_ENABLED=0, as
// shipped) against the real kernel: namespaces, overlayfs, pivot_root,
// seccomp. No systemd is involved; the test process plays its part by
// being a child subreaper, so the workload is reparented to it (as it would
// be to systemd) when berth-init exits, and can be reaped.

var berthInitBin string // built once by TestMain when running as root

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
				fmt.Fprintln(os.Stderr, "set child subreaper:", err)
				return 1
			}
			dir, err := testenv.TempDir("berth-init-bin")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			berthInitBin = filepath.Join(dir, "berth-init")
			if _, err := exec.LookPath("go"); err == nil {
				// berth-hook next to it, where unitgen.HookPath looks.
				for _, cmd := range []string{"berth-init", "berth-hook"} {
					build := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "github.com/berth-dev/berth/cmd/"+cmd)
					build.Env = append(os.Environ(), "CGO_ENABLED=0")
					if out, err := build.CombinedOutput(); err != nil {
						fmt.Fprintf(os.Stderr, "build %s: %v\n%s", cmd, err, out)
						return 1
					}
				}
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func requireBerthInit(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "go")
	_, err := os.Stat(berthInitBin)
	testenv.Require(t, err == nil, "berth-init binary was not built")
	_, err = os.Stat("/bin/busybox")
	testenv.Require(t, err == nil, "/bin/busybox missing: apt-get install -y busybox-static")
	return berthInitBin
}

var dockerCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

var busyboxApplets = []string{"sh", "sleep", "cat", "ps", "id", "hostname", "mount", "ls", "touch", "wc", "echo", "grep", "head", "cut", "dd", "true", "false"}

// testBundle is a bundle with a busybox rootfs, laid out as berth's image
// store and unitgen would: an overlay of a read-only lower dir.
type testBundle struct {
	dir, lower, upper, work, rootfs string
	spec                            *specs.Spec
}

func newBundle(t *testing.T, args ...string) *testBundle {
	t.Helper()
	dir := t.TempDir()
	b := &testBundle{
		dir: dir, lower: filepath.Join(dir, "lower"), upper: filepath.Join(dir, "upper"),
		work: filepath.Join(dir, "work"), rootfs: filepath.Join(dir, "rootfs"),
	}
	for _, d := range []string{b.lower + "/bin", b.lower + "/etc", b.lower + "/data", b.rootfs} {
		must(t, os.MkdirAll(d, 0o755))
	}
	// As berthd makes them (agent/pods): empty, 0700.
	for _, d := range []string{b.upper, b.work} {
		must(t, os.Mkdir(d, 0o700))
	}
	bb, err := os.ReadFile("/bin/busybox")
	must(t, err)
	must(t, os.WriteFile(b.lower+"/bin/busybox", bb, 0o755))
	for _, a := range busyboxApplets {
		must(t, os.Symlink("busybox", b.lower+"/bin/"+a))
	}
	must(t, os.WriteFile(b.lower+"/etc/passwd", []byte("root:x:0:0:root:/:/bin/sh\n"), 0o644))
	// Readable only by uid 1000: cwd for the non-root test (chdir after setuid).
	must(t, os.MkdirAll(b.lower+"/home/app", 0o700))
	must(t, os.Chown(b.lower+"/home/app", 1000, 1000))
	must(t, os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost berth-test\n"), 0o644))

	caps := &specs.LinuxCapabilities{Bounding: dockerCaps, Effective: dockerCaps, Permitted: dockerCaps}
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args:            args,
			Env:             []string{"PATH=/usr/bin:/bin", "HOME=/"},
			Cwd:             "/",
			Capabilities:    caps,
			NoNewPrivileges: true,
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1000, Soft: 900}},
		},
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "berth-test",
		Mounts: []specs.Mount{
			{Destination: "/", Type: "overlay", Source: "overlay", Options: []string{
				"lowerdir=" + b.lower, "upperdir=" + b.upper, "workdir=" + b.work}},
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(dir, "hosts"), Options: []string{"rbind", "rprivate", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace},
			},
			// Docker's lists (moby oci/defaults.go).
			MaskedPaths: []string{"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
				"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
				"/sys/firmware", "/sys/devices/virtual/powercap"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	b.spec = s
	b.setSeccomp(t)
	return b
}

func (b *testBundle) setSeccomp(t *testing.T) {
	t.Helper()
	prof, err := mobyseccomp.GetDefaultProfile(b.spec)
	must(t, err)
	b.spec.Linux.Seccomp = prof
}

// write writes the bundle as the agent does: the seccomp profile compiled
// into seccomp.bpf, the spec into config.json.
func (b *testBundle) write(t *testing.T) {
	t.Helper()
	spec, bpf, err := seccomp.Prepare(b.spec)
	must(t, err)
	if bpf != nil {
		must(t, os.WriteFile(filepath.Join(b.dir, bndl.SeccompFile), bpf, 0o600))
	}
	data, err := json.MarshalIndent(spec, "", "  ")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(b.dir, bndl.ConfigFile), data, 0o644))
}

// start runs `berth-init start [flags] <bundle>`; its output (and the
// workload's, which inherits it) goes to <bundle>/log. It registers cleanup
// of the workload.
func (b *testBundle) start(t *testing.T, flags ...string) (pid int, log string, err error) {
	t.Helper()
	b.write(t)
	logf, ferr := os.Create(filepath.Join(b.dir, "log"))
	must(t, ferr)
	defer logf.Close()
	cmd := exec.Command(requireBerthInit(t), append(append([]string{"start"}, flags...), b.dir)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	out, _ := os.ReadFile(filepath.Join(b.dir, "log"))
	if raw, rerr := os.ReadFile(filepath.Join(b.dir, bndl.PIDFile)); rerr == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(raw)))
	}
	if pid > 0 {
		t.Cleanup(func() { b.stop(t, pid) })
	}
	return pid, string(out), err
}

// stop kills and reaps the workload (reparented to us, the subreaper) and
// checks that none of its mounts leaked into the host's namespace.
func (b *testBundle) stop(t *testing.T, pid int) {
	_ = unix.Kill(pid, unix.SIGKILL)
	reap(t, pid, 10*time.Second)
	b.assertNoHostMounts(t)
}

func reap(t *testing.T, pid int, within time.Duration) (unix.WaitStatus, bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid {
			return ws, true
		}
		if errors.Is(err, unix.ECHILD) {
			return 0, false
		}
		if time.Now().After(deadline) {
			t.Errorf("workload %d not reaped within %s", pid, within)
			return 0, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *testBundle) assertNoHostMounts(t *testing.T) {
	t.Helper()
	out, err := exec.Command("findmnt", "-rn", "-o", "TARGET").Output()
	if err != nil {
		t.Errorf("findmnt: %v", err)
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, b.dir) {
			t.Errorf("mount leaked into the host namespace: %s", line)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitExec waits until pid has exec'd the workload: after start returns,
// pid is stage-2 for as long as it takes to see stage-1 reaped (see Start).
func waitExec(t *testing.T, pid int, cmdline string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && string(got) == cmdline {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d cmdline %q (%v), want %q", pid, got, err, cmdline)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func capHex(t *testing.T, names ...string) string {
	t.Helper()
	var m uint64
	for _, n := range names {
		v, ok := caps.Numbers[n]
		if !ok {
			t.Fatalf("unknown cap %s", n)
		}
		m |= 1 << uint(v)
	}
	return fmt.Sprintf("%016x", m)
}

// berthInitProcesses lists live processes running the berth-init binary.
func berthInitProcesses(t *testing.T, bin string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	must(t, err)
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == bin {
			out = append(out, pid)
		}
	}
	return out
}

func mountinfo(t *testing.T, pid int) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	must(t, err)
	m := map[string]string{} // mountpoint -> "opts - fstype" of the top mount
	for _, line := range strings.Split(string(raw), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		m[f[4]] = f[5] + " - " + strings.Fields(post)[0]
	}
	return m
}

func TestStartRootWorkload(t *testing.T) {
	bin := requireBerthInit(t)
	b := newBundle(t, "sleep", "3600")
	// Something left from a previous run must be gone after start.
	must(t, os.MkdirAll(b.upper, 0o755))
	must(t, os.WriteFile(b.upper+"/stale", []byte("x"), 0o644))
	must(t, os.WriteFile(filepath.Join(b.dir, bndl.PIDFile), []byte("1\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(b.dir, bndl.ExitFile), []byte("{}"), 0o644))
	// Above the test's own: raising needs no capability.
	oomAdj := min(ownOOMScoreAdj(t)+321, 1000)
	b.spec.Process.OOMScoreAdj = &oomAdj

	pid, log, err := b.start(t)
	if err != nil {
		t.Fatalf("berth-init start: %v\n%s", err, log)
	}
	if pid <= 1 {
		t.Fatalf("pid file holds %d", pid)
	}
	if _, err := os.Stat(filepath.Join(b.dir, bndl.ExitFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale exit.json not removed: %v", err)
	}
	if raw, err := os.ReadFile(filepath.Join(b.dir, bndl.OOMBaseFile)); err != nil {
		t.Errorf("OOM-kill baseline not recorded: %v", err)
	} else if _, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64); err != nil {
		t.Errorf("OOM-kill baseline %q: %v", raw, err)
	}
	if _, err := os.Stat(b.upper + "/stale"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("overlay upper dir not fresh: %v", err)
	}
	if err := unix.Kill(pid, 0); err != nil {
		t.Fatalf("workload %d not alive: %v", pid, err)
	}
	waitExec(t, pid, "sleep\x003600\x00")
	if left := berthInitProcesses(t, bin); len(left) > 0 {
		t.Errorf("berth-init processes remain: %v", left)
	}

	st := procStatus(t, pid)
	nspid := strings.Fields(st["NSpid"])
	if len(nspid) != 2 || nspid[0] != strconv.Itoa(pid) || nspid[1] != "1" {
		t.Errorf("NSpid %q, want %d 1 (PID 1 of its own namespace)", st["NSpid"], pid)
	}
	want := map[string]string{
		"Uid": "0\t0\t0\t0", "Gid": "0\t0\t0\t0", "Groups": "",
		"CapBnd": capHex(t, dockerCaps...), "CapEff": capHex(t, dockerCaps...),
		"CapPrm": capHex(t, dockerCaps...), "CapInh": capHex(t), "CapAmb": capHex(t),
		"NoNewPrivs": "1", "Seccomp": "2",
	}
	for k, w := range want {
		if st[k] != w {
			t.Errorf("status %s = %q, want %q", k, st[k], w)
		}
	}
	if got := oomScoreAdjOf(t, pid); got != oomAdj {
		t.Errorf("oom_score_adj %d, want process.oomScoreAdj %d", got, oomAdj)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	must(t, err)
	if !strings.Contains(string(limits), "Max open files            900                  1000") {
		t.Errorf("RLIMIT_NOFILE not applied:\n%s", limits)
	}

	for _, ns := range []string{"pid", "mnt", "uts", "ipc", "net"} {
		mine, _ := os.Readlink("/proc/self/ns/" + ns)
		theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if theirs == "" || mine == theirs {
			t.Errorf("%s namespace not new: %q vs host %q", ns, theirs, mine)
		}
	}
	out, err := exec.Command("nsenter", "--uts", "-t", strconv.Itoa(pid), "hostname").Output()
	if err != nil || strings.TrimSpace(string(out)) != "berth-test" {
		t.Errorf("hostname in the workload's UTS namespace = %q (%v), want berth-test", out, err)
	}

	mi := mountinfo(t, pid)
	for mp, wantSub := range map[string]string{
		"/":                     "- overlay",
		"/proc":                 "- proc",
		"/proc/kcore":           "", // /dev/null bound over it (content checked from inside)
		"/proc/sys":             "ro,",
		"/proc/scsi":            "- tmpfs", // a directory: masked by a read-only tmpfs
		"/sys":                  "ro,",
		"/sys/fs/cgroup":        "ro,",
		"/dev/null":             "",
		"/dev/pts":              "- devpts",
		"/dev/mqueue":           "- mqueue",
		"/etc/hosts":            "ro,",
		"/sys/fs/cgroup/memory": "ro,",
	} {
		got, ok := mi[mp]
		if mp == "/sys/fs/cgroup/memory" && own.Unified() {
			continue // one unified tree at /sys/fs/cgroup
		}
		if !ok {
			if mp == "/proc/scsi" {
				if _, err := os.Stat("/proc/scsi"); err != nil {
					continue // kernel without SCSI: nothing to mask
				}
			}
			if mp == "/proc/kcore" {
				if _, err := os.Stat("/proc/kcore"); err != nil {
					continue
				}
			}
			t.Errorf("no mount on %s in the workload's namespace", mp)
			continue
		}
		if !strings.Contains(got, wantSub) {
			t.Errorf("mount %s = %q, want it to contain %q", mp, got, wantSub)
		}
	}
	if strings.HasPrefix(mi["/"], "ro") {
		t.Errorf("root is read-only without Root.Readonly: %s", mi["/"])
	}
	// The mounts live only in the workload's namespace.
	b.assertNoHostMounts(t)
}

func oomScoreAdjOf(t *testing.T, pid int) int {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
	must(t, err)
	n, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	must(t, err)
	return n
}

func ownOOMScoreAdj(t *testing.T) int { return oomScoreAdjOf(t, os.Getpid()) }

// TestOOMScoreAdjWithoutSysResource: where berth-init may not lower the
// score (no CAP_SYS_RESOURCE: a host that is itself a container), the
// start goes on with a warning, as systemd goes on without the unit's
// OOMScoreAdjust= there; it must not fail where the unit would not.
func TestOOMScoreAdjWithoutSysResource(t *testing.T) {
	bin := requireBerthInit(t)
	testenv.RequireCommand(t, "setpriv")
	b := newBundle(t, "sleep", "3600")
	adj := -1000
	b.spec.Process.OOMScoreAdj = &adj
	b.write(t)
	logf, err := os.Create(filepath.Join(b.dir, "log"))
	must(t, err)
	defer logf.Close()
	cmd := exec.Command("setpriv", "--bounding-set", "-sys_resource", bin, "start", b.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	out, _ := os.ReadFile(filepath.Join(b.dir, "log"))
	raw, _ := os.ReadFile(filepath.Join(b.dir, bndl.PIDFile))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if pid > 0 {
		t.Cleanup(func() { b.stop(t, pid) })
	}
	if err != nil || pid <= 0 {
		t.Fatalf("start without CAP_SYS_RESOURCE: pid %d, %v\n%s", pid, err, out)
	}
	// -1000 is allowed without the capability only if an ancestor set
	// it with it (oom_score_adj_min): then it applies.
	if got := oomScoreAdjOf(t, pid); got != adj && !strings.Contains(string(out), "warning: process.oomScoreAdj -1000 not applied") {
		t.Errorf("oom_score_adj %d and no warning in %q", got, out)
	}
}

// workloadScript checks the container from the inside, as the workload, and
// prints key=value lines for the test: memcg is its memory cgroup as
// /proc/self/cgroup shows it, memlimit whether the memory limit file is in
// its view of /sys/fs/cgroup, cgwrite whether creating a file there failed.
func workloadScript() string {
	if own.Unified() {
		return workloadCommon + `
echo memcg=$(sed -n 's/^0:://p' /proc/self/cgroup)
echo memlimit=$(ls /sys/fs/cgroup | grep -c '^memory.max$')
touch /sys/fs/cgroup/x 2>/dev/null; echo cgwrite=$?
echo cgunsafe=$(awk '$5 ~ "^/sys/fs/cgroup" && $6 !~ /^ro,nosuid,nodev,noexec/' /proc/self/mountinfo | wc -l)
echo DONE
`
	}
	return workloadCommon + `
echo memcg=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3)
echo memlimit=$(ls /sys/fs/cgroup/memory | grep -c '^memory.limit_in_bytes$')
touch /sys/fs/cgroup/memory/x 2>/dev/null; echo cgwrite=$?
echo cgmounts=$(awk '$5 ~ "^/sys/fs/cgroup/"' /proc/self/mountinfo | wc -l)
echo cgunsafe=$(awk '$5 ~ "^/sys/fs/cgroup" && $6 !~ /^ro,nosuid,nodev,noexec/' /proc/self/mountinfo | wc -l)
echo DONE
`
}

const workloadCommon = `
echo hostname=$(hostname)
echo id=$(id -u):$(id -g)
echo PS-BEGIN; ps -o pid,comm; echo PS-END
mount -t tmpfs none /data 2>/dev/null; echo mount=$?
echo mountmsg=$(mount -t tmpfs none /data 2>&1)
echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c)
echo 1 2>/dev/null > /proc/sys/kernel/printk_ratelimit; echo procsys=$?
( echo x > /proc/sys/kernel/printk_ratelimit ) 2>&1 | grep -q 'Read-only' && echo procsys_rofs=yes
touch /newfile 2>/dev/null; echo rootwrite=$?
echo hosts=$(grep -c berth-test /etc/hosts)
echo null=$(ls -l /dev/null | head -c 1)`

func runWorkload(t *testing.T, b *testBundle) map[string]string {
	t.Helper()
	pid, log, err := b.start(t)
	if err != nil {
		t.Fatalf("berth-init start: %v\n%s", err, log)
	}
	ws, ok := reap(t, pid, 20*time.Second)
	if !ok {
		t.Fatalf("workload not reaped")
	}
	out, _ := os.ReadFile(filepath.Join(b.dir, "log"))
	if !ws.Exited() || ws.ExitStatus() != 0 || !strings.Contains(string(out), "DONE") {
		t.Fatalf("workload status %v, output:\n%s", ws, out)
	}
	t.Logf("workload output:\n%s", out)
	res := map[string]string{}
	var ps []string
	inPS := false
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case line == "PS-BEGIN":
			inPS = true
		case line == "PS-END":
			inPS = false
		case inPS:
			if f := strings.Fields(line); len(f) == 2 && f[0] != "PID" {
				ps = append(ps, f[0]+":"+f[1])
			}
		default:
			if k, v, ok := strings.Cut(line, "="); ok {
				res[k] = v
			}
		}
	}
	res["ps"] = strings.Join(ps, " ")
	b.assertNoHostMounts(t)
	return res
}

func TestWorkloadViewReadonlyRoot(t *testing.T) {
	requireBerthInit(t)
	b := newBundle(t, "sh", "-c", workloadScript())
	b.spec.Root.Readonly = true
	got := runWorkload(t, b)
	want := map[string]string{
		"hostname": "berth-test", "id": "0:0",
		"mount": "1", "mountmsg": "mount: permission denied (are you root?)", "kcore": "0", "procsys": "1", "procsys_rofs": "yes",
		"rootwrite": "1", "hosts": "1", "null": "c",
		// Without a cgroup namespace: its own memory cgroup, bound read-only.
		"memcg": ownMemoryCgroup(t), "memlimit": "1", "cgwrite": "1",
		// Every cgroup mount read-only, nosuid, nodev, noexec.
		"cgunsafe": "0",
	}
	if !own.Unified() {
		// One per v1 hierarchy of the host (cpu, memory, ..., systemd, unified).
		if n, err := strconv.Atoi(got["cgmounts"]); err != nil || n < 5 {
			t.Errorf("inside the container cgmounts=%q, want one per hierarchy", got["cgmounts"])
		}
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("inside the container %s=%q, want %q", k, got[k], w)
		}
	}
	// Only the script (PID 1) and ps itself: the host's processes are invisible.
	if ps := strings.Fields(got["ps"]); len(ps) != 2 || ps[0] != "1:sh" || !strings.HasSuffix(ps[1], ":ps") {
		t.Errorf("ps inside the container lists %q, want 1:sh and ps", got["ps"])
	}
}

// TestWorkloadViewCgroupNamespace: with a new cgroup namespace the
// hierarchies are mounted afresh and the container sees itself at "/".
func TestWorkloadViewCgroupNamespace(t *testing.T) {
	requireBerthInit(t)
	b := newBundle(t, "sh", "-c", workloadScript())
	b.spec.Linux.Namespaces = append(b.spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	got := runWorkload(t, b)
	// The OOM-kill baseline is the start's own cgroup's (ours), read before
	// stage-1 entered the new cgroup namespace, where its cgroup is "/".
	want, err := OwnOOMKills()
	must(t, err)
	if raw, err := os.ReadFile(filepath.Join(b.dir, bndl.OOMBaseFile)); err != nil || strings.TrimSpace(string(raw)) != strconv.FormatUint(want, 10) {
		t.Errorf("%s = %q (%v), want %d", bndl.OOMBaseFile, raw, err, want)
	}
	for k, w := range map[string]string{"memcg": "/", "memlimit": "1", "cgwrite": "1", "cgunsafe": "0"} {
		if got[k] != w {
			t.Errorf("inside the container %s=%q, want %q", k, got[k], w)
		}
	}
}

func ownMemoryCgroup(t *testing.T) string {
	t.Helper()
	g := memoryCgroup(t)
	if g == "" {
		t.Fatal("no memory line in /proc/self/cgroup")
	}
	return g
}

// memoryCgroup is this process's memory cgroup as /proc/self/cgroup lists
// it: the memory hierarchy's on v1, the unified tree's on v2; "" if none.
func memoryCgroup(t *testing.T) string {
	t.Helper()
	v1, unified, err := own.Groups("/proc/self/cgroup")
	must(t, err)
	if own.Unified() {
		return unified
	}
	return v1["memory"]
}

func TestWorkloadViewWritableRoot(t *testing.T) {
	requireBerthInit(t)
	b := newBundle(t, "sh", "-c", workloadScript())
	got := runWorkload(t, b)
	if got["rootwrite"] != "0" {
		t.Errorf("root write failed with a writable root: rootwrite=%q", got["rootwrite"])
	}
	// The write went to the overlay's upper dir, not the image.
	if _, err := os.Stat(b.upper + "/newfile"); err != nil {
		t.Errorf("write not in the upper dir: %v", err)
	}
	if _, err := os.Stat(b.lower + "/newfile"); err == nil {
		t.Errorf("write reached the lower (image) dir")
	}
}

// TestStartNonRootAmbient covers a non-root user with supplementary groups,
// an ambient capability, no no_new_privs (so seccomp is loaded before the
// user switch, with CAP_SYS_ADMIN) and a cwd only that user can enter.
func TestStartNonRootAmbient(t *testing.T) {
	requireBerthInit(t)
	b := newBundle(t, "sleep", "3600")
	p := b.spec.Process
	p.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 20}}
	p.NoNewPrivileges = false
	p.Cwd = "/home/app"
	nbs := "CAP_NET_BIND_SERVICE"
	p.Capabilities.Inheritable = []string{nbs}
	p.Capabilities.Ambient = []string{nbs}
	pid, log, err := b.start(t)
	if err != nil {
		t.Fatalf("berth-init start: %v\n%s", err, log)
	}
	waitExec(t, pid, "sleep\x003600\x00")
	st := procStatus(t, pid)
	want := map[string]string{
		"Uid": "1000\t1000\t1000\t1000", "Gid": "1000\t1000\t1000\t1000", "Groups": "10 20",
		"CapBnd": capHex(t, dockerCaps...),
		// execve as non-root keeps only the ambient set (capabilities(7)).
		"CapEff": capHex(t, nbs), "CapPrm": capHex(t, nbs), "CapAmb": capHex(t, nbs), "CapInh": capHex(t, nbs),
		"NoNewPrivs": "0", "Seccomp": "2",
	}
	for k, w := range want {
		if st[k] != w {
			t.Errorf("status %s = %q, want %q", k, st[k], w)
		}
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil || !strings.HasSuffix(cwd, "/home/app") {
		t.Errorf("cwd %q (%v), want /home/app", cwd, err)
	}
}

// TestStartJoinsNamespaces joins a "pod" network and UTS namespace by path,
// as unitgen writes them for a pod's containers.
func TestStartJoinsNamespaces(t *testing.T) {
	requireBerthInit(t)
	b := newBundle(t, "sleep", "3600")
	// A pod sandbox: a process holding new net+uts namespaces with its own name.
	// It says "ready" once its hostname is set.
	pod := exec.Command("unshare", "--net", "--uts", "sh", "-c", "hostname pod-name && echo ready && exec sleep 3600")
	ready, err := pod.StdoutPipe()
	must(t, err)
	must(t, pod.Start())
	t.Cleanup(func() { _ = pod.Process.Kill(); _ = pod.Wait() })
	podNS := func(ns string) string { return fmt.Sprintf("/proc/%d/ns/%s", pod.Process.Pid, ns) }
	if line, err := bufio.NewReader(ready).ReadString('\n'); line != "ready\n" {
		t.Fatalf("pod sandbox did not set its hostname: %q, %v", line, err)
	}
	b.spec.Linux.Namespaces = []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace, Path: podNS("uts")}, {Type: specs.NetworkNamespace, Path: podNS("net")},
	}
	pid, log, err := b.start(t)
	if err != nil {
		t.Fatalf("berth-init start: %v\n%s", err, log)
	}
	waitExec(t, pid, "sleep\x003600\x00")
	for _, ns := range []string{"net", "uts"} {
		want, _ := os.Readlink(podNS(ns))
		got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if got != want || got == "" {
			t.Errorf("%s namespace %q, want the pod's %q", ns, got, want)
		}
	}
	// The pod's hostname stands: berth-init sets Hostname only in a UTS namespace it owns.
	out, _ := exec.Command("nsenter", "--uts", "-t", strconv.Itoa(pid), "hostname").Output()
	if strings.TrimSpace(string(out)) != "pod-name" {
		t.Errorf("hostname %q, want the pod's pod-name", out)
	}
}

func TestStartFailures(t *testing.T) {
	requireBerthInit(t)
	cases := []struct {
		name   string
		mutate func(b *testBundle)
		want   string
	}{
		{"missing cwd", func(b *testBundle) { b.spec.Process.Cwd = "/nonexistent" },
			`stage2: chdir to process.cwd "/nonexistent": no such file or directory`},
		{"missing binary", func(b *testBundle) { b.spec.Process.Args = []string{"no-such-binary"} },
			`stage2: process.args[0] "no-such-binary": executable file not found in PATH "/usr/bin:/bin"`},
		{"missing absolute binary", func(b *testBundle) { b.spec.Process.Args = []string{"/bin/nope"} },
			`stage2: process.args[0] "/bin/nope": stat /bin/nope: no such file or directory`},
		{"missing #! interpreter", func(b *testBundle) {
			must(t, os.WriteFile(b.lower+"/bin/script", []byte("#!/nonexistent/sh -e\n"), 0o755))
			b.spec.Process.Args = []string{"/bin/script"}
		}, `stage2: /bin/script: #! interpreter: stat /nonexistent/sh: no such file or directory`},
		{"missing ELF interpreter", func(b *testBundle) {
			// The host's dynamically linked /bin/true in a busybox image without /lib64.
			bin, err := os.ReadFile("/usr/bin/true")
			must(t, err)
			must(t, os.WriteFile(b.lower+"/bin/dyntrue", bin, 0o755))
			b.spec.Process.Args = []string{"dyntrue"}
		}, `stage2: /bin/dyntrue: ELF interpreter (an image for another libc or architecture?): stat /lib64/ld-linux-x86-64.so.2: no such file or directory`},
		{"noexec mount", func(b *testBundle) {
			b.spec.Mounts = append(b.spec.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: b.lower + "/bin", Options: []string{"rbind", "noexec"}})
			b.spec.Process.Args = []string{"/data/sleep", "1"}
		}, `stage2: process.args[0] "/data/sleep": /data/sleep is on a noexec mount`},
		{"missing bind source", func(b *testBundle) {
			b.spec.Mounts = append(b.spec.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/nonexistent-src", Options: []string{"rbind"}})
		}, `: bind mount source for /x: stat /nonexistent-src: no such file or directory`}, // stage-1 mounts it
		{"no pid namespace", func(b *testBundle) {
			b.spec.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.MountNamespace}}
		}, "linux.namespaces must include pid and mount"},
		{"rootfs overlay not first", func(b *testBundle) { b.spec.Mounts = b.spec.Mounts[1:] },
			`mounts[0] must be the rootfs overlay on "/"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBundle(t, "sleep", "3600")
			tc.mutate(b)
			b.assertStartFails(t, tc.want)
			if left := berthInitProcesses(t, berthInitBin); len(left) > 0 {
				t.Errorf("berth-init processes remain: %v", left)
			}
		})
	}
}

// assertStartFails starts b and checks that the start fails as a refused
// bundle must: exit status 1, want in the output, and nothing left behind
// (no PID file, no stage-2, no mount on the host).
func (b *testBundle) assertStartFails(t *testing.T, want string) {
	t.Helper()
	pid, log, err := b.start(t)
	if err == nil {
		t.Fatalf("start succeeded (pid %d), want failure; output:\n%s", pid, log)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit %v, want status 1", err)
	}
	if !strings.Contains(log, want) {
		t.Errorf("output %q lacks %q", log, want)
	}
	if _, err := os.Stat(filepath.Join(b.dir, bndl.PIDFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left behind: %v", err)
	}
	if pids := stage2Of(t, b.dir); len(pids) > 0 {
		t.Errorf("stage-2 left behind: pids %v", pids)
	}
	b.assertNoHostMounts(t)
}

// TestExecWaitsForStage1Reap: the workload is exec'd only after stage-1 has
// been reaped, the moment systemd has read PIDFile= (see Start).
func TestExecWaitsForStage1Reap(t *testing.T) {
	bin := requireBerthInit(t)
	b := newBundle(t, "sleep", "3600")
	b.write(t)
	cmd := exec.Command(bin, "start", b.dir)
	must(t, cmd.Start())
	// Wait for stage-1 to exit, but leave it a zombie (WNOWAIT).
	var si unix.Siginfo
	must(t, unix.Waitid(unix.P_PID, cmd.Process.Pid, &si, unix.WEXITED|unix.WNOWAIT, nil))
	raw, err := os.ReadFile(filepath.Join(b.dir, bndl.PIDFile))
	must(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	must(t, err)
	t.Cleanup(func() { b.stop(t, pid) })
	// Stage-2 polls stage-1's /proc/<pid>/stat (waitForReap), and every
	// read of it is an IN_ACCESS event (inotify(7): vfs_read notifies for
	// procfs as for any file). Watched from now on, with stage-1 a zombie:
	// a second event means stage-2 has seen the zombie at least once and
	// gone on waiting, so by then it must not have exec'd. (Identical
	// events queued unread are merged: each one read stands for at least
	// one more read by stage-2.)
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	must(t, err)
	defer unix.Close(in)
	_, err = unix.InotifyAddWatch(in, fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid), unix.IN_ACCESS)
	must(t, err)
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 4096)
	for reads := 0; reads < 2; {
		got, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		must(t, err)
		if !strings.HasPrefix(string(got), "berth-init\x00stage2\x00") {
			t.Fatalf("before stage-1 was reaped, pid %d runs %q; want stage-2 still waiting", pid, got)
		}
		if time.Now().After(deadline) {
			t.Fatalf("stage-2 (pid %d) read stage-1's stat %d times since it became a zombie, want 2: not watching it?", pid, reads)
		}
		pfd := []unix.PollFd{{Fd: int32(in), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 100); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("poll inotify: %v", err)
		} else if n > 0 {
			if _, err := unix.Read(in, buf); err == nil {
				reads++
			} else if !errors.Is(err, unix.EAGAIN) {
				t.Fatalf("read inotify: %v", err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("stage-1: %v", err)
	}
	waitExec(t, pid, "sleep\x003600\x00")
}

// TestExecFailureAfterReady: what checkExec cannot foresee fails at execve,
// after stage-1 has reported success; stage-2 (the unit's MainPID by then)
// exits 126 with the error on stderr, the journal.
func TestExecFailureAfterReady(t *testing.T) {
	requireBerthInit(t)
	b := newBundle(t, "garbage")
	must(t, os.WriteFile(b.lower+"/bin/garbage", []byte("garbage"), 0o755))
	pid, log, err := b.start(t)
	if err != nil {
		t.Fatalf("start: %v\n%s", err, log)
	}
	ws, ok := reap(t, pid, 10*time.Second)
	if !ok || !ws.Exited() || ws.ExitStatus() != 126 {
		t.Errorf("workload status %v, want exit 126", ws)
	}
	out, _ := os.ReadFile(filepath.Join(b.dir, "log"))
	if want := "berth-init: exec /bin/garbage: exec format error"; !strings.Contains(string(out), want) {
		t.Errorf("log %q lacks %q", out, want)
	}
}

func TestPostStopBinary(t *testing.T) {
	bin := requireBerthInit(t)
	cases := []struct {
		name string
		env  []string
		want bndl.ExitStatus
	}{
		{"exit 3", []string{"SERVICE_RESULT=exit-code", "EXIT_CODE=exited", "EXIT_STATUS=3"},
			bndl.ExitStatus{Result: "exit-code", ExitCode: 3, Reason: bndl.ReasonError}},
		{"exit 0", []string{"SERVICE_RESULT=success", "EXIT_CODE=exited", "EXIT_STATUS=0"},
			bndl.ExitStatus{Result: "success", ExitCode: 0, Reason: bndl.ReasonCompleted}},
		{"SIGKILL", []string{"SERVICE_RESULT=signal", "EXIT_CODE=killed", "EXIT_STATUS=KILL"},
			bndl.ExitStatus{Result: "signal", ExitCode: 137, Signal: 9, Reason: bndl.ReasonError}},
		{"v2 oom-kill result", []string{"SERVICE_RESULT=oom-kill", "EXIT_CODE=killed", "EXIT_STATUS=KILL"},
			bndl.ExitStatus{Result: "oom-kill", ExitCode: 137, Signal: 9, OOMKilled: true, Reason: bndl.ReasonOOMKilled}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// Run in a fresh memory cgroup so the OOM counter is ours (0).
			cg := newMemoryCgroup(t)
			before := time.Now().UTC().Add(-time.Second)
			cmd := exec.Command("sh", "-c", `echo $$ > "$CG/cgroup.procs" && exec "$BIN" poststop "$DIR"`)
			cmd.Env = append([]string{"CG=" + cg, "BIN=" + bin, "DIR=" + dir, "PATH=/usr/bin:/bin"}, tc.env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("poststop: %v\n%s", err, out)
			}
			got, err := bndl.ReadExit(dir)
			must(t, err)
			if got.FinishedAt.Before(before) || got.FinishedAt.After(time.Now().Add(time.Second)) {
				t.Errorf("FinishedAt %v not now", got.FinishedAt)
			}
			got.FinishedAt = time.Time{}
			if *got != tc.want {
				t.Errorf("exit.json %+v, want %+v", *got, tc.want)
			}
		})
	}
}

// TestPostStopRealOOM lets the kernel OOM-kill a process in a memory cgroup
// and runs poststop in that cgroup, as systemd runs ExecStopPost in the
// unit's cgroup: the counter (memory.oom_control on v1, memory.events on
// v2) must read as OOMKilled even though systemd only says "signal".
func TestPostStopRealOOM(t *testing.T) {
	bin := requireBerthInit(t)
	testenv.RequireCommand(t, "dd")
	cg := newMemoryCgroup(t)
	limit := "memory.limit_in_bytes"
	if own.Unified() {
		limit = "memory.max"
		if _, err := os.Stat(cg + "/memory.swap.max"); err == nil { // swap accounting compiled in
			must(t, os.WriteFile(cg+"/memory.swap.max", []byte("0"), 0o644))
		}
	}
	must(t, os.WriteFile(filepath.Join(cg, limit), []byte("33554432"), 0o644))
	hog := exec.Command("sh", "-c", `echo $$ > "$CG/cgroup.procs" && exec dd if=/dev/zero of=/dev/null bs=200M count=1`)
	hog.Env = []string{"CG=" + cg, "PATH=/usr/bin:/bin"}
	err := hog.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("hog was not killed: %v", err)
	}
	if ws := ee.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hog ended with %v, want SIGKILL by the OOM killer", ws)
	}
	dir := t.TempDir()
	if out, err := poststopIn(cg, bin, dir).CombinedOutput(); err != nil {
		t.Fatalf("poststop: %v\n%s", err, out)
	}
	got, err := bndl.ReadExit(dir)
	must(t, err)
	if !got.OOMKilled || got.Reason != bndl.ReasonOOMKilled || got.ExitCode != 137 {
		t.Errorf("exit.json %+v, want OOMKilled 137", *got)
	}

	// A restarted container (same cgroup, systemd Restart=) whose start
	// recorded the counter at 1 was not OOM-killed this time.
	must(t, os.WriteFile(filepath.Join(dir, bndl.OOMBaseFile), []byte("1\n"), 0o644))
	if out, err := poststopIn(cg, bin, dir).CombinedOutput(); err != nil {
		t.Fatalf("poststop: %v\n%s", err, out)
	}
	got, err = bndl.ReadExit(dir)
	must(t, err)
	if got.OOMKilled || got.Reason != bndl.ReasonError {
		t.Errorf("after a baseline of 1, exit.json %+v, want a plain SIGKILL", *got)
	}
}

func poststopIn(cg, bin, dir string) *exec.Cmd {
	cmd := exec.Command("sh", "-c", `echo $$ > "$CG/cgroup.procs" && exec "$BIN" poststop "$DIR"`)
	cmd.Env = []string{"CG=" + cg, "BIN=" + bin, "DIR=" + dir, "PATH=/usr/bin:/bin",
		"SERVICE_RESULT=signal", "EXIT_CODE=killed", "EXIT_STATUS=KILL"}
	return cmd
}

// newMemoryCgroup creates a child of this process's own memory cgroup (on
// v2 of its unified cgroup, delegated first) and removes it afterwards.
func newMemoryCgroup(t *testing.T) string {
	t.Helper()
	v2 := own.Unified()
	parent := memoryCgroup(t) // this process's group: the new one goes below it
	testenv.Require(t, parent != "" && runtime.GOOS == "linux", "no memory cgroup in /proc/self/cgroup")
	mount, home := "/sys/fs/cgroup/memory", parent // home: where leftovers go back to
	if v2 {
		mount, parent = "/sys/fs/cgroup", own.DelegationParent(parent)
		must(t, own.Delegate(filepath.Join(mount, parent), parent == "/"))
		home = filepath.Join(parent, own.DelegatedLeaf)
		if parent == "/" {
			home = parent
		}
	}
	dir := filepath.Join(mount, parent, fmt.Sprintf("berth-stage1-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	must(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() {
		// Move anything left back home, then remove ours.
		if procs, err := os.ReadFile(dir + "/cgroup.procs"); err == nil {
			for _, p := range strings.Fields(string(procs)) {
				_ = os.WriteFile(filepath.Join(mount, home, "cgroup.procs"), []byte(p), 0o644)
			}
		}
		for i := 0; i < 50; i++ {
			if err := unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("cannot remove test cgroup %s", dir)
	})
	return dir
}

// TestStartVerifyImage: `start --verify-image` judges the image before
// anything of it is touched, from the bundle's trust record, and fails
// closed.
func TestStartVerifyImage(t *testing.T) {
	requireBerthInit(t)
	policy := filepath.Join(t.TempDir(), "policy.json")
	must(t, os.WriteFile(policy, []byte(`{"default": [{"type": "insecureAcceptAnything"}]}`), 0o644))
	record := func(b *testBundle, allowed bool, msg string) {
		r := fmt.Sprintf(`{"allowed": %t, "message": %q, "depends": [{"path": %q, "sha256": %q}]}`, allowed, msg, policy, mustSum(t, policy))
		must(t, os.WriteFile(filepath.Join(b.dir, bndl.RecordFile), []byte(r), 0o644))
	}

	ok := newBundle(t, "sleep", "60")
	record(ok, true, "")
	if pid, log, err := ok.start(t, VerifyImageFlag); err != nil || pid <= 0 {
		t.Fatalf("allowed image: start = pid %d, %v\n%s", pid, err, log)
	}

	refused := newBundle(t, "sleep", "60")
	record(refused, false, "rejected by policy: no signatures found for example.org/app")
	pid, log, err := refused.start(t, VerifyImageFlag)
	if err == nil || pid > 0 {
		t.Fatalf("refused image started (pid %d)", pid)
	}
	if !strings.Contains(log, "rejected by policy: no signatures found for example.org/app") {
		t.Errorf("refusal not in the start's output:\n%s", log)
	}
	// The judgement came first: the overlay's dirs were not even touched.
	if fi, err := os.Stat(refused.upper); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("a refused start prepared the rootfs: upper %v %v", fi, err)
	}
	// Stage-2, cloned while the judgement ran, was killed and reaped.
	if pids := stage2Of(t, refused.dir); len(pids) > 0 {
		t.Errorf("stage-2 of the refused start still there: pids %v", pids)
	}

	// The policy changed since the record: berth-verify must judge again.
	// It is not installed next to this berth-init, so the start fails.
	stale := newBundle(t, "sleep", "60")
	record(stale, true, "")
	must(t, os.WriteFile(policy, []byte(`{"default": [{"type": "reject"}]}`), 0o644))
	pid, log, err = stale.start(t, VerifyImageFlag)
	if err == nil || pid > 0 {
		t.Fatalf("stale record: started without a new judgement (pid %d)", pid)
	}
	if !strings.Contains(log, "cannot be judged again") || !strings.Contains(log, "berth-verify") {
		t.Errorf("stale record: output does not say berth-verify could not run:\n%s", log)
	}

	// With berth-verify installed next to berth-init, its verdict decides.
	dir := t.TempDir()
	init := filepath.Join(dir, "berth-init")
	if err := os.Link(berthInitBin, init); err != nil {
		data, err := os.ReadFile(berthInitBin)
		must(t, err)
		must(t, os.WriteFile(init, data, 0o755))
	}
	for _, verdict := range []int{0, 1} {
		must(t, os.WriteFile(filepath.Join(dir, "berth-verify"), []byte(fmt.Sprintf(
			"#!/bin/sh\necho \"berth-verify judged $1\" >&2\nexit %d\n", verdict)), 0o755))
		b := newBundle(t, "sleep", "60")
		record(b, true, "") // stale: the policy changed since
		must(t, os.WriteFile(policy, []byte(fmt.Sprintf(`{"default": [{"type": "reject"}], "n": %d}`, verdict)), 0o644))
		b.write(t)
		// Output to a file, not a pipe: the workload inherits it and lives on.
		logf, ferr := os.Create(filepath.Join(b.dir, "log"))
		must(t, ferr)
		cmd := exec.Command(init, "start", VerifyImageFlag, b.dir)
		cmd.Stdout, cmd.Stderr = logf, logf
		err := cmd.Run()
		logf.Close()
		out, _ := os.ReadFile(filepath.Join(b.dir, "log"))
		raw, _ := os.ReadFile(filepath.Join(b.dir, bndl.PIDFile))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
		if pid > 0 {
			t.Cleanup(func() { b.stop(t, pid) })
		}
		if !strings.Contains(string(out), "berth-verify judged "+b.dir) {
			t.Errorf("verdict %d: berth-verify not run on the bundle: %q", verdict, out)
		}
		switch {
		case verdict == 0 && (err != nil || pid <= 0):
			t.Errorf("berth-verify allowed: start = pid %d, %v\n%s", pid, err, out)
		case verdict == 1 && (err == nil || pid > 0 || !strings.Contains(string(out), "the trust policy refuses the image")):
			t.Errorf("berth-verify refused: start = pid %d, %v\n%s", pid, err, out)
		}
	}
}

// TestStartSeccompFilterChecked: stage-2 loads only the filter the spec
// names; a changed file or an uncompiled profile fails the start.
func TestStartSeccompFilterChecked(t *testing.T) {
	requireBerthInit(t)
	b := newBundle(t, "sleep", "60")
	b.write(t)
	must(t, os.WriteFile(filepath.Join(b.dir, bndl.SeccompFile), []byte("BERTHSC1 not the compiled one"), 0o644))
	raw, err := os.ReadFile(filepath.Join(b.dir, bndl.ConfigFile))
	must(t, err)
	// Start with the tampered file: b.start would rewrite it, so run by hand.
	out, err := exec.Command(requireBerthInit(t), "start", b.dir).CombinedOutput()
	if err == nil {
		if pid, _ := os.ReadFile(filepath.Join(b.dir, bndl.PIDFile)); len(pid) > 0 {
			p, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
			t.Cleanup(func() { b.stop(t, p) })
		}
		t.Fatalf("started with a seccomp.bpf whose hash is not the spec's")
	}
	if !strings.Contains(string(out), "the spec's dev.berth.seccomp.sha256 says") {
		t.Errorf("tampered filter: output %q", out)
	}
	if !strings.Contains(string(raw), `"dev.berth.seccomp.sha256"`) || strings.Contains(string(raw), `"syscalls"`) {
		t.Errorf("config.json should carry the filter's hash, not the profile")
	}

	// A spec with the profile itself (not prepared by the agent) is refused,
	// not run unconfined.
	must(t, os.WriteFile(filepath.Join(b.dir, bndl.ConfigFile), mustJSON(t, b.spec), 0o644))
	out, err = exec.Command(requireBerthInit(t), "start", b.dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "linux.seccomp must be compiled") {
		t.Errorf("uncompiled profile: err %v, output %q", err, out)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	return b
}

// stage2Of lists the processes running `berth-init stage2 <bundle>`.
func stage2Of(t *testing.T, bundle string) []int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	must(t, err)
	var pids []int
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		if args := strings.Split(string(b), "\x00"); len(args) >= 3 && args[1] == "stage2" && args[2] == bundle {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

func mustSum(t *testing.T, path string) string {
	t.Helper()
	s, err := bndl.SumFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
