package usage

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/unitgen"
)

// benchHierarchies are the v1 controllers ReadStats reads on a hybrid
// host, and the unified tree (CPU time of units).
var benchHierarchies = []string{"memory", "cpu", "cpuacct", "pids", "unified"}

// realGroups creates the cgroups of n pods with one container each (pod
// slice, container unit, the namespace slice) in every hierarchy, under a
// prefix of their own, and removes them when the benchmark ends.
func realGroups(b *testing.B, n int) (*fakeStore, cgroup.Bases, []string) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates cgroups")
	}
	if cgroups.Mode() != cgroups.Hybrid {
		b.Skip("written for the hybrid layout of these machines (make test's v1 tier)")
	}
	prefix := fmt.Sprintf("/berthbench-%d", os.Getpid())
	bases := cgroup.Bases{}
	for _, h := range benchHierarchies {
		bases[h] = prefix
	}
	st := &fakeStore{}
	var groups []string
	for i := range n {
		p := pod("bench", fmt.Sprintf("web-%d", i), types.UID(fmt.Sprintf("0d2a51cf-0000-4000-8000-%012d", i)), "app")
		st.pods = append(st.pods, p)
		g, err := unitgen.PodCgroup(p)
		if err != nil {
			b.Fatal(err)
		}
		groups = append(groups, g, g+"/"+unitgen.UnitName(p.Namespace, p.Name, "app"))
	}
	var dirs []string
	b.Cleanup(func() {
		// Deepest first: a cgroup with children cannot go.
		slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		for _, d := range dirs {
			_ = os.Remove(d)
		}
	})
	for _, h := range benchHierarchies {
		for _, g := range groups {
			d := filepath.Join("/sys/fs/cgroup", h, prefix, g)
			for p := d; p != filepath.Join("/sys/fs/cgroup", h); p = filepath.Dir(p) {
				if !slices.Contains(dirs, p) {
					dirs = append(dirs, p)
				}
			}
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
	}
	return st, bases, groups
}

// BenchmarkCollect is one collection cycle over 500 pods' real cgroups
// (pod slice and container unit each: 1,000 groups, plus the namespace's
// and the root): what the sampler costs every interval.
func BenchmarkCollect(b *testing.B) {
	st, bases, _ := realGroups(b, 500)
	s := New(Config{Store: st, Read: func(g string) (*cgroup.Stats, error) { return cgroup.ReadStats(g, bases) }})
	var snap *Snapshot
	for b.Loop() {
		var err error
		if snap, err = s.Collect(); err != nil {
			b.Fatal(err)
		}
	}
	if len(snap.Pods) != 500 || snap.Errors != 0 {
		b.Fatalf("%d pods, %d errors", len(snap.Pods), snap.Errors)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
}

// BenchmarkCollectFloor reads the same files as BenchmarkCollect's cycle
// with nothing but open, read and close: the floor a cgroup reader cannot
// go under (cAdvisor's libcontainer readers do the same reads).
func BenchmarkCollectFloor(b *testing.B) {
	_, bases, groups := realGroups(b, 500)
	files := map[string][]string{
		"memory":  {"memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.limit_in_bytes", "memory.failcnt", "memory.stat", "memory.oom_control"},
		"cpu":     {"cpu.stat"},
		"pids":    {"pids.current", "pids.max"},
		"unified": {"cpu.stat"},
	}
	var paths []string
	for h, fs := range files {
		for _, g := range groups {
			for _, f := range fs {
				paths = append(paths, filepath.Join("/sys/fs/cgroup", h, bases[h], g, f))
			}
		}
	}
	buf := make([]byte, 8192)
	for b.Loop() {
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = f.Read(buf)
			f.Close()
		}
	}
	b.ReportMetric(float64(len(paths)), "files")
}
