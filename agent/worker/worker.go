// Package worker is berth's kubelet loop: it runs the pods stored for this
// node (pull with the kubelet's image back-off, trust, start the units),
// follows them through systemd's D-Bus signals, writes their status as the
// kubelet writes it, records the kubelet's Events, runs the containers'
// liveness, readiness and startup probes (agent/probe: readiness decides
// Ready, a failed liveness or startup probe has the container killed for
// systemd to restart), and carries out graceful deletion. berthd may be
// killed at any point: on start the worker adopts what runs (probing its
// containers from their real start times), finishes what was half done and
// starts what should run.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/events"
	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/probe"
	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
	"github.com/berth-dev/berth/verify"
)

// Resource is where pods live in the store.
const Resource store.Resource = "pods"

// Store is what the worker needs of agent/store.
type Store interface {
	Get(res store.Resource, ns, name string, obj store.Object) error
	Update(res store.Resource, obj store.Object, bumpGeneration bool) error
	// FinishDeletion ends a graceful deletion: the object goes, or, with
	// finalizers left, its grace period becomes 0.
	FinishDeletion(res store.Resource, ns, name string, uid types.UID) error
	List(res store.Resource, ns string, fn func(data []byte) error) (uint64, error)
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

// Runtime is what the worker needs of *pods.Runtime.
type Runtime interface {
	RunPod(ctx context.Context, pod *corev1.Pod, images map[string]pods.PodImage) error
	// StartContainers starts the next step of a running pod's init
	// sequence; StopContainers stops some of its containers (sidecars once
	// the pod is done).
	StartContainers(ctx context.Context, pod *corev1.Pod, images map[string]pods.PodImage) error
	StopContainers(ctx context.Context, ns, name string, containers []string) error
	// PauseGone: the pod shares its process namespace and its pause has
	// died, taking every container with it; the sandbox must be made anew.
	PauseGone(ctx context.Context, ns, name string) (bool, error)
	// PreStop runs a container's preStop hook before a stop berthd makes
	// itself (a failed probe) and returns how long it took.
	PreStop(ctx context.Context, pod *corev1.Pod, container string, grace time.Duration, ex pods.Execer) time.Duration
	RemovePod(ctx context.Context, ns, name string) error
	PodStatus(ctx context.Context, ns, name string) ([]pods.ContainerStatus, error)
	LoadPod(ns, name string) (*corev1.Pod, error)
	// PodIPs are the addresses the pod network gave the pod.
	PodIPs(ns, name string) ([]string, error)
	// ReleaseNetwork takes a finished pod off the pod network.
	ReleaseNetwork(ctx context.Context, ns, name string) error
}

// Images is what the worker needs of *images.Images: the images of a pod,
// and an image's size for the Pulled event.
type Images interface {
	ForPod(ctx context.Context, pod *corev1.Pod, layout string) (map[string]pods.PodImage, error)
	ImageSize(digest string) (int64, error)
	// Local is the stored image a reference names (errdefs.ErrNotFound:
	// none), for imagePullPolicy IfNotPresent and Never.
	Local(ref string) (pods.PodImage, error)
	// Hold keeps a stored image from removal (berth image rm, GC) until
	// release; errdefs.ErrNotFound when it is gone.
	Hold(digest string) (release func(), err error)
}

// Units is what the worker needs of *systemd.Conn: the signals, a unit's
// timestamps, SIGKILL when a deletion's grace period is shorter than the
// unit's stop timeout, and the stop signal then SIGKILL for a container
// that failed its liveness or startup probe.
type Units interface {
	Watch(ctx context.Context, prefix string) (<-chan systemd.Event, error)
	Status(ctx context.Context, name string) (*systemd.UnitStatus, error)
	Kill(ctx context.Context, name string, who systemd.Who, sig syscall.Signal) error
}

// Reconciler removes what runs on this host but is not in the store
// (agent/reconcile).
type Reconciler interface {
	Reconcile(ctx context.Context) error
}

// Recorder records Events (*events.Recorder).
type Recorder interface {
	Event(ref *corev1.ObjectReference, eventtype, reason, message string)
}

var (
	_ Store    = (*store.Store)(nil)
	_ Runtime  = (*pods.Runtime)(nil)
	_ Images   = (*images.Images)(nil)
	_ Units    = (*systemd.Conn)(nil)
	_ Recorder = (*events.Recorder)(nil)
)

// Observer counts what the worker does with images, for Prometheus.
type Observer interface {
	// ImagePull is one pull for a container: how long it took, and its
	// outcome (the kubelet's waiting reason when it failed, "" when not).
	ImagePull(took time.Duration, failure string)
	// ImageRejected is the trust policy refusing an image: the policy
	// scope that applied and the requirement that refused (its type:
	// reject, sigstoreSigned, ...).
	ImageRejected(scope, requirement string)
	// PodSynced is one pass of the pod worker over a pod that should run
	// (the kubelet's pod worker duration).
	PodSynced(took time.Duration)
	// PodStarted is a pod reaching Running for the first time: the time
	// since its creation (image pulls included).
	PodStarted(took time.Duration)
}

// Config wires a worker.
type Config struct {
	Store      Store
	Runtime    Runtime
	Images     Images
	Units      Units
	Reconciler Reconciler // may be nil
	// Events records the kubelet's Events; Scheduler the scheduler's
	// (Scheduled). Either may be nil.
	Events, Scheduler Recorder
	NodeName          string
	// HostIP is status.hostIP(s).
	HostIP string
	// Layout, when set, is an OCI layout every image is imported from
	// instead of pulled (air-gapped nodes, tests).
	Layout string
	// Exec runs exec probes in a container with its full confinement
	// (agent/streams); nil: exec probes err with "not implemented" (the
	// kubelet's "probe errored" Unhealthy event), the others run.
	Exec probe.Execer
	// Parallel bounds how many pods are synced at once (default 8).
	Parallel int
	// Observer counts pulls and trust refusals (agent/exporter.Own); nil:
	// none.
	Observer Observer
	Log      hclog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Worker runs this node's pods.
type Worker struct {
	cfg Config
	log hclog.Logger
	sem chan struct{}

	// probes runs the pods' liveness, readiness and startup probes.
	probes *probe.Manager

	mu    sync.Mutex
	pods  map[string]*podState    // ns/name →
	units map[string]*podState    // unit name → its pod
	byUID map[types.UID]*podState // the prober names pods by UID
	wg    sync.WaitGroup
	ctx   context.Context
}

// New returns a worker; Run starts it.
func New(cfg Config) *Worker {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Worker{cfg: cfg, log: cfg.Log.Named("worker"), sem: make(chan struct{}, cfg.Parallel),
		pods: map[string]*podState{}, units: map[string]*podState{}, byUID: map[types.UID]*podState{}}
	var exec probe.Execer = noExecer{}
	if cfg.Exec != nil {
		exec = cfg.Exec
	}
	w.probes = probe.New(probe.Config{Exec: exec, Events: w.cfg.Events, Changed: w.probeChanged, Kill: w.probeKill, Log: w.log})
	return w
}

// podState is one pod's worker: a goroutine that syncs it whenever kicked.
type podState struct {
	ns, name string
	kick     chan struct{}

	mu      sync.Mutex // guards desired, gone, lastUnit
	desired *corev1.Pod
	gone    bool                     // deleted from the store
	events  map[string]systemd.Event // last event per unit

	// owned by the pod's goroutine
	pullBackoff map[string]*backoff
	pullErr     map[string]string // last pull failure per container (for ImagePullBackOff's message)
	startErr    *corev1.ContainerStateWaiting
	startBO     backoff
	imageIDs    map[string]string
	waiting     map[string]*corev1.ContainerStateWaiting
	announced   map[string]string // container → last InvocationID announced Started
	begun       map[string]bool   // containers whose start began (the last status computed)
	stopped     map[string]bool   // uid/sidecar: the pod's end stopped it (Killing recorded)
	retry       *time.Timer
	scheduled   bool // the Scheduled event is recorded
}

func (p *podState) key() string { return p.ns + "/" + p.name }

func (p *podState) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run reconciles, syncs every stored pod, then follows the store and
// systemd until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	w.ctx = ctx
	defer func() {
		cancel()
		// The probes first: no kill is asked for once they have ended.
		w.probes.Stop()
		w.wg.Wait()
	}()
	// Subscribed before anything is read, so that no change of a unit
	// between the list and the watch is missed.
	unitEvents, err := w.cfg.Units.Watch(ctx, "berth-")
	if err != nil {
		return fmt.Errorf("watch units: %w", err)
	}
	if w.cfg.Reconciler != nil {
		if err := w.cfg.Reconciler.Reconcile(ctx); err != nil {
			w.log.Error("reconcile", "error", err)
		}
	}
	rv, err := w.list()
	if err != nil {
		return err
	}
	for {
		watch, err := w.cfg.Store.Watch(ctx, Resource, "", rv)
		var tooOld *store.TooOldError
		if errors.As(err, &tooOld) {
			if rv, err = w.list(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("watch pods: %w", err)
		}
		rv, err = w.follow(ctx, watch, unitEvents)
		watch.Stop()
		if ctx.Err() != nil {
			return nil
		}
		w.log.Warn("pod watch ended; listing again", "error", err)
		if rv, err = w.list(); err != nil {
			return err
		}
	}
}

// follow applies store and unit events until the store's watch ends, and
// returns the last resourceVersion seen.
func (w *Worker) follow(ctx context.Context, watch *store.Watch, unitEvents <-chan systemd.Event) (uint64, error) {
	var rv uint64
	for {
		select {
		case <-ctx.Done():
			return rv, ctx.Err()
		case ev, ok := <-watch.Events():
			if !ok {
				return rv, watch.Err()
			}
			rv = ev.ResourceVersion
			var pod corev1.Pod
			if err := json.Unmarshal(ev.Object, &pod); err != nil {
				w.log.Error("undecodable pod in the store", "pod", ev.Namespace+"/"+ev.Name, "error", err)
				continue
			}
			if ev.Type == store.Deleted {
				w.forget(ev.Namespace, ev.Name)
				continue
			}
			w.set(&pod)
		case ev, ok := <-unitEvents:
			if !ok {
				return rv, errors.New("unit watch closed")
			}
			w.unitEvent(ev)
		}
	}
}

// list reads every pod of this node and hands each to its worker; pods
// the worker knew that are no longer stored are removed.
func (w *Worker) list() (uint64, error) {
	var listed []*corev1.Pod
	rv, err := w.cfg.Store.List(Resource, "", func(data []byte) error {
		var pod corev1.Pod
		if err := json.Unmarshal(data, &pod); err != nil {
			w.log.Error("undecodable pod in the store", "error", err)
			return nil
		}
		listed = append(listed, &pod)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list pods: %w", err)
	}
	// Handed out after the list's read transaction has ended: the pods'
	// workers write to the store at once.
	seen := map[string]bool{}
	for _, pod := range listed {
		if w.set(pod) {
			seen[pod.Namespace+"/"+pod.Name] = true
		}
	}
	w.mu.Lock()
	var gone []*podState
	for k, p := range w.pods {
		if !seen[k] {
			gone = append(gone, p)
		}
	}
	w.mu.Unlock()
	for _, p := range gone {
		w.forget(p.ns, p.name)
	}
	return rv, nil
}

// mine tells whether pod is this node's.
func (w *Worker) mine(pod *corev1.Pod) bool {
	return pod.Spec.NodeName == "" || pod.Spec.NodeName == w.cfg.NodeName
}

// set records the stored pod and kicks its worker when something it acts
// on changed (not its own status writes).
func (w *Worker) set(pod *corev1.Pod) bool {
	if !w.mine(pod) {
		return false
	}
	w.mu.Lock()
	p := w.pods[pod.Namespace+"/"+pod.Name]
	if p == nil {
		p = &podState{ns: pod.Namespace, name: pod.Name, kick: make(chan struct{}, 1),
			events: map[string]systemd.Event{}, pullBackoff: map[string]*backoff{}, pullErr: map[string]string{},
			imageIDs: map[string]string{}, waiting: map[string]*corev1.ContainerStateWaiting{}, announced: map[string]string{},
			stopped: map[string]bool{}}
		w.pods[p.key()] = p
		w.wg.Add(1)
		go w.loop(p)
	}
	for _, c := range pods.AllContainers(pod) {
		w.units[unitgen.UnitName(pod.Namespace, pod.Name, c.Name)] = p
	}
	w.byUID[pod.UID] = p
	w.mu.Unlock()
	p.mu.Lock()
	old := p.desired
	p.desired, p.gone = pod.DeepCopy(), false
	p.mu.Unlock()
	if old != nil && old.UID != pod.UID {
		// Deleted and created again under the same name: the earlier
		// pod's probes end.
		w.mu.Lock()
		if w.byUID[old.UID] == p {
			delete(w.byUID, old.UID)
		}
		w.mu.Unlock()
		w.probes.Remove(old.UID)
	}
	if old == nil || old.UID != pod.UID || old.Generation != pod.Generation ||
		(old.DeletionTimestamp == nil) != (pod.DeletionTimestamp == nil) {
		w.log.Trace("pod changed", "pod", p.key(), "deleting", pod.DeletionTimestamp != nil)
		p.poke()
	}
	return true
}

// forget marks the pod deleted from the store: its worker removes it.
func (w *Worker) forget(ns, name string) {
	w.mu.Lock()
	p := w.pods[ns+"/"+name]
	w.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	p.gone = true
	p.mu.Unlock()
	p.poke()
}

func (w *Worker) unitEvent(ev systemd.Event) {
	switch {
	case ev.Err != nil:
		w.log.Warn("systemd watch impaired", "error", ev.Err)
		return
	case ev.Overflow:
		// Signals were lost: every pod's state is read again.
		w.log.Warn("systemd watch overflowed; re-reading every pod", "dropped", ev.Dropped)
		w.mu.Lock()
		for _, p := range w.pods {
			p.poke()
		}
		w.mu.Unlock()
		return
	}
	w.mu.Lock()
	p := w.units[ev.Unit]
	w.mu.Unlock()
	if p == nil {
		return
	}
	if ev.JobResult == "" {
		p.mu.Lock()
		prev := p.events[ev.Unit]
		// Keep the last known start/exit times across events that lack them.
		if ev.ExecMainStart.IsZero() {
			ev.ExecMainStart = prev.ExecMainStart
		}
		p.events[ev.Unit] = ev
		p.mu.Unlock()
	}
	p.poke()
}

// loop is one pod's goroutine.
func (w *Worker) loop(p *podState) {
	defer w.wg.Done()
	for {
		var retry <-chan time.Time
		if p.retry != nil {
			retry = p.retry.C
		}
		select {
		case <-w.ctx.Done():
			return
		case <-p.kick:
		case <-retry:
			p.retry = nil
		}
		if done := w.sync(p); done {
			w.mu.Lock()
			// A pod created again meanwhile gets a fresh worker.
			p.mu.Lock()
			gone := p.gone
			p.mu.Unlock()
			if gone && w.pods[p.key()] == p {
				delete(w.pods, p.key())
				for u, q := range w.units {
					if q == p {
						delete(w.units, u)
					}
				}
				for uid, q := range w.byUID {
					if q == p {
						delete(w.byUID, uid)
						w.probes.Remove(uid)
					}
				}
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
		}
	}
}

// retryIn makes the pod's worker sync again after d.
func (p *podState) retryIn(d time.Duration) {
	if p.retry != nil {
		p.retry.Stop()
	}
	p.retry = time.NewTimer(d)
}

// sync brings one pod to its desired state and writes its status; true
// when the pod is gone for good.
func (w *Worker) sync(p *podState) (done bool) {
	ctx := w.ctx
	p.mu.Lock()
	desired, gone := p.desired, p.gone
	p.mu.Unlock()
	log := w.log.With("pod", p.key())
	log.Trace("sync", "gone", gone, "deleting", desired != nil && desired.DeletionTimestamp != nil)
	if gone || desired == nil {
		// Deleted outright (grace 0, or by a namespace's deletion): no
		// object left to finish.
		if desired != nil {
			w.probes.StopLivenessAndStartup(desired.UID)
		}
		if err := w.remove(ctx, p, desired, 0); err != nil && !errdefs.IsNotFound(err) {
			log.Error("remove deleted pod", "error", err)
			p.retryIn(InitialBackoff)
			return false
		}
		return true
	}
	if desired.DeletionTimestamp != nil {
		// The kubelet's syncTerminatingPod: no liveness or startup probe
		// kills a container that is being stopped; readiness goes on.
		w.probes.StopLivenessAndStartup(desired.UID)
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if g := desired.DeletionGracePeriodSeconds; g != nil {
			grace = *g
		}
		w.killingEvents(ctx, p, desired)
		if err := w.remove(ctx, p, desired, time.Duration(grace)*time.Second); err != nil && !errdefs.IsNotFound(err) {
			log.Error("remove terminating pod", "error", err)
			p.retryIn(InitialBackoff)
			return false
		}
		if err := w.finishDeletion(desired); err != nil {
			log.Error("finish deletion", "error", err)
			p.retryIn(InitialBackoff)
		}
		return false // the store's DELETED event ends the worker
	}
	w.sem <- struct{}{}
	defer func() { <-w.sem }()
	t0 := time.Now()
	err := w.ensure(ctx, p, desired, log)
	if o := w.cfg.Observer; o != nil {
		o.PodSynced(time.Since(t0))
	}
	if err != nil && ctx.Err() == nil {
		log.Error("sync pod", "error", err)
		p.retryIn(InitialBackoff)
	}
	return false
}

// ensure makes the pod run (adopting what runs) and writes its status.
func (w *Worker) ensure(ctx context.Context, p *podState, pod *corev1.Pod, log hclog.Logger) error {
	if !p.scheduled && pod.Status.StartTime == nil && !hasCondition(pod, corev1.PodScheduled) && w.cfg.Scheduler != nil {
		p.scheduled = true
		w.cfg.Scheduler.Event(events.PodRef(pod), corev1.EventTypeNormal, "Scheduled",
			fmt.Sprintf("Successfully assigned %s/%s to %s", pod.Namespace, pod.Name, w.cfg.NodeName))
	}
	rec, err := w.cfg.Runtime.LoadPod(pod.Namespace, pod.Name)
	switch {
	case err == nil && rec.UID != pod.UID:
		// An earlier pod of the same name, deleted and created again while
		// berthd was away.
		log.Info("removing an earlier incarnation", "uid", rec.UID)
		w.probes.Remove(rec.UID)
		if err := w.remove(ctx, p, rec, 0); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		rec = nil
	case err == nil:
		if again, why := w.runAgain(ctx, pod); again && !terminal(pod) {
			log.Warn("starting the pod again", "why", why)
			if err := w.cfg.Runtime.RemovePod(ctx, pod.Namespace, pod.Name); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
			rec = nil
		}
	case errdefs.IsNotFound(err):
		rec = nil
	default:
		return err
	}
	started := rec != nil
	if !started && terminal(pod) {
		return nil // its record is gone; the status written last stays
	}
	if !started {
		if pod.Status.StartTime == nil {
			// Pending with ContainerCreating before a pull that may take long.
			if pod, err = w.writeStatus(ctx, p, pod, false); err != nil {
				return err
			}
		}
		if started, err = w.start(ctx, p, pod, log, firstStep(pod), true); err != nil {
			return err
		}
	}
	stored, err := w.writeStatus(ctx, p, pod, started)
	// The init sequence, as the kubelet's computeInitContainerActions: each
	// status written tells what may start next (an init container that
	// completed, a sidecar that started); at most one step per container.
	for i := 0; err == nil && started && !terminal(stored) && i < len(pod.Spec.InitContainers)+1; i++ {
		step := nextStep(stored, p.begun)
		if len(step) == 0 {
			break
		}
		ok, serr := w.start(ctx, p, stored, log, step, false)
		if serr != nil {
			return serr
		}
		stored, err = w.writeStatus(ctx, p, stored, true)
		if !ok {
			break
		}
	}
	if err == nil && started && (terminal(stored) || appsDone(stored)) {
		// The kubelet ends a pod whose app containers are done for good
		// (or whose init container failed under restartPolicy Never): its
		// sidecars are stopped, in reverse order, and only then is the pod
		// Succeeded or Failed.
		if side := runningSidecars(stored); len(side) > 0 {
			for _, name := range side {
				// Once per sidecar: a stop that must be retried is not
				// announced again.
				if k := string(stored.UID) + "/" + name; !p.stopped[k] {
					p.stopped[k] = true
					w.event(events.ContainerRef(stored, name), corev1.EventTypeNormal, "Killing", "Stopping container "+name)
				}
			}
			if serr := w.cfg.Runtime.StopContainers(ctx, stored.Namespace, stored.Name, side); serr != nil {
				return serr
			}
			stored, err = w.writeStatus(ctx, p, stored, true)
		}
	}
	if err == nil && started && terminal(stored) {
		// The kubelet stops a finished pod's sandbox, which gives its
		// address back to the pod network (status keeps the podIP).
		if err := w.cfg.Runtime.ReleaseNetwork(ctx, pod.Namespace, pod.Name); err != nil {
			log.Warn("release the pod's network", "error", err)
		}
	}
	return err
}

func terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

func hasCondition(pod *corev1.Pod, t corev1.PodConditionType) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == t {
			return true
		}
	}
	return false
}

// runAgain tells whether a recorded pod must be started again: a container
// began but neither has a unit nor ever ended (berthd died inside its
// start), or every unit is gone although the restart policy wants one
// (re)started (the node rebooted, or an operator stopped them): systemd
// restarts a container by itself only while its unit is loaded; or the
// pod's pause died (shareProcessNamespace). A pod in
// its init sequence whose last init container completed is not: its next
// step starts in the sandbox that is there.
func (w *Worker) runAgain(ctx context.Context, pod *corev1.Pod) (bool, string) {
	if gone, err := w.cfg.Runtime.PauseGone(ctx, pod.Namespace, pod.Name); err == nil && gone && pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		// The kubelet makes a new sandbox when its pause container died,
		// unless the pod's policy restarts nothing (computePodActions).
		return true, "its pause (the shared PID namespace's init) is gone"
	}
	sts, err := w.cfg.Runtime.PodStatus(ctx, pod.Namespace, pod.Name)
	if err != nil {
		return false, ""
	}
	loaded, failed, pending := 0, false, false
	var blocked string // an init container the sequence waits for, gone without success
	for _, s := range sts {
		if !s.Begun {
			pending = true
			continue
		}
		if s.ActiveState == "" && s.State.Terminated == nil && s.LastTerminationState.Terminated == nil {
			return true, "left half-started"
		}
		if s.ActiveState != "" && s.ActiveState != "inactive" {
			loaded++
			continue
		}
		t := s.State.Terminated
		if t != nil && t.ExitCode != 0 && !s.Init {
			failed = true
		}
		if s.Init && blocked == "" {
			c := pods.ContainerByName(pod, s.Name)
			if c != nil && (pods.IsSidecar(c) || t == nil || t.ExitCode != 0) {
				blocked = s.Name
			}
		}
	}
	if loaded > 0 || len(sts) == 0 {
		return false, ""
	}
	if pending {
		// In the init sequence: only an init container that is gone
		// without completing (a sidecar gone at all) holds it up.
		if blocked == "" || pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			return false, ""
		}
		return true, "init container " + blocked + "'s unit is gone"
	}
	switch pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false, ""
	case corev1.RestartPolicyOnFailure:
		return failed, "its failed containers' units are gone"
	}
	return true, "its units are gone"
}

