package admission

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	resourcehelper "k8s.io/component-helpers/resource"
)

// forbidden is a refusal: the upstream inner message, class
// PermissionDenied (the API wraps it as `<res> "<name>" is forbidden: ...`).
func forbidden(format string, args ...any) error {
	return errdefs.ErrPermissionDenied.WithMessage(fmt.Sprintf(format, args...))
}

// evaluatedOnUpdate: the evaluators whose Handles accepts an update
// (services and claims; the pod evaluator only for the resize subresource
// and for a change of the Terminating scope, which berth's pod updates
// cannot make; object counts never).
func evaluatedOnUpdate(gr GroupResource) bool {
	return gr == servicesGR || gr == claimsGR
}

// Check is the ResourceQuota admission plugin's CheckRequest for one write
// of obj, an object of gr. quotas are the namespace's quotas sorted by
// name, with status as stored. old is nil for a create; on an update (only
// services and claims are evaluated; anything else returns nil, nil) the
// charge is the positive part of usage(obj) − usage(old) for quotas that
// also covered old, the whole usage for the others. It returns the new
// status.used of each quota whose usage changes, by quota name, or the
// first refusal: constraints and usage status of every covering quota
// first ("failed quota: ...", "status unknown for quota: ..."), then
// "quota usage is negative ...", then capacity ("exceeded quota: ...") in
// quota order. A non-refusal error means a quota's scope selector could
// not be evaluated.
func Check(quotas []corev1.ResourceQuota, gr GroupResource, obj, old runtime.Object, now time.Time) (map[string]corev1.ResourceList, error) {
	if old != nil && !evaluatedOnUpdate(gr) {
		return nil, nil
	}
	if len(quotas) == 0 {
		return nil, nil
	}
	var interesting []int
	for i := range quotas {
		q := &quotas[i]
		ok, err := matches(q, gr, obj)
		if err != nil {
			return nil, fmt.Errorf("error matching scopes of quota %s, err: %v", q.Name, err)
		}
		if !ok {
			continue
		}
		restricted := matchingResources(gr, names(q.Status.Hard))
		if err := constraints(gr, restricted, obj); err != nil {
			return nil, forbidden("failed quota: %s: %v", q.Name, err)
		}
		if !hasUsageStats(q, restricted) {
			return nil, forbidden("status unknown for quota: %s, resources: %s", q.Name, joinNames(restricted))
		}
		interesting = append(interesting, i)
	}

	usage := Usage(gr, obj, now)
	if negative := isNegative(usage); len(negative) > 0 {
		return nil, forbidden("quota usage is negative for resource(s): %s", joinNames(negative))
	}
	delta := make(map[int]corev1.ResourceList, len(interesting))
	for _, i := range interesting {
		delta[i] = usage
	}
	if old != nil {
		// An update of a stored object is charged the difference, for
		// the quotas that covered the object before; without a resource
		// version it may be a create-on-update and pays in full.
		if m, err := meta.Accessor(old); err == nil && m.GetResourceVersion() != "" {
			diff := subtractNonNegative(usage, Usage(gr, old, now))
			for _, i := range interesting {
				if ok, err := matches(&quotas[i], gr, old); err == nil && ok {
					delta[i] = diff
				}
			}
		}
	}

	used := map[string]corev1.ResourceList{}
	for _, i := range interesting {
		charge := removeZeros(delta[i])
		if len(charge) == 0 {
			continue
		}
		q := &quotas[i]
		hard := names(q.Status.Hard)
		requested := mask(charge, hard)
		newUsed := addLists(q.Status.Used, requested)
		if exceeded := exceededNames(mask(newUsed, names(requested)), q.Status.Hard); len(exceeded) > 0 {
			return nil, forbidden("exceeded quota: %s, requested: %s, used: %s, limited: %s", q.Name,
				prettyPrint(mask(requested, exceeded)), prettyPrint(mask(q.Status.Used, exceeded)), prettyPrint(mask(q.Status.Hard, exceeded)))
		}
		if !equalLists(q.Status.Used, newUsed) {
			used[q.Name] = newUsed
		}
	}
	if len(used) == 0 {
		return nil, nil
	}
	return used, nil
}

// hasUsageStats: every restricted name of status.hard has a used value.
func hasUsageStats(q *corev1.ResourceQuota, restricted []corev1.ResourceName) bool {
	for _, name := range restricted {
		if _, ok := q.Status.Hard[name]; !ok {
			continue
		}
		if _, ok := q.Status.Used[name]; !ok {
			return false
		}
	}
	return true
}

// validationSet are the names that, once a quota restricts them, every
// container must declare (the pod evaluator's "mistake" kept for
// compatibility).
var validationSet = map[corev1.ResourceName]bool{
	corev1.ResourceCPU:            true,
	corev1.ResourceMemory:         true,
	corev1.ResourceRequestsCPU:    true,
	corev1.ResourceRequestsMemory: true,
	corev1.ResourceLimitsCPU:      true,
	corev1.ResourceLimitsMemory:   true,
}

