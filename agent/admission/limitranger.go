package admission

import (
	"fmt"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	resourcehelper "k8s.io/component-helpers/resource"
)

// limitRangerAnnotation records what LimitRanger defaulted on a pod.
const limitRangerAnnotation = "kubernetes.io/limit-ranger"

// DefaultLimitRange applies the apiserver's defaulting of a LimitRange
// (SetObjectDefaults_LimitRange: SetDefaults_LimitRangeItem, then
// SetDefaults_ResourceList on each of the item's lists) to lr. For items of
// type Container: an unset default limit takes the max, an unset default
// request takes the default limit, and one still unset takes the min.
// Every quantity is then rounded up to milli precision.
func DefaultLimitRange(lr *corev1.LimitRange) {
	for i := range lr.Spec.Limits {
		item := &lr.Spec.Limits[i]
		if item.Type == corev1.LimitTypeContainer {
			if item.Default == nil {
				item.Default = corev1.ResourceList{}
			}
			if item.DefaultRequest == nil {
				item.DefaultRequest = corev1.ResourceList{}
			}
			fill(item.Default, item.Max)
			fill(item.DefaultRequest, item.Default)
			fill(item.DefaultRequest, item.Min)
		}
		for _, l := range []corev1.ResourceList{item.Max, item.Min, item.Default, item.DefaultRequest, item.MaxLimitRequestRatio} {
			roundUpMilli(l)
		}
	}
}

// fill sets every key of from that dst lacks.
func fill(dst, from corev1.ResourceList) {
	for k, v := range from {
		if _, ok := dst[k]; !ok {
			dst[k] = v.DeepCopy()
		}
	}
}

// roundUpMilli is SetDefaults_ResourceList: every quantity rounded up to
// milli scale ("0.0001" becomes "1m").
func roundUpMilli(l corev1.ResourceList) {
	for k, v := range l {
		v.RoundUp(resource.Milli)
		l[k] = v
	}
}

// LimitPod is LimitRanger's Admit on a pod create (PodMutateLimitFunc for
// each LimitRange in the order given): every container and init container
// gets the limits and requests it lacks from the union of the range's
// Container items' default and defaultRequest, and the pod's
// kubernetes.io/limit-ranger annotation says what was set. A key set by an
// earlier LimitRange is present for the later ones, so the first wins; each
// LimitRange that sets something rewrites the annotation, as upstream.
func LimitPod(pod *corev1.Pod, ranges []corev1.LimitRange) {
	for i := range ranges {
		limits, requests := containerDefaults(&ranges[i])
		var notes []string
		for j := range pod.Spec.Containers {
			notes = mergeContainer(&pod.Spec.Containers[j], limits, requests, "container", notes)
		}
		for j := range pod.Spec.InitContainers {
			notes = mergeContainer(&pod.Spec.InitContainers[j], limits, requests, "init container", notes)
		}
		if len(notes) > 0 {
			if pod.Annotations == nil {
				pod.Annotations = map[string]string{}
			}
			pod.Annotations[limitRangerAnnotation] = "LimitRanger plugin set: " + strings.Join(notes, "; ")
		}
	}
}

// containerDefaults is defaultContainerResourceRequirements: the default
// limits and requests of lr's Container items.
func containerDefaults(lr *corev1.LimitRange) (limits, requests corev1.ResourceList) {
	limits, requests = corev1.ResourceList{}, corev1.ResourceList{}
	for _, item := range lr.Spec.Limits {
		if item.Type != corev1.LimitTypeContainer {
			continue
		}
		for k, v := range item.DefaultRequest {
			requests[k] = v.DeepCopy()
		}
		for k, v := range item.Default {
			limits[k] = v.DeepCopy()
		}
	}
	return limits, requests
}

