package admission

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	resourcehelper "k8s.io/component-helpers/resource"

	"github.com/berth-dev/berth/cgroup"
)

// GroupResource names what a quota counts: Resource "pods", "services",
// "configmaps", "secrets", "persistentvolumeclaims", "resourcequotas",
// "replicationcontrollers", or any other (group "" for core; e.g.
// {Group: "apps", Resource: "deployments"}).
type GroupResource = schema.GroupResource

var (
	podsGR     = GroupResource{Resource: "pods"}
	servicesGR = GroupResource{Resource: "services"}
	claimsGR   = GroupResource{Resource: "persistentvolumeclaims"}
)

// legacyCounts are the kinds counted under their own name as well as
// count/<resource> (legacyObjectCountAliases of pkg/quota/v1/evaluator/core/registry.go).
var legacyCounts = map[string]corev1.ResourceName{
	"configmaps":             corev1.ResourceConfigMaps,
	"resourcequotas":         corev1.ResourceQuotas,
	"replicationcontrollers": corev1.ResourceReplicationControllers,
	"secrets":                corev1.ResourceSecrets,
}

// objectCountName is ObjectCountQuotaResourceNameFor: count/<resource>
// for core, count/<resource>.<group> otherwise.
func objectCountName(gr GroupResource) corev1.ResourceName {
	if gr.Group == "" {
		return corev1.ResourceName("count/" + gr.Resource)
	}
	return corev1.ResourceName("count/" + gr.Resource + "." + gr.Group)
}

// The names the pod evaluator tracks (pkg/quota/v1/evaluator/core/pods.go).
var podResources = []corev1.ResourceName{
	"count/pods",
	corev1.ResourceCPU,
	corev1.ResourceMemory,
	corev1.ResourceEphemeralStorage,
	corev1.ResourceRequestsCPU,
	corev1.ResourceRequestsMemory,
	corev1.ResourceRequestsEphemeralStorage,
	corev1.ResourceLimitsCPU,
	corev1.ResourceLimitsMemory,
	corev1.ResourceLimitsEphemeralStorage,
	corev1.ResourcePods,
}

// podResourcePrefixes: hugepages-<size> and requests.hugepages-<size>.
var podResourcePrefixes = []string{corev1.ResourceHugePagesPrefix, corev1.ResourceRequestsHugePagesPrefix}

// deviceClassPrefix is resourceapi.ResourceDeviceClassPrefix: DRA's
// implicit extended resources.
const deviceClassPrefix = "deviceclass.resource.kubernetes.io/"

// The names the service evaluator tracks (services.go).
var serviceResources = []corev1.ResourceName{
	"count/services",
	corev1.ResourceServices,
	corev1.ResourceServicesNodePorts,
	corev1.ResourceServicesLoadBalancers,
}

// pvcResources are the claim names, also per storage class as
// <class>.storageclass.storage.k8s.io/<name> (persistent_volume_claims.go).
var pvcResources = []corev1.ResourceName{corev1.ResourcePersistentVolumeClaims, corev1.ResourceRequestsStorage}

const storageClassSuffix = ".storageclass.storage.k8s.io/"

// betaStorageClassAnnotation wins over spec.storageClassName
// (GetPersistentVolumeClaimClass).
const betaStorageClassAnnotation = "volume.beta.kubernetes.io/storage-class"

// isExtendedResourceNameForQuota: requests.<extended resource>.
func isExtendedResourceNameForQuota(name corev1.ResourceName) bool {
	s := string(name)
	return (!isNativeResource(name) || strings.HasPrefix(s, corev1.DefaultResourceRequestsPrefix+deviceClassPrefix)) &&
		strings.HasPrefix(s, corev1.DefaultResourceRequestsPrefix)
}

