// Package cgroup holds berth's resource math (pure functions reproducing the
// kubelet's formulas, see ../shared/design/kubernetes-semantics.md §5 and §8)
// and reads usage statistics of a unit's cgroup on cgroup v1 and v2.
package cgroup

import corev1 "k8s.io/api/core/v1"

// Limits are the computed resource settings of one container's unit.
// Zero means "not set" for every field except OOMScoreAdjust.
type Limits struct {
	QOS                corev1.PodQOSClass
	CPUShares          uint64 // cgroup v1 cpu.shares (systemd CPUShares=)
	CPUWeight          uint64 // cgroup v2 cpu.weight (systemd CPUWeight=)
	CPUQuotaPerSecUSec uint64 // CPU time per second of wall time, µs; 0 = no quota
	MemoryMax          uint64 // bytes; 0 = unlimited
	MemoryMin          uint64 // bytes; cgroup v2 only; 0 = none
	TasksMax           uint64 // 0 = unlimited
	OOMScoreAdjust     int
}

// NodeInfo is what the limit math needs to know about the host.
type NodeInfo struct {
	MemoryCapacity int64 // bytes of memory on the node (for Burstable oom_score_adj)
	CgroupV2       bool  // unified hierarchy: use CPUWeight and MemoryMin
	PidsLimit      int64 // per-container TasksMax; <= 0 = unlimited
}
