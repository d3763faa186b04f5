package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/unitgen"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/agent/events"
)

// UserAgent is what httpGet and grpc probes introduce themselves as: the
// kubelet's kube-probe/<major>.<minor>, for the Kubernetes minor berth
// implements (k8s.io/api v0.37).
const UserAgent = "kube-probe/1.37"

// Event reasons (pkg/kubelet/events).
const (
	ReasonUnhealthy    = "Unhealthy"
	ReasonProbeWarning = "ProbeWarning"
)

// maxProbeRetries is how often an errored probe is retried at once.
const maxProbeRetries = 3

// maxOutput bounds what is read of a probe's response body or command
// output (10 KiB, as the kubelet).
const maxOutput = 10 << 10

// outcome is one probe's verdict (pkg/probe's Result); its String is the
// word the kubelet's "errored and resulted in %s state" Event uses.
type outcome int8

const (
	outcomeUnknown outcome = iota
	outcomeSuccess
	outcomeWarning
	outcomeFailure
)

func (o outcome) String() string {
	switch o {
	case outcomeSuccess:
		return "success"
	case outcomeWarning:
		return "warning"
	case outcomeFailure:
		return "failure"
	}
	return "unknown"
}

// probe runs the probe, retrying an errored one, records the kubelet's
// Event, and returns the result (the kubelet's prober.probe). An error
// means the result is to be thrown away.
func (w *worker) probe(t target) (result, error) {
	var (
		o   outcome
		out string
		err error
	)
	for range maxProbeRetries {
		if o, out, err = w.runProbe(t); err == nil {
			break
		}
	}
	if w.ctx.Err() != nil {
		// Stopped while probing: nobody wants to hear of it.
		return failure, w.ctx.Err()
	}
	if err != nil {
		w.event(t, ReasonUnhealthy, fmt.Sprintf("%s probe errored and resulted in %s state: %s", w.kind, o, err))
		return failure, err
	}
	switch o {
	case outcomeSuccess:
		return success, nil
	case outcomeWarning:
		w.event(t, ReasonProbeWarning, fmt.Sprintf("%s probe warning: %s", w.kind, out))
		return success, nil
	case outcomeFailure:
		w.event(t, ReasonUnhealthy, fmt.Sprintf("%s probe failed: %s", w.kind, out))
		return failure, nil
	}
	return failure, nil
}

func (w *worker) event(t target, reason, message string) {
	w.m.log.Debug("probe", "pod", t.pod.Namespace+"/"+t.pod.Name, "container", t.spec.Name, "reason", reason, "message", message)
	if w.m.cfg.Events != nil {
		w.m.cfg.Events.Event(events.ContainerRef(t.pod, t.spec.Name), corev1.EventTypeWarning, reason, message)
	}
}

// runProbe runs the probe once (the kubelet's prober.runProbe).
func (w *worker) runProbe(t target) (outcome, string, error) {
	p := &w.spec
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	switch {
	case p.Exec != nil:
		return w.runExec(t, expandCommand(p.Exec.Command, t.spec.Env), timeout)
	case p.HTTPGet != nil:
		return w.runHTTP(t, timeout)
	case p.TCPSocket != nil:
		port, err := ResolvePort(p.TCPSocket.Port, t.spec)
		if err != nil {
			return outcomeUnknown, "", err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = t.podIP
		}
		return probeTCP(w.ctx, net.JoinHostPort(host, strconv.Itoa(port)), timeout)
	case p.GRPC != nil:
		service := ""
		if p.GRPC.Service != nil {
			service = *p.GRPC.Service
		}
		return probeGRPC(w.ctx, t.podIP, service, int(p.GRPC.Port), timeout)
	}
	// The kubelet's message, classed without adding to it.
	return outcomeUnknown, "", errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("missing probe handler for %s_%s(%s):%s",
		t.pod.Name, t.pod.Namespace, t.pod.UID, t.spec.Name))
}

// execGrace is what the runtime is given beyond the probe's timeout to end
// the command (the kubelet's CRI client adds its 2-minute call timeout).
const execGrace = 2 * time.Minute

// runExec runs an exec probe (the kubelet's exec prober over CRI ExecSync).
func (w *worker) runExec(t target, cmd []string, timeout time.Duration) (outcome, string, error) {
	if w.m.cfg.Exec == nil {
		return outcomeUnknown, "", fmt.Errorf("exec probes: %w", errdefs.ErrNotImplemented)
	}
	ctx, cancel := context.WithTimeout(w.ctx, timeout+execGrace)
	defer cancel()
	out, code, err := w.m.cfg.Exec.Exec(ctx, t.pod, t.spec.Name, cmd, timeout)
	if len(out) > maxOutput {
		out = out[:maxOutput]
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && w.ctx.Err() == nil {
			return outcomeFailure, fmt.Sprintf("command %q timed out", strings.Join(cmd, " ")), nil
		}
		return outcomeUnknown, "", err
	}
	if code != 0 {
		return outcomeFailure, string(out), nil
	}
	return outcomeSuccess, string(out), nil
}

