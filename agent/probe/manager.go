package probe

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Kind is a probe's kind. Its String is the word the kubelet starts its
// Events with ("Liveness probe failed: ...").
type Kind int

// The kinds of probe.
const (
	Liveness Kind = iota
	Readiness
	Startup
	numKinds
)

func (k Kind) String() string {
	switch k {
	case Liveness:
		return "Liveness"
	case Readiness:
		return "Readiness"
	case Startup:
		return "Startup"
	}
	return "UNKNOWN"
}

// Execer runs an exec probe's command in a container, with the container's
// full confinement (the caller's exec path).
type Execer interface {
	// Exec runs cmd in container of pod and returns its standard output
	// followed by its standard error, and its exit code. When the command
	// outlives timeout, Exec ends it and returns an error matching
	// context.DeadlineExceeded (errors.Is): the probe fails with the
	// kubelet's `command "…" timed out`. Any other error means the command
	// could not be run: the probe errors (the kubelet's Unknown), is
	// retried, and its result thrown away.
	Exec(ctx context.Context, pod *corev1.Pod, container string, cmd []string, timeout time.Duration) (output []byte, exitCode int, err error)
}

// Recorder records Events (*events.Recorder, or the pod worker's).
type Recorder interface {
	Event(ref *corev1.ObjectReference, eventtype, reason, message string)
}

// KillRequest is the kubelet's decision to kill a container that failed
// its liveness or startup probe (kuberuntime computePodActions).
type KillRequest struct {
	Pod       *corev1.Pod // as last given to Add
	Container string
	// StartedAt names the instance that failed: a container started since
	// is not to be killed for it.
	StartedAt time.Time
	Probe     Kind // Liveness or Startup
	// Message is what the kubelet's Killing Event (Normal) says, e.g.
	// "Container c failed liveness probe, will be restarted".
	Message string
	// GracePeriodSeconds is the kubelet's setTerminationGracePeriod: the
	// pod's deletion grace period when set, else the probe's
	// terminationGracePeriodSeconds when set (with the pod's set), else
	// the pod's, else 2. As in the kubelet's killContainer, the preStop
	// hook runs within it and what is left is floored at 2 s.
	GracePeriodSeconds int64
	// Restart is whether the container is to run again after (restart
	// policy).
	Restart bool
}

// Config wires a Manager. Every field may be left zero.
type Config struct {
	// Exec runs exec probes; nil: exec probes error.
	Exec Execer
	// Events receives the Unhealthy and ProbeWarning Events.
	Events Recorder
	// Changed is called when a probe result that Started or Ready depend on
	// changed, from a probe goroutine, without locks held (the kubelet
	// syncs the pod). It is not called for what the caller did itself
	// (Add, Exited, Remove). It must not block for long.
	Changed func(podUID types.UID, container string)
	// Kill is called once per container instance that failed its liveness
	// or startup probe (failureThreshold times in a row), from a probe
	// goroutine, without locks held. The probe of that instance is on hold
	// until the container runs again (Add with a new start time), so a
	// kill that fails must be retried by the caller.
	Kill func(KillRequest)
	Log  hclog.Logger
}

// Manager runs the probes of a node's containers.
type Manager struct {
	cfg   Config
	log   hclog.Logger
	start time.Time
	now   func() time.Time // tests
	spawn func(*worker)    // starts a worker's goroutine (tests drive doProbe themselves)

	ctx       context.Context
	cancel    context.CancelFunc
	transport *http.Transport

	mu          sync.Mutex
	containers  map[ckey]*container
	terminating map[types.UID]bool
	stopped     bool
	wg          sync.WaitGroup
}

type ckey struct {
	pod  types.UID
	name string
}

// container is what the caller told of one container of a pod.
type container struct {
	key       ckey
	pod       *corev1.Pod
	spec      *corev1.Container
	podIP     string
	startedAt time.Time // of the current (or last) instance
	running   bool
	exited    bool // it ran and stopped (the kubelet's State.Terminated)
	workers   [numKinds]*worker
}

// New returns a Manager. Probing starts with Add; Stop ends it.
func New(cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		cfg: cfg, log: cfg.Log.Named("probe"), start: time.Now(), now: time.Now,
		ctx: ctx, cancel: cancel, transport: newTransport(),
		containers: map[ckey]*container{}, terminating: map[types.UID]bool{},
	}
	m.spawn = func(w *worker) {
		m.wg.Add(1)
		go w.run()
	}
	return m
}