// start pulls the images of a step of the pod's start (each container with
// its own back-off) and starts it: the first step with the pod's sandbox
// (RunPod), a later one of its init sequence in the sandbox that runs
// (StartContainers). False without error when it is waiting (pull
// back-off, refused).
func (w *Worker) start(ctx context.Context, p *podState, pod *corev1.Pod, log hclog.Logger, step []string, sandbox bool) (bool, error) {
	var ctrs []corev1.Container
	for _, name := range step {
		if c := pods.ContainerByName(pod, name); c != nil {
			ctrs = append(ctrs, *c)
		}
	}
	if len(ctrs) == 0 {
		return false, nil
	}
	now := w.cfg.Now()
	if p.startErr != nil && p.startBO.inBackoff(now) {
		p.retryIn(p.startBO.until().Sub(now))
		return false, nil
	}
	images := map[string]pods.PodImage{}
	var wait time.Duration
	for _, c := range ctrs {
		ref := events.ContainerRef(pod, c.Name)
		bo := p.pullBackoff[c.Name]
		if bo == nil {
			bo = &backoff{}
			p.pullBackoff[c.Name] = bo
		}
		if bo.inBackoff(now) {
			msg := fmt.Sprintf("Back-off pulling image %q", c.Image)
			w.event(ref, corev1.EventTypeNormal, "BackOff", msg)
			w.event(ref, corev1.EventTypeWarning, "Failed", "Error: "+ReasonImagePullBackOff)
			if prev := p.pullErr[c.Name]; prev != "" {
				msg += ": " + prev
			}
			p.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: ReasonImagePullBackOff, Message: msg}
			wait = maxWait(wait, min(InitialBackoff, bo.until().Sub(now)))
			continue
		}
		if pi, done := w.present(ref, p, c, log); done {
			if pi == nil {
				wait = maxWait(wait, InitialBackoff)
				continue
			}
			*bo = backoff{}
			delete(p.pullErr, c.Name)
			delete(p.waiting, c.Name)
			images[c.Name] = *pi
			p.imageIDs[c.Name] = imageID(*pi)
			continue
		}
		w.event(ref, corev1.EventTypeNormal, "Pulling", fmt.Sprintf("Pulling image %q", c.Image))
		t0 := time.Now()
		one := pod.DeepCopy()
		one.Spec.InitContainers, one.Spec.Containers = nil, []corev1.Container{c}
		got, err := w.cfg.Images.ForPod(ctx, one, w.cfg.Layout)
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			w.event(ref, corev1.EventTypeWarning, "Failed", fmt.Sprintf("Failed to pull image %q: %v", c.Image, err))
			reason, msg := pullError(c.Image, err)
			if o := w.cfg.Observer; o != nil {
				o.ImagePull(time.Since(t0), reason)
				var rj *verify.RejectedError
				if errors.As(err, &rj) {
					o.ImageRejected(rj.Judgement.Scope, requirementType(rj.Judgement.Rule))
				}
			}
			bo.next(now)
			p.pullErr[c.Name] = reason + ": " + msg
			p.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
			w.event(ref, corev1.EventTypeWarning, "Failed", "Error: "+reason)
			log.Info("image pull failed", "container", c.Name, "image", c.Image, "error", err)
			wait = maxWait(wait, InitialBackoff)
			continue
		}
		took := time.Since(t0)
		if o := w.cfg.Observer; o != nil {
			o.ImagePull(took, "")
		}
		pi := got[c.Name]
		// Best effort, as the kubelet's (0 when the size cannot be read).
		var size int64
		if pi.Image != nil {
			var err error
			if size, err = w.cfg.Images.ImageSize(pi.Image.Digest); err != nil {
				log.Debug("image size", "image", c.Image, "digest", pi.Image.Digest, "error", err)
				size = 0
			}
		}
		// berth has no pull queue: the time including waiting is the pull's own.
		w.event(ref, corev1.EventTypeNormal, "Pulled", pulledMessage(c.Image, took, took, size))
		*bo = backoff{}
		delete(p.pullErr, c.Name)
		delete(p.waiting, c.Name)
		images[c.Name] = pi
		if pi.Image != nil {
			p.imageIDs[c.Name] = imageID(pi)
		}
	}
	if wait > 0 {
		p.retryIn(wait)
		return false, nil
	}
	// Until RunPod has written the bundles that name them (what image rm
	// and GC read as "in use"), the images are held; one removed since it
	// was found is found (or pulled) again.
	for name, pi := range images {
		if pi.Image == nil {
			continue
		}
		release, err := w.cfg.Images.Hold(pi.Image.Digest)
		if errdefs.IsNotFound(err) {
			log.Info("image removed before the start; resolving it again", "container", name, "digest", pi.Image.Digest)
			p.retryIn(time.Second)
			return false, nil
		}
		if err != nil {
			return false, err
		}
		defer release()
	}
	run := w.cfg.Runtime.RunPod
	if !sandbox {
		run = w.cfg.Runtime.StartContainers
	}
	err := run(ctx, pod, images)
	if sandbox && errdefs.IsAlreadyExists(err) {
		// A state directory without a record: berthd died right at the
		// start of RunPod. Clear it and start again.
		if rerr := w.cfg.Runtime.RemovePod(ctx, pod.Namespace, pod.Name); rerr != nil && !errdefs.IsNotFound(rerr) {
			return false, rerr
		}
		err = w.cfg.Runtime.RunPod(ctx, pod, images)
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		reason, msg := ReasonCreateContainerErr, err.Error()
		if r, m, ok := rejected(ctrs[0].Image, err); ok {
			reason, msg = r, m
		}
		var mountErr *pods.MountError
		var configErr *pods.ConfigError
		switch {
		case errors.As(err, &mountErr):
			// The kubelet's volume manager: a FailedMount event on the
			// pod, its containers still creating, retried.
			w.event(events.PodRef(pod), corev1.EventTypeWarning, ReasonFailedMount, mountErr.Error())
			for _, c := range ctrs {
				p.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: ReasonContainerCreating}
			}
			p.startErr = nil
			p.retryIn(p.startBO.next(now))
			log.Warn("volumes not ready", "error", err)
			return false, nil
		case errors.As(err, &configErr):
			reason, msg = ReasonCreateContainerConfigErr, configErr.Error()
		}
		for _, c := range ctrs {
			p.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
			w.event(events.ContainerRef(pod, c.Name), corev1.EventTypeWarning, "Failed", "Error: "+msg)
		}
		p.startErr = p.waiting[ctrs[0].Name]
		p.retryIn(p.startBO.next(now))
		log.Warn("start failed", "error", err)
		return false, nil
	}
	p.startErr, p.startBO = nil, backoff{}
	for _, c := range ctrs {
		delete(p.waiting, c.Name)
		ref := events.ContainerRef(pod, c.Name)
		w.event(ref, corev1.EventTypeNormal, "Created", "Created container: "+c.Name)
		w.event(ref, corev1.EventTypeNormal, "Started", "Started container "+c.Name)
	}
	return true, nil
}

