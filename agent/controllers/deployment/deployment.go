// Package deployment is the kube-controller-manager's Deployment
// controller on one node (pkg/controller/deployment,
// kubernetes-semantics.md §6): each Deployment owns ReplicaSets, one per
// pod template (named <deployment>-<pod-template-hash>, the hash
// computed as upstream computes it), and moves its replicas from the old
// ones to the new one by its strategy (RollingUpdate within maxSurge and
// maxUnavailable, or Recreate), keeping revisionHistoryLimit old ones; its
// status and conditions are upstream's, so kubectl rollout status reads
// them as on a cluster. The ReplicaSet controller (package replicaset)
// makes the pods.
package deployment

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/dump"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/berth-dev/berth/agent/controllers/loop"
	"github.com/berth-dev/berth/agent/store"
)

// Store is what the controller reads and writes of agent/store.
type Store interface {
	List(res store.Resource, ns string, fn func(data []byte) error) (uint64, error)
	Modify(res store.Resource, ns, name string, obj store.Object, fn func(cur store.Object) (store.Decision, error)) (bool, error)
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

var _ Store = (*store.Store)(nil)

// API is the API's create and delete, as a client's.
type API interface {
	Create(resource string, obj store.Object) error
	Delete(resource, ns, name string, uid types.UID) error
}

// Recorder records Events (as deployment-controller).
type Recorder interface {
	Event(ref *corev1.ObjectReference, eventtype, reason, message string)
}

// Config configures the controller.
type Config struct {
	Store  Store
	API    API
	Events Recorder
	Log    hclog.Logger
	Resync time.Duration // default 30 s
	Now    func() time.Time
}

const (
	deployments store.Resource = "deployments"
	replicaSets store.Resource = "replicasets"
	rsKind                     = "apps/replicasets"

	hashLabel   = appsv1.DefaultDeploymentUniqueLabelKey // pod-template-hash
	revisionAnn = "deployment.kubernetes.io/revision"
	desiredAnn  = "deployment.kubernetes.io/desired-replicas"
	maxAnn      = "deployment.kubernetes.io/max-replicas"

	// The Progressing and Available conditions' reasons (deployment util).
	reasonNewRSCreated   = "NewReplicaSetCreated"
	reasonRSUpdated      = "ReplicaSetUpdated"
	reasonNewRSAvailable = "NewReplicaSetAvailable"
	reasonTimedOut       = "ProgressDeadlineExceeded"
	reasonPaused         = "DeploymentPaused"
	reasonResumed        = "DeploymentResumed"
	reasonMinAvailable   = "MinimumReplicasAvailable"
	reasonMinUnavailable = "MinimumReplicasUnavailable"
)

// Controller runs the passes.
type Controller struct {
	cfg  Config
	log  hclog.Logger
	loop *loop.Loop
	mu   sync.Mutex
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
	return &Controller{cfg: cfg, log: cfg.Log, loop: loop.New()}
}

// Run follows Deployments and ReplicaSets (whose status the ReplicaSet
// controller keeps from the pods) until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return c.loop.Run(ctx, c.cfg.Store, []store.Resource{deployments, replicaSets}, c.cfg.Resync, c.log, c.Sync)
}

// Sync makes one pass over every Deployment and the ReplicaSets.
func (c *Controller) Sync(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []*appsv1.Deployment
	if _, err := c.cfg.Store.List(deployments, "", func(b []byte) error {
		var d appsv1.Deployment
		if err := json.Unmarshal(b, &d); err != nil {
			return err
		}
		ds = append(ds, &d)
		return nil
	}); err != nil {
		return fmt.Errorf("list deployments: %w", err)
	}
	sets, err := c.listRS("")
	if err != nil {
		return err
	}
	uids := map[types.UID]bool{}
	for _, d := range ds {
		uids[d.UID] = true
	}
	var errs []error
	// The garbage collector's part: a ReplicaSet whose Deployment is gone.
	for _, rs := range sets {
		if ref := metav1.GetControllerOf(rs); ref != nil && ref.Kind == "Deployment" && ref.APIVersion == "apps/v1" && !uids[ref.UID] && rs.DeletionTimestamp == nil {
			if err := c.cfg.API.Delete(rsKind, rs.Namespace, rs.Name, rs.UID); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				errs = append(errs, fmt.Errorf("delete replicaset %s/%s of a deleted deployment: %w", rs.Namespace, rs.Name, err))
			}
		}
	}
	var wake time.Duration
	for _, d := range ds {
		next, err := c.syncOne(ctx, d, sets)
		if err != nil {
			errs = append(errs, fmt.Errorf("deployment %s/%s: %w", d.Namespace, d.Name, err))
		}
		if next > 0 && (wake == 0 || next < wake) {
			wake = next
		}
	}
	if wake > 0 {
		c.loop.After(wake) // a progress deadline to check
	}
	return errors.Join(errs...)
}

