package berthinit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
)

// startTestPause runs `berth-init pause <dir>` as systemd would (the test
// process, a subreaper, adopts the pause) and returns the pause's PID. The
// pause is killed and reaped, and the pin unmounted, at cleanup.
func startTestPause(t *testing.T, dir string) int {
	t.Helper()
	out, err := runPauseCmd(t, dir)
	t.Cleanup(func() {
		pin := filepath.Join(dir, pidNSPin)
		if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unpin %s: %v", pin, err)
		}
	})
	if err != nil {
		t.Fatalf("berth-init pause: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, pausePIDFile))
	must(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	must(t, err)
	t.Cleanup(func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		reap(t, pid, 10*time.Second)
	})
	return pid
}

// runPauseCmd runs `berth-init pause dir` with its output (and the
// pause's, which inherits it) in a file: a pipe would stay open as long as
// the pause lives.
func runPauseCmd(t *testing.T, dir string) (string, error) {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "log"))
	must(t, err)
	defer logf.Close()
	cmd := exec.Command(requireBerthInit(t), "pause", dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	out, _ := os.ReadFile(logf.Name())
	return string(out), err
}

// waitStatus polls /proc/<pid>/status until field has value (the pause
// drops its privileges once its namespace is pinned, after berth-init
// pause has returned): a functional wait, not a timing assertion.
func waitStatus(t *testing.T, pid int, field, value string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := procStatus(t, pid)[field]
		if got == value {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d %s = %q, want %q", pid, field, got, value)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// childrenOf lists the PIDs (host) whose parent is pid, with their state.
func childrenOf(pid int) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so after the last ')'.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out[p] = f[0]
		}
	}
	return out
}

