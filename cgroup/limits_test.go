package cgroup

import (
	"math"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMilliCPUToShares(t *testing.T) {
	for _, tc := range []struct {
		name  string
		milli int64
		want  uint64
	}{
		{"negative (invalid) → min", -1, 2},
		{"zero → min", 0, 2},
		{"1m rounds to 1 → clamped to min", 1, 2},
		{"2m: first value that is exactly min", 2, 2},
		{"3m: min+1", 3, 3},
		{"100m", 100, 102},
		{"default: one CPU", 1000, 1024},
		{"max−1", 255999, 262142},
		{"max: 256 CPUs", 256000, 262144},
		{"max+1 → clamped", 256001, 262144},
		{"absurd request does not overflow", math.MaxInt64, 262144},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MilliCPUToShares(tc.milli); got != tc.want {
				t.Errorf("MilliCPUToShares(%d) = %d, want %d", tc.milli, got, tc.want)
			}
		})
	}
}

func TestMilliCPUToQuota(t *testing.T) {
	for _, tc := range []struct {
		name   string
		milli  int64
		period int64
		want   int64
	}{
		{"zero → no quota", 0, QuotaPeriod, 0},
		{"negative (invalid) → min, as kubelet", -1, QuotaPeriod, 1000},
		{"1m → below kernel min → min", 1, QuotaPeriod, 1000},
		{"min−1: 9m = 900µs → min", 9, QuotaPeriod, 1000},
		{"min: 10m = 1000µs", 10, QuotaPeriod, 1000},
		{"min+1: 11m", 11, QuotaPeriod, 1100},
		{"500m", 500, QuotaPeriod, 50000},
		{"default: one CPU = one period", 1000, QuotaPeriod, 100000},
		{"1500m", 1500, QuotaPeriod, 150000},
		{"other period: 500m of 50ms", 500, 50000, 25000},
		{"overflow saturates", math.MaxInt64 / 10, QuotaPeriod, math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MilliCPUToQuota(tc.milli, tc.period); got != tc.want {
				t.Errorf("MilliCPUToQuota(%d, %d) = %d, want %d", tc.milli, tc.period, got, tc.want)
			}
		})
	}
}

func TestQuotaToPerSecUSec(t *testing.T) {
	for _, tc := range []struct {
		name          string
		quota, period int64
		want          uint64
	}{
		{"no quota", 0, QuotaPeriod, 0},
		{"negative quota (cfs -1 = unlimited)", -1, QuotaPeriod, 0},
		{"zero period", 1000, 0, 0},
		{"kernel minimum 1ms per 100ms", 1000, QuotaPeriod, 10000},
		{"500m", 50000, QuotaPeriod, 500000},
		{"one CPU", 100000, QuotaPeriod, 1000000},
		{"50ms period", 25000, 50000, 500000},
		{"saturates below USEC_INFINITY", math.MaxInt64, 1, math.MaxUint64 - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := QuotaToPerSecUSec(tc.quota, tc.period); got != tc.want {
				t.Errorf("QuotaToPerSecUSec(%d, %d) = %d, want %d", tc.quota, tc.period, got, tc.want)
			}
		})
	}
}

// The expected weights are those of opencontainers/cgroups
// ConvertCPUSharesToCgroupV2Value (runc ≥ 1.3.2); anchors 2→1, 1024→100 and
// 262144→10000 are the points the quadratic was fitted to. Intermediate values
// were cross-checked with an independent float evaluation (Python).
func TestSharesToWeight(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shares uint64
		want   uint64
	}{
		{"zero stays unset", 0, 0},
		{"below min", 1, 1},
		{"min", 2, 1},
		{"min+1", 3, 2},
		{"256 shares (250m)", 256, 35},
		{"default−1", 1023, 100},
		{"default: one CPU = systemd default weight", 1024, 100},
		{"default+1", 1025, 101},
		{"4 CPUs", 4096, 303},
		{"max−1", 262143, 10000},
		{"max", 262144, 10000},
		{"max+1", 262145, 10000},
		{"huge", math.MaxUint64, 10000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SharesToWeight(tc.shares); got != tc.want {
				t.Errorf("SharesToWeight(%d) = %d, want %d", tc.shares, got, tc.want)
			}
		})
	}
}