func (c *Controller) listRS(ns string) ([]*appsv1.ReplicaSet, error) {
	var out []*appsv1.ReplicaSet
	if _, err := c.cfg.Store.List(replicaSets, ns, func(b []byte) error {
		var rs appsv1.ReplicaSet
		if err := json.Unmarshal(b, &rs); err != nil {
			return err
		}
		out = append(out, &rs)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list replicasets: %w", err)
	}
	return out, nil
}

// syncOne is syncDeployment for one Deployment.
func (c *Controller) syncOne(ctx context.Context, d *appsv1.Deployment, sets []*appsv1.ReplicaSet) (time.Duration, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		return 0, nil // validation forbids it; upstream warns and skips
	}
	owned, err := c.claim(d, sel, sets)
	if err != nil {
		return 0, err
	}
	if d.DeletionTimestamp != nil {
		return 0, nil
	}
	newRS, oldRSs := split(d, owned)
	if d.Spec.Paused || isScalingEvent(d, newRS, oldRSs) {
		// upstream's sync: a paused Deployment only scales (its template
		// changes wait), and a scaling event is shared among the
		// ReplicaSets before the rollout goes on (scale.go).
		if err := c.scale(d, newRS, oldRSs); err != nil {
			return 0, err
		}
		if owned, err = c.ownedNow(d, sel); err != nil {
			return 0, err
		}
		newRS, _ = split(d, owned)
		return c.status(d, newRS, owned, false)
	}
	created := false
	if newRS == nil {
		if newRS, err = c.createNewRS(d, owned); err != nil || newRS == nil {
			return 0, err
		}
		created = true
		owned = append(owned, newRS)
	} else if err := c.syncRevision(d, newRS, oldRSs); err != nil {
		return 0, err
	}
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		err = c.recreate(d, newRS, oldRSs)
	} else {
		err = c.rolling(d, newRS, oldRSs)
	}
	if err != nil {
		return 0, err
	}
	if complete(d, newRS, owned) {
		c.cleanup(d, oldRSs)
	}
	// What was scaled shows in the next pass's ReplicaSets; the status is
	// written from what is stored now.
	if owned, err = c.ownedNow(d, sel); err != nil {
		return 0, err
	}
	newRS, _ = split(d, owned)
	return c.status(d, newRS, owned, created)
}

// ownedNow re-reads the Deployment's ReplicaSets after a pass's writes.
func (c *Controller) ownedNow(d *appsv1.Deployment, sel labels.Selector) ([]*appsv1.ReplicaSet, error) {
	sets, err := c.listRS(d.Namespace)
	if err != nil {
		return nil, err
	}
	var out []*appsv1.ReplicaSet
	for _, rs := range sets {
		if ref := metav1.GetControllerOf(rs); ref != nil && ref.UID == d.UID && sel.Matches(labels.Set(rs.Labels)) {
			out = append(out, rs)
		}
	}
	return out, nil
}

// claim is ClaimReplicaSets: its own and the orphans its selector matches
// (adopted), releasing those it no longer selects.
func (c *Controller) claim(d *appsv1.Deployment, sel labels.Selector, sets []*appsv1.ReplicaSet) ([]*appsv1.ReplicaSet, error) {
	var out []*appsv1.ReplicaSet
	var errs []error
	for _, rs := range sets {
		if rs.Namespace != d.Namespace {
			continue
		}
		ref := metav1.GetControllerOf(rs)
		matches := sel.Matches(labels.Set(rs.Labels))
		switch {
		case ref != nil && ref.UID == d.UID && matches:
			out = append(out, rs)
		case ref != nil && ref.UID == d.UID:
			errs = append(errs, c.modifyRS(rs, func(x *appsv1.ReplicaSet) bool { return setRefs(x, d, false) }, false))
		case ref == nil && matches && d.DeletionTimestamp == nil && rs.DeletionTimestamp == nil:
			if err := c.modifyRS(rs, func(x *appsv1.ReplicaSet) bool { return setRefs(x, d, true) }, false); err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, rs)
		}
	}
	return out, errors.Join(errs...)
}