// constraints is the evaluators' Constraints: nothing but for pods, whose
// every container and init container must request (or limit) each
// restricted name of the validation set, unless pod-level resources are
// set. The message names, per missing name in sorted order, the containers
// that miss it: "must specify limits.cpu for: a,b; requests.memory for: b".
func constraints(gr GroupResource, restricted []corev1.ResourceName, obj runtime.Object) error {
	pod, ok := obj.(*corev1.Pod)
	if gr != podsGR || !ok {
		return nil
	}
	if resourcehelper.IsPodLevelResourcesSet(pod) {
		return nil
	}
	var required []corev1.ResourceName
	for _, name := range restricted {
		if validationSet[name] {
			required = append(required, name)
		}
	}
	missing := map[corev1.ResourceName]map[string]bool{}
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			provided := computeUsage(c.Resources.Requests, c.Resources.Limits)
			for _, name := range required {
				if _, ok := provided[name]; ok {
					continue
				}
				if missing[name] == nil {
					missing[name] = map[string]bool{}
				}
				missing[name][c.Name] = true
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var msgs []string
	for _, name := range sortedKeys(missing) {
		containers := make([]string, 0, len(missing[name]))
		for c := range missing[name] {
			containers = append(containers, c)
		}
		sort.Strings(containers)
		msgs = append(msgs, fmt.Sprintf("%s for: %s", name, strings.Join(containers, ",")))
	}
	return fmt.Errorf("must specify %s", strings.Join(msgs, "; "))
}

func sortedKeys[V any](m map[corev1.ResourceName]V) []corev1.ResourceName {
	out := make([]corev1.ResourceName, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Recalculate is the quota controller's status.used for q: for each kind
// Counted names, the sum of Usage over every object list returns for it
// that q's scopes match (spec.scopes and spec.scopeSelector, as
// CalculateUsageStats), masked to q.spec.hard; every hard name is present,
// "0" (DecimalSI) when nothing charges it. A sum takes the format of its
// first non-zero addend, as upstream's.
func Recalculate(q *corev1.ResourceQuota, list func(GroupResource) []runtime.Object, now time.Time) corev1.ResourceList {
	hard := names(q.Spec.Hard)
	total := corev1.ResourceList{}
	for _, gr := range Counted(q.Spec.Hard) {
		tracked := matchingResources(gr, hard)
		if len(tracked) == 0 {
			continue
		}
		stats := corev1.ResourceList{}
		for _, name := range tracked {
			stats[name] = resource.Quantity{Format: resource.DecimalSI}
		}
		for _, obj := range list(gr) {
			if ok, err := scopesMatch(&q.Spec, gr, obj); err != nil || !ok {
				continue
			}
			stats = addLists(stats, Usage(gr, obj, now))
		}
		total = addLists(total, mask(stats, tracked))
	}
	out := make(corev1.ResourceList, len(hard))
	for _, name := range hard {
		if v, ok := total[name]; ok {
			out[name] = v
		} else {
			out[name] = resource.Quantity{Format: resource.DecimalSI}
		}
	}
	return out
}

// The resource-list arithmetic of staging/src/k8s.io/apiserver/pkg/quota/v1/resources.go.

func names(l corev1.ResourceList) []corev1.ResourceName {
	return sortedNames(l)
}

// addLists is Add: a's keys plus b's (a's quantity receives b's, so the
// sum keeps a's format unless a is zero), then b's other keys.
func addLists(a, b corev1.ResourceList) corev1.ResourceList {
	out := make(corev1.ResourceList, len(a)+len(b))
	for k, v := range a {
		q := v.DeepCopy()
		if other, ok := b[k]; ok {
			q.Add(other)
		}
		out[k] = q
	}
	for k, v := range b {
		if _, ok := out[k]; !ok {
			out[k] = v.DeepCopy()
		}
	}
	return out
}

// subtractNonNegative is SubtractWithNonNegativeResult: a − b per key, 0
// where that is not positive, and 0 for b's other keys.
func subtractNonNegative(a, b corev1.ResourceList) corev1.ResourceList {
	zero := resource.MustParse("0")
	out := corev1.ResourceList{}
	for k, v := range a {
		q := v.DeepCopy()
		if other, ok := b[k]; ok {
			q.Sub(other)
		}
		if q.Cmp(zero) > 0 {
			out[k] = q
		} else {
			out[k] = zero
		}
	}
	for k := range b {
		if _, ok := out[k]; !ok {
			out[k] = zero
		}
	}
	return out
}

func mask(l corev1.ResourceList, keep []corev1.ResourceName) corev1.ResourceList {
	out := corev1.ResourceList{}
	for _, k := range keep {
		if v, ok := l[k]; ok {
			out[k] = v.DeepCopy()
		}
	}
	return out
}

func removeZeros(l corev1.ResourceList) corev1.ResourceList {
	out := corev1.ResourceList{}
	for k, v := range l {
		if !v.IsZero() {
			out[k] = v
		}
	}
	return out
}

func isNegative(l corev1.ResourceList) []corev1.ResourceName {
	var out []corev1.ResourceName
	for k, v := range l {
		if v.Sign() < 0 {
			out = append(out, k)
		}
	}
	return out
}

// exceededNames is LessThanOrEqual's second result: the keys of hard that
// used exceeds.
func exceededNames(used, hard corev1.ResourceList) []corev1.ResourceName {
	var out []corev1.ResourceName
	for k, limit := range hard {
		if v, ok := used[k]; ok && v.Cmp(limit) > 0 {
			out = append(out, k)
		}
	}
	return out
}

func equalLists(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || v.Cmp(w) != 0 {
			return false
		}
	}
	return true
}

// prettyPrint: "k=v" sorted by key, joined with "," (no space).
func prettyPrint(l corev1.ResourceList) string {
	parts := make([]string, 0, len(l))
	for _, k := range sortedNames(l) {
		v := l[k]
		parts = append(parts, string(k)+"="+v.String())
	}
	return strings.Join(parts, ",")
}

// joinNames is prettyPrintResourceNames: sorted, joined with ",".
func joinNames(l []corev1.ResourceName) string {
	s := make([]string, len(l))
	for i, n := range l {
		s[i] = string(n)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}