func TestSharesToWeightMonotonic(t *testing.T) {
	prev := SharesToWeight(2)
	for s := uint64(3); s <= MaxShares; s++ {
		w := SharesToWeight(s)
		if w < prev || w < MinWeight || w > MaxWeight {
			t.Fatalf("SharesToWeight(%d) = %d after %d: not monotonic within [1, 10000]", s, w, prev)
		}
		prev = w
	}
}

// rl builds a ResourceList from "name=quantity" pairs.
func rl(kv ...string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for i := 0; i+1 < len(kv); i += 2 {
		out[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return out
}

func ctr(name string, req, lim corev1.ResourceList) corev1.Container {
	return corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Requests: req, Limits: lim}}
}

func podOf(cs ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: cs}}
}

func withInit(p *corev1.Pod, cs ...corev1.Container) *corev1.Pod {
	p.Spec.InitContainers = append(p.Spec.InitContainers, cs...)
	return p
}

func sidecar(c corev1.Container) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	c.RestartPolicy = &always
	return c
}

func TestPodQOS(t *testing.T) {
	full := rl("cpu", "500m", "memory", "128Mi")
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want corev1.PodQOSClass
	}{
		{"no containers", podOf(), corev1.PodQOSBestEffort},
		{"no resources", podOf(ctr("a", nil, nil)), corev1.PodQOSBestEffort},
		{"only non-QoS resources", podOf(ctr("a", rl("ephemeral-storage", "1Gi"), rl("ephemeral-storage", "2Gi"))), corev1.PodQOSBestEffort},
		{"zero quantities are ignored", podOf(ctr("a", rl("cpu", "0", "memory", "0"), nil)), corev1.PodQOSBestEffort},
		{"requests equal limits", podOf(ctr("a", full, full)), corev1.PodQOSGuaranteed},
		{"limits only: API defaulting makes requests = limits", podOf(ctr("a", nil, full)), corev1.PodQOSGuaranteed},
		{"equal in different formats", podOf(ctr("a", rl("cpu", "1", "memory", "1Gi"), rl("cpu", "1000m", "memory", "1073741824"))), corev1.PodQOSGuaranteed},
		{"requests below limits", podOf(ctr("a", rl("cpu", "250m", "memory", "128Mi"), full)), corev1.PodQOSBurstable},
		{"requests only", podOf(ctr("a", full, nil)), corev1.PodQOSBurstable},
		{"cpu limit only", podOf(ctr("a", nil, rl("cpu", "1"))), corev1.PodQOSBurstable},
		{"memory request only", podOf(ctr("a", rl("memory", "1Mi"), nil)), corev1.PodQOSBurstable},
		{"guaranteed + best-effort container", podOf(ctr("a", full, full), ctr("b", nil, nil)), corev1.PodQOSBurstable},
		{"two guaranteed containers", podOf(ctr("a", full, full), ctr("b", nil, rl("cpu", "1", "memory", "1Gi"))), corev1.PodQOSGuaranteed},
		{"best-effort init container spoils guaranteed", withInit(podOf(ctr("a", full, full)), ctr("i", nil, nil)), corev1.PodQOSBurstable},
		{"guaranteed init container", withInit(podOf(ctr("a", full, full)), ctr("i", nil, full)), corev1.PodQOSGuaranteed},
		{"burstable init container only", withInit(podOf(ctr("a", nil, nil)), ctr("i", rl("cpu", "1"), nil)), corev1.PodQOSBurstable},
		{"zero limit does not count as a limit", podOf(ctr("a", rl("cpu", "1", "memory", "1Gi"), rl("cpu", "1", "memory", "1Gi")), ctr("b", nil, rl("cpu", "0", "memory", "0"))), corev1.PodQOSBurstable},
		{"status wins", func() *corev1.Pod {
			p := podOf(ctr("a", nil, nil))
			p.Status.QOSClass = corev1.PodQOSGuaranteed
			return p
		}(), corev1.PodQOSGuaranteed},
		{"pod-level limits only", func() *corev1.Pod {
			p := podOf(ctr("a", nil, nil), ctr("b", nil, nil))
			p.Spec.Resources = &corev1.ResourceRequirements{Limits: full}
			return p
		}(), corev1.PodQOSGuaranteed},
		{"pod-level requests below limits", func() *corev1.Pod {
			p := podOf(ctr("a", nil, nil))
			p.Spec.Resources = &corev1.ResourceRequirements{Requests: rl("cpu", "100m", "memory", "128Mi"), Limits: full}
			return p
		}(), corev1.PodQOSBurstable},
		{"pod-level requests only, containers would be guaranteed", func() *corev1.Pod {
			p := podOf(ctr("a", nil, full))
			p.Spec.Resources = &corev1.ResourceRequirements{Requests: full}
			return p
		}(), corev1.PodQOSBurstable},
		{"pod-level limits, container requests smaller than them", func() *corev1.Pod {
			p := podOf(ctr("a", rl("cpu", "100m"), nil))
			p.Spec.Resources = &corev1.ResourceRequirements{Limits: full}
			return p
		}(), corev1.PodQOSBurstable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PodQOS(tc.pod); got != tc.want {
				t.Errorf("PodQOS = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestOOMScoreAdjust(t *testing.T) {
	const capacity = 4000 << 20 // 4000 MiB: request r Mi gives 1000 − r/4
	burst := func(mem string) corev1.Container {
		return ctr("a", rl("cpu", "100m", "memory", mem), rl("cpu", "1"))
	}
	prio := func(p *corev1.Pod, class string, value *int32, ann map[string]string) *corev1.Pod {
		p.Spec.PriorityClassName = class
		p.Spec.Priority = value
		p.Annotations = ann
		return p
	}
	zero := int32(0)
	high := int32(2000001000)
	full := rl("cpu", "1", "memory", "1Gi")
	for _, tc := range []struct {
		name     string
		pod      *corev1.Pod
		c        int // index into Containers, or -1-i for InitContainers[i]
		capacity int64
		want     int
	}{
		{"guaranteed", podOf(ctr("a", full, full)), 0, capacity, -997},
		{"best-effort", podOf(ctr("a", nil, nil)), 0, capacity, 1000},
		{"burstable 400Mi of 4000Mi", podOf(burst("400Mi")), 0, capacity, 900},
		{"burstable without memory request → 1000 → 999", podOf(ctr("a", rl("cpu", "1"), nil)), 0, capacity, 999},
		{"burstable tiny request rounds to 1000 → 999", podOf(burst("3Mi")), 0, capacity, 999},
		{"burstable 4Mi → 999 by the formula itself", podOf(burst("4Mi")), 0, capacity, 999},
		{"burstable 8Mi → 998", podOf(burst("8Mi")), 0, capacity, 998},
		{"burstable floor+1: 3984Mi → 4", podOf(burst("3984Mi")), 0, capacity, 4},
		{"burstable floor: 3990Mi → 3", podOf(burst("3990Mi")), 0, capacity, 3},
		{"burstable floor−1: 3992Mi → 2 → 3", podOf(burst("3992Mi")), 0, capacity, 3},
		{"burstable request above capacity → 3", podOf(burst("8000Mi")), 0, capacity, 3},
		{"burstable limit-only memory is defaulted into the request", podOf(ctr("a", rl("cpu", "100m"), rl("memory", "400Mi"))), 0, capacity, 900},
		{"unknown capacity → 999", podOf(burst("400Mi")), 0, 0, 999},
		{"node-critical burstable", prio(podOf(burst("400Mi")), SystemNodeCritical, nil, nil), 0, capacity, -997},
		{"node-critical best-effort", prio(podOf(ctr("a", nil, nil)), SystemNodeCritical, &high, nil), 0, capacity, -997},
		{"cluster-critical is not node-critical", prio(podOf(burst("400Mi")), SystemClusterCritical, nil, nil), 0, capacity, 900},
		{"node-critical name with low resolved priority is not critical", prio(podOf(burst("400Mi")), SystemNodeCritical, &zero, nil), 0, capacity, 900},
		{"static pod naming node-critical", prio(podOf(burst("400Mi")), SystemNodeCritical, &zero, map[string]string{"kubernetes.io/config.source": "file"}), 0, capacity, -997},
		{"api-sourced pod naming node-critical with low priority", prio(podOf(burst("400Mi")), SystemNodeCritical, &zero, map[string]string{"kubernetes.io/config.source": "api"}), 0, capacity, 900},
		{"mirror pod naming node-critical", prio(podOf(burst("400Mi")), SystemNodeCritical, &zero, map[string]string{corev1.MirrorPodAnnotationKey: "x"}), 0, capacity, -997},
		{"high priority without the node-critical class", prio(podOf(burst("400Mi")), "", &high, nil), 0, capacity, 900},
		{"sidecar bigger than smallest regular keeps its own", withInit(podOf(burst("100Mi"), burst("200Mi")), sidecar(burst("400Mi"))), -1, capacity, 900},
		{"sidecar smaller than smallest regular gets the regular's", withInit(podOf(burst("100Mi"), burst("200Mi")), sidecar(burst("40Mi"))), -1, capacity, 975},
		{"plain init container keeps its own", withInit(podOf(burst("100Mi")), burst("40Mi")), -1, capacity, 990},
		{"pod-level request shared among containers", func() *corev1.Pod {
			p := podOf(burst("200Mi"), ctr("b", nil, nil))
			p.Spec.Resources = &corev1.ResourceRequirements{Requests: rl("memory", "1000Mi")}
			return p
		}(), 0, capacity, 850},
		{"pod-level request, container without own request", func() *corev1.Pod {
			p := podOf(burst("200Mi"), ctr("b", nil, nil))
			p.Spec.Resources = &corev1.ResourceRequirements{Requests: rl("memory", "1000Mi")}
			return p
		}(), 1, capacity, 900},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := func() *corev1.Container {
				if tc.c >= 0 {
					return &tc.pod.Spec.Containers[tc.c]
				}
				return &tc.pod.Spec.InitContainers[-1-tc.c]
			}()
			if got := OOMScoreAdjust(tc.pod, c, tc.capacity); got != tc.want {
				t.Errorf("OOMScoreAdjust = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestContainerLimits(t *testing.T) {
	const capacity = 4000 << 20
	v1 := NodeInfo{MemoryCapacity: capacity, PidsLimit: 100}
	v2 := NodeInfo{MemoryCapacity: capacity, PidsLimit: 100, CgroupV2: true}
	mi := uint64(1 << 20)
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		node NodeInfo
		want Limits
	}{
		{"burstable v1", podOf(ctr("a", rl("cpu", "250m", "memory", "400Mi"), rl("cpu", "500m", "memory", "800Mi"))), v1,
			Limits{QOS: corev1.PodQOSBurstable, CPUShares: 256, CPUQuotaPerSecUSec: 500000, MemoryMax: 800 * mi, TasksMax: 100, OOMScoreAdjust: 900}},
		{"burstable v2: weight and memory.min", podOf(ctr("a", rl("cpu", "250m", "memory", "400Mi"), rl("cpu", "500m", "memory", "800Mi"))), v2,
			Limits{QOS: corev1.PodQOSBurstable, CPUWeight: 35, CPUQuotaPerSecUSec: 500000, MemoryMax: 800 * mi, MemoryMin: 400 * mi, MemoryHigh: 760 * mi, TasksMax: 100, OOMScoreAdjust: 900}},
		{"guaranteed from limits only v1", podOf(ctr("a", nil, rl("cpu", "1", "memory", "256Mi"))), v1,
			Limits{QOS: corev1.PodQOSGuaranteed, CPUShares: 1024, CPUQuotaPerSecUSec: 1000000, MemoryMax: 256 * mi, TasksMax: 100, OOMScoreAdjust: -997}},
		{"guaranteed from limits only v2", podOf(ctr("a", nil, rl("cpu", "1", "memory", "256Mi"))), v2,
			Limits{QOS: corev1.PodQOSGuaranteed, CPUWeight: 100, CPUQuotaPerSecUSec: 1000000, MemoryMax: 256 * mi, MemoryMin: 256 * mi, TasksMax: 100, OOMScoreAdjust: -997}},
		{"best-effort v1", podOf(ctr("a", nil, nil)), v1,
			Limits{QOS: corev1.PodQOSBestEffort, CPUShares: 2, TasksMax: 100, OOMScoreAdjust: 1000}},
		{"best-effort v2: weight 1, no memory.min", podOf(ctr("a", nil, nil)), v2,
			Limits{QOS: corev1.PodQOSBestEffort, CPUWeight: 1, TasksMax: 100, OOMScoreAdjust: 1000}},
		{"explicit zero cpu request takes shares from the limit", podOf(ctr("a", rl("cpu", "0"), rl("cpu", "200m"))), v1,
			Limits{QOS: corev1.PodQOSBurstable, CPUShares: 204, CPUQuotaPerSecUSec: 200000, TasksMax: 100, OOMScoreAdjust: 999}},
		{"1m limit gets the kernel's minimum quota", podOf(ctr("a", nil, rl("cpu", "1m"))), v1,
			Limits{QOS: corev1.PodQOSBurstable, CPUShares: 2, CPUQuotaPerSecUSec: 10000, TasksMax: 100, OOMScoreAdjust: 999}},
		{"memory request only on v2, no pids limit", podOf(ctr("a", rl("memory", "400Mi"), nil)), NodeInfo{MemoryCapacity: capacity, CgroupV2: true},
			Limits{QOS: corev1.PodQOSBurstable, CPUWeight: 1, MemoryMin: 400 * mi, MemoryHigh: 3640 * mi, OOMScoreAdjust: 900}},
		{"negative pids limit means unlimited", podOf(ctr("a", nil, nil)), NodeInfo{MemoryCapacity: capacity, PidsLimit: -1},
			Limits{QOS: corev1.PodQOSBestEffort, CPUShares: 2, OOMScoreAdjust: 1000}},
		{"fractional memory rounds up to whole bytes", podOf(ctr("a", nil, rl("memory", "1500m"))), v1,
			Limits{QOS: corev1.PodQOSBurstable, CPUShares: 2, MemoryMax: 2, TasksMax: 100, OOMScoreAdjust: 999}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ContainerLimits(tc.pod, &tc.pod.Spec.Containers[0], tc.node)
			if got != tc.want {
				t.Errorf("ContainerLimits =\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

// PodLimits is the kubelet's ResourceConfigForPod (kubernetes-semantics.md
// §5.5) over the pod's effective requests and limits (§3.2).
func TestPodLimits(t *testing.T) {
	v1 := NodeInfo{MemoryCapacity: 4000 << 20, PidsLimit: 100}
	v2 := NodeInfo{MemoryCapacity: 4000 << 20, PidsLimit: 100, CgroupV2: true}
	mi := uint64(1 << 20)
	withOverhead := func(p *corev1.Pod, o corev1.ResourceList) *corev1.Pod { p.Spec.Overhead = o; return p }
	withPodLevel := func(p *corev1.Pod, req, lim corev1.ResourceList) *corev1.Pod {
		p.Spec.Resources = &corev1.ResourceRequirements{Requests: req, Limits: lim}
		return p
	}
	both := rl("cpu", "1", "memory", "256Mi")
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		node NodeInfo
		want SliceLimits
	}{
		{"best-effort v1: shares 2 only", podOf(ctr("a", nil, nil), ctr("b", nil, nil)), v1,
			SliceLimits{QOS: corev1.PodQOSBestEffort, CPUShares: 2}},
		{"best-effort v2: weight 1 only", podOf(ctr("a", nil, nil)), v2,
			SliceLimits{QOS: corev1.PodQOSBestEffort, CPUWeight: 1}},
		{"guaranteed v1: one container", podOf(ctr("a", nil, both)), v1,
			SliceLimits{QOS: corev1.PodQOSGuaranteed, CPUShares: 1024, CPUQuotaPerSecUSec: 1000000, MemoryMax: 256 * mi}},
		{"guaranteed v2: weight, memory.min = request", podOf(ctr("a", nil, both)), v2,
			SliceLimits{QOS: corev1.PodQOSGuaranteed, CPUWeight: 100, CPUQuotaPerSecUSec: 1000000, MemoryMax: 256 * mi, MemoryMin: 256 * mi}},
		{"guaranteed: two containers summed", podOf(ctr("a", nil, rl("cpu", "500m", "memory", "128Mi")), ctr("b", nil, rl("cpu", "1500m", "memory", "384Mi"))), v1,
			SliceLimits{QOS: corev1.PodQOSGuaranteed, CPUShares: 2048, CPUQuotaPerSecUSec: 2000000, MemoryMax: 512 * mi}},
		{"burstable: every container limited → quota and memory of the sums", podOf(
			ctr("a", rl("cpu", "250m", "memory", "64Mi"), rl("cpu", "500m", "memory", "128Mi")),
			ctr("b", rl("cpu", "250m", "memory", "64Mi"), rl("cpu", "500m", "memory", "128Mi"))), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 512, CPUQuotaPerSecUSec: 1000000, MemoryMax: 256 * mi}},
		{"burstable: one container without cpu limit → no quota, memory still", podOf(
			ctr("a", rl("cpu", "250m", "memory", "64Mi"), rl("cpu", "500m", "memory", "128Mi")),
			ctr("b", rl("cpu", "250m", "memory", "64Mi"), rl("memory", "128Mi"))), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 512, MemoryMax: 256 * mi}},
		{"burstable: one container without memory limit → no memory.max, quota still", podOf(
			ctr("a", nil, rl("cpu", "500m", "memory", "128Mi")),
			ctr("b", rl("memory", "64Mi"), rl("cpu", "500m"))), v2,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUWeight: 100, CPUQuotaPerSecUSec: 1000000, MemoryMin: 192 * mi}},
		{"burstable: a zero cpu limit is not a declared one", podOf(ctr("a", rl("cpu", "100m"), rl("cpu", "0", "memory", "64Mi"))), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 102, MemoryMax: 64 * mi}},
		{"burstable: requests only, memory.min on v2", podOf(ctr("a", rl("cpu", "100m", "memory", "64Mi"), nil)), v2,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUWeight: 17, MemoryMin: 64 * mi}},
		{"burstable: requests only, no memory.min on v1", podOf(ctr("a", rl("cpu", "100m", "memory", "64Mi"), nil)), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 102}},
		{"tiny limit: 1m gets the kernel's 1 ms per period", podOf(ctr("a", nil, rl("cpu", "1m"))), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 2, CPUQuotaPerSecUSec: 10000}},
		{"init container larger than the app containers: its request and limit", withInit(
			podOf(ctr("a", rl("cpu", "100m"), rl("cpu", "200m"))),
			ctr("init", rl("cpu", "500m"), rl("cpu", "1"))), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 512, CPUQuotaPerSecUSec: 1000000}},
		{"init container smaller: the app containers' sum", withInit(
			podOf(ctr("a", rl("cpu", "300m"), rl("cpu", "600m")), ctr("b", rl("cpu", "300m"), rl("cpu", "600m"))),
			ctr("init", rl("cpu", "500m"), rl("cpu", "1"))), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 614, CPUQuotaPerSecUSec: 1200000}},
		{"init container without cpu limit: undeclared (kubernetes#103107)", withInit(
			podOf(ctr("a", rl("cpu", "100m"), rl("cpu", "200m"))),
			ctr("init", rl("cpu", "100m"), nil)), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 102}},
		{"sidecar added to the app containers", withInit(
			podOf(ctr("a", rl("cpu", "200m"), rl("cpu", "400m"))),
			sidecar(ctr("side", rl("cpu", "300m"), rl("cpu", "600m")))), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 512, CPUQuotaPerSecUSec: 1000000}},
		{"init container after a limited sidecar counts as declared", withInit(
			podOf(ctr("a", rl("cpu", "200m"), rl("cpu", "400m"))),
			sidecar(ctr("side", rl("cpu", "300m"), rl("cpu", "600m"))), ctr("init", rl("cpu", "100m"), nil)), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 512, CPUQuotaPerSecUSec: 1000000}},
		{"overhead: added to requests, and to a non-zero limit", withOverhead(
			podOf(ctr("a", nil, both)), rl("cpu", "250m", "memory", "32Mi")), v2,
			SliceLimits{QOS: corev1.PodQOSGuaranteed, CPUWeight: 120, CPUQuotaPerSecUSec: 1250000, MemoryMax: 288 * mi, MemoryMin: 288 * mi}},
		{"overhead: no limit stays no limit", withOverhead(
			podOf(ctr("a", rl("cpu", "100m"), nil)), rl("cpu", "250m", "memory", "32Mi")), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 358}},
		{"pod-level limits: declared although a container has none; requests defaulted from the containers'", withPodLevel(
			podOf(ctr("a", rl("cpu", "100m"), nil)), nil, rl("cpu", "2", "memory", "1Gi")), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 102, CPUQuotaPerSecUSec: 2000000, MemoryMax: 1024 * mi}},
		{"pod-level request replaces the containers'", withPodLevel(
			podOf(ctr("a", rl("cpu", "100m"), nil)), rl("cpu", "1"), nil), v1,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 1024}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PodLimits(tc.pod, tc.node); got != tc.want {
				t.Errorf("PodLimits =\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

func TestQoSLimits(t *testing.T) {
	v1, v2 := NodeInfo{}, NodeInfo{CgroupV2: true}
	sum := Requests{CPUMilli: 700, MemoryBytes: 192 << 20}
	for _, tc := range []struct {
		name string
		qos  corev1.PodQOSClass
		sum  Requests
		node NodeInfo
		want SliceLimits
	}{
		{"besteffort v1: shares 2", corev1.PodQOSBestEffort, Requests{}, v1, SliceLimits{QOS: corev1.PodQOSBestEffort, CPUShares: 2}},
		{"besteffort v2: weight 1, whatever the sum", corev1.PodQOSBestEffort, sum, v2, SliceLimits{QOS: corev1.PodQOSBestEffort, CPUWeight: 1}},
		{"burstable v1: the summed cpu requests, no memory.min", corev1.PodQOSBurstable, sum, v1, SliceLimits{QOS: corev1.PodQOSBurstable, CPUShares: 716}},
		{"burstable v2: weight of the sum, memory.min the summed memory requests", corev1.PodQOSBurstable, sum, v2,
			SliceLimits{QOS: corev1.PodQOSBurstable, CPUWeight: SharesToWeight(716), MemoryMin: 192 << 20}},
		{"burstable without pods: the minimum, no protection", corev1.PodQOSBurstable, Requests{}, v2, SliceLimits{QOS: corev1.PodQOSBurstable, CPUWeight: 1}},
		{"guaranteed: no slice, nothing", corev1.PodQOSGuaranteed, sum, v1, SliceLimits{QOS: corev1.PodQOSGuaranteed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := QoSLimits(tc.qos, tc.sum, tc.node); got != tc.want {
				t.Errorf("QoSLimits = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A namespace's slice weighs and protects by all its pods' requests.
func TestNamespaceShares(t *testing.T) {
	if got, want := NamespaceShares(Requests{CPUMilli: 1500, MemoryBytes: 1 << 30}, NodeInfo{}), (SliceLimits{CPUShares: 1536}); got != want {
		t.Errorf("v1: %+v, want %+v", got, want)
	}
	if got, want := NamespaceShares(Requests{CPUMilli: 1500, MemoryBytes: 1 << 30}, NodeInfo{CgroupV2: true}), (SliceLimits{CPUWeight: SharesToWeight(1536), MemoryMin: 1 << 30}); got != want {
		t.Errorf("v2: %+v, want %+v", got, want)
	}
	if got, want := NamespaceShares(Requests{}, NodeInfo{CgroupV2: true}), (SliceLimits{CPUWeight: 1}); got != want {
		t.Errorf("no requests: %+v, want %+v", got, want)
	}
}

// PodRequests are what PodLimits weighs the pod slice by: the init
// container rule and overhead included, nothing for BestEffort.
func TestPodRequests(t *testing.T) {
	rl := func(cpu, mem string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "i", Resources: rl("2", "64Mi")}},
		Containers:     []corev1.Container{{Name: "a", Resources: rl("100m", "32Mi")}, {Name: "b", Resources: rl("100m", "32Mi")}},
		Overhead:       corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("1Mi")},
	}}
	if got, want := PodRequests(pod), (Requests{CPUMilli: 2010, MemoryBytes: 65 << 20}); got != want {
		t.Errorf("PodRequests = %+v, want %+v (the init container's larger request, plus overhead)", got, want)
	}
	if got := PodRequests(&corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}}); got != (Requests{}) {
		t.Errorf("BestEffort: %+v", got)
	}
}

func TestNamespaceCPUQuota(t *testing.T) {
	for _, tc := range []struct {
		name  string
		milli int64
		want  uint64
	}{
		{"negative: no limit", -1, 0},
		{"zero: no limit", 0, 0},
		{"1m: kernel minimum 1 ms per 100 ms", 1, 10000},
		{"min−1: 9m", 9, 10000},
		{"min: 10m", 10, 10000},
		{"min+1: 11m", 11, 11000},
		{"500m", 500, 500000},
		{"two CPUs", 2000, 2000000},
		{"absurd: saturates below infinity", math.MaxInt64, math.MaxUint64 - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NamespaceCPUQuota(tc.milli); got != tc.want {
				t.Errorf("NamespaceCPUQuota(%d) = %d, want %d", tc.milli, got, tc.want)
			}
		})
	}
}

// MemoryQoS's memory.high (kubelet generateLinuxContainerResources):
// 90% of the way from request to limit (or allocatable), page-aligned
// down, never for request == limit, only above the request.
func TestMemoryHighFor(t *testing.T) {
	const mi = 1 << 20
	for _, tc := range []struct {
		name                        string
		request, limit, allocatable int64
		want                        uint64
	}{
		{"guaranteed: request == limit", 64 * mi, 64 * mi, 1 << 30, 0},
		{"besteffort: neither", 0, 0, 1 << 30, 0},
		{"request and limit", 64 * mi, 128 * mi, 1 << 30, 64*mi + 64*mi*9/10/4096*4096},
		{"limit only below request+page: nothing above request", 4096 * 10, 4096*10 + 4096, 1 << 30, 0},
		{"limit one page above request+page/0.9", 4096 * 10, 4096*10 + 4096*2, 1 << 30, 4096 * 11},
		{"no limit: allocatable", 64 * mi, 0, 1 << 30, uint64(64*mi + (1<<30-64*mi)*9/10/4096*4096)},
		{"no limit, no allocatable", 64 * mi, 0, 0, 0},
		{"no request, a limit", 0, 100 * mi, 1 << 30, 90 * mi / 4096 * 4096},
	} {
		if got := MemoryHighFor(tc.request, tc.limit, tc.allocatable); got != tc.want {
			t.Errorf("%s: MemoryHighFor(%d, %d, %d) = %d, want %d", tc.name, tc.request, tc.limit, tc.allocatable, got, tc.want)
		}
	}
}

// The root slice protects the pods' requests up to the node's allocatable
// memory, never beyond.
func TestRootMemoryMin(t *testing.T) {
	node := NodeInfo{MemoryCapacity: 1 << 30}
	for _, tc := range []struct {
		sum  int64
		node NodeInfo
		want uint64
	}{
		{256 << 20, node, 256 << 20},
		{4 << 30, node, 1<<30 - EvictionReserve},
		{0, node, 0},
		{256 << 20, NodeInfo{}, 0},
	} {
		if got := RootMemoryMin(tc.sum, tc.node); got != tc.want {
			t.Errorf("RootMemoryMin(%d, capacity %d) = %d, want %d", tc.sum, tc.node.MemoryCapacity, got, tc.want)
		}
	}
}
