package worker

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/events"
	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/probe"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
)

// hasProbes tells whether c has a probe: only such containers are told to
// the prober, the others are started and ready as soon as they run.
func hasProbes(c *corev1.Container) bool {
	return c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil
}

// probeChanged is the prober's Changed: a result that Started or Ready
// depend on changed, so the pod's status is computed again (the kubelet's
// pod sync on a result update).
func (w *Worker) probeChanged(uid types.UID, _ string) {
	w.mu.Lock()
	p := w.byUID[uid]
	w.mu.Unlock()
	if p != nil {
		p.poke()
	}
}

// killPollInterval is how often a liveness kill looks whether the instance
// it signalled is gone.
const killPollInterval = 250 * time.Millisecond

// probeKill is the prober's Kill: a container failed its liveness or
// startup probe. As the kubelet's killContainer it records the Normal
// Killing event, sends the container's stop signal to its PID 1 and
// SIGKILL when the grace period runs out. systemd's Restart= (from the
// pod's restartPolicy) then starts it again after its back-off, which
// NRestarts counts: the restart the kubelet would have done.
func (w *Worker) probeKill(req probe.KillRequest) {
	if w.ctx == nil || w.ctx.Err() != nil {
		return
	}
	w.event(events.ContainerRef(req.Pod, req.Container), corev1.EventTypeNormal, "Killing", req.Message)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.killInstance(req)
	}()
}

