package admission

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ValidateResourceQuota is the apiserver's ValidateResourceQuota
// (pkg/apis/core/validation/validation.go): metadata; spec.hard and
// status.hard/used names (standard quota names when unprefixed, else any
// qualified name: count/<resource>[.<group>], requests.<extended>,
// <class>.storageclass.storage.k8s.io/...) with non-negative quantities
// (integers for counted names and extended resources); spec.scopes and
// spec.scopeSelector: known scopes, applicable to every standard hard name
// (BestEffort only to pods), no conflicting pair, and selector operators
// that fit the scope. Paths and messages are upstream's; map keys are
// visited in sorted order.
func ValidateResourceQuota(q *corev1.ResourceQuota) field.ErrorList {
	allErrs := apivalidation.ValidateObjectMeta(&q.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	allErrs = append(allErrs, validateResourceQuotaSpec(&q.Spec, field.NewPath("spec"))...)
	allErrs = append(allErrs, validateQuotaList(q.Status.Hard, field.NewPath("status", "hard"))...)
	allErrs = append(allErrs, validateQuotaList(q.Status.Used, field.NewPath("status", "used"))...)
	return allErrs
}

func validateResourceQuotaSpec(spec *corev1.ResourceQuotaSpec, fld *field.Path) field.ErrorList {
	allErrs := validateQuotaList(spec.Hard, fld.Child("hard"))
	allErrs = append(allErrs, validateResourceQuotaScopes(spec, fld)...)
	if spec.ScopeSelector != nil {
		allErrs = append(allErrs, validateScopeSelector(spec, fld.Child("scopeSelector"))...)
	}
	return allErrs
}

func validateQuotaList(l corev1.ResourceList, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for _, k := range sortedNames(l) {
		resPath := fldPath.Key(string(k))
		allErrs = append(allErrs, validateQuotaResourceName(k, resPath)...)
		allErrs = append(allErrs, validateResourceQuantityValue(k, l[k], resPath)...)
	}
	return allErrs
}

// validateQuotaResourceName is ValidateResourceQuotaResourceName.
func validateQuotaResourceName(value corev1.ResourceName, fldPath *field.Path) field.ErrorList {
	allErrs := validateResourceName(value, fldPath)
	if !strings.Contains(string(value), "/") && !isStandardQuotaResourceName(value) {
		return append(allErrs, field.Invalid(fldPath, value, "must be a standard resource for quota"))
	}
	return allErrs
}

// validateResourceQuantityValue is ValidateResourceQuantityValue.
func validateResourceQuantityValue(name corev1.ResourceName, value resource.Quantity, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if value.Cmp(resource.Quantity{}) < 0 {
		allErrs = append(allErrs, field.Invalid(fldPath, value.String(), apivalidation.IsNegativeErrorMsg))
	}
	if isIntegerResourceName(name) && value.MilliValue()%1000 != 0 {
		allErrs = append(allErrs, field.Invalid(fldPath, value, "must be an integer"))
	}
	return allErrs
}

var standardQuotaResources = map[corev1.ResourceName]bool{
	corev1.ResourceCPU:                      true,
	corev1.ResourceMemory:                   true,
	corev1.ResourceEphemeralStorage:         true,
	corev1.ResourceRequestsCPU:              true,
	corev1.ResourceRequestsMemory:           true,
	corev1.ResourceRequestsStorage:          true,
	corev1.ResourceRequestsEphemeralStorage: true,
	corev1.ResourceLimitsCPU:                true,
	corev1.ResourceLimitsMemory:             true,
	corev1.ResourceLimitsEphemeralStorage:   true,
	corev1.ResourcePods:                     true,
	corev1.ResourceQuotas:                   true,
	corev1.ResourceServices:                 true,
	corev1.ResourceReplicationControllers:   true,
	corev1.ResourceSecrets:                  true,
	corev1.ResourcePersistentVolumeClaims:   true,
	corev1.ResourceConfigMaps:               true,
	corev1.ResourceServicesNodePorts:        true,
	corev1.ResourceServicesLoadBalancers:    true,
}

func isStandardQuotaResourceName(name corev1.ResourceName) bool {
	return standardQuotaResources[name] || isQuotaHugePageResourceName(name)
}

var integerResources = map[corev1.ResourceName]bool{
	corev1.ResourcePods:                   true,
	corev1.ResourceQuotas:                 true,
	corev1.ResourceServices:               true,
	corev1.ResourceReplicationControllers: true,
	corev1.ResourceSecrets:                true,
	corev1.ResourceConfigMaps:             true,
	corev1.ResourcePersistentVolumeClaims: true,
	corev1.ResourceServicesNodePorts:      true,
	corev1.ResourceServicesLoadBalancers:  true,
}

// isIntegerResourceName: counted names, and extended resources (which, by
// upstream's test, include every prefixed name such as count/pods).
func isIntegerResourceName(name corev1.ResourceName) bool {
	return integerResources[name] || isExtendedResourceName(name)
}

// isStandardResourceQuotaScope: the scopes the apiserver accepts
// (VolumeAttributesClass is not served by berth).
func isStandardResourceQuotaScope(scope corev1.ResourceQuotaScope) bool {
	switch scope {
	case corev1.ResourceQuotaScopeTerminating, corev1.ResourceQuotaScopeNotTerminating,
		corev1.ResourceQuotaScopeBestEffort, corev1.ResourceQuotaScopeNotBestEffort,
		corev1.ResourceQuotaScopePriorityClass, corev1.ResourceQuotaScopeCrossNamespacePodAffinity:
		return true
	}
	return false
}

// isScopeValidForResource is IsResourceQuotaScopeValidForResource: pod
// scopes apply to pods and pod compute names only, BestEffort to pods only.
func isScopeValidForResource(scope corev1.ResourceQuotaScope, name corev1.ResourceName) bool {
	podCount := name == corev1.ResourcePods
	podCompute := false
	switch name {
	case corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceLimitsCPU, corev1.ResourceLimitsMemory,
		corev1.ResourceRequestsCPU, corev1.ResourceRequestsMemory:
		podCompute = true
	}
	switch scope {
	case corev1.ResourceQuotaScopeTerminating, corev1.ResourceQuotaScopeNotTerminating, corev1.ResourceQuotaScopeNotBestEffort,
		corev1.ResourceQuotaScopePriorityClass, corev1.ResourceQuotaScopeCrossNamespacePodAffinity:
		return podCount || podCompute
	case corev1.ResourceQuotaScopeBestEffort:
		return podCount
	}
	return true
}

// conflicting reports whether scopes hold both of a pair that can never
// match together.
func conflicting(scopes map[corev1.ResourceQuotaScope]bool) []bool {
	return []bool{
		scopes[corev1.ResourceQuotaScopeBestEffort] && scopes[corev1.ResourceQuotaScopeNotBestEffort],
		scopes[corev1.ResourceQuotaScopeTerminating] && scopes[corev1.ResourceQuotaScopeNotTerminating],
	}
}

// validateResourceQuotaScopes is validateResourceQuotaScopes.
func validateResourceQuotaScopes(spec *corev1.ResourceQuotaSpec, fld *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if len(spec.Scopes) == 0 {
		return allErrs
	}
	hard := sortedNames(spec.Hard)
	fldPath := fld.Child("scopes")
	seen := map[corev1.ResourceQuotaScope]bool{}
	for _, scope := range spec.Scopes {
		if !isStandardResourceQuotaScope(scope) {
			allErrs = append(allErrs, field.Invalid(fldPath, spec.Scopes, "unsupported scope"))
		}
		for _, k := range hard {
			if isStandardQuotaResourceName(k) && !isScopeValidForResource(scope, k) {
				allErrs = append(allErrs, field.Invalid(fldPath, spec.Scopes, "unsupported scope applied to resource"))
			}
		}
		seen[scope] = true
	}
	for _, c := range conflicting(seen) {
		if c {
			allErrs = append(allErrs, field.Invalid(fldPath, spec.Scopes, "conflicting scopes"))
		}
	}
	return allErrs
}

// internalScopeSelector has the shape of the apiserver's internal
// core.ScopeSelector, which has no json tags: field errors print it with
// its Go field names.
type internalScopeSelector struct {
	MatchExpressions []internalScopedResourceSelectorRequirement
}

type internalScopedResourceSelectorRequirement struct {
	ScopeName corev1.ResourceQuotaScope
	Operator  corev1.ScopeSelectorOperator
	Values    []string
}

func internalSelector(s *corev1.ScopeSelector) *internalScopeSelector {
	out := &internalScopeSelector{}
	for _, r := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, internalScopedResourceSelectorRequirement(r))
	}
	return out
}

