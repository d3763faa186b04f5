package pods

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/berthinit/httphook"
	bndl "github.com/berth-dev/berth/agent/bundle"
	"github.com/berth-dev/berth/agent/probe"
)

// Lifecycle hooks: unitgen makes them the unit's ExecStartPost= and
// ExecStop= (`berth-hook poststart|prestop <bundle>`), and berth-hook
// runs the handlers hooksFor writes into the bundle (bndl.HooksFile).

// The kubelet's event reasons and texts for a failed hook. Its events say
// no more than that, so that what a hook printed (secrets, maybe) does not
// leave the node in an event (kuberuntime_container.go); the full message
// (bndl.HookFailure.Message) is the container's waiting message after a
// failed postStart hook (the kubelet's PostStartHookError).
const (
	ReasonFailedPostStartHook = "FailedPostStartHook"
	ReasonFailedPreStopHook   = "FailedPreStopHook"
	// ReasonPostStartHookError is the waiting reason of a container whose
	// postStart hook failed (kuberuntime ErrPostStartHook).
	ReasonPostStartHookError = "PostStartHookError"
)

// HookFailureEvent is the kubelet's Warning event for a failure berth-init
// recorded (bndl.TakeHookFailures), on the container's reference.
func HookFailureEvent(f bndl.HookFailure) (eventType, reason, message string) {
	if f.Kind == bndl.HookPreStop {
		return corev1.EventTypeWarning, ReasonFailedPreStopHook, "PreStopHook failed"
	}
	return corev1.EventTypeWarning, ReasonFailedPostStartHook, "PostStartHook failed"
}

// hooksFor is c's lifecycle hooks with the kubelet's defaults resolved, or
// nil when it has none (writeBundle then removes an old file).
//
// An httpGet hook without a host goes to the pod's address, as on the
// kubelet (handlers.go runHTTPHandler: the pod status's first IP). podIP is
// that address when berthd knows it here; empty, berth-init finds it at hook
// time from the container's network namespace (config.json names it): the
// pod network attaches the namespace while the bundle is written (see
// startContainer), and the address only exists, and can only change, with
// the namespace that berth-init reads when the hook runs.
func hooksFor(pod *corev1.Pod, c *corev1.Container, podIP string) *bndl.Hooks {
	lc := c.Lifecycle
	if lc == nil || (lc.PostStart == nil && lc.PreStop == nil) {
		return nil
	}
	grace := int64(30) // the API's default terminationGracePeriodSeconds
	if p := pod.Spec.TerminationGracePeriodSeconds; p != nil {
		grace = *p
	}
	return &bndl.Hooks{
		Pod:                podDesc(pod),
		Container:          c.Name,
		PostStart:          handlerFor(lc.PostStart, c, podIP),
		PreStop:            handlerFor(lc.PreStop, c, podIP),
		GracePeriodSeconds: grace,
	}
}

// podDesc is the kubelet's format.Pod: name_namespace(uid).
func podDesc(pod *corev1.Pod) string {
	return fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID)
}