// The pause is PID 1 of a new PID namespace pinned at <dir>/ns/pid, with
// nothing of root left; containers started in that namespace see it and
// each other, signal each other, and are not PID 1; it ignores the
// signals a process of the pod may send it but SIGTERM, reaps orphans, and
// its death kills the pod's processes, after which nothing can start in
// the namespace.
func TestPauseSharesPIDNamespace(t *testing.T) {
	requireBerthInit(t)
	dir := t.TempDir()
	pause := startTestPause(t, dir)
	pin := filepath.Join(dir, pidNSPin)

	var fs unix.Statfs_t
	must(t, unix.Statfs(pin, &fs))
	if fs.Type != unix.NSFS_MAGIC {
		t.Fatalf("%s is not a pinned namespace (fs type %#x)", pin, fs.Type)
	}
	var a, b unix.Stat_t
	must(t, unix.Stat(pin, &a))
	must(t, unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", pause), &b))
	if a.Ino != b.Ino || a.Dev != b.Dev {
		t.Errorf("the pin is not the pause's PID namespace")
	}
	// Privileges are dropped after the pin, no_new_privs after the uid.
	// Not dumpable is no sign that the drop is over: the kernel clears
	// dumpable itself (to fs.suid_dumpable, 0) when setresuid changes the
	// euid, before no_new_privs is set; CI once read NoNewPrivs 0 in that
	// window. Not dumpable: the files of /proc/<pid> (not the directory)
	// belong to root.
	waitStatus(t, pause, "Uid", "65535\t65535\t65535\t65535")
	waitStatus(t, pause, "NoNewPrivs", "1")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pst unix.Stat_t
		must(t, unix.Stat(fmt.Sprintf("/proc/%d/environ", pause), &pst))
		if pst.Uid == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/proc/%d/environ is owned by uid %d: the pause is dumpable", pause, pst.Uid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := procStatus(t, pause)
	for field, want := range map[string]string{
		"NSpid": fmt.Sprintf("%d\t1", pause), "Gid": "65535\t65535\t65535\t65535", "Groups": "",
		"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1",
	} {
		if st[field] != want {
			t.Errorf("pause %s = %q, want %q", field, st[field], want)
		}
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pause)); string(comm) != "pause\n" {
		t.Errorf("pause comm = %q", comm)
	}

	// A second pause for the same pod is refused: its namespace exists.
	if out, err := runPauseCmd(t, dir); err == nil || !strings.Contains(out, "pinned") {
		t.Errorf("second berth-init pause: %v\n%s", err, out)
	}

	shared := func(b *testBundle) {
		b.spec.Linux.Namespaces[0] = specs.LinuxNamespace{Type: specs.PIDNamespace, Path: pin}
	}
	sleeper := newBundle(t, "sleep", "1234")
	shared(sleeper)
	spid, log, err := sleeper.start(t)
	if err != nil {
		t.Fatalf("berth-init start in the shared namespace: %v\n%s", err, log)
	}
	waitExec(t, spid, "sleep\x001234\x00")
	nspid := strings.Fields(procStatus(t, spid)["NSpid"])
	if len(nspid) != 2 || nspid[1] == "1" {
		t.Fatalf("sleeper NSpid %v, want two levels and not PID 1", nspid)
	}

	// Another container: sees the pause as PID 1 and the sleeper, is not
	// PID 1 itself, cannot end the pause with the signals the kernel
	// drops for an init without a handler, signals the sleeper, and leaves
	// an orphan for the pause to reap.
	viewer := newBundle(t, "sh", "-c", `echo self=$$
echo PS-BEGIN; ps -o pid,comm; echo PS-END
echo pid1=$(cat /proc/1/comm)
kill -QUIT 1; kill -HUP 1; kill -USR1 1; kill -PIPE 1
( exec sleep 2 & )
kill -TERM `+nspid[1]+`; echo killed=$?
echo DONE`)
	shared(viewer)
	res := runWorkload(t, viewer)
	if res["self"] == "1" || res["self"] == "" {
		t.Errorf("the workload is PID %q of the shared namespace, want not 1", res["self"])
	}
	if res["pid1"] != "pause" {
		t.Errorf("PID 1 in the shared namespace is %q, want the pause", res["pid1"])
	}
	for _, want := range []string{"1:pause", nspid[1] + ":sleep"} {
		if !strings.Contains(" "+res["ps"]+" ", " "+want+" ") {
			t.Errorf("ps in the shared namespace = %q, lacks %s", res["ps"], want)
		}
	}
	if res["killed"] != "0" {
		t.Errorf("kill of the other container's process: %q", res["killed"])
	}
	if ws, ok := reap(t, spid, 20*time.Second); !ok || !ws.Signaled() || ws.Signal() != unix.SIGTERM {
		t.Errorf("sleeper ended with %v (reaped %v), want SIGTERM from the other container", ws, ok)
	}
	// The orphan is the pause's child until it exits, then reaped: no zombie.
	deadline = time.Now().Add(30 * time.Second)
	seen := false
	for {
		kids := childrenOf(pause)
		if len(kids) > 0 {
			seen = true
		}
		if seen && len(kids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("children of the pause: %v (orphan seen: %v); a zombie is not reaped", kids, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pause)); err != nil {
		t.Fatalf("the pause died of the pod's signals: %v", err)
	}

	// The pause ends on SIGTERM, exit 0, and takes the pod with it.
	victim := newBundle(t, "sleep", "4321")
	shared(victim)
	vpid, log, err := victim.start(t)
	if err != nil {
		t.Fatalf("berth-init start: %v\n%s", err, log)
	}
	waitExec(t, vpid, "sleep\x004321\x00")
	must(t, unix.Kill(pause, unix.SIGTERM))
	// The container first: an exiting init waits in the kernel until
	// every process of its namespace has been reaped, and the container's
	// parent is outside it (us, as systemd would be).
	if ws, ok := reap(t, vpid, 20*time.Second); !ok || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Errorf("container of a dead pause ended with %v (reaped %v), want SIGKILL", ws, ok)
	}
	if ws, ok := reap(t, pause, 20*time.Second); !ok || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("pause ended with %v (reaped %v), want exit 0", ws, ok)
	}
	// Nothing starts in a namespace whose init is gone.
	late := newBundle(t, "sleep", "1")
	shared(late)
	if _, log, err := late.start(t); err == nil {
		t.Errorf("berth-init start in the dead pause's namespace succeeded:\n%s", log)
	}
}