// validateScopeSelector is validateScopedResourceSelectorRequirement.
func validateScopeSelector(spec *corev1.ResourceQuotaSpec, fld *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	hard := sortedNames(spec.Hard)
	fldPath := fld.Child("matchExpressions")
	seen := map[corev1.ResourceQuotaScope]bool{}
	for _, req := range spec.ScopeSelector.MatchExpressions {
		if !isStandardResourceQuotaScope(req.ScopeName) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("scopeName"), req.ScopeName, "unsupported scope"))
		}
		for _, k := range hard {
			if isStandardQuotaResourceName(k) && !isScopeValidForResource(req.ScopeName, k) {
				allErrs = append(allErrs, field.Invalid(fldPath, internalSelector(spec.ScopeSelector), "unsupported scope applied to resource"))
			}
		}
		switch req.ScopeName {
		case corev1.ResourceQuotaScopeBestEffort, corev1.ResourceQuotaScopeNotBestEffort, corev1.ResourceQuotaScopeTerminating,
			corev1.ResourceQuotaScopeNotTerminating, corev1.ResourceQuotaScopeCrossNamespacePodAffinity:
			if req.Operator != corev1.ScopeSelectorOpExists {
				allErrs = append(allErrs, field.Invalid(fldPath.Child("operator"), req.Operator,
					"must be 'Exists' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"))
			}
		}
		switch req.Operator {
		case corev1.ScopeSelectorOpIn, corev1.ScopeSelectorOpNotIn:
			if len(req.Values) == 0 {
				allErrs = append(allErrs, field.Required(fldPath.Child("values"),
					"must be at least one value when `operator` is 'In' or 'NotIn' for scope selector"))
			}
		case corev1.ScopeSelectorOpExists, corev1.ScopeSelectorOpDoesNotExist:
			if len(req.Values) != 0 {
				allErrs = append(allErrs, field.Invalid(fldPath.Child("values"), req.Values,
					"must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector"))
			}
		default:
			allErrs = append(allErrs, field.Invalid(fldPath.Child("operator"), req.Operator, "not a valid selector operator"))
		}
		seen[req.ScopeName] = true
	}
	for _, c := range conflicting(seen) {
		if c {
			// Upstream reports spec.scopes as the value here.
			allErrs = append(allErrs, field.Invalid(fldPath, spec.Scopes, "conflicting scopes"))
		}
	}
	return allErrs
}