func setRefs(rs *appsv1.ReplicaSet, d *appsv1.Deployment, adopt bool) bool {
	ref := metav1.GetControllerOf(rs)
	if adopt {
		if ref != nil {
			return false
		}
		rs.OwnerReferences = append(rs.OwnerReferences, *controllerRef(d))
		return true
	}
	if ref == nil || ref.UID != d.UID {
		return false
	}
	refs := rs.OwnerReferences[:0]
	for _, r := range rs.OwnerReferences {
		if r.UID != d.UID {
			refs = append(refs, r)
		}
	}
	rs.OwnerReferences = refs
	return true
}

func controllerRef(d *appsv1.Deployment) *metav1.OwnerReference {
	return metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))
}

// split finds the new ReplicaSet, the one whose template is the
// Deployment's but for the hash label (the oldest if several: upstream's
// FindNewReplicaSet), and the old ones.
func split(d *appsv1.Deployment, owned []*appsv1.ReplicaSet) (*appsv1.ReplicaSet, []*appsv1.ReplicaSet) {
	sorted := append([]*appsv1.ReplicaSet(nil), owned...)
	sortByCreation(sorted)
	var newRS *appsv1.ReplicaSet
	var old []*appsv1.ReplicaSet
	for _, rs := range sorted {
		if newRS == nil && equalIgnoreHash(&rs.Spec.Template, &d.Spec.Template) {
			newRS = rs
			continue
		}
		old = append(old, rs)
	}
	return newRS, old
}

func sortByCreation(rss []*appsv1.ReplicaSet) {
	sort.SliceStable(rss, func(i, j int) bool {
		if rss[i].CreationTimestamp.Equal(&rss[j].CreationTimestamp) {
			return rss[i].Name < rss[j].Name
		}
		return rss[i].CreationTimestamp.Before(&rss[j].CreationTimestamp)
	})
}

// equalIgnoreHash is EqualIgnoreHash: templates equal but for the
// pod-template-hash label.
func equalIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, hashLabel)
	delete(b.Labels, hashLabel)
	return apiequality.Semantic.DeepEqual(a, b)
}

// ComputeHash is the controller's pod-template-hash (controller_utils
// ComputeHash): FNV-32a of the template dumped as hashutil.DeepHashObject
// dumps it (apimachinery's dump.ForHash), the collision count appended
// little-endian, the decimal sum in SafeEncodeString's alphabet. With the
// same k8s.io/api types it is upstream's hash, byte for byte.
func ComputeHash(t *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(*t))
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

func replicas[T interface {
	*appsv1.Deployment | *appsv1.ReplicaSet
}](o T) int32 {
	var r *int32
	switch x := any(o).(type) {
	case *appsv1.Deployment:
		r = x.Spec.Replicas
	case *appsv1.ReplicaSet:
		r = x.Spec.Replicas
	}
	if r == nil {
		return 1
	}
	return *r
}

func active(rss []*appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	var out []*appsv1.ReplicaSet
	for _, rs := range rss {
		if replicas(rs) > 0 {
			out = append(out, rs)
		}
	}
	return out
}

func sumSpec(rss []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		if rs != nil {
			n += replicas(rs)
		}
	}
	return n
}

func revision(o metav1.Object) int64 {
	n, _ := strconv.ParseInt(o.GetAnnotations()[revisionAnn], 10, 64)
	return n
}

func maxRevision(rss []*appsv1.ReplicaSet) int64 {
	var m int64
	for _, rs := range rss {
		m = max(m, revision(rs))
	}
	return m
}

