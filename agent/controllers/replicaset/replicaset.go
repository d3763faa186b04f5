// Package replicaset is the kube-controller-manager's ReplicaSet controller
// on one node (pkg/controller/replicaset, kubernetes-semantics.md §6.3):
// each ReplicaSet gets as many active pods as it asks for, made from its
// template through the API (admission holds them as a client's), named
// <replicaset>-<5 characters>, owned by it; orphans it selects are adopted,
// pods it no longer selects released; its status counts them. Pods whose
// owning ReplicaSet is gone are deleted, as the garbage collector does
// with background propagation.
package replicaset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/controllers/loop"
	"github.com/berth-dev/berth/agent/store"
)

// Store is what the controller reads and writes of agent/store: lists,
// the watch, and status writes (a controller's status updates).
type Store interface {
	ScanKeyed(res store.Resource, ns string, fn func(key, data []byte) error) (uint64, error)
	Modify(res store.Resource, ns, name string, obj store.Object, fn func(cur store.Object) (store.Decision, error)) (bool, error)
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

var _ Store = (*store.Store)(nil)

// API is the API's create and delete, as a client's (api/server's
// in-process calls): defaults, admission, validation, graceful deletion.
type API interface {
	Create(resource string, obj store.Object) error
	Delete(resource, ns, name string, uid types.UID) error
}

// Recorder records Events (*events.Recorder, as replicaset-controller).
type Recorder interface {
	Event(ref *corev1.ObjectReference, eventtype, reason, message string)
}

// Config configures the controller.
type Config struct {
	Store  Store
	API    API
	Events Recorder // nil: none
	Log    hclog.Logger
	// Resync is the period of a full pass without any change (default 30 s).
	Resync time.Duration
	Now    func() time.Time
}

const (
	// burstReplicas bounds the creates or deletes of one pass, as the
	// controller's BurstReplicas (500).
	burstReplicas = 500
	// Resources as the store and the API name them.
	replicaSets store.Resource = "replicasets"
	pods        store.Resource = "pods"
	podsKind                   = "pods"
)

// Controller runs the passes.
type Controller struct {
	cfg  Config
	log  hclog.Logger
	loop *loop.Loop
	mu   sync.Mutex // one pass at a time (Sync may be called by tests)
	// The lists' decoded objects, read only (store.Decoded).
	sets *store.Decoded[appsv1.ReplicaSet]
	pods *store.Decoded[corev1.Pod]
}

// New returns a controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{cfg: cfg, log: cfg.Log, loop: loop.New(),
		sets: &store.Decoded[appsv1.ReplicaSet]{Resource: replicaSets}, pods: &store.Decoded[corev1.Pod]{Resource: pods}}
}

// Run follows ReplicaSets and pods and makes a pass for each change (and
// every Resync) until ctx ends. A pass decides from what is stored only:
// a berthd killed in the middle of one carries on from there.
func (c *Controller) Run(ctx context.Context) error {
	return c.loop.Run(ctx, c.cfg.Store, []store.Resource{replicaSets, pods}, c.cfg.Resync, c.log, c.Sync)
}

// Sync makes one pass over every ReplicaSet and the pods.
func (c *Controller) Sync(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	sets, _, err := c.sets.List(c.cfg.Store, "")
	if err != nil {
		return err
	}
	all, _, err := c.pods.List(c.cfg.Store, "")
	if err != nil {
		return err
	}
	uids := map[types.UID]bool{}
	for _, rs := range sets {
		uids[rs.UID] = true
	}
	var errs []error
	// The garbage collector's part: a pod whose controlling ReplicaSet is
	// gone goes too (propagation Background).
	for _, p := range all {
		if ref := metav1.GetControllerOf(p); ref != nil && ref.Kind == "ReplicaSet" && ref.APIVersion == "apps/v1" && !uids[ref.UID] && p.DeletionTimestamp == nil {
			if err := c.cfg.API.Delete(podsKind, p.Namespace, p.Name, p.UID); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				errs = append(errs, fmt.Errorf("delete pod %s/%s of a deleted replicaset: %w", p.Namespace, p.Name, err))
			} else if err == nil {
				c.log.Info("deleted the pod of a deleted replicaset", "pod", p.Namespace+"/"+p.Name, "replicaset", ref.Name)
			}
		}
	}
	var wake time.Duration
	for _, rs := range sets {
		next, err := c.syncOne(ctx, rs, all)
		if err != nil {
			errs = append(errs, fmt.Errorf("replicaset %s/%s: %w", rs.Namespace, rs.Name, err))
		}
		if next > 0 && (wake == 0 || next < wake) {
			wake = next
		}
	}
	if wake > 0 {
		// A pod becomes available minReadySeconds after it became ready.
		c.loop.After(wake)
	}
	return errors.Join(errs...)
}

