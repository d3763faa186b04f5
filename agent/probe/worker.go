package probe

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// result is a worker's cached result (the kubelet's results.Result).
type result int8

const (
	unknown result = iota
	success
	failure
)

func (r result) String() string {
	switch r {
	case success:
		return "Success"
	case failure:
		return "Failure"
	}
	return "UNKNOWN"
}

// initialValue is the result of a container instance no probe has judged
// yet (the kubelet's worker.initialValue).
func initialValue(kind Kind) result {
	switch kind {
	case Readiness:
		return failure
	case Liveness:
		return success
	}
	return unknown
}

// worker probes one kind of probe of one container, in its own goroutine
// (the kubelet's prober worker).
type worker struct {
	m    *Manager
	c    *container
	kind Kind
	spec corev1.Probe // with the API's defaults

	ctx      context.Context // cancelled by stop
	cancel   context.CancelFunc
	stopCh   chan struct{}
	stopOnce sync.Once
	trigger  chan struct{} // a probe now (UpdateStatus); buffered 1

	// guarded by m.mu
	result    result
	hasResult bool
	onHold    bool      // after a liveness failure, or a startup verdict: until a new instance
	instance  time.Time // the start time of the instance the result is about

	// owned by the worker's goroutine
	lastResult result
	resultRun  int // how many probes in a row returned lastResult
	http       *httpRunner
}

func newWorker(m *Manager, c *container, kind Kind, p *corev1.Probe) *worker {
	w := &worker{m: m, c: c, kind: kind, spec: withDefaults(p),
		stopCh: make(chan struct{}), trigger: make(chan struct{}, 1)}
	w.ctx, w.cancel = context.WithCancel(m.ctx)
	return w
}

// newInstance resets the worker for a new instance of its container (the
// kubelet's new container ID): the initial result, and probing resumes.
// m.mu is held.
func (w *worker) newInstance(startedAt time.Time) {
	w.instance = startedAt
	w.result, w.hasResult = initialValue(w.kind), true
	w.onHold = false
}

func (w *worker) stop() {
	w.stopOnce.Do(func() {
		close(w.stopCh)
		w.cancel()
	})
}

func (w *worker) triggerNow() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

// run probes until the worker is stopped or a probe decides it is done.
// Probes are spaced as by the kubelet's ticker: every periodSeconds from
// the worker's start, a missed tick is dropped, and a triggered probe
// restarts the period.
func (w *worker) run() {
	defer w.m.wg.Done()
	defer w.exit()
	period := time.Duration(w.spec.PeriodSeconds) * time.Second
	// After a restart of berthd every running container's probes start at
	// once; like the kubelet, spread the first probes over one period.
	if period > time.Since(w.m.start) {
		t := time.NewTimer(time.Duration(rand.Float64() * float64(period)))
		select {
		case <-w.stopCh:
			t.Stop()
			return
		case <-t.C:
		}
	}
	next := time.Now().Add(period)
	timer := time.NewTimer(period)
	defer timer.Stop()
	for w.doProbe() {
		select {
		case <-w.stopCh:
			return
		case <-timer.C:
			now := time.Now()
			for next = next.Add(period); !next.After(now); next = next.Add(period) {
			}
		case <-w.trigger:
			next = time.Now().Add(period)
		}
		// Armed before the probe, as a ticker runs during it.
		timer.Reset(time.Until(next))
	}
}

// exit forgets the worker and its result when it ended on its own.
func (w *worker) exit() {
	w.stop()
	m := w.m
	m.mu.Lock()
	changed := false
	if w.c.workers[w.kind] == w {
		w.c.workers[w.kind] = nil
		changed = w.kind != Liveness
	}
	m.mu.Unlock()
	w.notify(changed)
}

// target is what a probe is run against: a snapshot of the container.
type target struct {
	pod       *corev1.Pod
	spec      *corev1.Container
	podIP     string
	startedAt time.Time
}