// createNewRS is getNewReplicaSet's create: the template with the hash
// label, the selector with it, the Deployment as controller, the
// replicas the strategy allows now, the revision after the old ones. A
// name taken by a ReplicaSet of another template is a hash collision:
// status.collisionCount grows and the next pass tries another hash.
func (c *Controller) createNewRS(d *appsv1.Deployment, owned []*appsv1.ReplicaSet) (*appsv1.ReplicaSet, error) {
	t := d.Spec.Template.DeepCopy()
	hash := ComputeHash(t, d.Status.CollisionCount)
	if t.Labels == nil {
		t.Labels = map[string]string{}
	}
	t.Labels[hashLabel] = hash
	sel := d.Spec.Selector.DeepCopy()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[hashLabel] = hash
	rev := maxRevision(owned) + 1
	rs := &appsv1.ReplicaSet{
		TypeMeta: metav1.TypeMeta{Kind: "ReplicaSet", APIVersion: "apps/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-" + hash, Namespace: d.Namespace, Labels: t.Labels,
			OwnerReferences: []metav1.OwnerReference{*controllerRef(d)}, Annotations: copiedAnnotations(d)},
		Spec: appsv1.ReplicaSetSpec{MinReadySeconds: d.Spec.MinReadySeconds, Selector: sel, Template: *t},
	}
	n := newReplicas(d, owned, nil)
	rs.Spec.Replicas = &n
	rs.Annotations[revisionAnn] = strconv.FormatInt(rev, 10)
	rs.Annotations[desiredAnn] = strconv.Itoa(int(replicas(d)))
	rs.Annotations[maxAnn] = strconv.Itoa(int(replicas(d) + maxSurge(d)))
	err := c.cfg.API.Create(rsKind, rs)
	if apierrors.IsAlreadyExists(err) {
		// The name is taken: ours (a pass cut short) or a collision.
		var cur appsv1.ReplicaSet
		sets, lerr := c.listRS(d.Namespace)
		if lerr != nil {
			return nil, lerr
		}
		for _, x := range sets {
			if x.Name == rs.Name {
				cur = *x
			}
		}
		if ref := metav1.GetControllerOf(&cur); ref != nil && ref.UID == d.UID && equalIgnoreHash(&cur.Spec.Template, &d.Spec.Template) {
			return &cur, nil
		}
		return nil, c.modifyD(d, func(x *appsv1.Deployment) bool {
			n := int32(1)
			if x.Status.CollisionCount != nil {
				n = *x.Status.CollisionCount + 1
			}
			x.Status.CollisionCount = &n
			return true
		})
	}
	if err != nil {
		msg := fmt.Sprintf("Failed to create new replica set %q: %v", rs.Name, err)
		c.event(d, corev1.EventTypeWarning, "FailedCreate", msg)
		_ = c.modifyD(d, func(x *appsv1.Deployment) bool {
			setCondition(&x.Status, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
				Reason: "FailedRSCreate", Message: msg}, c.cfg.Now())
			return true
		})
		return nil, err
	}
	if n > 0 {
		c.event(d, corev1.EventTypeNormal, "ScalingReplicaSet", fmt.Sprintf("Scaled up replica set %s to %d", rs.Name, n))
	}
	// The Deployment's own revision follows (an annotation the
	// controller writes as upstream does, through the status).
	return rs, c.modifyD(d, func(x *appsv1.Deployment) bool {
		setAnn(&x.ObjectMeta, revisionAnn, strconv.FormatInt(rev, 10))
		setCondition(&x.Status, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
			Reason: reasonNewRSCreated, Message: fmt.Sprintf("Created new replica set %q", rs.Name)}, c.cfg.Now())
		return true
	})
}

// copiedAnnotations are the Deployment's annotations a ReplicaSet takes
// (all but kubectl's last-applied configuration and the revision ones).
func copiedAnnotations(d *appsv1.Deployment) map[string]string {
	out := map[string]string{}
	for k, v := range d.Annotations {
		switch k {
		case corev1.LastAppliedConfigAnnotation, revisionAnn, "deployment.kubernetes.io/revision-history", desiredAnn, maxAnn:
			continue
		}
		out[k] = v
	}
	return out
}

func setAnn(m *metav1.ObjectMeta, k, v string) bool {
	if m.Annotations[k] == v {
		return false
	}
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[k] = v
	return true
}

