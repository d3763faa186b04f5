// Package cgroup holds berth's resource math (pure functions reproducing the
// kubelet's formulas: pkg/kubelet/cm/helpers_linux.go,
// pkg/kubelet/kuberuntime/kuberuntime_container_linux.go,
// pkg/kubelet/qos/policy.go; berth's choices where Kubernetes leaves room
// are in docs/cgroups.md) and reads usage statistics of a unit's cgroup on
// cgroup v1 and v2.
package cgroup

import (
	"math"
	"math/bits"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Limits are the computed resource settings of one container's unit.
// Zero means "not set" for every field except OOMScoreAdjust.
type Limits struct {
	QOS                corev1.PodQOSClass
	CPUShares          uint64 // cgroup v1 cpu.shares (systemd CPUShares=); 0 on cgroup v2
	CPUWeight          uint64 // cgroup v2 cpu.weight (systemd CPUWeight=); 0 on cgroup v1
	CPUQuotaPerSecUSec uint64 // CPU time per second of wall time, µs (systemd CPUQuotaPerSecUSec=); 0 = no quota
	MemoryMax          uint64 // bytes; 0 = unlimited
	MemoryMin          uint64 // bytes; cgroup v2 only; 0 = none
	MemoryHigh         uint64 // bytes; cgroup v2 only; 0 = none (the kernel's max)
	TasksMax           uint64 // 0 = unlimited
	OOMScoreAdjust     int
}

// NodeInfo is what the limit math needs to know about the host.
type NodeInfo struct {
	MemoryCapacity int64 // bytes of memory on the node (for Burstable oom_score_adj)
	CgroupV2       bool  // unified hierarchy: use CPUWeight and MemoryMin
	PidsLimit      int64 // per-container TasksMax; <= 0 = unlimited
}

// Constants of pkg/kubelet/cm/helpers_linux.go and pkg/kubelet/qos/policy.go.
const (
	MinShares     = 2      // kernel minimum of cpu.shares (kernel/sched: MIN_SHARES)
	MaxShares     = 262144 // kernel maximum of cpu.shares (1 << 18, MAX_SHARES)
	SharesPerCPU  = 1024   // cpu.shares of one full CPU
	MilliCPUToCPU = 1000

	// QuotaPeriod is the CFS period the kubelet uses (100 ms, in µs); systemd
	// 252 uses the same default when CPUQuotaPeriodUSec= is unset.
	QuotaPeriod = 100000
	// MinQuotaPeriod is the smallest cfs_quota_us the kernel accepts (1 ms).
	MinQuotaPeriod = 1000

	// MinWeight and MaxWeight bound cgroup v2 cpu.weight.
	MinWeight = 1
	MaxWeight = 10000

	// GuaranteedOOMScoreAdj is the modern (Kubernetes ≥ 1.27) value for
	// Guaranteed and node-critical pods; older kubelets used -998.
	GuaranteedOOMScoreAdj = -997
	// BestEffortOOMScoreAdj is the oom_score_adj of BestEffort containers.
	BestEffortOOMScoreAdj = 1000
)

// Priority classes the kubelet treats specially (pkg/apis/scheduling/types.go).
const (
	SystemNodeCritical     = "system-node-critical"
	SystemClusterCritical  = "system-cluster-critical"
	systemCriticalPriority = 2000000000 // scheduling.SystemCriticalPriority
	// The Priority admission plugin resolves the two built-in classes to these
	// values when a pod names them; berth may see pods that never went through
	// that plugin, so criticalPriority resolves them the same way.
	systemNodeCriticalPriority    = systemCriticalPriority + 1000
	systemClusterCriticalPriority = systemCriticalPriority
)

// Annotations by which the kubelet recognises static and mirror pods
// (pkg/kubelet/types/pod_update.go).
const (
	configSourceAnnotation = "kubernetes.io/config.source"
	apiserverSource        = "api"
)

// MilliCPUToShares converts a CPU request in millicores to cgroup v1
// cpu.shares exactly like the kubelet's MilliCPUToShares
// (pkg/kubelet/cm/helpers_linux.go): 0 gives the minimum 2, otherwise
// milli*1024/1000 (integer division) clamped to [2, 262144]. Negative input
// (rejected by API validation) is clamped to the minimum, as upstream does.
func MilliCPUToShares(milli int64) uint64 {
	if milli <= 0 {
		return MinShares
	}
	// Saturate before multiplying so that absurd requests cannot overflow
	// (upstream would overflow for milli > 9e15; the result is MaxShares anyway).
	if milli >= MaxShares*MilliCPUToCPU/SharesPerCPU+1 {
		return MaxShares
	}
	shares := milli * SharesPerCPU / MilliCPUToCPU
	if shares < MinShares {
		return MinShares
	}
	return uint64(shares)
}

// MilliCPUToQuota converts a CPU limit in millicores to a CFS quota in µs per
// period, like the kubelet's MilliCPUToQuota: 0 means no quota (returns 0);
// otherwise milli*period/1000 (integer division), at least 1000 µs, the
// kernel's minimum cfs_quota_us. Like upstream, negative input (rejected by
// API validation) yields the minimum. Products beyond int64 saturate.
func MilliCPUToQuota(milli, period int64) int64 {
	if milli == 0 {
		return 0
	}
	if milli > 0 && period > 0 && milli > math.MaxInt64/period {
		return math.MaxInt64
	}
	quota := milli * period / MilliCPUToCPU
	if quota < MinQuotaPeriod {
		return MinQuotaPeriod
	}
	return quota
}

// QuotaToPerSecUSec converts a CFS quota per period (both µs) to systemd's
// CPUQuotaPerSecUSec (µs of CPU time per second): quota×1e6/period, exact for
// the 100 ms period (×10). systemd turns it back into
// cfs_quota_us / cpu.max = value×period/1e6, at least 1 ms
// (src/core/cgroup.c cgroup_apply_*_cpu_quota). A non-positive quota or
// period gives 0 (no quota); the result saturates below systemd's
// USEC_INFINITY (2^64−1).
func QuotaToPerSecUSec(quota, period int64) uint64 {
	if quota <= 0 || period <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(quota), 1000000)
	if hi >= uint64(period) {
		return math.MaxUint64 - 1
	}
	q, _ := bits.Div64(hi, lo, uint64(period))
	return min(q, math.MaxUint64-1)
}