// matchingResources is the evaluator of gr's MatchingResources: the names
// of input it tracks, sorted, without duplicates.
func matchingResources(gr GroupResource, input []corev1.ResourceName) []corev1.ResourceName {
	set := map[corev1.ResourceName]bool{}
	for _, name := range input {
		if tracks(gr, name) {
			set[name] = true
		}
	}
	out := make([]corev1.ResourceName, 0, len(set))
	for name := range set {
		out = append(out, name)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// tracks says whether the evaluator of gr counts name.
func tracks(gr GroupResource, name corev1.ResourceName) bool {
	switch gr {
	case podsGR:
		if contains(podResources, name) || isExtendedResourceNameForQuota(name) {
			return true
		}
		for _, p := range podResourcePrefixes {
			if strings.HasPrefix(string(name), p) {
				return true
			}
		}
		return false
	case servicesGR:
		return contains(serviceResources, name)
	case claimsGR:
		if name == objectCountName(claimsGR) || contains(pvcResources, name) {
			return true
		}
		for _, r := range pvcResources {
			if strings.HasSuffix(string(name), storageClassSuffix+string(r)) {
				return true
			}
		}
		return false
	}
	if gr.Group == "" {
		if alias, ok := legacyCounts[gr.Resource]; ok && name == alias {
			return true
		}
	}
	return name == objectCountName(gr)
}

func contains(names []corev1.ResourceName, name corev1.ResourceName) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// Counted lists the object kinds whose objects must be read to compute the
// usage of the hard names given (for Recalculate): sorted by group, then
// resource, without duplicates.
func Counted(hard corev1.ResourceList) []GroupResource {
	set := map[GroupResource]bool{}
	for name := range hard {
		for _, gr := range []GroupResource{podsGR, servicesGR, claimsGR} {
			if tracks(gr, name) {
				set[gr] = true
			}
		}
		for res, alias := range legacyCounts {
			if name == alias {
				set[GroupResource{Resource: res}] = true
			}
		}
		if rest, ok := strings.CutPrefix(string(name), "count/"); ok && rest != "" {
			res, group, _ := strings.Cut(rest, ".")
			if res != "" {
				set[GroupResource{Group: group, Resource: res}] = true
			}
		}
	}
	out := make([]GroupResource, 0, len(set))
	for gr := range set {
		out = append(out, gr)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Resource < out[j].Resource
	})
	return out
}

// Usage is what obj, an object of gr, charges to a quota: a pod
// PodUsageFunc (count/pods always; the rest only while it is neither
// terminal nor past its deletion grace period at now), a service its
// count, node ports and load balancers, a claim its count and storage (also
// per storage class), any other object count/<resource>[.<group>] (and its
// legacy name for configmaps, secrets, resourcequotas and
// replicationcontrollers).
func Usage(gr GroupResource, obj runtime.Object, now time.Time) corev1.ResourceList {
	switch gr {
	case podsGR:
		if pod, ok := obj.(*corev1.Pod); ok {
			return podUsage(pod, now)
		}
		return corev1.ResourceList{}
	case servicesGR:
		if svc, ok := obj.(*corev1.Service); ok {
			return serviceUsage(svc)
		}
		return corev1.ResourceList{}
	case claimsGR:
		if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok {
			return claimUsage(pvc)
		}
		return corev1.ResourceList{}
	}
	out := corev1.ResourceList{objectCountName(gr): *resource.NewQuantity(1, resource.DecimalSI)}
	if alias, ok := legacyCounts[gr.Resource]; ok && gr.Group == "" {
		out[alias] = *resource.NewQuantity(1, resource.DecimalSI)
	}
	return out
}

// podUsage is PodUsageFunc.
func podUsage(pod *corev1.Pod, now time.Time) corev1.ResourceList {
	// count/pods tracks every pod in storage; "pods" and the compute names
	// only the pods that still run or may.
	out := corev1.ResourceList{"count/pods": *resource.NewQuantity(1, resource.DecimalSI)}
	if !charged(pod, now) {
		return out
	}
	// The effective requests and limits (sidecar-aware max(init, sum)
	// rule, overhead, pod-level resources) with the feature gates of
	// v1.34+: InPlacePodVerticalScaling and PodLevelResources on.
	opts := resourcehelper.PodResourcesOptions{UseStatusResources: true}
	return addLists(out, computeUsage(resourcehelper.PodRequests(pod, opts), resourcehelper.PodLimits(pod, opts)))
}

// charged is QuotaV1Pod: not terminal, and not deleting past the grace
// period (a pod stuck terminating on a lost node stops being charged).
func charged(pod *corev1.Pod, now time.Time) bool {
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return false
	}
	if pod.DeletionTimestamp != nil && pod.DeletionGracePeriodSeconds != nil {
		grace := time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		if now.After(pod.DeletionTimestamp.Time.Add(grace)) {
			return false
		}
	}
	return true
}