// syncRevision gives an existing new ReplicaSet the revision after the
// old ones (a rollback to it makes it new again) and the Deployment its
// revision.
func (c *Controller) syncRevision(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) error {
	rev := revision(newRS)
	if m := maxRevision(old); rev <= m {
		rev = m + 1
	}
	r := strconv.FormatInt(rev, 10)
	if err := c.modifyRS(newRS, func(x *appsv1.ReplicaSet) bool {
		changed := setAnn(&x.ObjectMeta, revisionAnn, r)
		if x.Spec.MinReadySeconds != d.Spec.MinReadySeconds {
			x.Spec.MinReadySeconds = d.Spec.MinReadySeconds
			changed = true
		}
		return changed
	}, true); err != nil {
		return err
	}
	return c.modifyD(d, func(x *appsv1.Deployment) bool { return setAnn(&x.ObjectMeta, revisionAnn, r) })
}

// maxSurge and maxUnavailable are ResolveFenceposts over spec.replicas:
// surge rounded up, unavailable down, unavailable 1 if both are 0;
// MaxUnavailable also caps it at the replicas.
func maxSurge(d *appsv1.Deployment) int32 {
	s, _ := fenceposts(d)
	return s
}

func maxUnavailable(d *appsv1.Deployment) int32 {
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || replicas(d) == 0 {
		return 0
	}
	_, u := fenceposts(d)
	return min(u, replicas(d))
}

func fenceposts(d *appsv1.Deployment) (int32, int32) {
	ru := d.Spec.Strategy.RollingUpdate
	if ru == nil {
		return 0, 0
	}
	zero := intstr.FromInt32(0)
	surgeV, unavV := ru.MaxSurge, ru.MaxUnavailable
	if surgeV == nil {
		surgeV = &zero
	}
	if unavV == nil {
		unavV = &zero
	}
	desired := int(replicas(d))
	surge, err1 := intstr.GetScaledValueFromIntOrPercent(surgeV, desired, true)
	unav, err2 := intstr.GetScaledValueFromIntOrPercent(unavV, desired, false)
	if err1 != nil || err2 != nil {
		return 0, 1
	}
	if surge == 0 && unav == 0 {
		unav = 1
	}
	return int32(surge), int32(unav)
}

// newReplicas is NewRSNewReplicas: under RollingUpdate, what maxSurge
// leaves above the replicas of all ReplicaSets, up to spec.replicas;
// under Recreate, spec.replicas. A ReplicaSet counts for its pods not yet
// deleted too (status.replicas above spec.replicas): upstream counts the
// specs only, and a watch of a 6-replica rollout with maxSurge 2 saw 10
// pods at once, the old ReplicaSet scaled down but its pods not yet
// deleted while the new one grew twice (TestRollingUpdateAvailability).
func newReplicas(d *appsv1.Deployment, all []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) int32 {
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return replicas(d)
	}
	var cur int32
	if newRS != nil {
		cur = replicas(newRS)
	}
	var total int32
	for _, rs := range all {
		if rs != nil {
			total += max(replicas(rs), rs.Status.Replicas)
		}
	}
	maxTotal := replicas(d) + maxSurge(d)
	if total >= maxTotal {
		return cur
	}
	return cur + min(maxTotal-total, replicas(d)-cur)
}

// rolling is rolloutRolling: scale the new ReplicaSet up within maxSurge,
// then the old ones down within maxUnavailable.
func (c *Controller) rolling(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) error {
	all := append(append([]*appsv1.ReplicaSet(nil), old...), newRS)
	want := replicas(d)
	switch {
	case replicas(newRS) > want:
		_, err := c.scaleRS(d, newRS, want)
		return err
	case replicas(newRS) < want:
		if n := newReplicas(d, all, newRS); n != replicas(newRS) {
			_, err := c.scaleRS(d, newRS, n)
			return err // the ReplicaSet controller acts; the next pass goes on
		}
	}
	return c.scaleDownOld(d, newRS, old)
}