// SharesToWeight converts cgroup v1 cpu.shares to cgroup v2 cpu.weight with
// the conversion of current OCI runtimes (opencontainers/cgroups
// ConvertCPUSharesToCgroupV2Value since PR opencontainers/cgroups#20, used by
// runc ≥ 1.3.2 and crun ≥ 1.23; kubernetes/kubernetes#131216): a quadratic in
// log2(shares) that maps 2→1, 1024→100 (systemd's default weight) and
// 262144→10000, so one requested CPU weighs the same as an ordinary system
// service. The older linear formula (1 + (s-2)*9999/262142) gave 1024 shares
// only weight 39. 0 stays 0 ("unset").
func SharesToWeight(shares uint64) uint64 {
	switch {
	case shares == 0:
		return 0
	case shares <= MinShares:
		return MinWeight
	case shares >= MaxShares:
		return MaxWeight
	}
	l := math.Log2(float64(shares))
	// Same expression and evaluation order as upstream, so the float results
	// (and therefore the ceilings) match bit for bit.
	exponent := (l*l+125*l)/612.0 - 7.0/34.0
	return uint64(math.Ceil(math.Pow(10, exponent)))
}

// PodQOS returns the pod's QoS class with the rules of the kubelet's
// GetPodQOS/ComputePodQOS (pkg/apis/core/v1/helper/qos/qos.go):
//   - a class already recorded in pod.Status.QOSClass wins (the API server
//     sets it once at creation and it never changes, even on resize);
//   - only cpu and memory count, and zero quantities are ignored;
//   - BestEffort: no container or init container has a cpu or memory request
//     or limit;
//   - Guaranteed: every container and init container has non-zero cpu and
//     memory limits, and for each resource the summed requests equal the
//     summed limits;
//   - Burstable: everything else.
//
// When pod-level resources (pod.Spec.Resources, KEP-2837) are set they are
// evaluated instead of the containers'. Requests are taken as the API server
// defaults them (a limit without a request means request = limit), so callers
// need not pre-default the pod.
func PodQOS(pod *corev1.Pod) corev1.PodQOSClass {
	if pod.Status.QOSClass != "" {
		return pod.Status.QOSClass
	}
	requests := corev1.ResourceList{}
	limits := corev1.ResourceList{}
	guaranteed := true
	if pod.Spec.Resources != nil {
		addQOSResources(requests, podLevelRequests(pod))
		if !addQOSResources(limits, pod.Spec.Resources.Limits) {
			guaranteed = false
		}
	} else {
		for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
			for i := range cs {
				addQOSResources(requests, defaultedRequests(&cs[i]))
				if !addQOSResources(limits, cs[i].Resources.Limits) {
					guaranteed = false
				}
			}
		}
	}
	if len(requests) == 0 && len(limits) == 0 {
		return corev1.PodQOSBestEffort
	}
	if guaranteed {
		for name, req := range requests {
			if lim, ok := limits[name]; !ok || lim.Cmp(req) != 0 {
				guaranteed = false
				break
			}
		}
	}
	if guaranteed && len(requests) == len(limits) {
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// addQOSResources adds the positive cpu and memory quantities of in to sum
// and reports whether in had both a positive cpu and a positive memory.
func addQOSResources(sum, in corev1.ResourceList) (cpuAndMemory bool) {
	found := 0
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		q, ok := in[name]
		if !ok || q.Sign() <= 0 {
			continue
		}
		found++
		total := sum[name]
		total.Add(q)
		sum[name] = total
	}
	return found == 2
}