// computeUsage is podComputeUsageHelper: pods=1 and the request and limit
// names for what requests and limits hold.
func computeUsage(requests, limits corev1.ResourceList) corev1.ResourceList {
	out := corev1.ResourceList{corev1.ResourcePods: resource.MustParse("1")}
	for _, r := range []struct{ res, plain, req, lim corev1.ResourceName }{
		{corev1.ResourceCPU, corev1.ResourceCPU, corev1.ResourceRequestsCPU, corev1.ResourceLimitsCPU},
		{corev1.ResourceMemory, corev1.ResourceMemory, corev1.ResourceRequestsMemory, corev1.ResourceLimitsMemory},
		{corev1.ResourceEphemeralStorage, corev1.ResourceEphemeralStorage, corev1.ResourceRequestsEphemeralStorage, corev1.ResourceLimitsEphemeralStorage},
	} {
		if q, ok := requests[r.res]; ok {
			out[r.plain] = q
			out[r.req] = q
		}
		if q, ok := limits[r.res]; ok {
			out[r.lim] = q
		}
	}
	for name, q := range requests {
		if strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix) {
			out[name] = q
			out[corev1.DefaultResourceRequestsPrefix+name] = q
		}
		// IsDRAExtendedResourceName: only requests.<name> is a quota name
		// for an extended resource.
		if isExtendedResourceName(name) || strings.HasPrefix(string(name), deviceClassPrefix) {
			out[corev1.DefaultResourceRequestsPrefix+name] = q
		}
	}
	return out
}

// serviceUsage is the service evaluator's Usage: node ports are the
// ports of NodePort and LoadBalancer services.
func serviceUsage(svc *corev1.Service) corev1.ResourceList {
	out := corev1.ResourceList{
		"count/services":                     *resource.NewQuantity(1, resource.DecimalSI),
		corev1.ResourceServices:              *resource.NewQuantity(1, resource.DecimalSI),
		corev1.ResourceServicesLoadBalancers: {Format: resource.DecimalSI},
		corev1.ResourceServicesNodePorts:     {Format: resource.DecimalSI},
	}
	switch svc.Spec.Type {
	case corev1.ServiceTypeNodePort:
		out[corev1.ResourceServicesNodePorts] = *resource.NewQuantity(int64(len(svc.Spec.Ports)), resource.DecimalSI)
	case corev1.ServiceTypeLoadBalancer:
		out[corev1.ResourceServicesNodePorts] = *resource.NewQuantity(int64(len(svc.Spec.Ports)), resource.DecimalSI)
		out[corev1.ResourceServicesLoadBalancers] = *resource.NewQuantity(1, resource.DecimalSI)
	}
	return out
}

// claimUsage is the claim evaluator's Usage.
func claimUsage(pvc *corev1.PersistentVolumeClaim) corev1.ResourceList {
	out := corev1.ResourceList{
		corev1.ResourcePersistentVolumeClaims: *resource.NewQuantity(1, resource.DecimalSI),
		"count/persistentvolumeclaims":        *resource.NewQuantity(1, resource.DecimalSI),
	}
	class, ok := pvc.Annotations[betaStorageClassAnnotation]
	if !ok && pvc.Spec.StorageClassName != nil {
		class = *pvc.Spec.StorageClassName
	}
	if class != "" {
		out[corev1.ResourceName(class+storageClassSuffix+string(corev1.ResourcePersistentVolumeClaims))] = *resource.NewQuantity(1, resource.DecimalSI)
	}
	if storage := claimStorage(pvc); storage != nil {
		out[corev1.ResourceRequestsStorage] = *storage
		if class != "" {
			out[corev1.ResourceName(class+storageClassSuffix+string(corev1.ResourceRequestsStorage))] = *storage
		}
	}
	return out
}

