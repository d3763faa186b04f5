package node

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

// Store is what a Keeper needs of desired state; *store.Store provides it.
type Store interface {
	Get(res store.Resource, ns, name string, obj store.Object) error
	Create(res store.Resource, obj store.Object) error
	Update(res store.Resource, obj store.Object, bumpGeneration bool) error
}

var _ Store = (*store.Store)(nil)

// nodes is the store's resource for Node objects (the API's).
const nodes store.Resource = "nodes"

// DefaultHeartbeat is how often a Keeper refreshes the Node's status. A
// kubelet posts status every 10 s but, with node leases, writes it only
// every 5 min when nothing changed; berth has no lease and no node
// controller judging staleness, so a minute keeps lastHeartbeatTime
// honest without a store write every few seconds.
const DefaultHeartbeat = time.Minute

// Keeper registers this host's Node in the store and keeps its status
// current, as the kubelet's node status loop does.
type Keeper struct {
	store    Store
	build    func() (*corev1.Node, error)
	interval time.Duration
	log      hclog.Logger
}

// NewKeeper returns a Keeper writing the Node that build describes (for
// instance func() (*corev1.Node, error) { return Object(name, opts) }) every
// interval (0: DefaultHeartbeat).
func NewKeeper(st Store, build func() (*corev1.Node, error), interval time.Duration, log hclog.Logger) *Keeper {
	if interval <= 0 {
		interval = DefaultHeartbeat
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Keeper{store: st, build: build, interval: interval, log: log.Named("node")}
}

// Run syncs at once, retrying (logged, with back-off) until the node is
// registered, then every interval until ctx ends; a failed update is logged
// and retried at the next tick.
func (k *Keeper) Run(ctx context.Context) error {
	// The first registration is retried until it succeeds: a node that
	// failed once (a store briefly busy) must not stay unregistered until
	// berthd restarts.
	for delay := time.Second; ; delay = min(2*delay, k.interval) {
		err := k.Sync()
		if err == nil {
			break
		}
		k.log.Error("node registration failed, retrying", "error", err, "in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
	t := time.NewTicker(k.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := k.Sync(); err != nil {
				k.log.Error("node status update failed", "error", err)
			}
		}
	}
}

// Sync creates the Node, or updates the stored one: status from the host
// (conditions keep their lastTransitionTime while their status holds), the
// well-known labels set, and what others changed kept: labels and
// annotations added with kubectl, spec (cordon, taints).
func (k *Keeper) Sync() error {
	want, err := k.build()
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		var cur corev1.Node
		err := k.store.Get(nodes, "", want.Name, &cur)
		if errdefs.IsNotFound(err) {
			err = k.store.Create(nodes, want)
			if errdefs.IsAlreadyExists(err) && attempt == 0 {
				continue
			}
			if err != nil {
				return fmt.Errorf("register node %s: %w", want.Name, err)
			}
			k.log.Info("node registered", "name", want.Name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("read node %s: %w", want.Name, err)
		}
		next := merge(&cur, want)
		err = k.store.Update(nodes, next, false)
		// Someone (kubectl label, cordon) wrote in between: read again.
		if errdefs.IsConflict(err) && attempt < 3 {
			continue
		}
		if err != nil {
			return fmt.Errorf("update node %s: %w", want.Name, err)
		}
		return nil
	}
}

// merge is cur with want's status and labels, keeping the transition
// times of conditions whose status did not change.
func merge(cur, want *corev1.Node) *corev1.Node {
	next := cur.DeepCopy()
	next.TypeMeta = want.TypeMeta
	if next.Labels == nil {
		next.Labels = map[string]string{}
	}
	for key, v := range want.Labels {
		next.Labels[key] = v
	}
	old := map[corev1.NodeConditionType]corev1.NodeCondition{}
	for _, c := range cur.Status.Conditions {
		old[c.Type] = c
	}
	status := *want.Status.DeepCopy()
	for i, c := range status.Conditions {
		if o, ok := old[c.Type]; ok && o.Status == c.Status {
			status.Conditions[i].LastTransitionTime = o.LastTransitionTime
		}
	}
	next.Status = status
	return next
}

// Heartbeat is the Ready condition's lastHeartbeatTime of n (zero if none).
func Heartbeat(n *corev1.Node) metav1.Time {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastHeartbeatTime
		}
	}
	return metav1.Time{}
}
