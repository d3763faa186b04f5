// Package events records core/v1 Events in the store as the kubelet's
// recorder does (client-go tools/record): the same object, reason, message
// and source counted on one Event (count, lastTimestamp); more than ten
// similar ones (same object and reason, other messages) within ten minutes
// combined into one "(combined from similar events): …" Event; a burst of
// 25 per object and source, then one every five minutes. The correlation is
// client-go's own EventCorrelator, so the numbers are the apiserver clients'
// exactly. Events expire after an hour, as the apiserver's --event-ttl.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/berth-dev/berth/agent/store"
)

// Resource is where Events live in the store.
const Resource store.Resource = "events"

// DefaultTTL is how long an Event is kept after its last occurrence: the
// apiserver's --event-ttl default.
const DefaultTTL = time.Hour

// Store is what the recorder needs of agent/store.
type Store interface {
	Create(res store.Resource, obj store.Object) error
	Get(res store.Resource, ns, name string, obj store.Object) error
	Update(res store.Resource, obj store.Object, bumpGeneration bool) error
	Delete(res store.Resource, ns, name string, uid types.UID, resourceVersion string) ([]byte, error)
	List(res store.Resource, ns string, fn func(data []byte) error) (uint64, error)
}

var _ Store = (*store.Store)(nil)

// Config says who reports and where.
type Config struct {
	Store Store
	// Component is source.component and reportingComponent ("kubelet").
	Component string
	// Host is source.host and reportingInstance: the node's name.
	Host string
	// TTL is how long an Event outlives its lastTimestamp (DefaultTTL).
	TTL time.Duration
	// Clock is for tests (the real clock by default).
	Clock clock.PassiveClock
	Log   hclog.Logger
	// Counter counts the Events recorded (agent/exporter.Own, for
	// Prometheus); nil: none.
	Counter Counter
}

// Counter counts Events as they are recorded: a warning such as an image
// the trust policy refused is something to alert on, and a count survives
// the Event's TTL.
type Counter interface {
	EventRecorded(eventtype, reason, kind string)
}

// Recorder writes Events. Safe for concurrent use; recording is
// synchronous (an Event is in the store when Event returns) but never
// fails its caller: a write that fails is logged, as client-go does.
type Recorder struct {
	cfg   Config
	log   hclog.Logger
	mu    *sync.Mutex // one correlation and write at a time: the correlator's counts follow the store's
	corr  *record.EventCorrelator
	clock clock.PassiveClock
}

// New returns a recorder.
func New(cfg Config) *Recorder {
	if cfg.Component == "" {
		cfg.Component = "kubelet"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	return &Recorder{
		cfg: cfg, log: cfg.Log.Named("events"), mu: &sync.Mutex{}, clock: cfg.Clock,
		corr: record.NewEventCorrelatorWithOptions(record.CorrelatorOptions{Clock: cfg.Clock}),
	}
}

// WithComponent is a recorder reporting as another component (the
// scheduler's "default-scheduler" for Scheduled) over the same store.
func (r *Recorder) WithComponent(component string) *Recorder {
	cfg := r.cfg
	cfg.Component = component
	return &Recorder{cfg: cfg, log: r.log, mu: r.mu, clock: r.clock,
		corr: record.NewEventCorrelatorWithOptions(record.CorrelatorOptions{Clock: r.clock})}
}

// PodRef is the reference the kubelet gives a pod's Events.
func PodRef(pod *corev1.Pod) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name,
		UID: pod.UID, ResourceVersion: pod.ResourceVersion,
	}
}

// ContainerRef is the reference the kubelet gives a container's Events
// (kubecontainer.GenerateContainerRef): the pod's, with the container's
// field path.
func ContainerRef(pod *corev1.Pod, container string) *corev1.ObjectReference {
	ref := PodRef(pod)
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == container {
			ref.FieldPath = fmt.Sprintf("spec.initContainers{%s}", container)
			return ref
		}
	}
	ref.FieldPath = fmt.Sprintf("spec.containers{%s}", container)
	return ref
}

// Eventf records an Event of type (corev1.EventTypeNormal or
// EventTypeWarning) about ref.
func (r *Recorder) Eventf(ref *corev1.ObjectReference, eventtype, reason, format string, args ...any) {
	r.Event(ref, eventtype, reason, fmt.Sprintf(format, args...))
}