// ReasonErrImageNeverPull is the kubelet's waiting reason and event reason
// for an image that is absent under imagePullPolicy Never.
const ReasonErrImageNeverPull = "ErrImageNeverPull"

// present applies c's imagePullPolicy as the kubelet's image manager does
// (pkg/kubelet/images/image_manager.go EnsureImageExists, shouldPullImage):
// IfNotPresent and Never use the stored image the reference names, with the
// kubelet's "already present on machine" event; Never without one waits
// with ErrImageNeverPull (pi nil). done false: pull. Images of a local OCI
// layout (berthd pod run --layout) are always imported. A stored image is
// judged at start like a pulled one: the policy, the repository's stored
// signatures (none for a loaded image).
func (w *Worker) present(ref *corev1.ObjectReference, p *podState, c corev1.Container, log hclog.Logger) (pi *pods.PodImage, done bool) {
	if w.cfg.Layout != "" || c.ImagePullPolicy == corev1.PullAlways || c.ImagePullPolicy == "" {
		return nil, false
	}
	got, err := w.cfg.Images.Local(c.Image)
	switch {
	case err == nil:
		w.event(ref, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Container image %q already present on machine", c.Image))
		return &got, true
	case c.ImagePullPolicy == corev1.PullNever && errdefs.IsNotFound(err):
		msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
		w.event(ref, corev1.EventTypeWarning, ReasonErrImageNeverPull, msg)
		p.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: ReasonErrImageNeverPull, Message: msg}
		return nil, true
	case c.ImagePullPolicy == corev1.PullNever:
		// The store could not be read: no pull either.
		log.Warn("image store", "container", c.Name, "image", c.Image, "error", err)
		p.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: ReasonErrImageNeverPull, Message: err.Error()}
		return nil, true
	case !errdefs.IsNotFound(err):
		log.Warn("image store; pulling", "container", c.Name, "image", c.Image, "error", err)
	}
	return nil, false
}

