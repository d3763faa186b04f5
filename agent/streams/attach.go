package streams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/unitgen"
)

// journalFlush is how long attach keeps reading after the workload exited:
// journald takes in a stream's last lines asynchronously.
const journalFlush = 500 * time.Millisecond

// Attach copies what container of pod writes (stdout and stderr, as the
// journal keeps them, in one stream) to out from now on, until the
// workload exits or ctx ends. berth containers have no stdin (berth refuses
// them), so there is nothing to attach input to. errdefs.ErrNotFound: the
// container is not running.
func (s *Service) Attach(ctx context.Context, pod *corev1.Pod, ctr string, out io.Writer) error {
	c, err := s.container(pod, ctr)
	if err != nil {
		return err
	}
	pid, err := s.cfg.Units.MainPID(ctx, c.unit)
	if err != nil {
		return fmt.Errorf("container %q of pod %s/%s: %w", ctr, pod.Namespace, pod.Name, err)
	}
	// Opened before journalctl starts: a workload that exits meanwhile
	// still ends the attach (the pidfd stays readable).
	pidfd, pidErr := unix.PidfdOpen(int(pid), 0)
	if pidErr != nil && !errors.Is(pidErr, unix.ESRCH) {
		return fmt.Errorf("watch the container's process %d: %w", pid, pidErr)
	}
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args := []string{"--follow", "--lines=0", "--output=cat", "--no-pager", "_SYSTEMD_UNIT=" + c.unit}
	if pod.UID != "" {
		args = append(args, unitgen.PodUIDField+"="+string(pod.UID))
	}
	j := s.cfg.Command(jctx, "journalctl", args...)
	if out == nil {
		out = io.Discard
	}
	j.Stdout = out
	j.WaitDelay = time.Second
	if err := j.Start(); err != nil {
		return fmt.Errorf("journalctl: %w", err)
	}
	exited := make(chan struct{})
	if pidErr == nil {
		go func() {
			defer close(exited)
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			for jctx.Err() == nil {
				// A bounded wait, so that the goroutine notices jctx.
				n, err := unix.Poll(fds, 1000)
				if n > 0 || (err != nil && !errors.Is(err, unix.EINTR)) {
					return
				}
			}
		}()
	} else {
		close(exited)
	}
	go func() {
		select {
		case <-exited:
			if ctx.Err() == nil {
				time.Sleep(journalFlush)
			}
		case <-jctx.Done():
		}
		cancel()
	}()
	err = j.Wait()
	if jctx.Err() != nil {
		return nil // the workload exited, or the client left
	}
	return fmt.Errorf("journalctl ended on its own: %w", err)
}