// defaultedRequests returns the container's requests after API defaulting
// (SetDefaults_Pod: every resource with a limit but no request gets
// request = limit).
func defaultedRequests(c *corev1.Container) corev1.ResourceList {
	if len(c.Resources.Limits) == 0 {
		return c.Resources.Requests
	}
	out := make(corev1.ResourceList, len(c.Resources.Requests)+len(c.Resources.Limits))
	for name, q := range c.Resources.Requests {
		out[name] = q
	}
	for name, q := range c.Resources.Limits {
		if _, ok := out[name]; !ok {
			out[name] = q
		}
	}
	return out
}

// podLevelRequests returns pod.Spec.Resources.Requests after API defaulting
// (KEP-2837): a resource with a pod-level limit but no pod-level request gets
// the aggregated requests of the containers if any container requests it,
// else request = limit.
func podLevelRequests(pod *corev1.Pod) corev1.ResourceList {
	res := pod.Spec.Resources
	out := make(corev1.ResourceList, len(res.Requests)+len(res.Limits))
	for name, q := range res.Requests {
		out[name] = q
	}
	for name, lim := range res.Limits {
		if _, ok := out[name]; ok {
			continue
		}
		if agg, found := aggregateContainerRequest(pod, name); found {
			out[name] = agg
		} else {
			out[name] = lim
		}
	}
	return out
}

// aggregateContainerRequest is the pod's effective request of one resource
// computed from its containers, as k8s.io/component-helpers/resource
// AggregateContainerRequests does: the sum over regular containers and
// restartable init containers (sidecars), or, if larger, the largest
// non-restartable init container plus the sidecars started before it.
// found reports whether some container requests the resource at all.
func aggregateContainerRequest(pod *corev1.Pod, name corev1.ResourceName) (total resource.Quantity, found bool) {
	total = aggregate(pod, func(c *corev1.Container) resource.Quantity {
		q, ok := defaultedRequests(c)[name]
		found = found || ok
		return q
	}, func(resource.Quantity) {})
	return total, found
}

// aggregate is component-helpers' aggregateContainerResourcesByFn for one
// resource, get reading it from a container: the app containers and the
// sidecars summed, or the largest init container with the sidecars
// started before it, if more. each sees every value the aggregate weighs:
// an app container's own, an init container's with those sidecars.
func aggregate(pod *corev1.Pod, get func(*corev1.Container) resource.Quantity, each func(resource.Quantity)) resource.Quantity {
	var total resource.Quantity
	for i := range pod.Spec.Containers {
		q := get(&pod.Spec.Containers[i]).DeepCopy()
		each(q)
		total.Add(q)
	}
	var sidecars, initMax resource.Quantity
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		q := get(c).DeepCopy()
		if isRestartable(c) {
			total.Add(q)
			sidecars.Add(q)
			q = sidecars.DeepCopy()
		} else {
			q.Add(sidecars)
		}
		each(q)
		if q.Cmp(initMax) > 0 {
			initMax = q
		}
	}
	if initMax.Cmp(total) > 0 {
		total = initMax
	}
	return total
}