// mergeContainer is mergeContainerResources: it sets the absent keys and
// appends "<keys> request for <kind> <name>" then "<keys> limit for ...".
func mergeContainer(c *corev1.Container, limits, requests corev1.ResourceList, kind string, notes []string) []string {
	if c.Resources.Limits == nil {
		c.Resources.Limits = corev1.ResourceList{}
	}
	if c.Resources.Requests == nil {
		c.Resources.Requests = corev1.ResourceList{}
	}
	var setLimits, setRequests []string
	for k, v := range limits {
		if _, ok := c.Resources.Limits[k]; !ok {
			c.Resources.Limits[k] = v.DeepCopy()
			setLimits = append(setLimits, string(k))
		}
	}
	for k, v := range requests {
		if _, ok := c.Resources.Requests[k]; !ok {
			c.Resources.Requests[k] = v.DeepCopy()
			setRequests = append(setRequests, string(k))
		}
	}
	if len(setRequests) > 0 {
		sort.Strings(setRequests)
		notes = append(notes, strings.Join(setRequests, ", ")+fmt.Sprintf(" request for %s %s", kind, c.Name))
	}
	if len(setLimits) > 0 {
		sort.Strings(setLimits)
		notes = append(notes, strings.Join(setLimits, ", ")+fmt.Sprintf(" limit for %s %s", kind, c.Name))
	}
	return notes
}

// CheckLimits is LimitRanger's Validate for a pod or a persistent volume
// claim (any other object passes): the object is checked against each
// LimitRange in the order given and the first with violations refuses it
// with all of them (upstream's utilerrors aggregate: one message as is,
// more as "[e1, e2]", duplicates dropped). Keys of an item are checked in
// sorted order (upstream: map order).
func CheckLimits(obj runtime.Object, ranges []corev1.LimitRange) error {
	for i := range ranges {
		var errs []error
		switch o := obj.(type) {
		case *corev1.Pod:
			errs = validatePodLimits(&ranges[i], o)
		case *corev1.PersistentVolumeClaim:
			errs = validateClaimLimits(&ranges[i], o)
		default:
			return nil
		}
		if agg := utilerrors.NewAggregate(errs); agg != nil {
			return errdefs.ErrPermissionDenied.WithMessage(agg.Error())
		}
	}
	return nil
}