// scaleDownOld is reconcileOldReplicaSets: never below spec.replicas −
// maxUnavailable available pods, counting the new ReplicaSet's
// unavailable ones; the old ReplicaSets' unhealthy pods first, then the
// oldest ReplicaSets' available ones.
func (c *Controller) scaleDownOld(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) error {
	if sumSpec(old) == 0 {
		return nil
	}
	all := append(append([]*appsv1.ReplicaSet(nil), old...), newRS)
	minAvailable := replicas(d) - maxUnavailable(d)
	newUnavailable := replicas(newRS) - newRS.Status.AvailableReplicas
	maxDown := sumSpec(all) - minAvailable - newUnavailable
	if maxDown <= 0 {
		return nil
	}
	sorted := append([]*appsv1.ReplicaSet(nil), old...)
	sortByCreation(sorted)
	var cleaned int32
	for _, rs := range sorted {
		if cleaned >= maxDown {
			break
		}
		if replicas(rs) == 0 || replicas(rs) == rs.Status.AvailableReplicas {
			continue
		}
		down := min(maxDown-cleaned, replicas(rs)-rs.Status.AvailableReplicas)
		if _, err := c.scaleRS(d, rs, replicas(rs)-down); err != nil {
			return err
		}
		cleaned += down
	}
	var available int32
	for _, rs := range all {
		available += rs.Status.AvailableReplicas
	}
	if available <= minAvailable {
		return nil
	}
	total := available - minAvailable
	var done int32
	for _, rs := range sorted {
		if done >= total {
			break
		}
		if replicas(rs) == 0 {
			continue
		}
		down := min(replicas(rs), total-done)
		if _, err := c.scaleRS(d, rs, replicas(rs)-down); err != nil {
			return err
		}
		done += down
	}
	return nil
}

// recreate is rolloutRecreate: the old ReplicaSets to 0, and once their
// pods are gone, the new one to spec.replicas.
func (c *Controller) recreate(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) error {
	scaled := false
	for _, rs := range old {
		if replicas(rs) == 0 {
			continue
		}
		if _, err := c.scaleRS(d, rs, 0); err != nil {
			return err
		}
		scaled = true
	}
	if scaled {
		return nil
	}
	for _, rs := range old {
		if rs.Status.Replicas > 0 {
			return nil // their pods are still going
		}
	}
	if replicas(newRS) != replicas(d) {
		_, err := c.scaleRS(d, newRS, replicas(d))
		return err
	}
	return nil
}

// cleanup is cleanupDeployment: the old ReplicaSets with no replicas
// beyond revisionHistoryLimit go, oldest first.
func (c *Controller) cleanup(d *appsv1.Deployment, old []*appsv1.ReplicaSet) {
	if d.Spec.RevisionHistoryLimit == nil {
		return
	}
	var idle []*appsv1.ReplicaSet
	for _, rs := range old {
		if replicas(rs) == 0 && rs.Status.Replicas == 0 && rs.DeletionTimestamp == nil {
			idle = append(idle, rs)
		}
	}
	diff := len(idle) - int(*d.Spec.RevisionHistoryLimit)
	if diff <= 0 {
		return
	}
	sort.SliceStable(idle, func(i, j int) bool { return revision(idle[i]) < revision(idle[j]) })
	for _, rs := range idle[:diff] {
		if err := c.cfg.API.Delete(rsKind, rs.Namespace, rs.Name, rs.UID); err != nil && !apierrors.IsNotFound(err) {
			c.log.Warn("clean up old replicaset", "replicaset", rs.Namespace+"/"+rs.Name, "error", err)
		}
	}
}

// scaleRS sets a ReplicaSet's replicas (and the desired and max replicas
// annotations), with upstream's ScalingReplicaSet Event.
func (c *Controller) scaleRS(d *appsv1.Deployment, rs *appsv1.ReplicaSet, n int32) (bool, error) {
	from := replicas(rs)
	desired, maxR := strconv.Itoa(int(replicas(d))), strconv.Itoa(int(replicas(d)+maxSurge(d)))
	if from == n && rs.Annotations[desiredAnn] == desired && rs.Annotations[maxAnn] == maxR {
		return false, nil
	}
	err := c.modifyRS(rs, func(x *appsv1.ReplicaSet) bool {
		x.Spec.Replicas = &n
		setAnn(&x.ObjectMeta, desiredAnn, desired)
		setAnn(&x.ObjectMeta, maxAnn, maxR)
		return true
	}, from != n)
	if err != nil {
		return false, err
	}
	rs.Spec.Replicas = &n
	if from != n {
		op := "up"
		if n < from {
			op = "down"
		}
		c.event(d, corev1.EventTypeNormal, "ScalingReplicaSet", fmt.Sprintf("Scaled %s replica set %s to %d from %d", op, rs.Name, n, from))
	}
	return from != n, nil
}

