// Package admission is berth's admission chain for what the apiserver's
// LimitRanger and ResourceQuota plugins do: between an object's own
// validation and its storage, a write is defaulted from the namespace's
// LimitRanges, checked against them, and charged to the namespace's
// ResourceQuotas, and the quota controller keeps every quota's
// status.used. The rules and the messages are upstream's (Kubernetes
// 1.34–1.37), byte for byte where a user sees them; the spec is
// shared/design/kubernetes-semantics.md §1–§4 and §8.
//
// The pure part (these files) reads no store and holds no lock:
//
//   - limitranger.go: DefaultLimitRange is SetDefaults_LimitRangeItem and
//     SetDefaults_ResourceList (pkg/apis/core/v1/defaults.go); LimitPod is
//     LimitRanger's Admit (PodMutateLimitFunc) and CheckLimits its Validate
//     (PodValidateLimitFunc, PersistentVolumeClaimValidateLimitFunc), both
//     from plugin/pkg/admission/limitranger/admission.go.
//   - limitrange_validation.go: ValidateLimitRange
//     (pkg/apis/core/validation/validation.go).
//   - quota_validation.go: ValidateResourceQuota, same file, with the name
//     helpers of pkg/apis/core/helper/helpers.go.
//   - usage.go: what an object charges and which quotas cover it, the
//     evaluators of pkg/quota/v1/evaluator/core/{pods,services,
//     persistent_volume_claims}.go and the object count evaluator of
//     staging/src/k8s.io/apiserver/pkg/quota/v1/generic/evaluator.go.
//   - quota.go: Check is the admission plugin's CheckRequest
//     (staging/src/k8s.io/apiserver/pkg/admission/plugin/resourcequota/
//     controller.go) and Recalculate the quota controller's CalculateUsage
//     (staging/src/k8s.io/apiserver/pkg/quota/v1/resources.go,
//     pkg/controller/resourcequota), with the resource-list arithmetic of
//     resources.go so that quantities keep the formats upstream prints.
//
// The stateful part (admitter.go) reads the namespace's LimitRanges and
// quotas from the store, serialises a namespace's admissions from check to
// commit and runs the quota controller.
//
// Where upstream's order is a Go map's or an informer cache's (the keys of
// a LimitRange item, the quotas of a namespace), berth sorts: keys
// lexically, quotas and LimitRanges by name (§8). Every refusal is an
// error whose text is upstream's inner message and whose class is
// errdefs.ErrPermissionDenied; the API wraps it as
// `<resource> "<name>" is forbidden: <message>`.
//
// Not done: the VolumeAttributesClass quota scope (berth has no volume
// attributes classes), the apiserver's AdmissionConfiguration
// limitedResources, the pod "resize" subresource (berth resizes no pods)
// and the re-evaluation of a pod update that changes its Terminating scope:
// a pod update is never charged. The legacy (kubectl ≈1.10) "must specify"
// message is not offered.
package admission
