package berthinit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/agent/seccomp/filter"
)

// The exec protocol between berthd (agent/streams) and `berth-init exec`,
// over a SOCK_SEQPACKET socket at fd 3 (ExecControlFd): one message per
// packet, a word and its argument.
//
//	berth-init → berthd  "ready <pid>"    the container is found and checked;
//	                                      attach me (PID pid, in systemd's PID
//	                                      namespace) to its unit now
//	berthd → berth-init  "go [<rows> <cols>]"
//	                                      attached: go on (anything else, or
//	                                      EOF, ends berth-init with 125); the
//	                                      packet may carry three fds
//	                                      (SCM_RIGHTS), the command's stdin,
//	                                      stdout and stderr; with --tty, the
//	                                      terminal's size before the command
//	                                      starts (the client's first resize)

//	berth-init → berthd  "pid <n>"        the command runs as host PID n; with
//	                                      --tty the packet carries the pty's
//	                                      master (SCM_RIGHTS)
//	berth-init → berthd  "error <text>"   nothing was run (exit status 125,
//	                                      or 126/127 for a command that cannot
//	                                      be run or is not found)
//	berth-init → berthd  "exit <n>"       the command ended with status n: its
//	                                      exit code, or 128+s when signal s
//	                                      killed it, as a shell reports it
//	berthd → berth-init  EOF              (after "pid") the client is gone:
//	                                      the command is killed
//
// berth-init's own exit status is the command's too. berthd starts it as a
// transient service of systemd (ExecControlStdinFlag: the control socket
// is its stdin) so that it inherits nothing of berthd's own confinement:
// berthd's unit's seccomp filters and no_new_privs would otherwise reach
// every exec'd command.
const (
	ExecControlFd = 3
	ExecReady     = "ready"
	ExecGo        = "go"
	ExecPID       = "pid"
	ExecErr       = "error"
	ExecExit      = "exit"
	// ExecControlStdinFlag: the control socket is fd 0, not fd 3.
	ExecControlStdinFlag = "--control-stdin"
	// ExecTTYFlag runs the command on a new terminal of the container's
	// devpts.
	ExecTTYFlag = "--tty"
	// ExecFailed is berth-init's own exit status when it ran nothing.
	ExecFailed = 125
)

const execUsage = "usage: berth-init exec [--tty] [--control-stdin] <bundle> <unit> <pid> -- <command> [<arg>...]"

// execArgs is the command line of `berth-init exec`.
type execArgs struct {
	tty    bool
	size   *unix.Winsize // the terminal's first size (from "go"); nil: none
	ctlFd  int
	bundle string
	unit   string
	pid    int
	argv   []string
	// stdio are the command's stdin, stdout and stderr; nil: berth-init's
	// own (exec: those berthd passed). A hook captures the output.
	stdio []*os.File
}

func parseExecArgs(args []string) (*execArgs, error) {
	a := &execArgs{ctlFd: ExecControlFd}
	for len(args) > 0 && (args[0] == ExecTTYFlag || args[0] == ExecControlStdinFlag) {
		if args[0] == ExecTTYFlag {
			a.tty = true
		} else {
			a.ctlFd = 0
		}
		args = args[1:]
	}
	if len(args) < 5 || args[3] != "--" {
		return nil, errors.New(execUsage)
	}
	a.bundle, a.unit = args[0], args[1]
	pid, err := strconv.Atoi(args[2])
	if err != nil || pid < 2 {
		return nil, fmt.Errorf("pid %q: not a process of a container", args[2])
	}
	a.pid, a.argv = pid, args[4:]
	if a.argv[0] == "" {
		return nil, errors.New("the command is empty")
	}
	if !strings.HasSuffix(a.unit, ".service") || strings.ContainsAny(a.unit, "/\n") {
		return nil, fmt.Errorf("unit %q: not a service name", a.unit)
	}
	return a, nil
}