// complete is DeploymentComplete over the ReplicaSets as stored.
func complete(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, owned []*appsv1.ReplicaSet) bool {
	st := calculate(d, newRS, owned)
	want := replicas(d)
	return st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want
}

// calculate is calculateStatus's counters.
func calculate(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, owned []*appsv1.ReplicaSet) appsv1.DeploymentStatus {
	st := appsv1.DeploymentStatus{ObservedGeneration: d.Generation, CollisionCount: d.Status.CollisionCount}
	var total int32
	for _, rs := range owned {
		st.Replicas += rs.Status.Replicas
		st.ReadyReplicas += rs.Status.ReadyReplicas
		st.AvailableReplicas += rs.Status.AvailableReplicas
		total += replicas(rs)
	}
	if newRS != nil {
		st.UpdatedReplicas = newRS.Status.Replicas
	}
	st.UnavailableReplicas = max(0, total-st.AvailableReplicas)
	return st
}

// status is calculateStatus and syncRolloutStatus: the counters, the
// Available condition, the Progressing one (created, progressing,
// complete, or past progressDeadlineSeconds), the new ReplicaSet's
// ReplicaFailure. It returns when the progress deadline falls (0: none).
func (c *Controller) status(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, owned []*appsv1.ReplicaSet, created bool) (time.Duration, error) {
	now := c.cfg.Now()
	var wake time.Duration
	err := c.modifyD(d, func(x *appsv1.Deployment) bool {
		if x.UID != d.UID {
			return false
		}
		old := x.Status
		st := calculate(x, newRS, owned)
		st.Conditions = append([]appsv1.DeploymentCondition(nil), old.Conditions...)
		want := replicas(x)
		if st.AvailableReplicas >= want-maxUnavailable(x) {
			setCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
				Reason: reasonMinAvailable, Message: "Deployment has minimum availability."}, now)
		} else {
			setCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse,
				Reason: reasonMinUnavailable, Message: "Deployment does not have minimum availability."}, now)
		}
		cur := condition(st.Conditions, appsv1.DeploymentProgressing)
		switch {
		case x.Spec.Paused:
			if cur == nil || cur.Reason != reasonPaused {
				setCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionUnknown,
					Reason: reasonPaused, Message: "Deployment is paused"}, now)
			}
		case x.Spec.ProgressDeadlineSeconds == nil:
			st.Conditions = removeCondition(st.Conditions, appsv1.DeploymentProgressing)
		case st.Replicas == st.UpdatedReplicas && cur != nil && cur.Reason == reasonNewRSAvailable:
			// complete: stays so
		case newRS != nil && st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want && st.ObservedGeneration >= x.Generation:
			setCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
				Reason: reasonNewRSAvailable, Message: fmt.Sprintf("ReplicaSet %q has successfully progressed.", newRS.Name)}, now)
		case newRS != nil && (created || cur != nil && cur.Reason == reasonPaused || progressing(old, st)):
			reason, msg := reasonRSUpdated, fmt.Sprintf("ReplicaSet %q is progressing.", newRS.Name)
			if created {
				reason, msg = reasonNewRSCreated, fmt.Sprintf("Created new replica set %q", newRS.Name)
			} else if cur != nil && cur.Reason == reasonPaused {
				reason, msg = reasonResumed, "Deployment is resumed"
			}
			t := metav1.NewTime(now.Truncate(time.Second))
			cond := appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: reason, Message: msg,
				LastUpdateTime: t, LastTransitionTime: t}
			if cur != nil && cur.Status == corev1.ConditionTrue {
				cond.LastTransitionTime = cur.LastTransitionTime
			}
			st.Conditions = append(removeCondition(st.Conditions, appsv1.DeploymentProgressing), cond)
		case newRS != nil && cur != nil && cur.Reason != reasonTimedOut:
			deadline := cur.LastUpdateTime.Add(time.Duration(*x.Spec.ProgressDeadlineSeconds) * time.Second)
			if !now.Before(deadline) {
				setCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
					Reason: reasonTimedOut, Message: fmt.Sprintf("ReplicaSet %q has timed out progressing.", newRS.Name)}, now)
			} else {
				wake = deadline.Sub(now) + 10*time.Millisecond
			}
		}
		if f := rsFailure(newRS); f != nil {
			setCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentReplicaFailure, Status: f.Status, Reason: f.Reason, Message: f.Message}, now)
		} else {
			st.Conditions = removeCondition(st.Conditions, appsv1.DeploymentReplicaFailure)
		}
		if statusEqual(old, st) {
			return false
		}
		x.Status = st
		return true
	})
	return wake, err
}

