package berthinit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
)

func TestParseExecArgs(t *testing.T) {
	a, err := parseExecArgs([]string{"--tty", "/b", "x.service", "42", "--", "sh", "-c", "exit 3"})
	if err != nil || !a.tty || a.bundle != "/b" || a.unit != "x.service" || a.pid != 42 || strings.Join(a.argv, " ") != "sh -c exit 3" {
		t.Errorf("parse: %+v, %v", a, err)
	}
	if a, err := parseExecArgs([]string{"--control-stdin", "--tty", "/b", "x.service", "42", "--", "sh"}); err != nil || a.ctlFd != 0 || !a.tty {
		t.Errorf("parse --control-stdin: %+v, %v", a, err)
	}
	if a, err := parseExecArgs([]string{"/b", "x.service", "42", "--", "sh"}); err != nil || a.ctlFd != ExecControlFd || a.tty {
		t.Errorf("parse defaults: %+v, %v", a, err)
	}
	for _, bad := range [][]string{
		{"/b", "x.service", "42", "sh"},          // no --
		{"/b", "x.service", "42", "--"},          // no command
		{"/b", "x.service", "1", "--", "sh"},     // PID 1 is nobody's container
		{"/b", "x.service", "abc", "--", "sh"},   // not a PID
		{"/b", "x.scope", "42", "--", "sh"},      // not a service
		{"/b", "../x.service", "42", "--", "sh"}, // a path
		{"/b", "x.service", "42", "--", ""},
	} {
		if _, err := parseExecArgs(bad); err == nil {
			t.Errorf("parse %q: accepted", bad)
		}
	}
}

func TestInUnit(t *testing.T) {
	v1 := "12:pids:/berth.slice/berth-shop.slice/berth-shop_web_app.service\n1:name=systemd:/berth.slice/berth-shop.slice/berth-shop_web_app.service\n0::/berth.slice/berth-shop.slice/berth-shop_web_app.service\n"
	if !inUnit([]byte(v1), "berth-shop_web_app.service") {
		t.Error("the unit's own process not found in it")
	}
	if inUnit([]byte(v1), "berth-shop_web_db.service") || inUnit([]byte("0::/system.slice/berthd.service\n"), "berth-shop_web_app.service") {
		t.Error("a process of another unit taken for the container's")
	}
}

