package berthinit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// The pause of a pod that shares its process namespace (unitgen pause.go
// names its unit and these files; TestPauseUnitMatches checks the two
// agree).
const (
	pausePIDFile = "pause.pid" // in the pod's run directory
	pidNSPin     = "ns/pid"    // likewise: the pinned PID namespace
	// pauseUID is what the pause runs as once its namespace is pinned:
	// the kubelet's pause image runs as 65535:65535.
	pauseUID = 65535
	// pid1Flag runs the pause itself (internal: `berth-init pause` execs
	// it as the first process of the new PID namespace).
	pid1Flag = "--pid1"
	// pauseGoFd is the pause's end of the go-ahead pipe: EOF after
	// goByte once the namespace is pinned.
	pauseGoFd = 3
)

const pauseUsage = "usage: berth-init pause <pod run dir>"

// pauseMain is `berth-init pause <dir>`, the ExecStart of a pod's
// Type=forking pause unit, and `berth-init pause --pid1`, the pause.
func pauseMain(args []string) int {
	if len(args) == 1 && args[0] == pid1Flag {
		if err := runPause(os.NewFile(pauseGoFd, "go-ahead")); err != nil {
			fmt.Fprintf(os.Stderr, "berth-init pause: %v\n", err)
			return 1
		}
		return 0
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, pauseUsage)
		return 2
	}
	if err := StartPause(args[0]); err != nil {
		fmt.Fprintf(os.Stderr, "berth-init pause %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// StartPause starts the pause of the pod whose run directory is dir: it
// clones the pause as PID 1 of a new PID namespace (no other namespace:
// the pod's network, IPC and UTS namespaces are pinned already, and the
// pause uses none of them), pins that namespace at <dir>/ns/pid with a bind
// mount of its nsfs file (as berthd pins the pod's others), lets the pause
// go on and writes its PID to <dir>/pause.pid. The caller exits right
// after: systemd (Type=forking, PIDFile=) supervises the pause as MainPID.
//
// A namespace pinned already is refused: it is the pod's, and its
// containers are in it (should its pause be gone, nothing can start in it
// again, and a second namespace would split the pod).
func StartPause(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	pin := filepath.Join(dir, pidNSPin)
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(pin, &st); err == nil && st.Type == unix.NSFS_MAGIC {
		return fmt.Errorf("the pod's PID namespace is pinned at %s already", pin)
	}
	// Not O_EXCL: a start cut short (or a failed one) may have left the
	// empty file.
	f, err := os.OpenFile(pin, os.O_CREATE|os.O_RDONLY|unix.O_NOFOLLOW, 0o444)
	if err != nil {
		return err
	}
	f.Close()

	goR, goW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("go-ahead pipe: %w", err)
	}
	defer goW.Close()
	cmd := &exec.Cmd{
		Path:   "/proc/self/exe",
		Args:   []string{"berth-init", "pause", pid1Flag},
		Stdin:  os.Stdin, // systemd's: /dev/null and the journal
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		// One thread runs Go code: the pause does nothing but wait.
		Env:        []string{"GOMAXPROCS=1"},
		ExtraFiles: []*os.File{goR}, // pauseGoFd
		Dir:        "/",             // holds nothing of the pod's directories
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWPID,
			// Out of the process group of systemd's control process.
			Setsid: true,
		},
	}
	err = cmd.Start()
	goR.Close()
	if err != nil {
		return fmt.Errorf("clone the pause (CLONE_NEWPID): %w", err)
	}
	abort := func(err error) error {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if uerr := unix.Unmount(pin, unix.MNT_DETACH); uerr != nil && !errors.Is(uerr, unix.EINVAL) {
			err = errors.Join(err, fmt.Errorf("unpin %s: %w", pin, uerr))
		}
		return err
	}
	// While the pause is still root and dumpable: once it has dropped to
	// its uid, opening its namespace would take CAP_SYS_PTRACE.
	src := fmt.Sprintf("/proc/%d/ns/pid", cmd.Process.Pid)
	if err := unix.Mount(src, pin, "", unix.MS_BIND, ""); err != nil {
		return abort(fmt.Errorf("pin the PID namespace at %s: %w", pin, err))
	}
	if _, err := goW.Write([]byte{goByte}); err != nil {
		return abort(fmt.Errorf("let the pause go on: %w", err))
	}
	goW.Close()
	if err := bndl.WriteFileAtomic(filepath.Join(dir, pausePIDFile), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return abort(err)
	}
	// No Wait: the pause outlives us and is reparented to systemd.
	_ = cmd.Process.Release()
	return nil
}

// runPause is the pause: PID 1 of the pod's PID namespace, what the
// kubelet's pause.c does. It waits for the go-ahead (its namespace is
// pinned), gives up everything it does not need (uid and gid 65535, no
// groups, no capabilities, no_new_privs, not dumpable), then reaps every
// zombie reparented to it until SIGINT or SIGTERM, when it exits 0 and the
// kernel kills every other process of the namespace.
//
// As PID 1 of a namespace it gets, from inside the namespace, only the
// signals it handles: Go's runtime would handle them all (SIGQUIT would
// end it with a stack dump, SIGHUP would end it), so every signal a
// process of the pod could send but the three it acts on is ignored, as
// pause.c leaves them at the default that the kernel drops for an init.
func runPause(goAhead *os.File) error {
	// Before anything can arrive: the pause must not die of SIGHUP or
	// SIGQUIT sent by the pod.
	signal.Ignore(unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE, unix.SIGALRM,
		unix.SIGABRT, unix.SIGTRAP, unix.SIGSYS, unix.SIGSTKFLT, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU,
		unix.SIGVTALRM, unix.SIGXCPU, unix.SIGXFSZ, unix.SIGPWR, unix.SIGWINCH, unix.SIGIO)
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)

	unix.CloseOnExec(pauseGoFd)
	b, err := io.ReadAll(goAhead)
	goAhead.Close()
	if err != nil || string(b) != string(goByte) {
		return fmt.Errorf("no go-ahead from berth-init pause (%q, %v)", b, err)
	}
	// As ps shows it in the pod (the host's procfs: /proc/self is us).
	_ = os.WriteFile("/proc/self/comm", []byte("pause"), 0)
	if err := dropPausePrivileges(); err != nil {
		return err
	}
	reapAll()
	for s := range sigs {
		if s == unix.SIGCHLD {
			reapAll()
			continue
		}
		fmt.Fprintf(os.Stderr, "berth-init pause: shutting down, got signal %v\n", s)
		return nil
	}
	return nil
}

// dropPausePrivileges: setuid(2) from root to another uid clears the
// permitted, effective and ambient capabilities; no_new_privs (systemd's
// NoNewPrivileges= has set it already) keeps them from coming back;
// without dumpable, no process of the pod without CAP_SYS_PTRACE can open
// the pause's /proc/1/exe (the host's berth-init) or its memory.
func dropPausePrivileges() error {
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	// Go applies both to every thread of the process.
	if err := syscall.Setresgid(pauseUID, pauseUID, pauseUID); err != nil {
		return fmt.Errorf("setresgid %d: %w", pauseUID, err)
	}
	if err := syscall.Setresuid(pauseUID, pauseUID, pauseUID); err != nil {
		return fmt.Errorf("setresuid %d: %w", pauseUID, err)
	}
	// Per thread in the kernel: on every thread (a cgo build cannot, and
	// then has it from systemd only, inherited by every thread).
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 && e != syscall.ENOTSUP {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	return nil
}

// reapAll collects every child that has exited: the pod's orphans,
// reparented to their namespace's init.
func reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