func isRestartable(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// isSidecar reports whether c is one of the pod's restartable init containers
// (kubelet's isSidecarContainer: matched by name).
func isSidecar(pod *corev1.Pod, c *corev1.Container) bool {
	if !isRestartable(c) {
		return false
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == c.Name {
			return true
		}
	}
	return false
}

// IsNodeCriticalPod reports whether the kubelet would treat the pod as
// node-critical (pkg/kubelet/types/pod_update.go IsNodeCriticalPod): it must
// be critical — a static pod (annotation kubernetes.io/config.source other
// than "api"), a mirror pod (kubernetes.io/config.mirror), or priority ≥
// 2000000000 — and name the priority class system-node-critical.
// system-cluster-critical pods are critical but not node-critical, so the
// kubelet gives them the oom_score_adj of their QoS class, and so does berth.
func IsNodeCriticalPod(pod *corev1.Pod) bool {
	return pod.Spec.PriorityClassName == SystemNodeCritical && isCriticalPod(pod)
}

func isCriticalPod(pod *corev1.Pod) bool {
	if src, ok := pod.Annotations[configSourceAnnotation]; ok && src != apiserverSource {
		return true
	}
	if _, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return true
	}
	return criticalPriority(pod) >= systemCriticalPriority
}

// criticalPriority is pod.Spec.Priority, or, when the Priority admission
// plugin has not filled it in, the value of a built-in priority class.
func criticalPriority(pod *corev1.Pod) int32 {
	if pod.Spec.Priority != nil {
		return *pod.Spec.Priority
	}
	switch pod.Spec.PriorityClassName {
	case SystemNodeCritical:
		return systemNodeCriticalPriority
	case SystemClusterCritical:
		return systemClusterCriticalPriority
	}
	return 0
}

// OOMScoreAdjust returns the oom_score_adj of container c of pod like the
// kubelet's GetContainerOOMScoreAdjust (pkg/kubelet/qos/policy.go), modern
// values:
//   - node-critical pod (IsNodeCriticalPod) or Guaranteed: -997;
//   - BestEffort: 1000;
//   - Burstable: 1000 − 1000·memoryRequest/memoryCapacity (integer
//     division); a sidecar (restartable init container) gets at most the
//     value of the regular container with the smallest memory request; the
//     result is clamped so that < 3 gives 3 (above Guaranteed) and exactly
//     1000 gives 999 (below BestEffort).
//
// With pod-level resources the unassigned part of the pod's memory request is
// shared equally among all containers first (KEP-2837). The alpha
// tie-breaking refinement of newer kubelets is not applied. A non-positive
// memoryCapacity (unknown) gives the Burstable maximum, 999, instead of the
// kubelet's division by zero.
func OOMScoreAdjust(pod *corev1.Pod, c *corev1.Container, memoryCapacity int64) int {
	if IsNodeCriticalPod(pod) {
		return GuaranteedOOMScoreAdj
	}
	switch PodQOS(pod) {
	case corev1.PodQOSGuaranteed:
		return GuaranteedOOMScoreAdj
	case corev1.PodQOSBestEffort:
		return BestEffortOOMScoreAdj
	}
	if memoryCapacity <= 0 {
		return BestEffortOOMScoreAdj - 1
	}
	remaining := remainingPodMemoryPerContainer(pod)
	adj := burstableAdj(memoryRequest(c)+remaining, memoryCapacity)
	if isSidecar(pod, c) && len(pod.Spec.Containers) > 0 {
		minReq := memoryRequest(&pod.Spec.Containers[0])
		for i := range pod.Spec.Containers[1:] {
			minReq = min(minReq, memoryRequest(&pod.Spec.Containers[i+1]))
		}
		adj = min(adj, burstableAdj(minReq+remaining, memoryCapacity))
	}
	if adj < 1000+GuaranteedOOMScoreAdj {
		return 1000 + GuaranteedOOMScoreAdj
	}
	if adj == BestEffortOOMScoreAdj {
		return BestEffortOOMScoreAdj - 1
	}
	return int(adj)
}

