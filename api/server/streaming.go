package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/agent/streams"
)

// Streams runs the streaming subresources' work on this host
// (agent/streams.Service): pods/exec, pods/attach and pods/portforward.
type Streams interface {
	Exec(ctx context.Context, pod *corev1.Pod, container string, cmd []string, o streams.ExecOptions) error
	Attach(ctx context.Context, pod *corev1.Pod, container string, out io.Writer) error
	PortForward(ctx context.Context, pod *corev1.Pod, port int32, stream io.ReadWriteCloser) error
}

// The kubelet's streaming server's timeouts (kubelet
// --streaming-connection-idle-timeout's default, and cri-streaming's
// DefaultStreamCreationTimeout).
const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
)

// streamSubresources are the pod subresources served as streams, upgraded
// to SPDY or WebSocket: discovery lists them with the verbs create and get
// (as the apiserver does), and they have no object to describe in OpenAPI.
var streamSubresources = []string{"attach", "exec", "portforward"}

func isStreamSubresource(sub string) bool { return has(streamSubresources, sub) }

// podStream serves pods/NAME/exec, attach and portforward as the apiserver
// and the kubelet do together: the apiserver's choice of the container
// (the only one, or one named that exists), the kubelet's refusal of a
// container that is not running (`container not found ("c")`, which kubectl
// shows as "unable to upgrade connection: …"), then the upgrade to SPDY or
// WebSocket and the streams, with k8s.io/cri-streaming, the kubelet's own
// streaming server. GET and POST both, as on the apiserver (kubectl tries a
// WebSocket GET first and falls back to a SPDY POST).
func (s *Server) podStream(w http.ResponseWriter, r *http.Request, k *kind, ns, name, sub string) {
	gr := schemaGR("", "pods/"+sub)
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		s.writeStatus(w, apierrors.NewMethodNotSupported(gr, strings.ToLower(r.Method)), r)
		return
	}
	pod := &corev1.Pod{}
	if err := s.store.Get(store.Resource(k.resource), ns, name, pod); err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	if s.opts.Streams == nil {
		s.writeStatus(w, apierrors.NewServiceUnavailable(fmt.Sprintf("pods/%s is not served by this berthd", sub)), r)
		return
	}
	// A hijacked connection's request context is not cancelled when the
	// client goes away (net/http stops watching it), and cri-streaming
	// hands that context to the exec, attach and port-forward: without
	// this, a command writing into a full pipe or a quiet attach would
	// outlive its client.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	w, r = hangupWriter{ResponseWriter: w, cancel: cancel}, r.WithContext(ctx)
	if sub == "portforward" {
		// The apiserver's PodPortForwardOptions say "ports"; the kubelet's
		// WebSocket options, which cri-streaming reads, "port".
		if q := r.URL.Query(); len(q["port"]) == 0 && len(q["ports"]) > 0 {
			q["port"] = q["ports"]
			r.URL.RawQuery = q.Encode()
		}
		opts, err := portforward.NewV4Options(r)
		if err != nil {
			s.writeStatus(w, apierrors.NewBadRequest(err.Error()), r)
			return
		}
		if !podRunning(pod) {
			kubeletError(w, fmt.Sprintf("pod %s/%s is not running", ns, name))
			return
		}
		portforward.ServePortForward(w, r, podForwarder{s.opts.Streams, pod}, name, string(pod.UID), opts,
			streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
		return
	}
	q := r.URL.Query()
	container, err := logContainer(pod, q.Get("container"))
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	cmd := q["command"]
	if sub == "exec" && len(cmd) == 0 {
		s.writeStatus(w, apierrors.NewBadRequest("you must specify at least one command for the container"), r)
		return
	}
	opts, err := streamOptions(q)
	if err != nil {
		s.writeStatus(w, apierrors.NewBadRequest(err.Error()), r)
		return
	}
	if !containerRunning(pod, container) {
		kubeletError(w, fmt.Sprintf("container not found (%q)", container))
		return
	}
	if sub == "exec" {
		remotecommand.ServeExec(w, r, podExecutor{s.opts.Streams, pod}, name, string(pod.UID), container, cmd, opts,
			streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
		return
	}
	remotecommand.ServeAttach(w, r, podAttacher{s.opts.Streams, pod}, name, string(pod.UID), container, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

// streamOptions reads the apiserver's PodExecOptions and
// PodAttachOptions parameters (stdin, stdout, stderr, tty; cri-streaming's
// NewOptions reads the kubelet's input, output, error, which the apiserver
// translates them into), with the kubelet's rules: tty takes stderr with it,
// and at least one stream is needed.
func streamOptions(q url.Values) (*remotecommand.Options, error) {
	flag := func(key string) (bool, error) {
		v, ok := q[key]
		if !ok || len(v) == 0 {
			return false, nil
		}
		var b bool
		if err := runtime.Convert_Slice_string_To_bool(&v, &b, nil); err != nil {
			return false, fmt.Errorf("%s: %w", key, err)
		}
		return b, nil
	}
	o := &remotecommand.Options{}
	for key, dst := range map[string]*bool{"stdin": &o.Stdin, "stdout": &o.Stdout, "stderr": &o.Stderr, "tty": &o.TTY} {
		b, err := flag(key)
		if err != nil {
			return nil, err
		}
		*dst = b
	}
	if o.TTY {
		o.Stderr = false
	}
	if !o.Stdin && !o.Stdout && !o.Stderr {
		return nil, errors.New("you must specify at least 1 of stdin, stdout, stderr")
	}
	return o, nil
}

// kubeletError answers as the kubelet's streaming server does when it
// cannot start a stream (streaming.WriteError for an error without a gRPC
// status: 500, the text as the body); the apiserver passes it on as is.
func kubeletError(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = io.WriteString(w, msg)
}

// containerRunning: the kubelet finds a container to exec in or attach to
// among the pod's running containers only.
func containerRunning(pod *corev1.Pod, container string) bool {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			if cs.Name == container {
				return cs.State.Running != nil
			}
		}
	}
	return false
}

// podRunning: a pod whose sandbox (for berth, its network namespace) is
// there; the kubelet forwards to any pod it runs.
func podRunning(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodRunning || pod.Status.Phase == corev1.PodPending && len(pod.Status.ContainerStatuses) > 0
}

// podExecutor is cri-streaming's Executor for one pod.
type podExecutor struct {
	st  Streams
	pod *corev1.Pod
}

func (e podExecutor) ExecInContainer(ctx context.Context, _, _, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	o := streams.ExecOptions{TTY: tty, Resize: resize}
	if in != nil {
		o.Stdin = in
	}
	if out != nil {
		o.Stdout = out
	}
	if errw != nil {
		o.Stderr = errw
	}
	err := e.st.Exec(ctx, e.pod, container, cmd, o)
	// cri-streaming asserts the type (not errors.As) to send the exit code.
	if ee := (*streams.ExitError)(nil); errors.As(err, &ee) {
		return ee
	}
	return err
}

// podAttacher is cri-streaming's Attacher for one pod: output only, berth
// containers have no stdin.
type podAttacher struct {
	st  Streams
	pod *corev1.Pod
}

func (a podAttacher) AttachContainer(ctx context.Context, _, _, container string, _ io.Reader, out, errw io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize) error {
	var w io.Writer = io.Discard
	switch {
	case out != nil:
		w = out
	case errw != nil:
		w = errw
	}
	return a.st.Attach(ctx, a.pod, container, w)
}

// podForwarder is cri-streaming's PortForwarder for one pod.
type podForwarder struct {
	st  Streams
	pod *corev1.Pod
}

func (f podForwarder) PortForward(ctx context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	return f.st.PortForward(ctx, f.pod, port, stream)
}

// hangupWriter hands out, on Hijack, a connection that cancels the
// stream's context once the client is gone: a read that fails (EOF, reset)
// or a close.
type hangupWriter struct {
	http.ResponseWriter
	cancel context.CancelFunc
}

func (h hangupWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("connection cannot be hijacked")
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	hc := &hangupConn{Conn: conn, cancel: h.cancel}
	// What the server had read ahead stays first in line.
	ahead, _ := rw.Reader.Peek(rw.Reader.Buffered())
	r := io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), hc)
	return hc, bufio.NewReadWriter(bufio.NewReader(r), bufio.NewWriter(hc)), nil
}

func (h hangupWriter) Flush() {
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type hangupConn struct {
	net.Conn
	cancel context.CancelFunc
}

func (c *hangupConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.cancel()
	}
	return n, err
}

func (c *hangupConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}