// Add tells the Manager that container of pod runs since startedAt, and
// that the pod's IP is podIP. Call it whenever the container is seen
// running (it is idempotent) and with the newer pod when the pod changes: a
// different startedAt is a new instance of the container (a restart), for
// which every result goes back to its initial value (readiness Failure,
// liveness Success, startup Unknown) and a probe on hold resumes, as for
// the kubelet's new container ID. Workers are started for the container's
// probes that have none; after StopLivenessAndStartup, or with the pod's
// deletionTimestamp set, only readiness. The Manager keeps pod and reads
// it from probe goroutines: pass a new object for a change, never modify
// one given.
func (m *Manager) Add(pod *corev1.Pod, podIP, name string, startedAt time.Time) {
	spec, _ := findContainer(pod, name)
	if spec == nil {
		m.log.Warn("no such container", "pod", pod.Namespace+"/"+pod.Name, "container", name)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	k := ckey{pod.UID, name}
	c := m.containers[k]
	if c == nil {
		c = &container{key: k}
		m.containers[k] = c
	}
	c.pod, c.spec, c.podIP = pod, spec, podIP
	c.running, c.exited = true, false
	if !c.startedAt.Equal(startedAt) {
		c.startedAt = startedAt
		for _, w := range c.workers {
			if w != nil {
				w.newInstance(startedAt)
			}
		}
	}
	livenessToo := !m.terminating[pod.UID] && pod.DeletionTimestamp == nil
	for kind := range numKinds {
		p := probeOf(spec, kind)
		if p == nil || c.workers[kind] != nil || (kind != Readiness && !livenessToo) {
			continue
		}
		w := newWorker(m, c, kind, p)
		w.newInstance(startedAt)
		c.workers[kind] = w
		m.spawn(w)
	}
}

// Exited tells the Manager that the container does not run any more (it
// exited, or is waiting to be restarted). Started and Ready are false from
// now on; its probes record Failure, and end when the pod's restartPolicy
// is Never, as the kubelet's.
func (m *Manager) Exited(podUID types.UID, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.containers[ckey{podUID, name}]; c != nil {
		c.running, c.exited = false, true
	}
}

// StopLivenessAndStartup ends the liveness and startup probes of the pod's
// containers and forgets their results, when the pod starts terminating
// (the kubelet's syncTerminatingPod); readiness goes on until Remove.
func (m *Manager) StopLivenessAndStartup(podUID types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.terminating[podUID] = true
	for k, c := range m.containers {
		if k.pod == podUID {
			m.stopWorkerLocked(c, Liveness)
			m.stopWorkerLocked(c, Startup)
		}
	}
}

// Remove ends every probe of the pod and forgets it.
func (m *Manager) Remove(podUID types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.terminating, podUID)
	for k, c := range m.containers {
		if k.pod == podUID {
			for kind := range numKinds {
				m.stopWorkerLocked(c, kind)
			}
			delete(m.containers, k)
		}
	}
}

// Started is whether the container has started, as the kubelet computes
// ContainerStatus.Started: it runs, and its startup probe succeeded or it
// has none.
func (m *Manager) Started(podUID types.UID, name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.containers[ckey{podUID, name}]
	return c != nil && c.running && c.startedLocked()
}

// Ready is whether the container is ready, as the kubelet computes
// ContainerStatus.Ready: it runs, has started, and its readiness probe
// succeeded (successThreshold times) or it has none. Until the first
// success it is not ready.
func (m *Manager) Ready(podUID types.UID, name string) bool {
	_, ready, _ := m.status(podUID, name)
	return ready
}

// UpdateStatus is Started and Ready together, as the kubelet's
// UpdatePodStatus sets them; like it, for a started container that is not
// ready it asks for a readiness probe now (at most one pending). Call it
// where the pod's status is computed (the kubelet does at every pod sync,
// which Changed stands for), not in a polling loop.
func (m *Manager) UpdateStatus(podUID types.UID, name string) (started, ready bool) {
	started, ready, w := m.status(podUID, name)
	if w != nil {
		w.triggerNow()
	}
	return started, ready
}

// status returns started and ready, and the readiness worker to trigger
// when the container is started but not ready.
func (m *Manager) status(podUID types.UID, name string) (started, ready bool, trigger *worker) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.containers[ckey{podUID, name}]
	if c == nil || !c.running || !c.startedLocked() {
		return false, false, nil
	}
	w := c.workers[Readiness]
	if w == nil {
		return true, true, nil // no readiness probe: ready
	}
	if w.hasResult && w.result == success {
		return true, true, nil
	}
	return true, false, w
}

// startedLocked is the kubelet's isContainerStarted for a running
// container.
func (c *container) startedLocked() bool {
	w := c.workers[Startup]
	if w == nil {
		return true // no startup probe (or it was stopped): started
	}
	return w.hasResult && w.result == success
}

// Stop ends every probe and waits for the workers to return.
func (m *Manager) Stop() {
	m.mu.Lock()
	m.stopped = true
	for _, c := range m.containers {
		for kind := range numKinds {
			m.stopWorkerLocked(c, kind)
		}
	}
	m.containers = map[ckey]*container{}
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	m.transport.CloseIdleConnections()
}

// stopWorkerLocked detaches the worker of kind from c, which forgets its
// result at once (the kubelet's Remove of a result), and stops it; a probe
// in flight is cancelled and its result dropped.
func (m *Manager) stopWorkerLocked(c *container, kind Kind) {
	if w := c.workers[kind]; w != nil {
		c.workers[kind] = nil
		w.stop()
	}
}

// findContainer finds name among the pod's containers, then its init
// containers (sidecars are probed; the API refuses probes on other init
// containers).
func findContainer(pod *corev1.Pod, name string) (c *corev1.Container, sidecar bool) {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i], false
		}
	}
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; c.Name == name {
			return c, c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	return nil, false
}

func probeOf(c *corev1.Container, kind Kind) *corev1.Probe {
	switch kind {
	case Liveness:
		return c.LivenessProbe
	case Readiness:
		return c.ReadinessProbe
	case Startup:
		return c.StartupProbe
	}
	return nil
}

// withDefaults applies the API's defaults (SetDefaults_Probe,
// SetDefaults_HTTPGetAction) to a copy of p, for probes stored without
// them.
func withDefaults(p *corev1.Probe) corev1.Probe {
	d := *p
	if d.TimeoutSeconds == 0 {
		d.TimeoutSeconds = 1
	}
	if d.PeriodSeconds == 0 {
		d.PeriodSeconds = 10
	}
	if d.SuccessThreshold == 0 {
		d.SuccessThreshold = 1
	}
	if d.FailureThreshold == 0 {
		d.FailureThreshold = 3
	}
	if d.HTTPGet != nil && (d.HTTPGet.Path == "" || d.HTTPGet.Scheme == "") {
		h := *d.HTTPGet
		if h.Path == "" {
			h.Path = "/"
		}
		if h.Scheme == "" {
			h.Scheme = corev1.URISchemeHTTP
		}
		d.HTTPGet = &h
	}
	return d
}