// execMain is `berth-init exec`: it runs a command in a running container
// with the workload's confinement (execInContainer) and exits with the
// command's status.
func execMain(args []string) int {
	a, err := parseExecArgs(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-init exec:", err)
		return 2
	}
	// Above the standard fds, which the command's streams may take.
	fd, err := unix.FcntlInt(uintptr(a.ctlFd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-init exec: control socket:", err)
		return ExecFailed
	}
	if a.ctlFd < 3 {
		null, err := unix.Open("/dev/null", unix.O_RDWR, 0)
		if err == nil {
			_ = unix.Dup3(null, a.ctlFd, 0)
			unix.Close(null)
		}
	} else {
		// Inherited without close-on-exec: it must not reach the command.
		unix.Close(a.ctlFd)
	}
	ctl := &control{fd: fd}
	code, err := execInContainer(a, ctl)
	if err != nil {
		if ee := (*execError)(nil); errors.As(err, &ee) {
			code = ee.code
		} else {
			code = ExecFailed
		}
		if serr := ctl.send(ExecErr+" "+err.Error(), -1); serr != nil {
			fmt.Fprintln(os.Stderr, "berth-init exec:", err)
		}
		return code
	}
	_ = ctl.send(ExecExit+" "+strconv.Itoa(code), -1)
	return code
}

// control is berth-init's end of the exec protocol.
type control struct{ fd int }

func (c *control) send(msg string, fd int) error {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	return unix.Sendmsg(c.fd, []byte(msg), oob, nil, 0)
}

// recv reads a packet and the fds it carries.
func (c *control) recv() (string, []int, error) {
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(3*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		var fds []int
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if f, err := unix.ParseUnixRights(&m); err == nil {
					fds = append(fds, f...)
				}
			}
		}
		return string(buf[:n]), fds, nil
	}
}