// ResolvePort is the kubelet's probe.ResolveContainerPort (probes and
// httpGet lifecycle hooks): a number, or the name of one of the
// container's ports, or a number written as a string; 1–65535.
func ResolvePort(param intstr.IntOrString, c *corev1.Container) (int, error) {
	port := -1
	switch param.Type {
	case intstr.Int:
		port = param.IntValue()
	case intstr.String:
		found := false
		for _, p := range c.Ports {
			if p.Name == param.StrVal {
				port, found = int(p.ContainerPort), true
				break
			}
		}
		if !found {
			n, err := strconv.Atoi(param.StrVal)
			if err != nil {
				return n, err
			}
			port = n
		}
	default:
		return port, fmt.Errorf("intOrString had no kind: %+v", param)
	}
	if port > 0 && port < 65536 {
		return port, nil
	}
	return port, fmt.Errorf("invalid port number: %v", port)
}

// dialer is the kubelet's ProbeDialer: SO_LINGER of 1 s, so that the
// probes' many short connections do not pile up in TIME-WAIT
// (kubernetes/kubernetes#89898).
func dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, Control: lingerControl}
}

func lingerControl(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 1})
	})
}

// probeTCP succeeds when a connection to addr opens (the kubelet's
// DoTCPProbe).
func probeTCP(ctx context.Context, addr string, timeout time.Duration) (outcome, string, error) {
	conn, err := dialer(timeout).DialContext(ctx, "tcp", addr)
	if err != nil {
		return outcomeFailure, err.Error(), nil
	}
	_ = conn.Close()
	return outcomeSuccess, "", nil
}

// probeGRPC calls grpc.health.v1.Health/Check (the kubelet's grpc prober,
// with its messages). A blocking dial is what the kubelet does: a refused
// connection is retried until the timeout, and reported as a timeout.
func probeGRPC(parent context.Context, host, service string, port int, timeout time.Duration) (outcome, string, error) {
	opts := []grpc.DialOption{
		grpc.WithUserAgent(UserAgent),
		grpc.WithBlock(), //nolint:staticcheck // the kubelet's dial semantics and messages
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer(0).DialContext(ctx, "tcp", addr)
		}),
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	conn, err := grpc.DialContext(ctx, addr, opts...) //nolint:staticcheck // as above
	if err != nil {
		if err == context.DeadlineExceeded {
			return outcomeFailure, fmt.Sprintf("timeout: failed to connect service %q within %v: %+v", addr, timeout, err), nil
		}
		return outcomeFailure, fmt.Sprintf("error: failed to connect service at %q: %+v", addr, err), nil
	}
	defer func() { _ = conn.Close() }()
	resp, err := grpchealth.NewHealthClient(conn).Check(metadata.NewOutgoingContext(ctx, make(metadata.MD)),
		&grpchealth.HealthCheckRequest{Service: service})
	if err != nil {
		if stat, ok := status.FromError(err); ok {
			switch stat.Code() {
			case codes.Unimplemented:
				return outcomeFailure, fmt.Sprintf("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): %s", stat.Message()), nil
			case codes.DeadlineExceeded:
				return outcomeFailure, fmt.Sprintf("timeout: health rpc did not complete within %v", timeout), nil
			}
		}
		return outcomeFailure, fmt.Sprintf("error: health rpc probe failed: %+v", err), nil
	}
	if resp.GetStatus() != grpchealth.HealthCheckResponse_SERVING {
		return outcomeFailure, fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus().String()), nil
	}
	return outcomeSuccess, "service healthy", nil
}

// expandCommand expands $(VAR) in an exec probe's command with the
// container's env values (the kubelet's ExpandContainerCommandOnlyStatic:
// valueFrom variables expand to ""; unknown references stay as written;
// $$ is a literal $).
func expandCommand(cmd []string, env []corev1.EnvVar) []string {
	if len(cmd) == 0 {
		return cmd
	}
	needs := false
	for _, a := range cmd {
		if strings.IndexByte(a, '$') >= 0 {
			needs = true
			break
		}
	}
	if !needs {
		return cmd
	}
	vars := make(map[string]string, len(env))
	for _, e := range env {
		vars[e.Name] = e.Value
	}
	out := make([]string, len(cmd))
	for i, a := range cmd {
		out[i] = unitgen.Expand(a, func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	}
	return out
}
