package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sync"

	"github.com/berth-dev/berth/cgroup/own"
	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// Stats is a snapshot of one cgroup's usage. Times are nanoseconds, sizes
// bytes. A counter the kernel does not provide for the group reads as 0.
type Stats struct {
	CPUUsageNSec     uint64
	CPUUserNSec      uint64
	CPUSystemNSec    uint64
	CPUPeriods       uint64 // CFS periods that had runnable tasks
	CPUThrottled     uint64 // periods throttled
	CPUThrottledNSec uint64 // summed over CPUs, so it can exceed wall time
	MemoryUsage      uint64
	MemoryWorkingSet uint64 // usage - inactive_file, floor 0 (kubelet/cAdvisor)
	MemoryRSS        uint64 // anonymous memory and swap cache (cAdvisor's rss: v1 total_rss, v2 anon)
	MemoryPeak       uint64 // high-water mark; 0 if the kernel has none (v2 before 5.19)
	MemoryLimit      uint64 // 0 = unlimited
	OOMKills         uint64 // processes killed by the OOM killer in this group
	Pids             uint64 // tasks (threads) in the group
	PidsLimit        uint64 // 0 = max
}

// Bases maps a hierarchy to the path prefix under which the group lives, for
// reading another cgroup namespace's tree from outside (a test node). Keys are
// v1 controller names ("memory", "cpu", "cpuacct", "pids", ...) or "unified"
// for the cgroup2 tree. A missing key means "".
type Bases map[string]string

const (
	// unifiedMount is where the hybrid layout mounts its cgroup2 tree.
	unifiedMount = "/sys/fs/cgroup/unified"
	// v2Mount is the cgroup2 mount of a unified host.
	v2Mount = "/sys/fs/cgroup"
	// v1Unlimited: on cgroup v1 an unlimited memory.limit_in_bytes reads as
	// PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages); anything
	// at or above 2^62 bytes is no real limit.
	v1Unlimited = 1 << 62
)

// IsV2 reports whether the host runs the unified cgroup v2 hierarchy only
// (cgroup2 mounted at /sys/fs/cgroup itself). Hybrid hosts, whose controllers
// are all bound to v1, report false. It is the one answer to the question in
// berth: berth-init asks own.Unified, which this is.
func IsV2() bool { return own.Unified() }

// ReadStats reads the statistics of group, a path relative to the root of each
// hierarchy (systemd's ControlGroup property, e.g. "/berth.slice/x.service"),
// under the prefixes in bases. The cgroup mode is detected once per process.
// If the group does not exist (the unit is gone) the error wraps
// fs.ErrNotExist.
func ReadStats(group string, bases Bases) (*Stats, error) {
	switch mode := cgroups.Mode(); mode {
	case cgroups.Unified:
		return readV2(v2Mount, group, bases)
	case cgroups.Legacy, cgroups.Hybrid:
		return readV1(group, bases, mode == cgroups.Hybrid)
	default:
		return nil, fmt.Errorf("read stats of cgroup %s: no cgroup hierarchy mounted at /sys/fs/cgroup", group)
	}
}

// notExist is the error for a group that is not (or no longer) there.
func notExist(group string, cause error) error {
	if cause == nil || errors.Is(cause, fs.ErrNotExist) {
		return fmt.Errorf("cgroup %s: %w", group, fs.ErrNotExist)
	}
	return fmt.Errorf("cgroup %s: %w (%w)", group, fs.ErrNotExist, cause)
}

// v1Subsystems are the v1 controllers berth reads.
var v1Subsystems = map[cgroup1.Name]bool{
	cgroup1.Cpu: true, cgroup1.Cpuacct: true, cgroup1.Memory: true, cgroup1.Pids: true,
}

// v1Hierarchy is containerd/cgroups' Default hierarchy (mount point from
// /proc/self/mountinfo, one subsystem per mounted controller, which copes with
// cpu and cpuacct mounted separately) narrowed to the controllers berth reads.
// The memory controller skips kmem and kmem.tcp (berth reports neither, and
// newer kernels drop some kmem files) and memsw when the kernel does not
// account swap, so that a missing file can only mean a vanished group.
func v1Hierarchy() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	var out []cgroup1.Subsystem
	for _, s := range all {
		if !v1Subsystems[s.Name()] {
			continue
		}
		if s.Name() == cgroup1.Memory {
			p, ok := s.(interface{ Path(string) string })
			if !ok {
				return nil, fmt.Errorf("memory subsystem has no Path method")
			}
			root := filepath.Dir(p.Path("/")) // <v1 mount>/memory → <v1 mount>
			s = cgroup1.NewMemory(root, cgroup1.OptionalSwap(), cgroup1.IgnoreModules("kmem", "kmem.tcp"))
		}
		out = append(out, s)
	}
	return out, nil
}