// killInstance stops the instance of the container that started at
// req.StartedAt, retrying what fails, until that instance is gone, the pod
// is, or berthd stops.
func (w *Worker) killInstance(req probe.KillRequest) {
	ctx := w.ctx
	pod := req.Pod
	unit := unitgen.UnitName(pod.Namespace, pod.Name, req.Container)
	log := w.log.With("pod", pod.Namespace+"/"+pod.Name, "container", req.Container, "unit", unit)
	sig := w.stopSignal(pod, req.Container, log)
	// As the kubelet's killContainer: the preStop hook first, within the
	// grace period; the stop signal gets what is left, at least 2 s.
	grace := time.Duration(max(req.GracePeriodSeconds, 0)) * time.Second
	signalled, killed, preStopped := false, false, false
	var deadline time.Time
	tick := time.NewTicker(killPollInterval)
	defer tick.Stop()
	for {
		if !w.podIs(pod) {
			return // deleted: graceful deletion stops it
		}
		st, err := w.cfg.Units.Status(ctx, unit)
		switch {
		case errdefs.IsNotFound(err):
			return
		case err != nil:
			log.Warn("liveness kill: unit status", "error", err)
		case !sameInstance(st, req.StartedAt):
			log.Debug("liveness kill: the instance is gone", "state", st.ActiveState, "sub", st.SubState)
			return
		case !preStopped:
			// A stop berth makes itself: systemd runs no ExecStop=, so
			// berthd runs the hook (with the exec probes' confinement).
			preStopped = true
			var ex pods.Execer = noExecer{}
			if w.cfg.Exec != nil {
				ex = w.cfg.Exec
			}
			grace -= w.cfg.Runtime.PreStop(ctx, pod, req.Container, grace, ex)
			grace = max(grace, minimumGracePeriodSeconds*time.Second)
			continue // the instance may have ended meanwhile
		case !signalled:
			if err := w.cfg.Units.Kill(ctx, unit, systemd.KillMain, sig); err != nil && !errdefs.IsNotFound(err) {
				log.Warn("liveness kill: stop signal; retrying", "signal", sig, "error", err)
				break
			}
			signalled, deadline = true, w.cfg.Now().Add(grace)
			log.Info("killing a container that failed its probe", "probe", req.Probe, "signal", sig, "grace", grace)
		case !killed && !w.cfg.Now().Before(deadline):
			// Only the container's PID 1 (its PID namespace goes with it),
			// never the cgroup: a restarted unit's berth-init may already
			// be waiting out its back-off there.
			if err := w.cfg.Units.Kill(ctx, unit, systemd.KillMain, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
				log.Warn("liveness kill: SIGKILL; retrying", "error", err)
				break
			}
			killed = true
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// minimumGracePeriodSeconds is the kubelet's floor for killContainer.
const minimumGracePeriodSeconds = 2

// sameInstance tells whether the unit still runs the instance that
// started at startedAt.
func sameInstance(st *systemd.UnitStatus, startedAt time.Time) bool {
	if st.LoadState == "not-found" || st.MainPID == 0 {
		return false
	}
	if st.ActiveState != "active" && st.ActiveState != "reloading" && st.ActiveState != "deactivating" {
		return false
	}
	start := st.ExecMainStart
	if start.IsZero() {
		start = st.ActiveEnter
	}
	return start.Equal(startedAt)
}

// podIs tells whether pod is still the one this worker runs under its
// name, not being deleted.
func (w *Worker) podIs(pod *corev1.Pod) bool {
	w.mu.Lock()
	p := w.byUID[pod.UID]
	w.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.gone && p.desired != nil && p.desired.UID == pod.UID && p.desired.DeletionTimestamp == nil
}

// stopSignal is the container's stop signal as unitgen gives it to the
// unit's KillSignal=: lifecycle.stopSignal, else the image's StopSignal,
// else SIGTERM. The image is looked up in the store by the imageID the
// status names (best effort: an image gone from the store gives SIGTERM).
func (w *Worker) stopSignal(pod *corev1.Pod, name string, log hclog.Logger) syscall.Signal {
	ctr := pods.ContainerByName(pod, name)
	if ctr == nil {
		return syscall.SIGTERM
	}
	if lc := ctr.Lifecycle; lc != nil && lc.StopSignal != nil {
		if s, ok := parseSignal(string(*lc.StopSignal)); ok {
			return s
		}
	}
	refs := []string{ctr.Image}
	for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if cs.Name == name && cs.ImageID != "" {
			refs = append([]string{cs.ImageID}, refs...)
		}
	}
	for _, ref := range refs {
		pi, err := w.cfg.Images.Local(ref)
		if err != nil || pi.Image == nil {
			log.Debug("stop signal: image not found", "ref", ref, "error", err)
			continue
		}
		if s := pi.Image.Config.Config.StopSignal; s != "" {
			if sig, ok := parseSignal(s); ok {
				return sig
			}
		}
		return syscall.SIGTERM
	}
	return syscall.SIGTERM
}

// parseSignal reads a signal as a Dockerfile STOPSIGNAL or
// lifecycle.stopSignal names it: SIGTERM, TERM or 15.
func parseSignal(s string) (syscall.Signal, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return syscall.Signal(n), n > 0 && n < 65
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	for n := syscall.Signal(1); n < 65; n++ {
		if signalNames[n] == name {
			return n, true
		}
	}
	return 0, false
}

var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT", syscall.SIGKILL: "SIGKILL",
	syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2", syscall.SIGTERM: "SIGTERM", syscall.SIGSTOP: "SIGSTOP",
	syscall.SIGWINCH: "SIGWINCH", syscall.SIGPWR: "SIGPWR", syscall.SIGABRT: "SIGABRT", syscall.SIGALRM: "SIGALRM",
}

// probeView is what writeStatus asks of the prober for a container with
// probes, and tells it: the instance that runs (Add), and its Started and
// Ready (UpdateStatus).
func (w *Worker) probeView(pod *corev1.Pod, podIP, name string, seen map[string]bool) func(time.Time) (bool, bool) {
	return func(startedAt time.Time) (bool, bool) {
		seen[name] = true
		w.probes.Add(pod, podIP, name, startedAt)
		return w.probes.UpdateStatus(pod.UID, name)
	}
}

// errNoExecer is what an exec probe errs with while berthd has no exec
// path: the probe's Unhealthy event says so.
var errNoExecer = errdefs.ErrNotImplemented.WithMessage("exec probes need berthd's exec path (worker.Config.Exec), which this berthd lacks")

// noExecer fails every exec probe with errNoExecer.
type noExecer struct{}

func (noExecer) Exec(context.Context, *corev1.Pod, string, []string, time.Duration) ([]byte, int, error) {
	return nil, 0, errNoExecer
}
