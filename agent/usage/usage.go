// Package usage samples what the node's pods use, from their cgroups, the
// way the kubelet's cAdvisor does: one collection cycle every interval
// reads each running container's unit cgroup, each pod's slice and the
// node's root group once, and keeps the cycle as a Snapshot. Everything
// that reports usage reads the last Snapshot and never the cgroup tree:
// metrics.k8s.io (PodMetrics, NodeMetrics, for kubectl top) and the
// Prometheus series (agent/exporter), so a scrape costs the same with 500
// pods whether Prometheus asks once a minute or every second.
//
// CPU is reported as metrics-server reports it: the rate of the cumulative
// usage between the last two cycles (the window), in cores; memory as the
// working set (usage minus inactive file, cgroup.Stats.MemoryWorkingSet),
// what the kubelet's eviction and kubectl top both use.
package usage

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/unitgen"
)

// DefaultInterval is the collection period: the kubelet's cAdvisor
// housekeeping interval (10 s); metrics-server's default resolution is 15 s.
const DefaultInterval = 10 * time.Second

// NodeCgroup is the node's group: the root of the hierarchy (the whole
// host, as the kubelet's node figures are; a test node's own tree inside
// its cgroup namespace).
const NodeCgroup = "/"

// Store is what the sampler reads of agent/store.
type Store interface {
	ScanKeyed(res store.Resource, ns string, fn func(key, data []byte) error) (uint64, error)
}

var _ Store = (*store.Store)(nil)

// Reader reads one cgroup's statistics; an error wrapping fs.ErrNotExist
// says the group is not there (a container not running).
type Reader func(group string) (*cgroup.Stats, error)

// Config configures a Sampler.
type Config struct {
	Store Store
	// Read reads a group (nil: cgroup.ReadStats in this process's view
	// of the hierarchy).
	Read Reader
	// Interval between cycles (DefaultInterval when 0).
	Interval time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	Log hclog.Logger
}

// Container is one container's figures in a cycle.
type Container struct {
	Name, Image string
	// Unit is its systemd unit, Cgroup the unit's group.
	Unit, Cgroup string
	Stats        cgroup.Stats
	// CPU is the usage rate over the snapshot's window, in cores; valid
	// when HasRate (a container seen in the cycle before, its counter not
	// reset since: not restarted).
	CPU     float64
	HasRate bool
}

// Pod is one pod's figures in a cycle: its slice's (every container and
// its pause together, cAdvisor's container="" series) and its running
// containers'.
type Pod struct {
	Namespace, Name string
	UID             types.UID
	Labels          map[string]string
	Cgroup          string
	Stats           cgroup.Stats
	CPU             float64
	HasRate         bool
	Containers      []Container
}

// Namespace is one namespace slice's figures in a cycle.
type Namespace struct {
	Name, Cgroup string
	Stats        cgroup.Stats
	CPU          float64
	HasRate      bool
}

// Snapshot is one collection cycle.
type Snapshot struct {
	// Time is when the cycle began; Window the time since the cycle the
	// rates are computed against (0 for the first cycle: no rate).
	Time   time.Time
	Window time.Duration
	// Node is the root group's figures.
	Node    cgroup.Stats
	NodeCPU float64
	// Pods are the pods with a slice, in the store's order.
	Pods []*Pod
	// Namespaces are the namespace slices of the pods' namespaces: what
	// the namespace uses in all, next to its quota (the slice holds the
	// quota's limits, Runtime.SetNamespaceLimits).
	Namespaces []Namespace
	// Took is how long the cycle took; Errors counts groups that could
	// not be read for another reason than their absence.
	Took   time.Duration
	Errors int
}

// Sampler runs the cycles and keeps the last one.
type Sampler struct {
	cfg  Config
	log  hclog.Logger
	pods *store.Decoded[corev1.Pod]

	mu   sync.Mutex // one cycle at a time
	last *Snapshot
	// prev: each group's cumulative CPU time at the last cycle.
	prev map[string]uint64

	snap   sync.RWMutex // guards shared
	shared *Snapshot
	cycles uint64
}

