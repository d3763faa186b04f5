package streams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"

	"golang.org/x/sys/unix"
)

// PortForward connects stream to port of pod, dialled on the pod's
// loopback from inside its network namespace (on 127.0.0.1, then ::1, as
// containerd's port-forward dials "localhost"), and copies both ways until
// either side closes. A host-network pod's port is dialled on the host's
// loopback. errdefs.ErrNotFound: the pod has no network namespace here (it
// is not running).
func (s *Service) PortForward(ctx context.Context, pod *corev1.Pod, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port %d: %w", port, errdefs.ErrInvalidArgument)
	}
	netns := ""
	if !pod.Spec.HostNetwork {
		netns = s.NetNSPath(pod)
	}
	conn, err := dialIn(ctx, netns, int(port))
	if err != nil {
		return fmt.Errorf("pod %s/%s port %d: %w", pod.Namespace, pod.Name, port, err)
	}
	defer conn.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(conn, stream)
		// The client is done sending: the server sees EOF, and may still answer.
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, err = io.Copy(stream, conn)
	// The server closed: nothing more to carry either way.
	stream.Close()
	conn.Close()
	wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("pod %s/%s port %d: %w", pod.Namespace, pod.Name, port, err)
	}
	return nil
}

// dialIn dials localhost:port from the network namespace pinned at netns
// ("" = ours). The socket belongs to the namespace it is made in, so only
// the dial runs on a thread moved into the pod's; the thread is never
// unlocked, and Go retires it when the goroutine ends.
func dialIn(ctx context.Context, netns string, port int) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		if netns != "" {
			runtime.LockOSThread()
			fd, err := unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				res <- result{err: fmt.Errorf("the pod's network namespace: %w", notFound(err))}
				return
			}
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
			if err != nil {
				res <- result{err: fmt.Errorf("enter the pod's network namespace %s: %w", netns, err)}
				return
			}
		}
		var d net.Dialer
		var errs []error
		for _, host := range []string{"127.0.0.1", "::1"} {
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err == nil {
				res <- result{c: c}
				return
			}
			errs = append(errs, err)
		}
		res <- result{err: errors.Join(errs...)}
	}()
	r := <-res
	return r.c, r.err
}

func notFound(err error) error {
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	}
	return err
}