// nsOrder is the order namespaces are entered in: the mount namespace last,
// since /proc/<pid>/ns paths are resolved before it and the container's
// root is ours after it (all are opened first anyway).
var nsOrder = []struct {
	name string
	flag int
}{
	{"cgroup", unix.CLONE_NEWCGROUP},
	{"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS},
	{"net", unix.CLONE_NEWNET},
	{"pid", unix.CLONE_NEWPID},
	{"mnt", unix.CLONE_NEWNS},
}

// target is the container's workload as found through /proc/<pid>.
type target struct {
	dir int            // O_PATH fd of /proc/<pid>: names this process, not a reused PID
	ns  map[string]int // namespace fds to join, by /proc/<pid>/ns name
}

func (t *target) close() {
	for _, fd := range t.ns {
		unix.Close(fd)
	}
	unix.Close(t.dir)
}

// findTarget opens the workload's /proc directory and its namespaces and
// checks that the process is in unit's cgroup and in a PID and mount
// namespace other than ours: a PID that was reused after the workload died
// is refused rather than entered.
func findTarget(pid int, unit string) (*target, error) {
	dir, err := unix.Open("/proc/"+strconv.Itoa(pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the container's process %d: %w", pid, err)
	}
	t := &target{dir: dir, ns: map[string]int{}}
	cg, err := readAt(dir, "cgroup")
	if err != nil {
		t.close()
		return nil, fmt.Errorf("the container's process %d: %w", pid, err)
	}
	if !inUnit(cg, unit) {
		t.close()
		return nil, fmt.Errorf("process %d is not in unit %s (the container restarted?)", pid, unit)
	}
	for _, ns := range nsOrder {
		fd, err := unix.Openat(dir, "ns/"+ns.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && ns.name == "cgroup" {
			continue // a kernel without cgroup namespaces
		}
		if err != nil {
			t.close()
			return nil, fmt.Errorf("namespace %s of process %d: %w", ns.name, pid, err)
		}
		same, err := sameNS(fd, ns.name)
		if err != nil {
			unix.Close(fd)
			t.close()
			return nil, err
		}
		if same {
			if ns.name == "pid" || ns.name == "mnt" {
				unix.Close(fd)
				t.close()
				return nil, fmt.Errorf("process %d shares berth-init's %s namespace: not a container's", pid, ns.name)
			}
			unix.Close(fd) // the host's (hostNetwork, no cgroup namespace): nothing to enter
			continue
		}
		t.ns[ns.name] = fd
	}
	// Still the same process: the namespaces opened are its own.
	if _, err := readAt(dir, "stat"); err != nil {
		t.close()
		return nil, fmt.Errorf("the container's process %d ended: %w", pid, err)
	}
	return t, nil
}

func readAt(dir int, name string) ([]byte, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}

// inUnit reports whether /proc/<pid>/cgroup content shows the process in
// unit's cgroup (any hierarchy: the unit's directory is the last element).
func inUnit(cgroup []byte, unit string) bool {
	sc := bufio.NewScanner(bytes.NewReader(cgroup))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && filepath.Base(parts[2]) == unit {
			return true
		}
	}
	return false
}

// sameNS reports whether fd is the namespace berth-init is in already.
func sameNS(fd int, name string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		return false, fmt.Errorf("stat namespace %s: %w", name, err)
	}
	if err := unix.Stat("/proc/self/ns/"+name, &b); err != nil {
		return false, fmt.Errorf("stat own namespace %s: %w", name, err)
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// execInContainer runs a.argv in the container whose workload is a.pid,
// confined exactly as the workload: its namespaces, its unit's cgroup (berthd
// attaches this process through systemd before the command is forked, so the
// command is born there), its resource limits and OOM score, and from the
// bundle's spec the user, groups, capabilities, no_new_privs, the compiled
// seccomp filter, the environment and working directory. It returns the
// command's exit status.
//
// The confinement is put on one locked thread, which then forks the command:
// credentials, capabilities, no_new_privs, seccomp, namespaces and the
// fs_struct (root, cwd, umask) are per thread in Linux and a child inherits
// the forking thread's. The command is therefore never a copy of berth-init
// in the container's PID namespace (a process of the container could open
// its /proc/<pid>/exe, the host's berth-init, CVE-2019-5736): until its
// execve it shares this process's memory, which is not dumpable.
func execInContainer(a *execArgs, ctl *control) (int, error) {
	x, err := prepareExec(a.bundle, a.pid, a.unit)
	if err != nil {
		return 0, err
	}
	defer x.close()

	// Our PID as systemd sees it: we run in its PID namespace.
	// A probe's timeout or a client gone (berthd's SIGTERM): the command
	// goes too, also when it comes before the fork.
	var child atomic.Pointer[os.Process]
	var stopped atomic.Bool
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	go func() {
		<-sigs
		stopped.Store(true)
		if p := child.Load(); p != nil {
			_ = p.Signal(unix.SIGKILL)
		}
	}()

	if err := ctl.send(ExecReady+" "+strconv.Itoa(os.Getpid()), -1); err != nil {
		return 0, fmt.Errorf("report ready: %w", err)
	}
	msg, fds, err := ctl.recv()
	word, size, _ := strings.Cut(msg, " ")
	if err == nil && size != "" {
		a.size, err = parseWinsize(size)
	}
	if err != nil || word != ExecGo || (len(fds) != 0 && len(fds) != 3) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return 0, fmt.Errorf("berthd did not attach the exec to unit %s (%q, %d fds, %v)", a.unit, msg, len(fds), err)
	}
	// The command's streams, when berthd sends them (berth-init then runs
	// under systemd, with its stdin the control socket).
	for i, fd := range fds {
		err := unix.Dup3(fd, i, 0)
		unix.Close(fd)
		if err != nil {
			return 0, fmt.Errorf("take the command's fd %d: %w", i, err)
		}
	}

	proc, master, err := x.start(a)
	if err != nil {
		return 0, err
	}
	child.Store(proc)
	if stopped.Load() {
		_ = proc.Signal(unix.SIGKILL)
	}
	// berthd closing the control socket (EOF: an empty packet) means the
	// client is gone.
	go func() {
		for {
			msg, fds, err := ctl.recv()
			for _, fd := range fds {
				unix.Close(fd)
			}
			if err != nil || msg == "" {
				_ = proc.Signal(unix.SIGKILL)
				return
			}
		}
	}()
	err = ctl.send(ExecPID+" "+strconv.Itoa(proc.Pid), master)
	if master >= 0 {
		unix.Close(master)
	}
	if err != nil {
		_ = proc.Signal(unix.SIGKILL)
		_, _ = proc.Wait()
		return 0, fmt.Errorf("report the command's pid: %w", err)
	}
	return waitCommand(proc)
}

// execTarget is a running container, found and checked, with what its
// workload is confined by: the bundle's spec, its compiled seccomp filter
// and capability sets, and the workload's namespaces. `berth-init exec`
// (berthd's control protocol) and `berth-hook` (a unit's control
// process) both run commands through it.
type execTarget struct {
	spec *specs.Spec
	scf  *filter.Filter
	caps capSets
	t    *target
}

// prepareExec finds the container whose workload is pid in unit and reads
// its confinement from bundle; this process takes the workload's resource
// limits and OOM score adjustment (per process, not per thread: taken from
// the workload as it runs, the unit's Limit*= and OOMScoreAdjust= and the
// spec's rlimits) and stops being dumpable.
func prepareExec(bundle string, pid int, unit string) (*execTarget, error) {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return nil, fmt.Errorf("bundle path: %w", err)
	}
	spec, err := LoadSpec(bundle)
	if err != nil {
		return nil, err
	}
	scf, err := LoadSeccomp(bundle, spec)
	if err != nil {
		return nil, err
	}
	last, err := lastCap()
	if err != nil {
		return nil, err
	}
	caps := parseCaps(spec.Process.Capabilities, last, func(string) {})
	t, err := findTarget(pid, unit)
	if err != nil {
		return nil, err
	}
	if err := copyLimits(t.dir, pid); err != nil {
		t.close()
		return nil, err
	}
	return &execTarget{spec: spec, scf: scf, caps: caps, t: t}, nil
}

func (x *execTarget) close() { x.t.close() }

// start forks a.argv confined as the workload (confineAndStart) on a
// thread of its own, which is never given back: it is the container's
// now, and Go retires it when the goroutine ends. With a.tty the
// terminal's master is returned, else -1.
func (x *execTarget) start(a *execArgs) (*os.Process, int, error) {
	type started struct {
		proc   *os.Process
		master int
		err    error
	}
	done := make(chan started, 1)
	go func() {
		runtime.LockOSThread()
		proc, master, err := confineAndStart(a, x.spec, x.t, x.caps, x.scf)
		done <- started{proc, master, err}
	}()
	s := <-done
	return s.proc, s.master, s.err
}

// waitCommand waits for the command and returns its status as a shell
// reports it: its exit code, or 128+s when signal s killed it.
func waitCommand(p *os.Process) (int, error) {
	ps, err := p.Wait()
	if err != nil {
		return 0, fmt.Errorf("wait for the command: %w", err)
	}
	ws := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// copyLimits gives this process the workload's resource limits and OOM
// score adjustment.
func copyLimits(dir, pid int) error {
	for res := range rlimitResources {
		var l unix.Rlimit
		if err := unix.Prlimit(pid, res, nil, &l); err != nil {
			return fmt.Errorf("read resource limit %d of process %d: %w", res, pid, err)
		}
		// syscall.Setrlimit: for RLIMIT_NOFILE it also stops Go from
		// restoring its startup limit in the child (see setRlimits).
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: l.Cur, Max: l.Max}); err != nil {
			return fmt.Errorf("set resource limit %d: %w", res, err)
		}
	}
	adj, err := readAt(dir, "oom_score_adj")
	if err != nil {
		return fmt.Errorf("oom_score_adj of process %d: %w", pid, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(adj)))
	if err != nil {
		return fmt.Errorf("oom_score_adj of process %d: %w", pid, err)
	}
	return setOOMScoreAdj(v)
}

