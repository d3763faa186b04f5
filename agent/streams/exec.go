package streams

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"golang.org/x/sys/unix"
)

// The exec protocol of agent/berthinit/exec.go (berth-init links nothing
// of berthd, so the words are repeated here; TestExecProtocol runs the
// real berth-init against them).
const (
	protoReady = "ready"
	protoGo    = "go"
	protoPID   = "pid"
	protoErr   = "error"
	protoExit  = "exit"
	ttyFlag    = "--tty"
	// controlStdinFlag: the control socket is berth-init's stdin.
	controlStdinFlag = "--control-stdin"
)

// CommandFunc makes a command; the streams run berth-init and journalctl
// through it.
type CommandFunc func(ctx context.Context, name string, args ...string) *exec.Cmd

func defaultCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// outputDrain bounds how long the output of a command that has exited is
// still copied: a process it left in the background may hold its stdout
// (or terminal) open for ever.
const outputDrain = 2 * time.Second

// ExecOptions are an exec's streams. A nil Stdin gives the command
// /dev/null; a nil Stdout or Stderr discards what it writes there. With
// TTY, the command gets a terminal of the container (stdout and stderr both
// go to Stdout) and Resize sets its size.
type ExecOptions struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	TTY            bool
	Resize         <-chan remotecommand.TerminalSize
}