// progressing is DeploymentProgressing: more updated, ready or available
// replicas, or fewer old ones, than the last status said.
func progressing(old, st appsv1.DeploymentStatus) bool {
	return st.UpdatedReplicas > old.UpdatedReplicas || st.ReadyReplicas > old.ReadyReplicas ||
		st.AvailableReplicas > old.AvailableReplicas || old.Replicas-old.UpdatedReplicas > st.Replicas-st.UpdatedReplicas
}

func rsFailure(rs *appsv1.ReplicaSet) *appsv1.ReplicaSetCondition {
	if rs == nil {
		return nil
	}
	for i := range rs.Status.Conditions {
		if rs.Status.Conditions[i].Type == appsv1.ReplicaSetReplicaFailure {
			return &rs.Status.Conditions[i]
		}
	}
	return nil
}

func condition(cs []appsv1.DeploymentCondition, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

// setCondition is SetDeploymentCondition: the same status and reason keep
// their transition time (and, unchanged, their update time too).
func setCondition(st *appsv1.DeploymentStatus, c appsv1.DeploymentCondition, now time.Time) {
	t := metav1.NewTime(now.Truncate(time.Second))
	c.LastUpdateTime, c.LastTransitionTime = t, t
	if cur := condition(st.Conditions, c.Type); cur != nil {
		if cur.Status == c.Status && cur.Reason == c.Reason {
			if cur.Message == c.Message {
				return
			}
			c.LastTransitionTime = cur.LastTransitionTime
		}
	}
	st.Conditions = append(removeCondition(st.Conditions, c.Type), c)
}

func removeCondition(cs []appsv1.DeploymentCondition, t appsv1.DeploymentConditionType) []appsv1.DeploymentCondition {
	var out []appsv1.DeploymentCondition
	for _, c := range cs {
		if c.Type != t {
			out = append(out, c)
		}
	}
	return out
}

func statusEqual(a, b appsv1.DeploymentStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

var errUnchanged = errors.New("unchanged")

// modifyRS changes the stored ReplicaSet (the same uid) with fn; bump: a
// spec change, a new generation, as the API's update gives it.
func (c *Controller) modifyRS(rs *appsv1.ReplicaSet, fn func(*appsv1.ReplicaSet) bool, bump bool) error {
	_, err := c.cfg.Store.Modify(replicaSets, rs.Namespace, rs.Name, &appsv1.ReplicaSet{}, func(cur store.Object) (store.Decision, error) {
		x := cur.(*appsv1.ReplicaSet)
		if x.UID != rs.UID || !fn(x) {
			return store.Decision{}, errUnchanged
		}
		return store.Decision{BumpGeneration: bump}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// modifyD changes the stored Deployment's status or the controller's
// annotations (upstream writes both through the status subresource: no
// new generation).
func (c *Controller) modifyD(d *appsv1.Deployment, fn func(*appsv1.Deployment) bool) error {
	_, err := c.cfg.Store.Modify(deployments, d.Namespace, d.Name, &appsv1.Deployment{}, func(cur store.Object) (store.Decision, error) {
		x := cur.(*appsv1.Deployment)
		if x.UID != d.UID || !fn(x) {
			return store.Decision{}, errUnchanged
		}
		return store.Decision{}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

func (c *Controller) event(d *appsv1.Deployment, typ, reason, msg string) {
	if c.cfg.Events == nil {
		return
	}
	c.cfg.Events.Event(&corev1.ObjectReference{Kind: "Deployment", APIVersion: "apps/v1", Namespace: d.Namespace, Name: d.Name,
		UID: d.UID, ResourceVersion: d.ResourceVersion}, typ, reason, msg)
}