// pulledMessage is the kubelet's Pulled event, word for word since 1.30
// (pkg/kubelet/images/image_manager.go): the time the pull took, the time
// including its wait in the kubelet's pull queue, both truncated to the
// millisecond, and the image's size as the runtime reports it (CRI
// ImageStatus; here image.Store.Size).
func pulledMessage(image string, pull, total time.Duration, size int64) string {
	return fmt.Sprintf("Successfully pulled image %q in %v (%v including waiting). Image size: %v bytes.",
		image, pull.Truncate(time.Millisecond), total.Truncate(time.Millisecond), size)
}

func maxWait(a, b time.Duration) time.Duration {
	if b <= 0 {
		b = time.Second
	}
	if a == 0 || b < a {
		return b
	}
	return a
}

// imageID is the kubelet's imageID: the repository's digest reference for
// a pulled image, the digest alone for one from a layout.
func imageID(pi pods.PodImage) string {
	if pi.Repo != "" {
		return pi.Repo + "@" + pi.Image.Digest
	}
	return pi.Image.Digest
}

func (w *Worker) event(ref *corev1.ObjectReference, eventtype, reason, message string) {
	if w.cfg.Events != nil {
		w.cfg.Events.Event(ref, eventtype, reason, message)
	}
}

// writeStatus computes the pod's status and writes it if it changed; it
// returns the pod as now stored.
func (w *Worker) writeStatus(ctx context.Context, p *podState, pod *corev1.Pod, started bool) (*corev1.Pod, error) {
	in := statusInput{HostIP: w.cfg.HostIP, Now: w.cfg.Now(), Sandbox: started}
	var rts []pods.ContainerStatus
	if started {
		var err error
		rts, err = w.cfg.Runtime.PodStatus(ctx, pod.Namespace, pod.Name)
		if errdefs.IsNotFound(err) {
			in.Sandbox = false
		} else if err != nil {
			return nil, err
		}
	}
	if in.Sandbox {
		// The kubelet's podIPs: the sandbox's addresses; a host-network
		// pod's are the node's.
		if pod.Spec.HostNetwork {
			if w.cfg.HostIP != "" {
				in.PodIPs = []string{w.cfg.HostIP}
			}
		} else {
			ips, err := w.cfg.Runtime.PodIPs(pod.Namespace, pod.Name)
			if err != nil {
				return nil, err
			}
			in.PodIPs = ips
		}
	}
	byName := map[string]*pods.ContainerStatus{}
	p.begun = map[string]bool{}
	for i := range rts {
		if rts[i].Begun {
			// A container of a later step of the init sequence has no
			// runtime state yet: it is waiting to be started.
			byName[rts[i].Name] = &rts[i]
			p.begun[rts[i].Name] = true
		}
	}
	// The probes target the pod's address (the kubelet's status podIP).
	podIP := pod.Status.PodIP
	if len(in.PodIPs) > 0 {
		podIP = in.PodIPs[0]
	}
	running := map[string]bool{}
	nInit := len(pod.Spec.InitContainers)
	for i, cp := range pods.AllContainers(pod) {
		c := *cp
		ci := containerInput{Spec: c, Runtime: byName[c.Name], Waiting: p.waiting[c.Name], ImageID: p.imageIDs[c.Name],
			Init: i < nInit, Sidecar: i < nInit && pods.IsSidecar(cp)}
		if ci.Runtime != nil {
			ci.Unit = w.unitTimes(ctx, p, ci.Runtime.Unit)
			if n := uint32(ci.Runtime.RestartCount); n > ci.Unit.NRestarts {
				ci.Unit.NRestarts = n
			}
		}
		if hasProbes(&c) {
			ci.Probes = w.probeView(pod, podIP, c.Name, running)
		}
		in.Containers = append(in.Containers, ci)
	}
	next := computeStatus(pod, in)
	for _, c := range pods.AllContainers(pod) {
		if hasProbes(c) && !running[c.Name] {
			// Not running (exited, waiting out its back-off, not started):
			// not started, not ready, and no probe kills it.
			w.probes.Exited(pod.UID, c.Name)
		}
	}
	w.containerEvents(pod, p, next)
	if statusEqual(pod.Status, next) {
		return pod, nil
	}
	return w.updateStatus(pod, next)
}