// A pod without the pause keeps a PID namespace per container: the
// workload is PID 1 of its own.
func TestPauseNotUsedWithoutSharing(t *testing.T) {
	requireBerthInit(t)
	b := newBundle(t, "sh", "-c", "echo self=$$; echo DONE")
	res := runWorkload(t, b)
	if res["self"] != "1" {
		t.Errorf("workload of its own PID namespace is PID %q, want 1", res["self"])
	}
}

func TestPauseUsage(t *testing.T) {
	for _, args := range [][]string{{"pause"}, {"pause", "a", "b"}} {
		if code := Main(args); code != 2 {
			t.Errorf("Main(%q) = %d, want 2", args, code)
		}
	}
}

// TestExecSharedPIDNamespace runs a pause and a container bound to it as
// unitgen configures them, under a real systemd (a disposable node), and
// execs into the container as kubectl exec does: the command is in the
// pod's PID namespace (the pause is PID 1 in its /proc, the workload is
// there, the command is not PID 1). Stopping the pause stops the
// container first (After=, BindsTo=).
func TestExecSharedPIDNamespace(t *testing.T) {
	bin := requireBerthInit(t)
	const inNode, podRun = "/srv/exec", "/srv/podrun"
	b := newBundle(t, "sleep", "3600")
	b.spec.Linux.Namespaces[0] = specs.LinuxNamespace{Type: specs.PIDNamespace, Path: podRun + "/" + pidNSPin}
	b.relocate(inNode)
	b.write(t)
	runDir := t.TempDir()
	n := nodetest.New(t, node.Options{Name: "pidns", BinDir: filepath.Dir(bin), Binds: []node.Bind{
		{Source: b.dir, Target: inNode}, {Source: runDir, Target: podRun}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	initBin := filepath.Join(node.BinMount, "berth-init")
	const pauseUnit, unit = "berth-exec_web_POD.service", "berth-exec_web_app.service"
	if out, err := n.Run(ctx, "systemd-run", "--unit="+pauseUnit, "-p", "Type=forking", "-p", "PIDFile="+podRun+"/"+pausePIDFile,
		"-p", "NoNewPrivileges=yes", "-p", "CapabilityBoundingSet=CAP_SYS_ADMIN CAP_SETUID CAP_SETGID",
		"--", initBin, "pause", podRun); err != nil {
		t.Fatalf("systemd-run the pause: %v\n%s", err, out)
	}
	if out, err := n.Run(ctx, "systemd-run", "--unit="+unit, "-p", "Type=forking", "-p", "PIDFile="+inNode+"/pid",
		"-p", "KillMode=mixed", "-p", "Delegate=yes", "-p", "After="+pauseUnit, "-p", "BindsTo="+pauseUnit,
		"--", initBin, "start", inNode); err != nil {
		t.Fatalf("systemd-run the container: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = n.Run(context.Background(), "systemctl", "kill", "-s", "KILL", unit, pauseUnit) })
	mainPID := strings.TrimSpace(run(t, ctx, n, "systemctl", "show", "-P", "MainPID", unit))
	out, code, err := execIn(ctx, n, initBin, inNode, unit, mainPID, false, "sh", "-c", "echo self=$$; echo pid1=$(cat /proc/1/comm); ps -o pid,args")
	if err != nil || code != 0 {
		t.Fatalf("exec: %v (exit %d)\n%s", err, code, out)
	}
	if !strings.Contains(out, "pid1=pause\n") || strings.Contains(out, "self=1\n") || !strings.Contains(out, "sleep 3600") {
		t.Errorf("exec in a container of a shared PID namespace sees:\n%s", out)
	}
	run(t, ctx, n, "systemctl", "stop", pauseUnit)
	if s := strings.TrimSpace(run(t, ctx, n, "systemctl", "show", "-P", "ActiveState", unit)); s != "inactive" && s != "failed" {
		t.Errorf("container unit %s after its pause stopped, want stopped (BindsTo=)", s)
	}
}