func handlerFor(h *corev1.LifecycleHandler, c *corev1.Container, podIP string) *bndl.Handler {
	switch {
	case h == nil:
		return nil
	case h.Exec != nil:
		// As given: the kubelet expands $(VAR) in a container's command
		// and args and in exec probes, but runs hook commands verbatim
		// (lifecycle/handlers.go passes handler.Exec.Command through).
		return &bndl.Handler{Exec: &bndl.ExecHandler{Command: append([]string{}, h.Exec.Command...)}}
	case h.HTTPGet != nil:
		g := h.HTTPGet
		port, err := probe.ResolvePort(g.Port, c)
		if err != nil {
			// Fails when it runs, with the kubelet's HTTP hook message.
			return &bndl.Handler{HTTPGet: &bndl.HTTPHandler{Path: g.Path}, Error: err.Error()}
		}
		scheme := strings.ToLower(string(g.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		host := g.Host
		if host == "" {
			host = podIP
		}
		out := &bndl.HTTPHandler{Scheme: scheme, Host: host, Port: port, Path: g.Path}
		for _, hh := range g.HTTPHeaders {
			out.Headers = append(out.Headers, bndl.HTTPHeader{Name: hh.Name, Value: hh.Value})
		}
		return &bndl.Handler{HTTPGet: out}
	case h.Sleep != nil:
		return &bndl.Handler{Sleep: &bndl.SleepHandler{Seconds: h.Sleep.Seconds}}
	}
	// The kubelet's words for a handler of no kind (handlers.go Run).
	return &bndl.Handler{Error: "invalid handler: no exec, httpGet or sleep action"}
}

// hookPodIP is the default host of c's httpGet hooks as berthd knows it
// when it writes the bundle: a host-network pod's address is the node's
// (the kubelet's podIPs of such a pod, and what env's status.podIP gets).
// A pod of its own network namespace gets "": its attachment may still be
// under way (startContainer writes the bundle meanwhile), so berth-init
// reads the address from the namespace when the hook runs.
func (r *Runtime) hookPodIP(pod *corev1.Pod) string {
	if pod.Spec.HostNetwork {
		return r.cfg.HostIP
	}
	return ""
}

// postStartFailedSince reports whether berth-hook recorded a failed
// postStart hook of the container whose bundle this is at or after since.
// A failing postStart hook fails the unit's start job (that is how systemd
// kills and restarts the container), so on a first start Units.Start
// returns an error although the container is there and will restart, as
// the kubelet's does after FailedPostStartHook; startContainer then does
// not take the start for failed (and the pod is not removed).
func postStartFailedSince(bundle string, since time.Time) bool {
	fs, err := bndl.ReadHookFailure(bundle)
	if err != nil {
		return false
	}
	for _, f := range fs {
		if f.Kind == bndl.HookPostStart && !f.Time.Before(since) {
			return true
		}
	}
	return false
}

// Execer runs a command in a container with the workload's confinement
// (agent/streams; the worker's exec probes use the same).
type Execer interface {
	Exec(ctx context.Context, pod *corev1.Pod, container string, cmd []string, timeout time.Duration) ([]byte, int, error)
}

// errGraceOver ends a preStop hook that outlasts the grace period.
var errGraceOver = errors.New("the grace period is over")

// PreStop runs a container's preStop hook from berthd, for a stop berthd
// makes by signalling the workload itself (a failed liveness or startup
// probe), as the kubelet's killContainer runs it before the stop signal:
// within grace, through the same handlers as berth-hook (bndl.RunHandler),
// an exec with the workload's confinement (ex), an httpGet from the host.
// A failure is reported as the kubelet reports it (FailedPreStopHook); one
// that outlasts grace is not. It returns how long the hook took, which the
// caller takes off the stop signal's grace period, as the kubelet does. A
// container without a preStop hook takes no time.
func (r *Runtime) PreStop(ctx context.Context, pod *corev1.Pod, container string, grace time.Duration, ex Execer) time.Duration {
	d, err := r.dirs(pod.Namespace, pod.Name)
	if err != nil {
		return 0
	}
	bundle, err := d.bundle(container)
	if err != nil {
		return 0
	}
	h, err := bndl.ReadHooks(bundle)
	if err != nil || h == nil || h.PreStop == nil || grace <= 0 {
		return 0
	}
	start := time.Now()
	ctx, cancel := context.WithTimeoutCause(ctx, grace, errGraceOver)
	defer cancel()
	exec := func(ctx context.Context, cmd []string) (string, error) {
		timeout := grace
		if dl, ok := ctx.Deadline(); ok {
			timeout = time.Until(dl)
		}
		out, code, err := ex.Exec(ctx, pod, container, cmd, timeout)
		if err != nil {
			return string(out), err
		}
		if code != 0 {
			// CRI's ExecSync error, as berth-hook words it.
			return string(out), fmt.Errorf("command '%s' exited with %d: %s", strings.Join(cmd, " "), code, out)
		}
		return string(out), nil
	}
	httpGet := func(ctx context.Context, g *bndl.HTTPHandler) error {
		req := *g
		if req.Host == "" {
			// The kubelet's default: the pod's address (a host-network
			// pod's is the node's).
			req.Host = r.hookPodIP(pod)
			if req.Host == "" {
				ips, err := r.PodIPs(pod.Namespace, pod.Name)
				if err != nil || len(ips) == 0 {
					return fmt.Errorf("the pod's address: %v", err)
				}
				req.Host = ips[0]
			}
		}
		return httphook.Get(ctx, &req, nil)
	}
	msg, err := bndl.RunHandler(ctx, h, h.PreStop, exec, httpGet)
	if err != nil && !errors.Is(context.Cause(ctx), errGraceOver) {
		if werr := bndl.WriteHookFailure(bundle, bndl.HookPreStop, msg); werr != nil {
			r.log.Warn("record a preStop failure", "bundle", bundle, "error", werr)
		}
		r.reportHookFailures(pod, container, bundle)
	}
	return time.Since(start)
}
