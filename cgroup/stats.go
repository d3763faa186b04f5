package cgroup

import "errors"

// Stats is a snapshot of one cgroup's usage. Times are nanoseconds, sizes bytes.
type Stats struct {
	CPUUsageNSec     uint64
	CPUUserNSec      uint64
	CPUSystemNSec    uint64
	CPUPeriods       uint64
	CPUThrottled     uint64 // periods throttled
	CPUThrottledNSec uint64
	MemoryUsage      uint64
	MemoryWorkingSet uint64 // usage - inactive_file
	MemoryPeak       uint64
	MemoryLimit      uint64
	OOMKills         uint64
	Pids             uint64
	PidsLimit        uint64 // 0 = max
}

// Bases maps a hierarchy to the path prefix under which the group lives, for
// reading another cgroup namespace's tree from outside (a test node). Keys are
// v1 controller names ("memory", "cpu", "pids", ...) or "unified" for the
// cgroup2 tree. A missing key means "".
type Bases map[string]string

// ReadStats reads the statistics of group, a path relative to the root of each
// hierarchy (systemd's ControlGroup property).
func ReadStats(group string, bases Bases) (*Stats, error) {
	return nil, errors.New("cgroup.ReadStats: not implemented")
}