// syncOne is syncReplicaSet: claim the pods, make or delete the
// difference, write the status. It returns when a pod of it will have
// been ready for minReadySeconds (0: never).
func (c *Controller) syncOne(ctx context.Context, rs *appsv1.ReplicaSet, all []*corev1.Pod) (time.Duration, error) {
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		return 0, fmt.Errorf("invalid selector: %w", err)
	}
	owned, err := c.claim(rs, sel, all)
	if err != nil {
		return 0, err
	}
	active := activePods(owned)
	var manageErr error
	if rs.DeletionTimestamp == nil {
		manageErr = c.manage(ctx, rs, active)
		// The pods as they are now, for the status.
		active = c.reread(rs, sel)
	}
	st, wake := c.status(rs, active, manageErr)
	if err := c.writeStatus(rs, st); err != nil {
		return wake, errors.Join(manageErr, err)
	}
	return wake, manageErr
}

// claim is ClaimPods: the pods of rs's namespace it controls and, when
// it is not being deleted, the orphans its selector matches, adopted; a
// pod it controls that its selector no longer matches is released.
func (c *Controller) claim(rs *appsv1.ReplicaSet, sel labels.Selector, all []*corev1.Pod) ([]*corev1.Pod, error) {
	var out []*corev1.Pod
	var errs []error
	for _, p := range all {
		if p.Namespace != rs.Namespace {
			continue
		}
		ref := metav1.GetControllerOf(p)
		matches := sel.Matches(labels.Set(p.Labels))
		switch {
		case ref != nil && ref.UID == rs.UID && matches:
			out = append(out, p)
		case ref != nil && ref.UID == rs.UID:
			if err := c.setOwner(p, rs, false); err != nil {
				errs = append(errs, err)
			}
		case ref == nil && matches && rs.DeletionTimestamp == nil && p.DeletionTimestamp == nil:
			if err := c.setOwner(p, rs, true); err != nil {
				errs = append(errs, err)
				continue
			}
			c.log.Info("adopted pod", "pod", p.Namespace+"/"+p.Name, "replicaset", rs.Name)
			out = append(out, p)
		}
	}
	return out, errors.Join(errs...)
}