// unitTimes reads a unit's timestamps: from systemd when it is loaded,
// else from the last signal about it (a unit collected right after it
// ended).
func (w *Worker) unitTimes(ctx context.Context, p *podState, unit string) unitTimes {
	p.mu.Lock()
	ev, seen := p.events[unit]
	p.mu.Unlock()
	var t unitTimes
	if seen {
		t = unitTimes{ExecMainStart: ev.ExecMainStart, ExecMainExit: ev.ExecMainExit, ActiveEnter: ev.ActiveEnter, ExecMainStatus: ev.ExecMainStatus}
	}
	st, err := w.cfg.Units.Status(ctx, unit)
	if err == nil && st.LoadState != "not-found" {
		t = unitTimes{ExecMainStart: st.ExecMainStart, ExecMainExit: st.ExecMainExit, ActiveEnter: st.ActiveEnter,
			ExecMainStatus: st.ExecMainStatus, NRestarts: st.NRestarts}
	}
	return t
}

// containerEvents records what the kubelet reports when a container's
// state changes under systemd's supervision: a restart (Created, Started)
// and a crash-loop back-off (BackOff).
func (w *Worker) containerEvents(pod *corev1.Pod, p *podState, next corev1.PodStatus) {
	prev := map[string]corev1.ContainerStatus{}
	for _, c := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		prev[c.Name] = c
	}
	// Init containers too: a sidecar or a failing init container restarts
	// and backs off like any other.
	for _, c := range append(append([]corev1.ContainerStatus{}, next.InitContainerStatuses...), next.ContainerStatuses...) {
		old, had := prev[c.Name]
		ref := events.ContainerRef(pod, c.Name)
		if had && c.RestartCount > old.RestartCount && c.State.Running != nil {
			w.event(ref, corev1.EventTypeNormal, "Created", "Created container: "+c.Name)
			w.event(ref, corev1.EventTypeNormal, "Started", "Started container "+c.Name)
		}
		if c.State.Waiting != nil && c.State.Waiting.Reason == ReasonCrashLoopBackOff &&
			(!had || old.State.Waiting == nil || old.State.Waiting.Reason != ReasonCrashLoopBackOff || old.RestartCount != c.RestartCount) {
			w.event(ref, corev1.EventTypeWarning, "BackOff",
				fmt.Sprintf("Back-off restarting failed container %s in pod %s", c.Name, podDesc(pod)))
		}
	}
}

