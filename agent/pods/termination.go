package pods

import (
	"context"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// Logs reads a container's logs (*logs.Journal).
type Logs interface {
	ContainerLogs(ctx context.Context, pod *corev1.Pod, container string, opts *corev1.PodLogOptions, w io.Writer) error
}

// The kubelet's bounds of a message taken from the logs
// (kubecontainer.MaxContainerTerminationMessageLogLines, ...LogLength).
const (
	fallbackLines = 80
	fallbackBytes = 2048
)

// messageFromLogs is terminationMessagePolicy FallbackToLogsOnError for a
// run that failed without writing a message: the last 80 lines of its
// output, of which the last 2048 bytes (the kubelet keeps them in a ring
// buffer). running tells that the unit runs again, so the run that ended
// is the previous one. Read once per ended run.
func (r *Runtime) messageFromLogs(ctx context.Context, pod *corev1.Pod, container, bundle string, exit *bndl.ExitStatus, running bool) string {
	if r.cfg.Logs == nil {
		return ""
	}
	if m, ok := r.logMessages.Load(bundle); ok && m.(logMessage).at.Equal(exit.FinishedAt) {
		return m.(logMessage).msg
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lines := int64(fallbackLines)
	var ring tailBuffer
	err := r.cfg.Logs.ContainerLogs(ctx, pod, container, &corev1.PodLogOptions{Container: container, TailLines: &lines, Previous: running}, &ring)
	if err != nil {
		r.log.Debug("termination message from logs", "pod", pod.Namespace+"/"+pod.Name, "container", container, "error", err)
		return ""
	}
	m := string(ring.b)
	r.logMessages.Store(bundle, logMessage{exit.FinishedAt, m})
	return m
}

// logMessage is the message taken from the logs for a bundle's last ended
// run (one per container: a crash loop does not grow the cache).
type logMessage struct {
	at  time.Time
	msg string
}

// tailBuffer keeps the last fallbackBytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > fallbackBytes {
		t.b = append(t.b[:0], t.b[len(t.b)-fallbackBytes:]...)
	}
	return len(p), nil
}