// doProbe probes the container once and records the result (the kubelet's
// worker.doProbe). It returns whether the worker goes on.
func (w *worker) doProbe() (keepGoing bool) {
	defer func() {
		if r := recover(); r != nil {
			w.m.log.Error("probe panicked", "kind", w.kind, "container", w.c.key.name, "panic", r)
			keepGoing = true
		}
	}()
	m, c := w.m, w.c
	m.mu.Lock()
	if c.workers[w.kind] != w {
		m.mu.Unlock()
		return false
	}
	if w.onHold {
		m.mu.Unlock()
		return true
	}
	if !c.running {
		changed := w.setLocked(failure)
		// The kubelet stops probing a container that terminated and will
		// not be restarted.
		keep := !c.exited || c.pod.Spec.RestartPolicy != corev1.RestartPolicyNever
		m.mu.Unlock()
		w.notify(changed)
		return keep
	}
	if c.pod.DeletionTimestamp != nil && (w.kind == Liveness || w.kind == Startup) {
		// Graceful deletion: a last Success for a quiet shutdown, and no
		// more probing.
		changed := w.setLocked(success)
		m.mu.Unlock()
		w.notify(changed)
		return false
	}
	if int32(m.now().Sub(c.startedAt).Seconds()) < w.spec.InitialDelaySeconds {
		m.mu.Unlock()
		return true
	}
	if c.startedLocked() {
		if w.kind == Startup {
			m.mu.Unlock()
			return true
		}
	} else if w.kind != Startup {
		// Liveness and readiness wait for the startup probe.
		m.mu.Unlock()
		return true
	}
	t := target{pod: c.pod, spec: c.spec, podIP: c.podIP, startedAt: c.startedAt}
	m.mu.Unlock()

	res, err := w.probe(t)
	if err != nil {
		return true // the kubelet throws an errored probe's result away
	}
	if w.lastResult == res {
		w.resultRun++
	} else {
		w.lastResult, w.resultRun = res, 1
	}
	if (res == failure && w.resultRun < int(w.spec.FailureThreshold)) ||
		(res == success && w.resultRun < int(w.spec.SuccessThreshold)) {
		return true
	}

	m.mu.Lock()
	if c.workers[w.kind] != w || !w.instance.Equal(t.startedAt) {
		// Stopped, or the container restarted, while probing: the result
		// is about an instance that is gone.
		m.mu.Unlock()
		return true
	}
	changed := w.setLocked(res)
	if (w.kind == Liveness && res == failure) || w.kind == Startup {
		// Hold until a new instance: the container is being killed, or has
		// started (a startup probe is done for this instance).
		w.onHold, w.resultRun = true, 0
	}
	var kill *KillRequest
	if res == failure && w.kind != Readiness {
		kill = killRequest(t, w.kind)
	}
	m.mu.Unlock()
	w.notify(changed)
	if kill != nil && m.cfg.Kill != nil {
		m.cfg.Kill(*kill)
	}
	return true
}

// setLocked records r and reports whether Started or Ready may have
// changed. m.mu is held.
func (w *worker) setLocked(r result) bool {
	changed := !w.hasResult || w.result != r
	w.result, w.hasResult = r, true
	return changed && w.kind != Liveness
}

func (w *worker) notify(changed bool) {
	if changed && w.m.cfg.Changed != nil {
		w.m.cfg.Changed(w.c.key.pod, w.c.key.name)
	}
}

// minimumGracePeriodInSeconds is the kubelet's floor when a pod names no
// grace period.
const minimumGracePeriodInSeconds = 2

// killRequest is the kubelet's computePodActions (and, for sidecars,
// computeInitContainerActions) decision for a container whose liveness or
// startup probe failed, with its killContainer grace period.
func killRequest(t target, kind Kind) *KillRequest {
	what := "liveness"
	if kind == Startup {
		what = "startup"
	}
	name := t.spec.Name
	_, sidecar := findContainer(t.pod, name)
	restart := t.pod.Spec.RestartPolicy != corev1.RestartPolicyNever
	var msg string
	if sidecar {
		msg, restart = fmt.Sprintf("Init container %s failed %s probe", name, what), true
	} else {
		msg = fmt.Sprintf("Container %s failed %s probe", name, what)
		if restart {
			msg += ", will be restarted"
		}
	}
	grace := int64(minimumGracePeriodInSeconds)
	switch pod := t.pod; {
	case pod.DeletionGracePeriodSeconds != nil:
		grace = *pod.DeletionGracePeriodSeconds
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		grace = *pod.Spec.TerminationGracePeriodSeconds
		if p := probeOf(t.spec, kind); p != nil && p.TerminationGracePeriodSeconds != nil {
			grace = *p.TerminationGracePeriodSeconds
		}
	}
	return &KillRequest{Pod: t.pod, Container: name, StartedAt: t.startedAt, Probe: kind,
		Message: msg, GracePeriodSeconds: grace, Restart: restart}
}
