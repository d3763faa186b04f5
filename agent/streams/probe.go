package streams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// probeOutputLimit is the kubelet's cap on an exec probe's output
// (maxProbeOutputLength in pkg/probe/exec: 10 KiB).
const probeOutputLimit = 10 * 1024

// Prober runs exec probes and hooks with the container's full confinement:
// it is agent/probe's Execer.
type Prober struct{ S *Service }

// Exec runs cmd in container of pod and returns its output (stdout then
// stderr, as they came, at most the kubelet's 10 KiB) and exit code. When it
// outlives timeout it is killed and the error matches
// context.DeadlineExceeded; any other error means it could not be run.
func (p Prober) Exec(ctx context.Context, pod *corev1.Pod, container string, cmd []string, timeout time.Duration) ([]byte, int, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	out := &capped{n: probeOutputLimit}
	err := p.S.Exec(ctx, pod, container, cmd, ExecOptions{Stdout: out, Stderr: out})
	var ee *ExitError
	switch {
	case ctx.Err() != nil:
		return out.bytes(), -1, fmt.Errorf("command %q: %w", cmd, ctx.Err())
	case errors.As(err, &ee):
		return out.bytes(), ee.Code, nil
	case err != nil:
		return out.bytes(), -1, err
	}
	return out.bytes(), 0, nil
}

// capped keeps the first n bytes written to it, from both streams.
type capped struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.n - c.b.Len(); room > 0 {
		q := p
		if len(q) > room {
			q = q[:room]
		}
		c.b.Write(q)
	}
	return len(p), nil
}

func (c *capped) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.b.Bytes())
}
