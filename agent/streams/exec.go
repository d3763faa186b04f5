package streams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	ttyFlag    = "--tty"
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
	ours, theirs := os.NewFile(uintptr(fds[0]), "exec-control"), os.NewFile(uintptr(fds[1]), "exec-control")
	defer ours.Close()

	args := []string{"exec"}
	if o.TTY {
		args = append(args, ttyFlag)
	}
	args = append(args, c.bundle, c.unit, strconv.FormatUint(uint64(pid), 10), "--")
	args = append(args, cmd...)
	// Not CommandContext's kill: berth-init ends the command when it gets
	// SIGTERM, and exits with its status.
	bi := s.cfg.Command(context.WithoutCancel(ctx), s.cfg.Init, args...)
	bi.ExtraFiles = []*os.File{theirs} // fd 3
	var initErr bytes.Buffer           // berth-init's own words, on a terminal session
	var stdin *os.File
	if o.TTY {
		bi.Stderr = &limitWriter{w: &initErr, n: 4096}
	} else {
		if o.Stdin != nil {
			r, w, err := os.Pipe()
			if err != nil {
				theirs.Close()
				return fmt.Errorf("stdin pipe: %w", err)
			}
			bi.Stdin, stdin = r, w
			defer r.Close()
			defer w.Close()
		}
		bi.Stdout, bi.Stderr = o.Stdout, o.Stderr
		bi.WaitDelay = outputDrain
	}
	if err := bi.Start(); err != nil {
		theirs.Close()
		return fmt.Errorf("start berth-init exec: %w", err)
	}
	theirs.Close()
	if stdin != nil {
		bi.Stdin.(*os.File).Close()
	}
	stop := context.AfterFunc(ctx, func() { _ = bi.Process.Signal(syscall.SIGTERM) })
	defer stop()

	master, err := s.handshake(ctx, ours, c.unit)
	if err != nil {
		_ = bi.Process.Signal(syscall.SIGTERM)
		_ = bi.Wait()
		if initErr.Len() > 0 {
			err = fmt.Errorf("%w (berth-init: %s)", err, strings.TrimSpace(initErr.String()))
		}
		return err
	}

	var copying sync.WaitGroup
	if stdin != nil {
		go func() {
			_, _ = io.Copy(stdin, o.Stdin)
			stdin.Close()
		}()
	}
	if master != nil {
		defer master.Close()
		copying.Add(1)
		go func() {
			defer copying.Done()
			out := o.Stdout
			if out == nil {
				out = io.Discard
			}
			// EIO once every holder of the terminal has closed it.
			_, _ = io.Copy(out, master)
		}()
		if o.Stdin != nil {
			go func() { _, _ = io.Copy(master, o.Stdin) }()
		}
		if o.Resize != nil {
			go func() {
				for {
					select {
					case sz, ok := <-o.Resize:
						if !ok {
							return
						}
						_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
					case <-ctx.Done():
						return
					}
				}
			}()
		}
	}
	werr := bi.Wait()
	if master != nil {
		drained := make(chan struct{})
		go func() { copying.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(outputDrain):
			master.Close()
			<-drained
		}
	}
	return exitOf(bi, werr)
}

// exitOf turns berth-init's end into Exec's result: after "pid" its exit
// status is the command's.
func exitOf(bi *exec.Cmd, werr error) error {
	ps := bi.ProcessState
	if ps == nil {
		return fmt.Errorf("berth-init exec: %w", werr)
	}
	ws := ps.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		return &ExitError{Code: 128 + int(ws.Signal())}
	case ws.ExitStatus() != 0:
		return &ExitError{Code: ws.ExitStatus()}
	}
	// A WaitDelay cut the copying of output short: the command succeeded.
	if werr != nil && !errors.Is(werr, exec.ErrWaitDelay) {
		return fmt.Errorf("berth-init exec: %w", werr)
	}
	return nil
}

// handshake is berthd's side of the exec protocol: berth-init says it is
// ready, is attached to the container's unit, and reports the command
// started (with its terminal's master on a terminal session).
func (s *Service) handshake(ctx context.Context, ctl *os.File, unit string) (*os.File, error) {
	msg, _, err := recvControl(ctl)
	if err != nil {
		return nil, err
	}
	word, arg, _ := strings.Cut(msg, " ")
	if word != protoReady {
		return nil, protocolError(msg)
	}
	initPID, err := strconv.ParseUint(arg, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("berth-init exec: ready without its pid: %q", msg)
	}
	if err := s.cfg.Units.Attach(ctx, unit, uint32(initPID)); err != nil {
		return nil, fmt.Errorf("join the container's cgroup: %w", err)
	}
	if _, err := ctl.Write([]byte(protoGo)); err != nil {
		return nil, fmt.Errorf("berth-init exec: %w", err)
	}
	msg, fd, err := recvControl(ctl)
	if err != nil {
		return nil, err
	}
	if word, _, _ := strings.Cut(msg, " "); word != protoPID {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, protocolError(msg)
	}
	if fd < 0 {
		return nil, nil
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pty master: %w", err)
	}
	return os.NewFile(uintptr(fd), "pty"), nil
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

type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	q := p
	if len(q) > l.n {
		q = q[:l.n]
	}
	l.n -= len(q)
	_, _ = l.w.Write(q)
	return len(p), nil
}
