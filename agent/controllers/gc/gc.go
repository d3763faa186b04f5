// Package gc is the garbage collector's part for deletes that do not
// propagate in the background (pkg/controller/garbagecollector): an owner
// deleted with propagationPolicy Orphan carries the finalizer "orphan"
// until its dependents no longer name it as an owner; one deleted with
// Foreground carries "foregroundDeletion" until its dependents are gone,
// deleted in the foreground themselves (a Deployment's ReplicaSets wait
// for their pods). Background deletion is the controllers' own: what
// names an owner that is gone is deleted by them.
//
// The owners here are Deployments (of ReplicaSets), ReplicaSets (of pods)
// and Services (of EndpointSlices), the kinds api/server marks
// ownsDependents.
package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/controllers/loop"
	"github.com/berth-dev/berth/agent/store"
)

// Store is what the collector reads and writes of agent/store.
type Store interface {
	List(res store.Resource, ns string, fn func(data []byte) error) (uint64, error)
	Modify(res store.Resource, ns, name string, obj store.Object, fn func(cur store.Object) (store.Decision, error)) (bool, error)
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

var _ Store = (*store.Store)(nil)

// API is the API's delete with a propagation policy (api/server's
// in-process DeletePropagating).
type API interface {
	DeletePropagating(resource, ns, name string, uid types.UID, policy metav1.DeletionPropagation) error
}

// Config configures the collector.
type Config struct {
	Store Store
	API   API
	Log   hclog.Logger
}

// kind is an owner or dependent kind: the store's resource, the API's
// name, and a new object.
type kind struct {
	res store.Resource
	api string
	new func() store.Object
}

var (
	deployments    = kind{"deployments", "apps/deployments", func() store.Object { return &appsv1.Deployment{} }}
	replicaSets    = kind{"replicasets", "apps/replicasets", func() store.Object { return &appsv1.ReplicaSet{} }}
	services       = kind{"services", "services", func() store.Object { return &corev1.Service{} }}
	pods           = kind{"pods", "pods", func() store.Object { return &corev1.Pod{} }}
	endpointSlices = kind{"endpointslices", "discovery.k8s.io/endpointslices", func() store.Object { return &discoveryv1.EndpointSlice{} }}

	owners     = []kind{deployments, replicaSets, services}
	dependents = []kind{replicaSets, pods, endpointSlices}
)

// Collector runs the passes.
type Collector struct {
	cfg  Config
	log  hclog.Logger
	loop *loop.Loop
	mu   sync.Mutex
}

// New returns a collector; Run starts it.
func New(cfg Config) *Collector {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	return &Collector{cfg: cfg, log: cfg.Log, loop: loop.New()}
}

// Run follows owners and dependents and makes a pass after each change.
func (c *Collector) Run(ctx context.Context) error {
	return c.loop.Run(ctx, c.cfg.Store, []store.Resource{deployments.res, replicaSets.res, services.res, pods.res, endpointSlices.res},
		30*time.Second, c.log, c.Sync)
}

type object struct {
	kind kind
	obj  store.Object
}

func (c *Collector) list(k kind) ([]store.Object, error) {
	var out []store.Object
	_, err := c.cfg.Store.List(k.res, "", func(b []byte) error {
		o := k.new()
		if err := json.Unmarshal(b, o); err != nil {
			return err
		}
		out = append(out, o)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", k.res, err)
	}
	return out, nil
}

// Sync makes one pass over the owners being deleted.
func (c *Collector) Sync(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var deleting []object
	for _, k := range owners {
		objs, err := c.list(k)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if o.GetDeletionTimestamp() != nil && (slices.Contains(o.GetFinalizers(), metav1.FinalizerOrphanDependents) || slices.Contains(o.GetFinalizers(), metav1.FinalizerDeleteDependents)) {
				deleting = append(deleting, object{k, o})
			}
		}
	}
	if len(deleting) == 0 {
		return nil
	}
	byOwner := map[types.UID][]object{}
	for _, k := range dependents {
		objs, err := c.list(k)
		if err != nil {
			return err
		}
		for _, o := range objs {
			for _, ref := range o.GetOwnerReferences() {
				byOwner[ref.UID] = append(byOwner[ref.UID], object{k, o})
			}
		}
	}
	var errs []error
	for _, o := range deleting {
		if err := c.collect(o, byOwner[o.obj.GetUID()]); err != nil {
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", o.kind.res, o.obj.GetNamespace(), o.obj.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// collect does what the owner's finalizer asks: Orphan releases every
// dependent, then lets the owner go; Foreground deletes them (in the
// foreground too) and lets the owner go once none is left.
func (c *Collector) collect(owner object, deps []object) error {
	uid := owner.obj.GetUID()
	if slices.Contains(owner.obj.GetFinalizers(), metav1.FinalizerOrphanDependents) {
		for _, d := range deps {
			if err := c.release(d, uid); err != nil {
				return err
			}
		}
		return c.finish(owner, metav1.FinalizerOrphanDependents)
	}
	if len(deps) == 0 {
		return c.finish(owner, metav1.FinalizerDeleteDependents)
	}
	var errs []error
	for _, d := range deps {
		if d.obj.GetDeletionTimestamp() != nil {
			continue // on its way; the owner waits for it
		}
		err := c.cfg.API.DeletePropagating(d.kind.api, d.obj.GetNamespace(), d.obj.GetName(), d.obj.GetUID(), metav1.DeletePropagationForeground)
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("delete %s %s/%s: %w", d.kind.res, d.obj.GetNamespace(), d.obj.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// release removes the owner's reference from a dependent (the orphaning).
func (c *Collector) release(d object, owner types.UID) error {
	_, err := c.cfg.Store.Modify(d.kind.res, d.obj.GetNamespace(), d.obj.GetName(), d.kind.new(), func(cur store.Object) (store.Decision, error) {
		var keep []metav1.OwnerReference
		for _, ref := range cur.GetOwnerReferences() {
			if ref.UID != owner {
				keep = append(keep, ref)
			}
		}
		if len(keep) == len(cur.GetOwnerReferences()) {
			return store.Decision{}, errUnchanged
		}
		cur.SetOwnerReferences(keep)
		return store.Decision{}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

var errUnchanged = errors.New("unchanged")

// finish removes the finalizer; the owner goes when it was the last.
func (c *Collector) finish(owner object, finalizer string) error {
	_, err := c.cfg.Store.Modify(owner.kind.res, owner.obj.GetNamespace(), owner.obj.GetName(), owner.kind.new(), func(cur store.Object) (store.Decision, error) {
		if cur.GetUID() != owner.obj.GetUID() || !slices.Contains(cur.GetFinalizers(), finalizer) {
			return store.Decision{}, errUnchanged
		}
		var keep []string
		for _, f := range cur.GetFinalizers() {
			if f != finalizer {
				keep = append(keep, f)
			}
		}
		cur.SetFinalizers(keep)
		if len(keep) == 0 && cur.GetDeletionTimestamp() != nil {
			return store.Decision{Delete: true}, nil
		}
		return store.Decision{}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	return err
}