// TestExecConfinement runs a workload under a real systemd (a disposable
// node) as unitgen configures it, plus Delegate=yes, then `berth-init exec`
// the way berthd does (the test plays berthd's part of the protocol and
// attaches berth-init with AttachProcessesToUnit), and checks that the
// exec'd shell is exactly as confined as the workload: the same capability
// sets, no_new_privs, seccomp mode and filter count, uid, gids and groups,
// cgroup and namespaces; and that what the workload cannot do (mount,
// write a read-only path, unshare a namespace, which Docker's seccomp
// profile refuses), the exec cannot either.
func TestExecConfinement(t *testing.T) {
	bin := requireBerthInit(t)
	const inNode = "/srv/exec"
	// The workload records how it is confined, then sleeps.
	report := `cat /proc/self/status | grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):'
cat /proc/self/cgroup
for n in mnt pid net ipc uts cgroup; do echo "$n $(readlink /proc/self/ns/$n)"; done
echo "umask $(umask) cwd $(pwd) host $(hostname)"
`
	b := newBundle(t, "sh", "-c", "("+report+") > /dev/shm/workload.txt; exec sleep 3600")
	b.spec.Process.User.AdditionalGids = []uint32{10, 20}
	for _, a := range []string{"readlink", "unshare", "grep", "pwd", "stty", "tty", "sed"} {
		_ = os.Symlink("busybox", filepath.Join(b.lower, "bin", a))
	}
	b.relocate(inNode)
	b.write(t)
	n := nodetest.New(t, node.Options{Name: "exec", BinDir: filepath.Dir(bin), Binds: []node.Bind{{Source: b.dir, Target: inNode}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	initBin := filepath.Join(node.BinMount, "berth-init")
	const unit = "berth-exec_web_app.service"
	if out, err := n.Run(ctx, "systemd-run", "--unit="+unit, "-p", "Type=forking", "-p", "PIDFile="+inNode+"/pid",
		"-p", "KillMode=mixed", "-p", "Delegate=yes", "--", initBin, "start", inNode); err != nil {
		t.Fatalf("systemd-run: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = n.Run(context.Background(), "systemctl", "kill", "-s", "KILL", unit) })
	mainPID := strings.TrimSpace(run(t, ctx, n, "systemctl", "show", "-P", "MainPID", unit))

	exec1 := func(tty bool, args ...string) (string, int) {
		t.Helper()
		out, code, err := execIn(ctx, n, initBin, inNode, unit, mainPID, tty, args...)
		if err != nil {
			t.Fatalf("exec %q: %v\n%s", args, err, out)
		}
		return out, code
	}
	var workload string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if out, code := exec1(false, "cat", "/dev/shm/workload.txt"); code == 0 && strings.Contains(out, "host ") {
			workload = out
			break
		}
	}
	if workload == "" {
		t.Fatal("the workload never wrote its report")
	}
	got, code := exec1(false, "sh", "-c", report)
	if code != 0 || got != workload {
		t.Errorf("the exec is confined otherwise than the workload (exit %d):\nexec:\n%s\nworkload:\n%s", code, got, workload)
	}
	for _, want := range []string{"CapEff:\t00000000a80425fb", "NoNewPrivs:\t1", "Seccomp:\t2", "Groups:\t10 20", "umask 0022 cwd / host berth-test"} {
		if !strings.Contains(got, want) {
			t.Errorf("exec report lacks %q:\n%s", want, got)
		}
	}

	t.Run("refused", func(t *testing.T) {
		for _, c := range []struct{ what, script string }{
			{"mount", "mount -t tmpfs t /mnt"},
			{"write a read-only path", "echo x > /proc/sys/kernel/hostname"},
			{"unshare a user namespace (seccomp)", "unshare -U true"},
			{"read a masked path", `test -z "$(cat /proc/kcore)" && exit 1`},
		} {
			if out, code := exec1(false, "sh", "-c", c.script); code == 0 {
				t.Errorf("%s: allowed in the exec: %s", c.what, out)
			}
		}
	})
	t.Run("exit codes", func(t *testing.T) {
		if _, code := exec1(false, "sh", "-c", "exit 3"); code != 3 {
			t.Errorf("exit 3: %d", code)
		}
		if _, code := exec1(false, "sh", "-c", "kill -9 $$"); code != 137 {
			t.Errorf("killed: %d, want 137", code)
		}
		out, code, err := execIn(ctx, n, initBin, inNode, unit, mainPID, false, "no-such-command")
		if err == nil || !strings.Contains(err.Error(), "not found") || code != 127 {
			t.Errorf("missing command: %q %d %v", out, code, err)
		}
	})
	t.Run("tty", func(t *testing.T) {
		// The shell waits for a line, which the test types once it has
		// set the terminal's size (as kubectl sends its first resize).
		out, code := exec1(true, "sh", "-c", "read x; tty; test -t 0 && test -t 1 && echo terminal; stty size")
		if code != 0 || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "terminal") || !strings.Contains(out, "33 101") {
			t.Errorf("tty: exit %d: %q", code, out)
		}
	})
	t.Run("same cgroup", func(t *testing.T) {
		// The exec'd process is in the unit's cgroup as systemd sees it.
		out := run(t, ctx, n, "systemctl", "show", "-P", "ControlGroup", unit)
		if !strings.HasSuffix(strings.TrimSpace(out), "/"+unit) {
			t.Fatalf("ControlGroup %q", out)
		}
	})
}

func run(t *testing.T, ctx context.Context, n *node.Node, args ...string) string {
	t.Helper()
	out, err := n.Run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// execIn plays berthd's part of the exec protocol with berth-init run in
// the node: it attaches berth-init to the unit through systemd (busctl) and
// returns the command's output (stdout and stderr, or the terminal's) and
// exit status. err is berth-init's "error" report, if any.
func execIn(ctx context.Context, n *node.Node, initBin, bundle, unit, pid string, tty bool, args ...string) (string, int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", 0, err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "ctl"), os.NewFile(uintptr(fds[1]), "ctl")
	defer ours.Close()
	// Where berthd would be: a child of the node's systemd sits at the
	// root of the hierarchies systemd does not realize for units (here
	// blkio, cpuset, freezer, cpuacct), as the workload does; this test's
	// process comes from outside the node, so it moves there first (test
	// set-up only: the exec joins the unit through systemd).
	a := []string{"sh", "-c", `for h in blkio cpuset freezer cpuacct; do [ -d /sys/fs/cgroup/$h ] || continue; echo $$ > /sys/fs/cgroup/$h/cgroup.procs || exit 1; done; exec "$@"`, "sh", initBin, "exec"}
	if tty {
		a = append(a, ExecTTYFlag)
	}
	a = append(append(a, bundle, unit, pid, "--"), args...)
	cmd := n.Command(ctx, a...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.ExtraFiles = []*os.File{theirs}
	if err := cmd.Start(); err != nil {
		theirs.Close()
		return "", 0, err
	}
	theirs.Close()
	fail := func(err error) (string, int, error) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return out.String(), cmd.ProcessState.ExitCode(), err
	}
	msg, _, err := recvTest(ours)
	if err != nil {
		return fail(err)
	}
	initPID, ok := strings.CutPrefix(msg, ExecReady+" ")
	if !ok {
		return fail(errors.New(msg))
	}
	if o, err := n.Run(ctx, "busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
		"org.freedesktop.systemd1.Manager", "AttachProcessesToUnit", "ssau", unit, "", "1", initPID); err != nil {
		return fail(errors.New(o + err.Error()))
	}
	if _, err := ours.Write([]byte(ExecGo)); err != nil {
		return fail(err)
	}
	msg, fd, err := recvTest(ours)
	if err != nil {
		return fail(err)
	}
	if !strings.HasPrefix(msg, ExecPID+" ") {
		werr := cmd.Wait()
		_ = werr
		return out.String(), cmd.ProcessState.ExitCode(), errors.New(msg)
	}
	if fd >= 0 {
		master := os.NewFile(uintptr(fd), "pty")
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 101}); err != nil {
			return fail(err)
		}
		if _, err := master.Write([]byte("go\n")); err != nil {
			return fail(err)
		}
		done := make(chan struct{})
		// Not into out: cmd's own copying goroutine owns that buffer.
		var term bytes.Buffer
		go func() {
			defer close(done)
			_, _ = term.ReadFrom(master) // EIO at the end
		}()
		err := cmd.Wait()
		<-done
		master.Close()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return out.String() + term.String(), 0, err
		}
		return out.String() + term.String(), cmd.ProcessState.ExitCode(), nil
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return out.String(), 0, err
	}
	return out.String(), cmd.ProcessState.ExitCode(), nil
}

func recvTest(f *os.File) (string, int, error) {
	buf := make([]byte, 8192)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return "", -1, err
	}
	if n == 0 {
		return "", -1, errors.New("berth-init exec closed the control socket")
	}
	fd := -1
	if oobn > 0 {
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		if len(msgs) > 0 {
			if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) > 0 {
				fd = fds[0]
			}
		}
	}
	_ = strconv.Itoa
	return string(buf[:n]), fd, nil
}