// New returns a sampler; Run starts its cycles.
func New(cfg Config) *Sampler {
	if cfg.Read == nil {
		cfg.Read = func(group string) (*cgroup.Stats, error) { return cgroup.ReadStats(group, nil) }
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	return &Sampler{cfg: cfg, log: cfg.Log, pods: &store.Decoded[corev1.Pod]{Resource: "pods"}, prev: map[string]uint64{}}
}

// Interval is the collection period.
func (s *Sampler) Interval() time.Duration { return s.cfg.Interval }

// Run collects every interval until ctx ends; the first cycle at once.
func (s *Sampler) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := s.Collect(); err != nil {
			s.log.Error("usage collection", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Last is the last cycle (nil before the first). It is shared and read
// only.
func (s *Sampler) Last() *Snapshot {
	s.snap.RLock()
	defer s.snap.RUnlock()
	return s.shared
}

// Cycles is how many cycles have completed.
func (s *Sampler) Cycles() uint64 {
	s.snap.RLock()
	defer s.snap.RUnlock()
	return s.cycles
}

// Collect runs one cycle now and returns it.
func (s *Sampler) Collect() (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := s.cfg.Now()
	pods, _, err := s.pods.List(s.cfg.Store, "")
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Time: start}
	if s.last != nil {
		snap.Window = start.Sub(s.last.Time)
	}
	seen := make(map[string]uint64, len(s.prev))
	// rate is the CPU rate of group since the last cycle, when it was
	// seen then and its counter has not gone back (a new cgroup of the
	// same name: a restarted container).
	rate := func(group string, st *cgroup.Stats) (float64, bool) {
		seen[group] = st.CPUUsageNSec
		was, ok := s.prev[group]
		if !ok || snap.Window <= 0 || st.CPUUsageNSec < was {
			return 0, false
		}
		return float64(st.CPUUsageNSec-was) / float64(snap.Window.Nanoseconds()), true
	}
	read := func(group string) (*cgroup.Stats, bool) {
		st, err := s.cfg.Read(group)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				snap.Errors++
				s.log.Debug("read cgroup", "group", group, "error", err)
			}
			return nil, false
		}
		return st, true
	}
	if st, ok := read(NodeCgroup); ok {
		snap.Node = *st
		snap.NodeCPU, _ = rate(NodeCgroup, st)
	}
	for _, pod := range pods {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		group, err := unitgen.PodCgroup(pod)
		if err != nil || pod.UID == "" {
			continue
		}
		st, ok := read(group)
		if !ok {
			continue
		}
		p := &Pod{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, Labels: pod.Labels, Cgroup: group, Stats: *st}
		p.CPU, p.HasRate = rate(group, st)
		// Init containers too: a sidecar (restartPolicy Always) runs beside
		// the others; a finished one has no group and is skipped.
		for _, c := range append(pod.Spec.InitContainers[:len(pod.Spec.InitContainers):len(pod.Spec.InitContainers)], pod.Spec.Containers...) {
			unit := unitgen.UnitName(pod.Namespace, pod.Name, c.Name)
			cg := group + "/" + unit
			cst, ok := read(cg)
			if !ok {
				continue
			}
			ct := Container{Name: c.Name, Image: c.Image, Unit: unit, Cgroup: cg, Stats: *cst}
			ct.CPU, ct.HasRate = rate(cg, cst)
			p.Containers = append(p.Containers, ct)
		}
		snap.Pods = append(snap.Pods, p)
	}
	done := map[string]bool{}
	for _, p := range snap.Pods {
		if done[p.Namespace] {
			continue
		}
		done[p.Namespace] = true
		group := unitgen.SliceCgroup(unitgen.SliceName(p.Namespace))
		if st, ok := read(group); ok {
			n := Namespace{Name: p.Namespace, Cgroup: group, Stats: *st}
			n.CPU, n.HasRate = rate(group, st)
			snap.Namespaces = append(snap.Namespaces, n)
		}
	}
	s.prev = seen
	snap.Took = s.cfg.Now().Sub(start)
	s.last = snap
	s.snap.Lock()
	s.shared = snap
	s.cycles++
	s.snap.Unlock()
	return snap, nil
}