// v1Subs is v1Hierarchy once found: the controllers' mounts do not move
// while berthd runs, and finding them parses /proc/self/mountinfo, a
// fifth of reading a group (agent/usage's BenchmarkCollect reads 1,000
// groups a cycle).
var v1Subs struct {
	sync.Mutex
	subs []cgroup1.Subsystem
}

func cachedV1Hierarchy() ([]cgroup1.Subsystem, error) {
	v1Subs.Lock()
	defer v1Subs.Unlock()
	if v1Subs.subs != nil {
		return v1Subs.subs, nil
	}
	subs, err := v1Hierarchy()
	if err == nil && len(subs) > 0 {
		v1Subs.subs = subs
	}
	return subs, err
}

// readV1 reads group on a legacy or hybrid host. Each subsystem's path is
// bases[subsystem]+group, so one call can read a group that sits at different
// depths in different hierarchies (a test node's memory cgroup is nested in
// this process's own, its cpu cgroup is not).
func readV1(group string, bases Bases, hybrid bool) (*Stats, error) {
	path := func(name cgroup1.Name) (string, error) {
		return filepath.Join("/", bases[string(name)], group), nil
	}
	cg, err := cgroup1.Load(path, cgroup1.WithHierarchy(cachedV1Hierarchy))
	if err != nil {
		if errors.Is(err, cgroup1.ErrCgroupDeleted) || errors.Is(err, fs.ErrNotExist) {
			return nil, notExist(group, err)
		}
		return nil, fmt.Errorf("load cgroup %s: %w", group, err)
	}
	// No error handler: a file that disappears between Load and Stat means
	// the group was removed meanwhile, and its ENOENT must reach the caller
	// rather than read as zeros.
	m, err := cg.Stat()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notExist(group, err)
		}
		return nil, fmt.Errorf("read stats of cgroup %s: %w", group, err)
	}

	st := &Stats{}
	if m.CPU != nil {
		if m.CPU.Usage != nil {
			st.CPUUsageNSec = m.CPU.Usage.Total
			st.CPUUserNSec = m.CPU.Usage.User
			st.CPUSystemNSec = m.CPU.Usage.Kernel
		}
		if th := m.CPU.Throttling; th != nil {
			st.CPUPeriods = th.Periods
			st.CPUThrottled = th.ThrottledPeriods
			st.CPUThrottledNSec = th.ThrottledTime
		}
	}
	if mem := m.Memory; mem != nil {
		if mem.Usage != nil {
			st.MemoryUsage = mem.Usage.Usage
			st.MemoryPeak = mem.Usage.Max
			if mem.Usage.Limit < v1Unlimited {
				st.MemoryLimit = mem.Usage.Limit
			}
		}
		// The kubelet's (cAdvisor's) working set on v1: usage minus the
		// hierarchical inactive file cache, never negative.
		st.MemoryWorkingSet = subFloor0(st.MemoryUsage, mem.TotalInactiveFile)
		st.MemoryRSS = mem.TotalRSS
	}
	if m.MemoryOomControl != nil {
		st.OOMKills = m.MemoryOomControl.OomKill // memory.oom_control oom_kill, kernel ≥ 4.13
	}
	if m.Pids != nil {
		st.Pids = m.Pids.Current
		st.PidsLimit = m.Pids.Limit // the library already reads "max" as 0
	}

	hasCpuacct := false
	for _, s := range cg.Subsystems() {
		if s.Name() == cgroup1.Cpuacct {
			hasCpuacct = true
		}
	}
	if !hasCpuacct && hybrid {
		// On the hybrid hosts berth targets, cpu and cpuacct are separate
		// mounts and systemd (252) creates unit cgroups only in the cpu
		// hierarchy, never in cpuacct, so v1 has no usage counter for a unit.
		// The controller-less cgroup2 tree at /sys/fs/cgroup/unified, where
		// systemd tracks every unit, still has the core cpu.stat with
		// usage_usec, user_usec and system_usec (kernel ≥ 4.15,
		// Documentation/admin-guide/cgroup-v2.rst "cpu.stat": reported even
		// without the cpu controller), so CPU time comes from there.
		dir := filepath.Join(unifiedMount, bases["unified"], group)
		if _, err := os.Stat(dir); err == nil {
			mgr, err := cgroup2.Load(filepath.Join("/", bases["unified"], group), cgroup2.WithMountpoint(unifiedMount))
			if err != nil {
				return nil, fmt.Errorf("load unified cgroup %s: %w", group, err)
			}
			m2, err := mgr.StatFiltered(cgroup2.StatCPU)
			if err != nil {
				return nil, fmt.Errorf("read cpu.stat of unified cgroup %s: %w", group, err)
			}
			if c := m2.CPU; c != nil {
				st.CPUUsageNSec = c.UsageUsec * 1000
				st.CPUUserNSec = c.UserUsec * 1000
				st.CPUSystemNSec = c.SystemUsec * 1000
			}
		}
	}
	return st, nil
}