// validatePodLimits is PodValidateLimitFunc.
func validatePodLimits(lr *corev1.LimitRange, pod *corev1.Pod) []error {
	var errs []error
	check := func(typ corev1.LimitType, item *corev1.LimitRangeItem, requests, limits corev1.ResourceList) {
		for _, k := range sortedNames(item.Min) {
			if err := minConstraint(typ, k, item.Min[k], requests, limits); err != nil {
				errs = append(errs, err)
			}
		}
		for _, k := range sortedNames(item.Max) {
			if err := maxConstraint(typ, k, item.Max[k], requests, limits); err != nil {
				errs = append(errs, err)
			}
		}
		for _, k := range sortedNames(item.MaxLimitRequestRatio) {
			if err := ratioConstraint(typ, k, item.MaxLimitRequestRatio[k], requests, limits); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for i := range lr.Spec.Limits {
		item := &lr.Spec.Limits[i]
		switch item.Type {
		case corev1.LimitTypeContainer:
			for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
				for j := range cs {
					check(item.Type, item, cs[j].Resources.Requests, cs[j].Resources.Limits)
				}
			}
		case corev1.LimitTypePod:
			// The limitranger's own podRequests/podLimits: the sidecar-aware
			// max(init, sum) rule of component-helpers, without overhead and
			// without pod-level resources.
			opts := resourcehelper.PodResourcesOptions{ExcludeOverhead: true, SkipPodLevelResources: true}
			check(item.Type, item, resourcehelper.PodRequests(pod, opts), resourcehelper.PodLimits(pod, opts))
		}
	}
	return errs
}

// validateClaimLimits is PersistentVolumeClaimValidateLimitFunc: min and
// max against the claim's requests only.
func validateClaimLimits(lr *corev1.LimitRange, pvc *corev1.PersistentVolumeClaim) []error {
	var errs []error
	for i := range lr.Spec.Limits {
		item := &lr.Spec.Limits[i]
		if item.Type != corev1.LimitTypePersistentVolumeClaim {
			continue
		}
		for _, k := range sortedNames(item.Min) {
			if err := minConstraint(item.Type, k, item.Min[k], pvc.Spec.Resources.Requests, corev1.ResourceList{}); err != nil {
				errs = append(errs, err)
			}
		}
		for _, k := range sortedNames(item.Max) {
			if err := maxRequestConstraint(item.Type, k, item.Max[k], pvc.Spec.Resources.Requests); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// enforcedValues is requestLimitEnforcedValues: the three values in milli
// units when none overflows there, else in units.
func enforcedValues(request, limit, enforced resource.Quantity) (int64, int64, int64) {
	r, l, e := request.Value(), limit.Value(), enforced.Value()
	if r <= resource.MaxMilliValue && l <= resource.MaxMilliValue && e <= resource.MaxMilliValue {
		return request.MilliValue(), limit.MilliValue(), enforced.MilliValue()
	}
	return r, l, e
}

func minConstraint(typ corev1.LimitType, name corev1.ResourceName, enforced resource.Quantity, requests, limits corev1.ResourceList) error {
	req, reqExists := requests[name]
	lim, limExists := limits[name]
	r, l, e := enforcedValues(req, lim, enforced)
	switch {
	case !reqExists:
		return fmt.Errorf("minimum %s usage per %s is %s.  No request is specified", name, typ, enforced.String())
	case r < e:
		return fmt.Errorf("minimum %s usage per %s is %s, but request is %s", name, typ, enforced.String(), req.String())
	case limExists && l < e:
		return fmt.Errorf("minimum %s usage per %s is %s, but limit is %s", name, typ, enforced.String(), lim.String())
	}
	return nil
}

func maxConstraint(typ corev1.LimitType, name corev1.ResourceName, enforced resource.Quantity, requests, limits corev1.ResourceList) error {
	req, reqExists := requests[name]
	lim, limExists := limits[name]
	r, l, e := enforcedValues(req, lim, enforced)
	switch {
	case !limExists:
		return fmt.Errorf("maximum %s usage per %s is %s.  No limit is specified", name, typ, enforced.String())
	case l > e:
		return fmt.Errorf("maximum %s usage per %s is %s, but limit is %s", name, typ, enforced.String(), lim.String())
	case reqExists && r > e:
		return fmt.Errorf("maximum %s usage per %s is %s, but request is %s", name, typ, enforced.String(), req.String())
	}
	return nil
}

// maxRequestConstraint is the max rule for kinds without limits (claims).
func maxRequestConstraint(typ corev1.LimitType, name corev1.ResourceName, enforced resource.Quantity, requests corev1.ResourceList) error {
	req, reqExists := requests[name]
	r, _, e := enforcedValues(req, resource.Quantity{}, enforced)
	switch {
	case !reqExists:
		return fmt.Errorf("maximum %s usage per %s is %s.  No request is specified", name, typ, enforced.String())
	case r > e:
		return fmt.Errorf("maximum %s usage per %s is %s, but request is %s", name, typ, enforced.String(), req.String())
	}
	return nil
}

// ratioConstraint is limitRequestRatioConstraint: limit/request (in the
// common precision) must not exceed the ratio; the ratio is compared in
// milli units unless it overflows there.
func ratioConstraint(typ corev1.LimitType, name corev1.ResourceName, enforced resource.Quantity, requests, limits corev1.ResourceList) error {
	req, reqExists := requests[name]
	lim, limExists := limits[name]
	r, l, _ := enforcedValues(req, lim, enforced)
	if !reqExists || r == 0 {
		return fmt.Errorf("%s max limit to request ratio per %s is %s, but no request is specified or request is 0", name, typ, enforced.String())
	}
	if !limExists || l == 0 {
		return fmt.Errorf("%s max limit to request ratio per %s is %s, but no limit is specified or limit is 0", name, typ, enforced.String())
	}
	observed := float64(l) / float64(r)
	display := observed
	maximum := float64(enforced.Value())
	if enforced.Value() <= resource.MaxMilliValue {
		observed *= 1000
		maximum = float64(enforced.MilliValue())
	}
	if observed > maximum {
		return fmt.Errorf("%s max limit to request ratio per %s is %s, but provided ratio is %f", name, typ, enforced.String(), display)
	}
	return nil
}

// sortedNames are l's keys in byte order.
func sortedNames(l corev1.ResourceList) []corev1.ResourceName {
	names := make([]corev1.ResourceName, 0, len(l))
	for k := range l {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return names[i] < names[j] })
	return names
}