// Exec runs cmd in container of pod, confined exactly as the container's
// workload, and returns once it has exited and its output is copied: nil
// for exit status 0, an *ExitError for another. errdefs.ErrNotFound: the
// container is not running. When ctx ends, the command is killed.
//
// berth-init exec runs as a transient service of systemd, not as berthd's
// child: whatever confines berthd itself (its unit's seccomp filters and
// no_new_privs, which a child inherits and cannot shed) must not reach the
// command. Its control socket is its stdin; the command's streams are sent
// over it.
func (s *Service) Exec(ctx context.Context, pod *corev1.Pod, ctr string, cmd []string, o ExecOptions) error {
	if len(cmd) == 0 || cmd[0] == "" {
		return fmt.Errorf("an exec needs a command: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.container(pod, ctr)
	if err != nil {
		return err
	}
	pid, err := s.cfg.Units.MainPID(ctx, c.unit)
	if err != nil {
		return fmt.Errorf("container %q of pod %s/%s: %w", ctr, pod.Namespace, pod.Name, err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("exec control socket: %w", err)
	}
	// Ours non-blocking, so that Go's poller serves it and a Close ends a
	// pending read (the signal that kills the command); berth-init's
	// blocking.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return fmt.Errorf("exec control socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "exec-control"), os.NewFile(uintptr(fds[1]), "exec-control")
	defer ours.Close()

	argv := []string{s.cfg.Init, "exec", controlStdinFlag}
	if o.TTY {
		argv = append(argv, ttyFlag)
	}
	argv = append(argv, c.bundle, c.unit, strconv.FormatUint(uint64(pid), 10), "--")
	argv = append(argv, cmd...)
	err = s.cfg.Units.Run(ctx, execUnitName(), fmt.Sprintf("berth exec in %s/%s/%s", pod.Namespace, pod.Name, ctr), argv, theirs)
	theirs.Close()
	if err != nil {
		return fmt.Errorf("start berth-init exec: %w", err)
	}
	if err := s.ready(ctx, ours, c.unit); err != nil {
		return err
	}

	// The command's streams: pipes, or /dev/null for those not asked for.
	var st streamSet
	defer st.closeAll()
	if o.TTY {
		for i := 0; i < 3; i++ {
			if err := st.null(); err != nil {
				return err
			}
		}
	} else {
		for _, p := range []struct {
			wanted, out bool
		}{{o.Stdin != nil, false}, {o.Stdout != nil, true}, {o.Stderr != nil, true}} {
			if err := st.pipe(p.wanted, p.out); err != nil {
				return err
			}
		}
	}
	goMsg := protoGo
	if o.TTY && o.Resize != nil {
		// The client's first size goes with "go", so that berth-init sets
		// it on the terminal before the command starts: kubectl sends it
		// as soon as the stream is up, but only after the command could
		// already have asked (stty size, a shell's first prompt) and
		// found 0x0.
		if sz, ok := firstSize(ctx, o.Resize, firstSizeWait); ok {
			goMsg += fmt.Sprintf(" %d %d", sz.Height, sz.Width)
		}
	}
	if err := sendControl(ours, goMsg, st.childFds()); err != nil {
		return fmt.Errorf("berth-init exec: %w", err)
	}
	st.closeChildEnds()
	msg, fd, err := recvControl(ours)
	if err != nil {
		return err
	}
	if word, _, _ := strings.Cut(msg, " "); word != protoPID {
		if fd >= 0 {
			unix.Close(fd)
		}
		return protocolError(msg)
	}

	var copying sync.WaitGroup
	var readers []*os.File
	copyOut := func(r *os.File, w io.Writer) {
		readers = append(readers, r)
		copying.Add(1)
		go func() {
			defer copying.Done()
			_, _ = io.Copy(w, r) // EOF, or EIO once a terminal's every holder has closed it
		}()
	}
	if o.TTY {
		if fd < 0 {
			return errors.New("berth-init exec: no terminal for a tty exec")
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return fmt.Errorf("pty master: %w", err)
		}
		master := os.NewFile(uintptr(fd), "pty")
		defer master.Close()
		copyOut(master, orDiscard(o.Stdout))
		if o.Stdin != nil {
			go func() { _, _ = io.Copy(master, o.Stdin) }()
		}
		if o.Resize != nil {
			go resize(ctx, master, o.Resize)
		}
	} else {
		if fd >= 0 {
			unix.Close(fd)
		}
		if w := st.parent[0]; w != nil {
			go func() {
				_, _ = io.Copy(w, o.Stdin)
				w.Close()
			}()
		}
		if r := st.parent[1]; r != nil {
			copyOut(r, o.Stdout)
		}
		if r := st.parent[2]; r != nil {
			copyOut(r, o.Stderr)
		}
	}

	// The end: "exit <n>" (or "error"), EOF if berth-init died.
	ended := make(chan error, 1)
	go func() { ended <- awaitExit(ours) }()
	var result error
	select {
	case result = <-ended:
	case <-ctx.Done():
		// Closing the control socket makes berth-init kill the command.
		ours.Close()
		result = fmt.Errorf("exec in %s/%s/%s: %w", pod.Namespace, pod.Name, ctr, ctx.Err())
	}
	drained := make(chan struct{})
	go func() { copying.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(outputDrain):
		for _, r := range readers {
			r.Close()
		}
		<-drained
	}
	return result
}

// awaitExit reads berth-init's last word: "exit <n>".
func awaitExit(ctl *os.File) error {
	msg, fd, err := recvControl(ctl)
	if fd >= 0 {
		unix.Close(fd)
	}
	if err != nil {
		return err
	}
	word, arg, _ := strings.Cut(msg, " ")
	code, cerr := strconv.Atoi(arg)
	switch {
	case word != protoExit || cerr != nil:
		return protocolError(msg)
	case code != 0:
		return &ExitError{Code: code}
	}
	return nil
}

// ready reads berth-init's "ready <pid>" and attaches it to the
// container's unit.
func (s *Service) ready(ctx context.Context, ctl *os.File, unit string) error {
	msg, fd, err := recvControl(ctl)
	if fd >= 0 {
		unix.Close(fd)
	}
	if err != nil {
		return err
	}
	word, arg, _ := strings.Cut(msg, " ")
	if word != protoReady {
		return protocolError(msg)
	}
	initPID, err := strconv.ParseUint(arg, 10, 32)
	if err != nil {
		return fmt.Errorf("berth-init exec: ready without its pid: %q", msg)
	}
	if err := s.cfg.Units.Attach(ctx, unit, uint32(initPID)); err != nil {
		return fmt.Errorf("join the container's cgroup: %w", err)
	}
	return nil
}

// firstSizeWait bounds the wait for a tty client's first size: a client
// that sends none (it has no terminal of its own) gets its command after
// it, with the terminal's default 0x0.
const firstSizeWait = 2 * time.Second

// firstSize takes the client's first terminal size from sizes, waiting at
// most wait.
func firstSize(ctx context.Context, sizes <-chan remotecommand.TerminalSize, wait time.Duration) (remotecommand.TerminalSize, bool) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case sz, ok := <-sizes:
		return sz, ok
	case <-t.C:
	case <-ctx.Done():
	}
	return remotecommand.TerminalSize{}, false
}

func resize(ctx context.Context, master *os.File, sizes <-chan remotecommand.TerminalSize) {
	for {
		select {
		case sz, ok := <-sizes:
			if !ok {
				return
			}
			_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
		case <-ctx.Done():
			return
		}
	}
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// streamSet is the command's stdin, stdout and stderr: the ends berth-init
// gets (child) and ours (parent; nil for /dev/null).
type streamSet struct {
	child  []*os.File
	parent [3]*os.File
}

func (s *streamSet) null() error {
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	s.child = append(s.child, f)
	return nil
}

// pipe adds the next stream: a pipe when wanted (out: the command writes
// it), else /dev/null.
func (s *streamSet) pipe(wanted, out bool) error {
	if !wanted {
		return s.null()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("exec stream: %w", err)
	}
	i := len(s.child)
	if out {
		s.child, s.parent[i] = append(s.child, w), r
	} else {
		s.child, s.parent[i] = append(s.child, r), w
	}
	return nil
}

func (s *streamSet) childFds() []int {
	fds := make([]int, len(s.child))
	for i, f := range s.child {
		fds[i] = int(f.Fd())
	}
	return fds
}

func (s *streamSet) closeChildEnds() {
	for _, f := range s.child {
		f.Close()
	}
	s.child = nil
}

func (s *streamSet) closeAll() {
	s.closeChildEnds()
	for _, f := range s.parent {
		if f != nil {
			f.Close()
		}
	}
}

// execUnitName names an exec's transient service. Not "berth-…": those are
// containers' units, which reconcile adopts or removes.
func execUnitName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "berthd-exec-" + hex.EncodeToString(b[:]) + ".service"
}

// sendControl sends one packet with fds, through the poller.
func sendControl(ctl *os.File, msg string, fds []int) error {
	rc, err := ctl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), []byte(msg), unix.UnixRights(fds...), nil, 0)
		return !errors.Is(serr, unix.EAGAIN)
	})
	if err != nil {
		return err
	}
	return serr
}

// protocolError is berth-init's "error <text>" (nothing was run), or an
// answer out of turn.
func protocolError(msg string) error {
	if text, ok := strings.CutPrefix(msg, protoErr+" "); ok {
		return errors.New(text)
	}
	return fmt.Errorf("berth-init exec: unexpected %q", msg)
}

// recvControl reads one packet and the fd it may carry (else -1). EOF:
// berth-init ended without a word (it failed; its stderr says why).
func recvControl(ctl *os.File) (string, int, error) {
	buf := make([]byte, 8192)
	oob := make([]byte, unix.CmsgSpace(4))
	rc, err := ctl.SyscallConn()
	if err != nil {
		return "", -1, err
	}
	var n, oobn int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return "", -1, fmt.Errorf("berth-init exec control socket: %w", err)
	}
	if n == 0 && oobn == 0 {
		return "", -1, errors.New("berth-init exec ended before it ran the command")
	}
	fd := -1
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil && len(msgs) > 0 {
			if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) > 0 {
				fd = fds[0]
				for _, extra := range fds[1:] {
					unix.Close(extra)
				}
			}
		}
	}
	return string(buf[:n]), fd, nil
}