// burstableAdj is 1000 − 1000·req/capacity (integer division), computed
// without overflowing for any int64 request.
func burstableAdj(req, capacity int64) int64 {
	if req <= 0 {
		return 1000
	}
	if req >= capacity {
		// 1000·req/capacity ≥ 1000: the result is ≤ 0 and is clamped to 3.
		return 0
	}
	hi, lo := bits.Mul64(1000, uint64(req))
	q, _ := bits.Div64(hi, lo, uint64(capacity)) // hi < capacity since req < capacity
	return 1000 - int64(q)
}

// memoryRequest is the container's defaulted memory request in bytes.
func memoryRequest(c *corev1.Container) int64 {
	q := defaultedRequests(c)[corev1.ResourceMemory]
	return q.Value()
}

// remainingPodMemoryPerContainer is, with pod-level memory requests, the part
// of the pod's request not assigned to any container, divided by the number
// of containers and init containers (kubelet remainingPodMemReqPerContainer).
func remainingPodMemoryPerContainer(pod *corev1.Pod) int64 {
	if pod.Spec.Resources == nil {
		return 0
	}
	podReq := podLevelRequests(pod)[corev1.ResourceMemory]
	n := int64(len(pod.Spec.Containers) + len(pod.Spec.InitContainers))
	if podReq.IsZero() || n == 0 {
		return 0
	}
	agg, _ := aggregateContainerRequest(pod, corev1.ResourceMemory)
	return (podReq.Value() - agg.Value()) / n
}

// ContainerLimits computes the unit resource settings of container c of pod
// on node (kubelet calculateLinuxResources and
// generateLinuxContainerResources; docs/cgroups.md, "berth's limits"):
//   - shares from the cpu request, or from the cpu limit if there is no
//     request, MilliCPUToShares(0) = 2 if neither (kubelet
//     calculateLinuxResources); on cgroup v1 as CPUShares, on cgroup v2 as
//     CPUWeight = SharesToWeight(shares);
//   - CPUQuotaPerSecUSec from the cpu limit: the CFS quota of the 100 ms
//     period scaled to one second, i.e. milliCPU×1000 µs/s (500m → 500000,
//     which systemd writes as cfs_quota_us 50000 / cpu.max "50000 100000"),
//     never below the kernel's 1 ms per period (10000 µs/s);
//   - MemoryMax = the memory limit in bytes;
//   - MemoryMin = the memory request, on cgroup v2 only and only for
//     Guaranteed and Burstable pods (MemoryQoS);
//   - MemoryHigh, on cgroup v2, where the memory request differs from the
//     limit: MemoryQoS's throttling point (MemoryHighFor);
//   - TasksMax = node.PidsLimit when positive;
//   - OOMScoreAdjust per OOMScoreAdjust, QOS per PodQOS.
//
// Requests are read as the API server defaults them (request = limit when
// only a limit is given). Pod-level resources (KEP-2837) only influence QOS
// and OOMScoreAdjust here; a pod-level ceiling belongs on the pod's slice.
func ContainerLimits(pod *corev1.Pod, c *corev1.Container, node NodeInfo) Limits {
	reqs := defaultedRequests(c)
	l := Limits{
		QOS:            PodQOS(pod),
		OOMScoreAdjust: OOMScoreAdjust(pod, c, node.MemoryCapacity),
	}

	cpuReq := reqs[corev1.ResourceCPU]
	cpuLim := c.Resources.Limits[corev1.ResourceCPU]
	milli := cpuReq.MilliValue()
	if cpuReq.IsZero() && !cpuLim.IsZero() {
		milli = cpuLim.MilliValue()
	}
	shares := MilliCPUToShares(milli)
	if node.CgroupV2 {
		l.CPUWeight = SharesToWeight(shares)
	} else {
		l.CPUShares = shares
	}
	if cpuLim.Sign() > 0 {
		l.CPUQuotaPerSecUSec = QuotaToPerSecUSec(MilliCPUToQuota(cpuLim.MilliValue(), QuotaPeriod), QuotaPeriod)
	}

	if memLim := c.Resources.Limits[corev1.ResourceMemory]; memLim.Sign() > 0 {
		l.MemoryMax = uint64(memLim.Value())
	}
	if node.CgroupV2 && l.QOS != corev1.PodQOSBestEffort {
		if memReq := reqs[corev1.ResourceMemory]; memReq.Sign() > 0 {
			l.MemoryMin = uint64(memReq.Value())
		}
	}
	if node.CgroupV2 {
		memReq, memLim := reqs[corev1.ResourceMemory], c.Resources.Limits[corev1.ResourceMemory]
		l.MemoryHigh = MemoryHighFor(memReq.Value(), memLim.Value(), node.MemoryCapacity)
	}
	if node.PidsLimit > 0 {
		l.TasksMax = uint64(node.PidsLimit)
	}
	return l
}