// rlimitResources are RLIMIT_CPU (0) to RLIMIT_RTTIME (15).
const rlimitResources = unix.RLIMIT_RTTIME + 1

// confineAndStart runs on a locked thread: it enters the container's
// namespaces, takes the workload's confinement in stage-2's order (see
// Stage2) and forks the command. With a.tty the command gets a new terminal
// of the container's devpts, opened as the container's user; its master is
// returned (else -1).
func confineAndStart(a *execArgs, spec *specs.Spec, t *target, caps capSets, scf *filter.Filter) (*os.Process, int, error) {
	proc := spec.Process
	// setns(CLONE_NEWNS) refuses a thread that shares its fs_struct (root,
	// cwd, umask) with others, as Go's threads do; unsharing it gives this
	// thread its own, which the command inherits.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, -1, fmt.Errorf("unshare(CLONE_FS): %w", err)
	}
	for _, ns := range nsOrder {
		fd, ok := t.ns[ns.name]
		if !ok {
			continue
		}
		// pid: only the children of this thread are in it.
		if err := unix.Setns(fd, ns.flag); err != nil {
			return nil, -1, fmt.Errorf("join the container's %s namespace: %w", ns.name, err)
		}
	}
	if err := takeCredentials(proc, caps, scf); err != nil {
		return nil, -1, err
	}
	env := append([]string{}, proc.Env...)
	master, slave := -1, -1
	if a.tty {
		var err error
		if master, slave, err = openPTY(); err != nil {
			return nil, -1, err
		}
		if a.size != nil {
			// The client's size before the command starts: a program that
			// asks at once (stty size, a shell's first prompt) sees it, not
			// 0x0 until the first resize arrives.
			if err := unix.IoctlSetWinsize(master, unix.TIOCSWINSZ, a.size); err != nil {
				unix.Close(master)
				unix.Close(slave)
				return nil, -1, fmt.Errorf("terminal size: %w", err)
			}
		}
		if !hasEnv(env, "TERM") {
			// As `docker exec -t` does: a terminal without TERM leaves
			// most programs guessing.
			env = append(env, "TERM=xterm")
		}
	}
	fail := func(err error) (*os.Process, int, error) {
		if master >= 0 {
			unix.Close(master)
			unix.Close(slave)
		}
		return nil, -1, err
	}
	path, err := lookPath(a.argv[0], env)
	if err != nil {
		code := 126
		if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "not found") {
			code = 127
		}
		return fail(&execError{err: fmt.Errorf("exec %q: %w", a.argv[0], err), code: code})
	}
	if err := checkExec(path); err != nil {
		return fail(&execError{err: err, code: 126})
	}
	if err := loadLateSeccomp(proc, scf); err != nil {
		return fail(err)
	}
	files := []*os.File{os.Stdin, os.Stdout, os.Stderr}
	if a.stdio != nil {
		files = a.stdio
	}
	sys := &syscall.SysProcAttr{Setsid: true}
	if a.tty {
		tty := os.NewFile(uintptr(slave), "pty")
		defer tty.Close()
		files = []*os.File{tty, tty, tty}
		sys.Setctty, sys.Ctty = true, 0
	}
	p, err := os.StartProcess(path, a.argv, &os.ProcAttr{Env: env, Files: files, Sys: sys})
	if err != nil {
		code := 126
		if errors.Is(err, unix.ENOENT) {
			code = 127
		}
		if master >= 0 {
			unix.Close(master)
		}
		return nil, -1, &execError{err: fmt.Errorf("exec %s: %w", path, err), code: code}
	}
	return p, master, nil
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// openPTY opens a new terminal pair on the container's /dev/ptmx (berth-init
// links it to its own devpts, pts/ptmx), so the command's terminal is one of
// the container's /dev/pts, owned by the user opening it. The slave comes
// from TIOCGPTPEER (Linux >= 4.13), which needs no path lookup.
func openPTY() (master, slave int, err error) {
	master, err = unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("open the container's /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(master)
		return -1, -1, fmt.Errorf("unlock pty: %w", err)
	}
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		unix.Close(master)
		return -1, -1, fmt.Errorf("open the pty's slave (TIOCGPTPEER): %w", errno)
	}
	return master, int(fd), nil
}

// parseWinsize reads "<rows> <cols>" of a "go" message.
func parseWinsize(s string) (*unix.Winsize, error) {
	r, c, ok := strings.Cut(s, " ")
	rows, err1 := strconv.ParseUint(r, 10, 16)
	cols, err2 := strconv.ParseUint(c, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("terminal size %q: want <rows> <cols>", s)
	}
	return &unix.Winsize{Row: uint16(rows), Col: uint16(cols)}, nil
}