// updateStatus writes status onto the stored pod, retrying on conflicts
// with writers of the spec or metadata.
func (w *Worker) updateStatus(pod *corev1.Pod, status corev1.PodStatus) (*corev1.Pod, error) {
	for attempt := 0; ; attempt++ {
		var cur corev1.Pod
		if err := w.cfg.Store.Get(Resource, pod.Namespace, pod.Name, &cur); err != nil {
			return nil, err
		}
		if cur.UID != pod.UID {
			return pod, nil // replaced meanwhile: its own sync follows
		}
		if statusEqual(cur.Status, status) {
			return &cur, nil
		}
		started := (cur.Status.Phase == corev1.PodPending || cur.Status.Phase == "") && status.Phase == corev1.PodRunning
		cur.Status = status
		err := w.cfg.Store.Update(Resource, &cur, false)
		if err == nil || !errdefs.IsConflict(err) || attempt >= 4 {
			if err == nil {
				if o := w.cfg.Observer; o != nil && started {
					o.PodStarted(w.cfg.Now().Sub(cur.CreationTimestamp.Time))
				}
				// What the store now holds, so that the next compare is
				// against it.
				w.mu.Lock()
				p := w.pods[pod.Namespace+"/"+pod.Name]
				w.mu.Unlock()
				if p != nil {
					p.mu.Lock()
					if p.desired != nil && p.desired.UID == cur.UID {
						p.desired = cur.DeepCopy()
					}
					p.mu.Unlock()
				}
				return &cur, nil
			}
			return nil, err
		}
	}
}