// MemoryThrottlingFactor is the kubelet's default memoryThrottlingFactor
// (KubeletConfiguration, MemoryQoS).
const MemoryThrottlingFactor = 0.9

// pageSize is the granularity memory.high is rounded down to.
const pageSize = 4096

// MemoryHighFor is the kubelet's MemoryQoS memory.high of a container
// (generateLinuxContainerResources, since Kubernetes 1.27):
// floor((request + 0.9 × (limit, or the node's allocatable memory without
// a limit, − request)) / page size) × page size, set only where the request
// differs from the limit (never for Guaranteed containers) and only above
// the request; 0: not set. berth reserves nothing, so allocatable is the
// node's memory.
func MemoryHighFor(request, limit, allocatable int64) uint64 {
	if request == limit {
		return 0
	}
	top := limit
	if top == 0 {
		top = allocatable
	}
	if top <= 0 {
		return 0
	}
	high := int64(math.Floor((float64(request)+(float64(top)-float64(request))*MemoryThrottlingFactor)/pageSize)) * pageSize
	if high <= request {
		return 0
	}
	return uint64(high)
}

// SliceLimits are the computed settings of a slice above the containers'
// units: a pod's (PodLimits) or a QoS class's (QoSLimits). Zero means "not
// set" for every field.
type SliceLimits struct {
	QOS                corev1.PodQOSClass
	CPUShares          uint64 // cgroup v1 cpu.shares (systemd CPUShares=); 0 on cgroup v2
	CPUWeight          uint64 // cgroup v2 cpu.weight (systemd CPUWeight=); 0 on cgroup v1
	CPUQuotaPerSecUSec uint64 // µs of CPU time per second of wall time; 0 = no quota
	MemoryMax          uint64 // bytes; 0 = unlimited
	MemoryMin          uint64 // bytes; cgroup v2 only; 0 = none
}

// shares sets CPUShares or CPUWeight, whichever the node's cgroup version
// uses, with the one shares→weight conversion berth uses everywhere
// (SharesToWeight, docs/cgroups.md): a pod slice then weighs against a
// Guaranteed pod's sibling QoS slices as its containers weigh against each
// other. The kubelet's own pod and QoS cgroups used the linear formula
// (kubernetes-semantics.md §5.3); berth's choice is §8's.
func (l *SliceLimits) shares(s uint64, node NodeInfo) {
	if node.CgroupV2 {
		l.CPUWeight = SharesToWeight(s)
	} else {
		l.CPUShares = s
	}
}