// setOwner adds rs as the pod's controller (adopt) or takes it off
// (release), checked against the stored pod.
func (c *Controller) setOwner(p *corev1.Pod, rs *appsv1.ReplicaSet, adopt bool) error {
	_, err := c.cfg.Store.Modify(pods, p.Namespace, p.Name, &corev1.Pod{}, func(cur store.Object) (store.Decision, error) {
		x := cur.(*corev1.Pod)
		if x.UID != p.UID {
			return store.Decision{}, errUnchanged
		}
		ref := metav1.GetControllerOf(x)
		if adopt {
			if ref != nil || x.DeletionTimestamp != nil {
				return store.Decision{}, errUnchanged
			}
			x.OwnerReferences = append(x.OwnerReferences, *controllerRef(rs))
			return store.Decision{}, nil
		}
		if ref == nil || ref.UID != rs.UID {
			return store.Decision{}, errUnchanged
		}
		refs := x.OwnerReferences[:0]
		for _, r := range x.OwnerReferences {
			if r.UID != rs.UID {
				refs = append(refs, r)
			}
		}
		x.OwnerReferences = refs
		return store.Decision{}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

var errUnchanged = errors.New("unchanged")

func controllerRef(rs *appsv1.ReplicaSet) *metav1.OwnerReference {
	return metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))
}

// reread lists rs's pods again after the creates and deletes.
func (c *Controller) reread(rs *appsv1.ReplicaSet, sel labels.Selector) []*corev1.Pod {
	var out []*corev1.Pod
	ps, _, _ := c.pods.List(c.cfg.Store, rs.Namespace)
	for _, p := range ps {
		if ref := metav1.GetControllerOf(p); ref != nil && ref.UID == rs.UID && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return activePods(out)
}

// activePods are FilterActivePods: neither finished nor being deleted.
func activePods(ps []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range ps {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// manage is manageReplicas: too few pods, create the difference,
// stopping at the first failure, whose
// error (the API's, e.g. a quota's Forbidden) is the FailedCreate Event's;
// too many, delete the ones ranked first.
func (c *Controller) manage(ctx context.Context, rs *appsv1.ReplicaSet, active []*corev1.Pod) error {
	want := int(*rs.Spec.Replicas)
	diff := len(active) - want
	switch {
	case diff < 0:
		// Upstream creates in slow-start batches (1, 2, 4, …, in
		// parallel) and stops at the first batch with a failure; one at
		// a time, stopping at the first failure, is the same bound on
		// what a refusing API (a full quota) is asked.
		for i := 0; i < min(-diff, burstReplicas); i++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			p := podFromTemplate(rs)
			if err := c.cfg.API.Create(podsKind, p); err != nil {
				c.event(rs, corev1.EventTypeWarning, "FailedCreate", "Error creating: "+err.Error())
				return &failure{reason: "FailedCreate", err: err}
			}
			c.event(rs, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: "+p.Name)
		}
	case diff > 0:
		for _, p := range podsToDelete(active, min(diff, burstReplicas)) {
			if err := c.cfg.API.Delete(podsKind, p.Namespace, p.Name, p.UID); err != nil && !apierrors.IsNotFound(err) {
				c.event(rs, corev1.EventTypeWarning, "FailedDelete", "Error deleting: "+err.Error())
				return &failure{reason: "FailedDelete", err: err}
			}
			c.event(rs, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: "+p.Name)
		}
	}
	return nil
}

// failure is a create or delete that failed: the ReplicaFailure
// condition's reason and message.
type failure struct {
	reason string
	err    error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// podFromTemplate is GetPodFromTemplate: the template's labels,
// annotations, finalizers and spec, generateName "<rs>-", rs its
// controller.
func podFromTemplate(rs *appsv1.ReplicaSet) *corev1.Pod {
	t := rs.Spec.Template.DeepCopy()
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: rs.Namespace, GenerateName: rs.Name + "-",
			Labels: t.Labels, Annotations: t.Annotations, Finalizers: t.Finalizers,
			OwnerReferences: []metav1.OwnerReference{*controllerRef(rs)},
		},
		Spec: t.Spec,
	}
}

// podsToDelete ranks the pods as ActivePods' Less (the controller's
// getPodsToDelete on one node) and returns the first n: pending before
// unknown before running, not ready before ready, ready for less time
// first, more restarts first, newer first.
func podsToDelete(ps []*corev1.Pod, n int) []*corev1.Pod {
	out := append([]*corev1.Pod(nil), ps...)
	phase := map[corev1.PodPhase]int{corev1.PodPending: 0, corev1.PodUnknown: 1, corev1.PodRunning: 2}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if phase[a.Status.Phase] != phase[b.Status.Phase] {
			return phase[a.Status.Phase] < phase[b.Status.Phase]
		}
		ra, rb := readySince(a), readySince(b)
		if (ra == nil) != (rb == nil) {
			return ra == nil
		}
		if ra != nil && !ra.Equal(rb) {
			return rb.Before(ra) // ready for less time first
		}
		if x, y := restarts(a), restarts(b); x != y {
			return x > y
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return b.CreationTimestamp.Before(&a.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	return out[:min(n, len(out))]
}

// readySince is when the pod became ready, nil if it is not.
func readySince(p *corev1.Pod) *metav1.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status != corev1.ConditionTrue {
				return nil
			}
			t := c.LastTransitionTime
			return &t
		}
	}
	return nil
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}

// status is calculateStatus: replicas (active pods), fully labeled,
// ready, available (ready for minReadySeconds), the observed generation,
// and the ReplicaFailure condition while creating or deleting fails.
func (c *Controller) status(rs *appsv1.ReplicaSet, active []*corev1.Pod, manageErr error) (appsv1.ReplicaSetStatus, time.Duration) {
	now := c.cfg.Now()
	st := appsv1.ReplicaSetStatus{Replicas: int32(len(active)), ObservedGeneration: rs.Generation}
	tl := labels.SelectorFromSet(rs.Spec.Template.Labels)
	minReady := time.Duration(rs.Spec.MinReadySeconds) * time.Second
	var wake time.Duration
	for _, p := range active {
		if tl.Matches(labels.Set(p.Labels)) {
			st.FullyLabeledReplicas++
		}
		since := readySince(p)
		if since == nil {
			continue
		}
		st.ReadyReplicas++
		if left := since.Add(minReady).Sub(now); minReady == 0 || left <= 0 {
			st.AvailableReplicas++
		} else if wake == 0 || left < wake {
			wake = left + 10*time.Millisecond
		}
	}
	st.Conditions = rs.Status.Conditions
	var f *failure
	if errors.As(manageErr, &f) {
		cond := appsv1.ReplicaSetCondition{Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue,
			LastTransitionTime: metav1.NewTime(now.Truncate(time.Second)), Reason: f.reason, Message: f.err.Error()}
		st.Conditions = setCondition(st.Conditions, cond)
	} else if manageErr == nil {
		st.Conditions = removeCondition(st.Conditions, appsv1.ReplicaSetReplicaFailure)
	}
	return st, wake
}

func setCondition(cs []appsv1.ReplicaSetCondition, c appsv1.ReplicaSetCondition) []appsv1.ReplicaSetCondition {
	for i := range cs {
		if cs[i].Type == c.Type {
			if cs[i].Status == c.Status && cs[i].Reason == c.Reason {
				c.LastTransitionTime = cs[i].LastTransitionTime
			}
			out := append([]appsv1.ReplicaSetCondition(nil), cs...)
			out[i] = c
			return out
		}
	}
	return append(append([]appsv1.ReplicaSetCondition(nil), cs...), c)
}

func removeCondition(cs []appsv1.ReplicaSetCondition, t appsv1.ReplicaSetConditionType) []appsv1.ReplicaSetCondition {
	var out []appsv1.ReplicaSetCondition
	for _, c := range cs {
		if c.Type != t {
			out = append(out, c)
		}
	}
	return out
}

// writeStatus stores st as rs's status when it differs.
func (c *Controller) writeStatus(rs *appsv1.ReplicaSet, st appsv1.ReplicaSetStatus) error {
	_, err := c.cfg.Store.Modify(replicaSets, rs.Namespace, rs.Name, &appsv1.ReplicaSet{}, func(cur store.Object) (store.Decision, error) {
		x := cur.(*appsv1.ReplicaSet)
		if x.UID != rs.UID || statusEqual(x.Status, st) {
			return store.Decision{}, errUnchanged
		}
		x.Status = st
		return store.Decision{}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

func statusEqual(a, b appsv1.ReplicaSetStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// event records an Event on the ReplicaSet.
func (c *Controller) event(rs *appsv1.ReplicaSet, typ, reason, msg string) {
	if c.cfg.Events == nil {
		return
	}
	c.cfg.Events.Event(&corev1.ObjectReference{Kind: "ReplicaSet", APIVersion: "apps/v1", Namespace: rs.Namespace, Name: rs.Name,
		UID: rs.UID, ResourceVersion: rs.ResourceVersion}, typ, reason, msg)
}
