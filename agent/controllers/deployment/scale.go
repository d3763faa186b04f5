package deployment

import (
	"math"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
)

// Scaling a Deployment in the middle of a rollout, as upstream's sync
// (pkg/controller/deployment/sync.go: isScalingEvent, scale,
// GetProportion): the replicas added or removed are shared among the
// active ReplicaSets in proportion to their size (from the largest, the
// newest first when scaling up and the oldest first when scaling down),
// so a rollout goes on from where it was at the new size instead of
// starting its surge over.

// isScalingEvent: an active ReplicaSet was last sized for another
// spec.replicas (its desired-replicas annotation).
func isScalingEvent(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) bool {
	for _, rs := range active(withNew(old, newRS)) {
		v, ok := rs.Annotations[desiredAnn]
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 32); err == nil && int32(n) != replicas(d) {
			return true
		}
	}
	return false
}

func withNew(old []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	all := append([]*appsv1.ReplicaSet(nil), old...)
	if newRS != nil {
		all = append(all, newRS)
	}
	return all
}

// scale is upstream's scale.
func (c *Controller) scale(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) error {
	if rs := activeOrLatest(newRS, old); rs != nil {
		// Upstream returns here when the size is already right; scaleRS
		// still writes the annotations then, or a ReplicaSet sized by
		// hand would be a scaling event at every pass, and the rollout
		// would never go on.
		_, err := c.scaleRS(d, rs, replicas(d))
		return err
	}
	if saturated(d, newRS) {
		for _, rs := range active(old) {
			if _, err := c.scaleRS(d, rs, 0); err != nil {
				return err
			}
		}
		return nil
	}
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		return nil
	}
	all := active(withNew(old, newRS))
	var allowed int32
	if replicas(d) > 0 {
		allowed = replicas(d) + maxSurge(d)
	}
	toAdd := allowed - sumSpec(all)
	// The largest first; between equals, the newest when scaling up (it
	// gets the leftover) and the oldest when scaling down.
	sort.SliceStable(all, func(i, j int) bool {
		if replicas(all[i]) != replicas(all[j]) {
			return replicas(all[i]) > replicas(all[j])
		}
		// ReplicaSetsBySizeNewer and ReplicaSetsBySizeOlder: the
		// creation order, names breaking ties, reversed when scaling up.
		older := func(a, b *appsv1.ReplicaSet) bool {
			if a.CreationTimestamp.Equal(&b.CreationTimestamp) {
				return a.Name < b.Name
			}
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		if toAdd > 0 {
			return older(all[j], all[i])
		}
		return older(all[i], all[j])
	})
	var added int32
	size := make([]int32, len(all))
	for i, rs := range all {
		size[i] = replicas(rs)
		if toAdd != 0 {
			p := proportion(rs, d, toAdd, added)
			size[i] += p
			added += p
		}
	}
	for i, rs := range all {
		if i == 0 && toAdd != 0 {
			size[i] = max(size[i]+toAdd-added, 0) // the leftover to the largest
		}
		if _, err := c.scaleRS(d, rs, size[i]); err != nil {
			return err
		}
	}
	return nil
}

// activeOrLatest is FindActiveOrLatest: the one active ReplicaSet, or the
// newest when none is active; nil when several are.
func activeOrLatest(newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) *appsv1.ReplicaSet {
	if newRS == nil && len(old) == 0 {
		return nil
	}
	sorted := append([]*appsv1.ReplicaSet(nil), old...)
	sortByCreation(sorted)
	all := active(withNew(sorted, newRS))
	switch len(all) {
	case 0:
		if newRS != nil {
			return newRS
		}
		return sorted[len(sorted)-1]
	case 1:
		return all[0]
	}
	return nil
}

// saturated is IsSaturated: the new ReplicaSet sized for the Deployment
// and all of it available.
func saturated(d *appsv1.Deployment, rs *appsv1.ReplicaSet) bool {
	if rs == nil {
		return false
	}
	n, err := strconv.ParseInt(rs.Annotations[desiredAnn], 10, 32)
	return err == nil && int32(n) == replicas(d) && replicas(rs) == replicas(d) && rs.Status.AvailableReplicas == replicas(d)
}

// proportion is GetProportion: rs's share of toAdd, never beyond what
// is left of it.
func proportion(rs *appsv1.ReplicaSet, d *appsv1.Deployment, toAdd, added int32) int32 {
	if replicas(rs) == 0 || toAdd == 0 || toAdd == added {
		return 0
	}
	f := fraction(rs, d)
	allowed := toAdd - added
	if toAdd > 0 {
		return min(f, allowed)
	}
	return max(f, allowed)
}

// fraction is getReplicaSetFraction: rs's size scaled from the
// Deployment's size it was made for (its max-replicas annotation, else
// the Deployment's status.replicas) to the new one, less its size.
func fraction(rs *appsv1.ReplicaSet, d *appsv1.Deployment) int32 {
	if replicas(d) == 0 {
		return -replicas(rs)
	}
	target := replicas(d) + maxSurge(d)
	annotated := d.Status.Replicas
	if n, err := strconv.ParseInt(rs.Annotations[maxAnn], 10, 32); err == nil {
		annotated = int32(n)
	}
	if annotated == 0 {
		return 0
	}
	return int32(math.Round(float64(replicas(rs))*float64(target)/float64(annotated))) - replicas(rs)
}