// PodLimits computes the settings of the pod's slice as the kubelet's
// ResourceConfigForPod (pkg/kubelet/cm/helpers_linux.go) does for its pod
// cgroup, with the pod's effective requests and limits of
// k8s.io/component-helpers/resource PodRequests and PodLimits
// (kubernetes-semantics.md §3.2, §5.5):
//   - shares = MilliCPUToShares(pod cpu request): the sum over app
//     containers and sidecars, or the largest init container plus the
//     sidecars started before it if more, plus spec.overhead; every class
//     but BestEffort, which gets the minimum, 2;
//   - CPUQuotaPerSecUSec from the pod cpu limit (aggregated the same way,
//     overhead added to a non-zero limit) for a Guaranteed pod, and for a
//     Burstable one only when every container declares a non-zero cpu limit
//     (an init container counting the sidecars started before it, as
//     PodLimits hands them to ResourceConfigForPod's check; init
//     containers count since kubernetes#103107): one unlimited container
//     leaves the pod unlimited;
//   - MemoryMax = the pod memory limit under the same rule;
//   - MemoryMin = the pod memory request on cgroup v2 for Guaranteed and
//     Burstable pods (the kubelet's MemoryQoS, berth's choice for
//     containers too: docs/cgroups.md).
//
// Requests are read as the API server defaults them (request = limit when
// only a limit is given), as ContainerLimits does. Pod-level resources
// (KEP-2837), when set, replace the containers' cpu and memory values and
// count as declared limits, as in ResourceConfigForPod.
func PodLimits(pod *corev1.Pod, node NodeInfo) SliceLimits {
	l := SliceLimits{QOS: PodQOS(pod)}
	if l.QOS == corev1.PodQOSBestEffort {
		l.shares(MinShares, node)
		return l
	}
	cpuReq, memReq := podRequest(pod, corev1.ResourceCPU), podRequest(pod, corev1.ResourceMemory)
	cpuLim, cpuDeclared := podLimit(pod, corev1.ResourceCPU)
	memLim, memDeclared := podLimit(pod, corev1.ResourceMemory)
	l.shares(MilliCPUToShares(cpuReq.MilliValue()), node)
	guaranteed := l.QOS == corev1.PodQOSGuaranteed
	if (guaranteed || cpuDeclared) && cpuLim.Sign() > 0 {
		l.CPUQuotaPerSecUSec = QuotaToPerSecUSec(MilliCPUToQuota(cpuLim.MilliValue(), QuotaPeriod), QuotaPeriod)
	}
	if (guaranteed || memDeclared) && memLim.Sign() > 0 {
		l.MemoryMax = uint64(memLim.Value())
	}
	if node.CgroupV2 && memReq.Sign() > 0 {
		l.MemoryMin = uint64(memReq.Value())
	}
	return l
}

// Requests are effective cpu and memory requests, of one pod
// (PodRequests) or summed over pods (Add): what a QoS class's and a
// namespace's slices are weighed and protected by.
type Requests struct {
	CPUMilli    int64
	MemoryBytes int64
}

// Add sums r and o.
func (r Requests) Add(o Requests) Requests {
	return Requests{CPUMilli: r.CPUMilli + o.CPUMilli, MemoryBytes: r.MemoryBytes + o.MemoryBytes}
}

// PodRequests are the pod's effective requests as its slice gets them
// (PodLimits: the containers' aggregate with the init-container rule, or
// the pod-level request, plus overhead); zero for a BestEffort pod.
func PodRequests(pod *corev1.Pod) Requests {
	if PodQOS(pod) == corev1.PodQOSBestEffort {
		return Requests{}
	}
	cpu, mem := podRequest(pod, corev1.ResourceCPU), podRequest(pod, corev1.ResourceMemory)
	return Requests{CPUMilli: cpu.MilliValue(), MemoryBytes: mem.Value()}
}

// QoSLimits are the settings of a QoS class's slice in a namespace, sum
// being the requests of the class's pods there (the kubelet's
// qosContainerManagerImpl, kubernetes-semantics.md §5.5):
//   - BestEffort: the minimum shares, 2, so that BestEffort pods run on
//     what the others leave;
//   - Burstable: shares = MilliCPUToShares(Σ cpu requests), so that the
//     class weighs against the namespace's Guaranteed pods as its pods'
//     own slices would; on cgroup v2 MemoryMin = Σ memory requests (the
//     kubelet's MemoryQoS), without which a pod's memory.min would be
//     bounded by an unprotected parent;
//   - Guaranteed pods have no QoS slice: nothing is set.
func QoSLimits(qos corev1.PodQOSClass, sum Requests, node NodeInfo) SliceLimits {
	l := SliceLimits{QOS: qos}
	switch qos {
	case corev1.PodQOSBestEffort:
		l.shares(MinShares, node)
	case corev1.PodQOSBurstable:
		l.shares(MilliCPUToShares(sum.CPUMilli), node)
		if node.CgroupV2 && sum.MemoryBytes > 0 {
			l.MemoryMin = uint64(sum.MemoryBytes)
		}
	}
	return l
}