// claimStorage is getStorageUsage with RecoverVolumeExpansionFailure (GA):
// the larger of the request and status.allocatedResources, in whole bytes.
func claimStorage(pvc *corev1.PersistentVolumeClaim) *resource.Quantity {
	roundUp := func(q resource.Quantity) *resource.Quantity {
		r := q.DeepCopy()
		if !r.RoundUp(0) {
			return &r
		}
		return &q
	}
	req, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return nil
	}
	out := roundUp(req)
	if allocated, ok := pvc.Status.AllocatedResources[corev1.ResourceStorage]; ok && allocated.Cmp(*out) > 0 {
		out = roundUp(allocated)
	}
	return out
}

// Matches says whether q covers obj, an object of gr: q's status.hard
// (what the apiserver's admission reads: a quota the controller has not
// yet synced covers nothing) holds a name gr's evaluator tracks, and every
// scope and scopeSelector term matches obj (only pods are scoped: any scope
// excludes every other kind).
func Matches(q *corev1.ResourceQuota, gr GroupResource, obj runtime.Object) bool {
	ok, err := matches(q, gr, obj)
	return ok && err == nil
}

func matches(q *corev1.ResourceQuota, gr GroupResource, obj runtime.Object) (bool, error) {
	if len(matchingResources(gr, names(q.Status.Hard))) == 0 {
		return false, nil
	}
	return scopesMatch(&q.Spec, gr, obj)
}