// killingEvents records the kubelet's Killing event for each running
// container of a pod being deleted, once.
func (w *Worker) killingEvents(ctx context.Context, p *podState, pod *corev1.Pod) {
	sts, err := w.cfg.Runtime.PodStatus(ctx, pod.Namespace, pod.Name)
	if err != nil {
		return
	}
	for _, s := range sts {
		if s.ActiveState == "active" || s.ActiveState == "activating" {
			w.event(events.ContainerRef(pod, s.Name), corev1.EventTypeNormal, "Killing", "Stopping container "+s.Name)
		}
	}
}

// minGrace is the kubelet's minimum grace period for a pod deleted with
// grace 0 (--force --grace-period=0): its containers still get a moment.
const minGrace = 2 * time.Second

// remove stops and removes the pod. systemd enforces the grace period
// each unit was started with (TimeoutStopSec from
// terminationGracePeriodSeconds); a deletion that asks for a shorter one
// gets SIGKILL when it runs out.
func (w *Worker) remove(ctx context.Context, p *podState, pod *corev1.Pod, grace time.Duration) error {
	ns, name := p.ns, p.name
	if pod != nil {
		ns, name = pod.Namespace, pod.Name
	}
	if grace < minGrace {
		grace = minGrace
	}
	var units []string
	if rec, err := w.cfg.Runtime.LoadPod(ns, name); err == nil {
		for _, c := range pods.AllContainers(rec) {
			units = append(units, unitgen.UnitName(ns, name, c.Name))
		}
		specGrace := time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
		if g := rec.Spec.TerminationGracePeriodSeconds; g != nil {
			specGrace = time.Duration(*g) * time.Second
		}
		if grace >= specGrace {
			units = nil // systemd's own timeout comes first
		}
	}
	done := make(chan struct{})
	defer close(done)
	if len(units) > 0 {
		go func() {
			select {
			case <-done:
			case <-time.After(grace):
				for _, u := range units {
					if err := w.cfg.Units.Kill(context.WithoutCancel(ctx), u, systemd.KillAll, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
						w.log.Warn("SIGKILL after grace period", "unit", u, "error", err)
					}
				}
			}
		}()
	}
	return w.cfg.Runtime.RemovePod(context.WithoutCancel(ctx), ns, name)
}