// NamespaceShares are the settings a namespace's slice takes from its
// pods' summed requests, berth's level between the kubelet's kubepods and
// its QoS cgroups: shares = MilliCPUToShares(Σ cpu requests), so that
// namespaces weigh against each other in berth.slice by what their pods
// request, as pods do in one kubepods; on cgroup v2 MemoryMin = Σ memory
// requests, the protection its QoS and pod slices draw on (kubepods'
// memory.min in MemoryQoS).
func NamespaceShares(sum Requests, node NodeInfo) SliceLimits {
	var l SliceLimits
	l.shares(MilliCPUToShares(sum.CPUMilli), node)
	if node.CgroupV2 && sum.MemoryBytes > 0 {
		l.MemoryMin = uint64(sum.MemoryBytes)
	}
	return l
}

// EvictionReserve is the memory the kubelet keeps from pods by default:
// its hard eviction threshold memory.available<100Mi, with no system or
// kube reserve, makes a node's allocatable memory its capacity less this.
const EvictionReserve = 100 << 20

// RootMemoryMin is the MemoryMin of the slice above every namespace's:
// every pod's memory requests (sum), but never more than the node's
// allocatable memory (its capacity less EvictionReserve). The scheduler
// keeps a cluster's kubepods there by admitting no pod beyond it; berth has
// no scheduler, and requests summing to more than the machine would
// otherwise shield the pods from all reclaim and leave the rest of the
// system to the OOM killer. Below it the kernel shares the protection out
// in proportion to the namespaces' own. 0 with an unknown capacity.
func RootMemoryMin(sum int64, node NodeInfo) uint64 {
	if sum <= 0 || node.MemoryCapacity <= EvictionReserve {
		return 0
	}
	return uint64(min(sum, node.MemoryCapacity-EvictionReserve))
}

// NamespaceCPUQuota is the CPUQuotaPerSecUSec of a namespace's cpu limit in
// millicores (a ResourceQuota's limits.cpu, kubernetes-semantics.md §8):
// the kubelet's quota of a 100 ms period scaled to a second, milli×1000,
// never below the kernel's 1 ms per period; 0 (or less) gives 0, no limit.
func NamespaceCPUQuota(milli int64) uint64 {
	if milli <= 0 {
		return 0
	}
	return QuotaToPerSecUSec(MilliCPUToQuota(milli, QuotaPeriod), QuotaPeriod)
}

// podRequest is the pod's effective request of one resource
// (component-helpers PodRequests): the containers' aggregate, or the
// pod-level request when the pod sets one (pod-level resources, defaulted
// as the API server does), plus spec.overhead.
func podRequest(pod *corev1.Pod, name corev1.ResourceName) resource.Quantity {
	q, _ := aggregateContainerRequest(pod, name)
	if hasPodLevel(pod, name) {
		if pl, ok := podLevelRequests(pod)[name]; ok {
			q = pl.DeepCopy()
		}
	}
	if o, ok := pod.Spec.Overhead[name]; ok {
		q.Add(o)
	}
	return q
}

// hasPodLevel reports whether pod-level resources name the resource
// (component-helpers IsPodLevelResourcesSet, per resource).
func hasPodLevel(pod *corev1.Pod, name corev1.ResourceName) bool {
	r := pod.Spec.Resources
	if r == nil {
		return false
	}
	_, req := r.Requests[name]
	_, lim := r.Limits[name]
	return req || lim
}

// podLimit is the pod's effective limit of one resource (component-helpers
// PodLimits, aggregateContainerResourcesByFn: app containers and sidecars
// summed, or the largest init container with the sidecars started before
// it if more; a pod-level limit instead when set; spec.overhead added to a
// non-zero limit) and whether every container declares a non-zero limit of
// it (ResourceConfigForPod's cpuLimitsDeclared/memoryLimitsDeclared, from
// the lists PodLimits aggregates: an init container's own, plus the
// sidecars before it). A pod-level limit counts as declared.
func podLimit(pod *corev1.Pod, name corev1.ResourceName) (total resource.Quantity, declared bool) {
	declared = true
	total = aggregate(pod, func(c *corev1.Container) resource.Quantity { return c.Resources.Limits[name] },
		func(q resource.Quantity) { declared = declared && !q.IsZero() })
	if r := pod.Spec.Resources; r != nil {
		if pl, ok := r.Limits[name]; ok && !pl.IsZero() {
			total, declared = pl.DeepCopy(), true
		}
	}
	if o, ok := pod.Spec.Overhead[name]; ok && !total.IsZero() {
		total.Add(o)
	}
	return total, declared
}