// Event records an Event of type about ref.
func (r *Recorder) Event(ref *corev1.ObjectReference, eventtype, reason, message string) {
	if r == nil || ref == nil {
		return
	}
	if eventtype != corev1.EventTypeNormal && eventtype != corev1.EventTypeWarning {
		r.log.Error("unsupported event type", "type", eventtype, "reason", reason)
		return
	}
	ev := r.make(ref, eventtype, reason, message)
	r.mu.Lock()
	defer r.mu.Unlock()
	res, err := r.corr.EventCorrelate(ev)
	if err != nil {
		r.log.Debug("event correlation", "error", err)
	}
	if res == nil || res.Skip {
		return
	}
	stored, err := r.write(res.Event, res.Event.Count > 1)
	if err != nil {
		r.log.Error("unable to record event", "object", ref.Namespace+"/"+ref.Name, "reason", reason, "error", err)
		return
	}
	r.corr.UpdateState(stored)
	if eventtype == corev1.EventTypeWarning {
		// For a log pipeline reading the journal: one line per Warning,
		// its fields as key=value (kubectl get events says the same).
		r.log.Warn("event", "type", eventtype, "reason", reason, "kind", ref.Kind, "namespace", ref.Namespace, "name", ref.Name,
			"count", stored.Count, "message", message)
	}
	if r.cfg.Counter != nil {
		r.cfg.Counter.EventRecorded(eventtype, reason, ref.Kind)
	}
}

// make builds the Event as client-go's recorder does (makeEvent,
// generateEvent): eventTime stays unset, as on the kubelet's Events.
func (r *Recorder) make(ref *corev1.ObjectReference, eventtype, reason, message string) *corev1.Event {
	t := metav1.NewTime(r.clock.Now())
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%v.%x", ref.Name, t.UnixNano()), Namespace: ns},
		InvolvedObject:      *ref,
		Reason:              reason,
		Message:             message,
		FirstTimestamp:      t,
		LastTimestamp:       t,
		Count:               1,
		Type:                eventtype,
		Source:              corev1.EventSource{Component: r.cfg.Component, Host: r.cfg.Host},
		ReportingController: r.cfg.Component,
		ReportingInstance:   r.cfg.Host,
	}
}

// write stores ev: an update of the Event it repeats (count,
// lastTimestamp, message: client-go's patch), or a new Event when it is
// the first or the one it repeats has gone (expired).
func (r *Recorder) write(ev *corev1.Event, update bool) (*corev1.Event, error) {
	if update {
		var cur corev1.Event
		err := r.cfg.Store.Get(Resource, ev.Namespace, ev.Name, &cur)
		if err == nil {
			cur.Count, cur.LastTimestamp, cur.Message = ev.Count, ev.LastTimestamp, ev.Message
			cur.ResourceVersion = "" // last writer wins, as client-go's patch
			if err = r.cfg.Store.Update(Resource, &cur, false); err == nil {
				return &cur, nil
			}
		}
		if !errdefs.IsNotFound(err) {
			return nil, err
		}
	}
	ev = ev.DeepCopy()
	ev.ResourceVersion = ""
	if update {
		// The one it repeated expired: a new Event, counted afresh.
		ev.Count, ev.FirstTimestamp = 1, ev.LastTimestamp
	}
	if err := r.cfg.Store.Create(Resource, ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// Sweep deletes the Events whose lastTimestamp (or eventTime, for those
// written through events.k8s.io without one) is older than the TTL, and
// returns how many it deleted.
func (r *Recorder) Sweep() (int, error) {
	cutoff := r.clock.Now().Add(-r.cfg.TTL)
	type key struct {
		ns, name string
		uid      types.UID
		rv       string
	}
	var old []key
	_, err := r.cfg.Store.List(Resource, "", func(data []byte) error {
		var ev corev1.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			return nil // not ours to judge; the API refuses such writes
		}
		last := ev.LastTimestamp.Time
		if last.IsZero() {
			last = ev.EventTime.Time
		}
		if last.IsZero() {
			last = ev.CreationTimestamp.Time
		}
		if last.Before(cutoff) {
			old = append(old, key{ev.Namespace, ev.Name, ev.UID, ev.ResourceVersion})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, k := range old {
		// Preconditions: an Event repeated since the list is younger now.
		_, err := r.cfg.Store.Delete(Resource, k.ns, k.name, k.uid, k.rv)
		switch {
		case err == nil:
			n++
		case errdefs.IsNotFound(err), errdefs.IsConflict(err):
		default:
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// SweepInterval is how often Run sweeps.
const SweepInterval = time.Minute

// Run sweeps expired Events every SweepInterval until ctx ends.
func (r *Recorder) Run(ctx context.Context) error {
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	for {
		if n, err := r.Sweep(); err != nil {
			r.log.Warn("expire events", "error", err)
		} else if n > 0 {
			r.log.Debug("expired events", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