// readV2 reads group in the cgroup2 tree mounted at mount (/sys/fs/cgroup on a
// unified host).
func readV2(mount, group string, bases Bases) (*Stats, error) {
	rel := filepath.Join("/", bases["unified"], group)
	dir := filepath.Join(mount, rel)
	// containerd/cgroups' cgroup2 reader turns missing files into zeros, so
	// existence is checked here, before and after reading: a group removed
	// meanwhile must not look like an idle one.
	exists := func() error {
		if _, err := os.Stat(dir); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return notExist(group, err)
			}
			return fmt.Errorf("cgroup %s: %w", group, err)
		}
		return nil
	}
	if err := exists(); err != nil {
		return nil, err
	}
	mgr, err := cgroup2.Load(rel, cgroup2.WithMountpoint(mount))
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", group, err)
	}
	m, err := mgr.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatMemoryEvents | cgroup2.StatPids)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notExist(group, err)
		}
		return nil, fmt.Errorf("read stats of cgroup %s: %w", group, err)
	}
	if err := exists(); err != nil {
		return nil, err
	}

	st := &Stats{}
	if c := m.CPU; c != nil {
		st.CPUUsageNSec = c.UsageUsec * 1000
		st.CPUUserNSec = c.UserUsec * 1000
		st.CPUSystemNSec = c.SystemUsec * 1000
		st.CPUPeriods = c.NrPeriods
		st.CPUThrottled = c.NrThrottled
		st.CPUThrottledNSec = c.ThrottledUsec * 1000
	}
	if mem := m.Memory; mem != nil {
		st.MemoryUsage = mem.Usage                  // memory.current
		st.MemoryPeak = mem.MaxUsage                // memory.peak, kernel ≥ 5.19
		st.MemoryLimit = unlimited0(mem.UsageLimit) // memory.max
		// cAdvisor on v2: memory.current minus inactive_file, floor 0.
		st.MemoryWorkingSet = subFloor0(mem.Usage, mem.InactiveFile)
		st.MemoryRSS = mem.Anon
	}
	if ev := m.MemoryEvents; ev != nil {
		st.OOMKills = ev.OomKill // memory.events oom_kill (hierarchical unless memory_localevents)
	}
	if p := m.Pids; p != nil {
		st.Pids = p.Current
		st.PidsLimit = unlimited0(p.Limit)
	}
	return st, nil
}

func subFloor0(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// unlimited0 maps the cgroup2 reader's "max" (MaxUint64) to 0.
func unlimited0(v uint64) uint64 {
	if v == math.MaxUint64 {
		return 0
	}
	return v
}

// OwnGroup returns this process's cgroup in one hierarchy, as listed in
// /proc/self/cgroup (relative to the hierarchy's root in this process's
// cgroup namespace): controller is a v1 controller name ("memory", "cpu",
// "name=systemd" or just "systemd") or "" for the cgroup2 line ("0::…").
// A process uses it to find its own unit's group, e.g. to read its OOM-kill
// counter with ReadStats(group, nil) once its workload has stopped.
func OwnGroup(controller string) (string, error) {
	return ownGroupFrom("/proc/self/cgroup", controller)
}

func ownGroupFrom(file, controller string) (string, error) {
	v1, unified, err := cgroups.ParseCgroupFileUnified(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	if controller == "" {
		if unified == "" {
			return "", fmt.Errorf("no cgroup2 entry (0::) in %s: %w", file, fs.ErrNotExist)
		}
		return unified, nil
	}
	if p, ok := v1[controller]; ok {
		return p, nil
	}
	if p, ok := v1["name="+controller]; ok {
		return p, nil
	}
	return "", fmt.Errorf("no %s hierarchy in %s: %w", controller, file, fs.ErrNotExist)
}