// scopesMatch: every scope and scopeSelector term of spec matches obj.
func scopesMatch(spec *corev1.ResourceQuotaSpec, gr GroupResource, obj runtime.Object) (bool, error) {
	for _, sel := range scopeSelectors(spec) {
		ok, err := scopeMatches(sel, gr, obj)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// scopeSelectors is getScopeSelectorsFromQuota: each scope as an Exists
// term, then the selector's terms.
func scopeSelectors(spec *corev1.ResourceQuotaSpec) []corev1.ScopedResourceSelectorRequirement {
	out := make([]corev1.ScopedResourceSelectorRequirement, 0, len(spec.Scopes))
	for _, s := range spec.Scopes {
		out = append(out, corev1.ScopedResourceSelectorRequirement{ScopeName: s, Operator: corev1.ScopeSelectorOpExists})
	}
	if spec.ScopeSelector != nil {
		out = append(out, spec.ScopeSelector.MatchExpressions...)
	}
	return out
}

// scopeMatches is podMatchesScopeFunc for pods and MatchesNoScopeFunc for
// everything else.
func scopeMatches(sel corev1.ScopedResourceSelectorRequirement, gr GroupResource, obj runtime.Object) (bool, error) {
	pod, ok := obj.(*corev1.Pod)
	if gr != podsGR || !ok {
		return false, nil
	}
	switch sel.ScopeName {
	case corev1.ResourceQuotaScopeTerminating:
		return isTerminating(pod), nil
	case corev1.ResourceQuotaScopeNotTerminating:
		return !isTerminating(pod), nil
	case corev1.ResourceQuotaScopeBestEffort:
		return cgroup.PodQOS(pod) == corev1.PodQOSBestEffort, nil
	case corev1.ResourceQuotaScopeNotBestEffort:
		return cgroup.PodQOS(pod) != corev1.PodQOSBestEffort, nil
	case corev1.ResourceQuotaScopePriorityClass:
		if sel.Operator == corev1.ScopeSelectorOpExists {
			return pod.Spec.PriorityClassName != "", nil
		}
		return priorityClassMatches(pod, sel)
	case corev1.ResourceQuotaScopeCrossNamespacePodAffinity:
		return crossNamespaceAffinity(pod), nil
	}
	return false, nil
}

// isTerminating: the pod has an active deadline.
func isTerminating(pod *corev1.Pod) bool {
	return pod.Spec.ActiveDeadlineSeconds != nil && *pod.Spec.ActiveDeadlineSeconds >= 0
}

// priorityClassMatches is podMatchesSelector: the term as a label
// selector (ScopedResourceSelectorRequirementsAsSelector) over the label
// set {PriorityClass: <name>}, empty when the pod has none.
func priorityClassMatches(pod *corev1.Pod, sel corev1.ScopedResourceSelectorRequirement) (bool, error) {
	var op selection.Operator
	switch sel.Operator {
	case corev1.ScopeSelectorOpIn:
		op = selection.In
	case corev1.ScopeSelectorOpNotIn:
		op = selection.NotIn
	case corev1.ScopeSelectorOpExists:
		op = selection.Exists
	case corev1.ScopeSelectorOpDoesNotExist:
		op = selection.DoesNotExist
	default:
		return false, fmt.Errorf("failed to parse and convert selector: %q is not a valid scope selector operator", sel.Operator)
	}
	req, err := labels.NewRequirement(string(sel.ScopeName), op, sel.Values)
	if err != nil {
		return false, fmt.Errorf("failed to parse and convert selector: %v", err)
	}
	var set labels.Set
	if pod.Spec.PriorityClassName != "" {
		set = labels.Set{string(corev1.ResourceQuotaScopePriorityClass): pod.Spec.PriorityClassName}
	}
	return labels.NewSelector().Add(*req).Matches(set), nil
}

// crossNamespaceAffinity is usesCrossNamespacePodAffinity: an affinity or
// anti-affinity term with namespaces or a namespace selector.
func crossNamespaceAffinity(pod *corev1.Pod) bool {
	if pod.Spec.Affinity == nil {
		return false
	}
	cross := func(terms []corev1.PodAffinityTerm, weighted []corev1.WeightedPodAffinityTerm) bool {
		for _, t := range terms {
			if len(t.Namespaces) != 0 || t.NamespaceSelector != nil {
				return true
			}
		}
		for _, t := range weighted {
			if len(t.PodAffinityTerm.Namespaces) != 0 || t.PodAffinityTerm.NamespaceSelector != nil {
				return true
			}
		}
		return false
	}
	if a := pod.Spec.Affinity.PodAffinity; a != nil && cross(a.RequiredDuringSchedulingIgnoredDuringExecution, a.PreferredDuringSchedulingIgnoredDuringExecution) {
		return true
	}
	if a := pod.Spec.Affinity.PodAntiAffinity; a != nil && cross(a.RequiredDuringSchedulingIgnoredDuringExecution, a.PreferredDuringSchedulingIgnoredDuringExecution) {
		return true
	}
	return false
}

// HelpText is the line `kubectl describe quota` prints under Scopes for
// scope (helpTextForResourceQuotaScope); "" for scopes it has none for.
func HelpText(scope corev1.ResourceQuotaScope) string {
	switch scope {
	case corev1.ResourceQuotaScopeTerminating:
		return "Matches all pods that have an active deadline. These pods have a limited lifespan on a node before being actively terminated by the system."
	case corev1.ResourceQuotaScopeNotTerminating:
		return "Matches all pods that do not have an active deadline. These pods usually include long running pods whose container command is not expected to terminate."
	case corev1.ResourceQuotaScopeBestEffort:
		return "Matches all pods that do not have resource requirements set. These pods have a best effort quality of service."
	case corev1.ResourceQuotaScopeNotBestEffort:
		return "Matches all pods that have at least one resource requirement set. These pods have a burstable or guaranteed quality of service."
	}
	return ""
}