// finishDeletion is the kubelet's last step of a graceful deletion
// (status_manager's canBeDeleted, then Delete with grace 0 and a uid
// precondition): with no finalizers left the object goes; else its grace
// period becomes 0 and the finalizers' owners finish. A pod already gone
// or replaced by a new one of the same name has nothing left to finish.
func (w *Worker) finishDeletion(pod *corev1.Pod) error {
	err := w.cfg.Store.FinishDeletion(Resource, pod.Namespace, pod.Name, pod.UID)
	if errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
		return nil
	}
	return err
}

// pullError is the kubelet's reading of a failed pull (images'
// evalCRIPullErr): a trust refusal is CRI-O's SignatureValidationFailed
// with the policy's reason, anything else ErrImagePull.
func pullError(image string, err error) (reason, message string) {
	if r, m, ok := rejected(image, err); ok {
		return r, m
	}
	return ReasonErrImagePull, err.Error()
}

// rejected reads a trust refusal anywhere in err's chain, in the kubelet's
// words for CRI-O's SignatureValidationFailed with the policy's reason.
func rejected(image string, err error) (reason, message string, ok bool) {
	var rj *verify.RejectedError
	if !errors.As(err, &rj) {
		return "", "", false
	}
	return ReasonSignatureFailed, fmt.Sprintf("image pull failed for %s because the signature validation failed: %s", image, rj.Judgement.Reason), true
}

// requirementType is the type of a judgement's rule, "sigstoreSigned"
// for "sigstoreSigned[0]": a bounded label (the index and the reason's
// text are not).
func requirementType(rule string) string {
	if i := strings.IndexByte(rule, '['); i > 0 {
		return rule[:i]
	}
	return rule
}
