package usage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/unitgen"
)

// fakeStore holds pods as the store would: JSON by key.
type fakeStore struct{ pods []*corev1.Pod }

func (f *fakeStore) ScanKeyed(res store.Resource, ns string, fn func(key, data []byte) error) (uint64, error) {
	for _, p := range f.pods {
		b, _ := json.Marshal(p)
		if err := fn([]byte(p.Namespace+"/"+p.Name), b); err != nil {
			return 0, err
		}
	}
	return 1, nil
}

// groups are cgroups as the fake reader finds them.
type groups map[string]*cgroup.Stats

func (g groups) read(group string) (*cgroup.Stats, error) {
	if st, ok := g[group]; ok {
		if st == nil {
			return nil, errors.New("permission denied")
		}
		c := *st
		return &c, nil
	}
	return nil, fmt.Errorf("cgroup %s: %w", group, fs.ErrNotExist)
}

func pod(ns, name string, uid types.UID, containers ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uid, Labels: map[string]string{"app": name}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: "img"})
	}
	return p
}

func cgroupOf(t *testing.T, p *corev1.Pod, container string) string {
	t.Helper()
	g, err := unitgen.PodCgroup(p)
	if err != nil {
		t.Fatal(err)
	}
	if container == "" {
		return g
	}
	return g + "/" + unitgen.UnitName(p.Namespace, p.Name, container)
}

// Rates are metrics-server's: the counter's growth between two cycles
// over the time between them; a container seen once, or whose counter
// went back (restarted: a new cgroup), has none, and its pod is left out
// of metrics.k8s.io until every container has one.
func TestCycles(t *testing.T) {
	web := pod("shop", "web", "u-1", "app", "side")
	db := pod("shop", "db", "u-2", "db")
	done := pod("shop", "job", "u-3", "job")
	done.Status.Phase = corev1.PodSucceeded
	st := &fakeStore{pods: []*corev1.Pod{web, db, done}}
	g := groups{
		NodeCgroup:                      {CPUUsageNSec: 100e9, MemoryWorkingSet: 1 << 30},
		cgroupOf(t, web, ""):            {CPUUsageNSec: 3e9},
		cgroupOf(t, web, "app"):         {CPUUsageNSec: 2e9, MemoryWorkingSet: 48 << 20},
		cgroupOf(t, web, "side"):        {CPUUsageNSec: 1e9, MemoryWorkingSet: 1 << 20},
		cgroupOf(t, db, ""):             {CPUUsageNSec: 5e9},
		cgroupOf(t, db, "db"):           {CPUUsageNSec: 5e9, MemoryWorkingSet: 10 << 20},
		cgroupOf(t, done, ""):           {CPUUsageNSec: 1},
		"/berth.slice/berth-shop.slice": {CPUUsageNSec: 8e9, MemoryWorkingSet: 60 << 20},
	}
	now := time.Unix(1000, 0)
	s := New(Config{Store: st, Read: g.read, Now: func() time.Time { return now }})
	snap, err := s.Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Pods) != 2 || snap.Window != 0 {
		t.Fatalf("first cycle: %d pods (the finished one skipped), window %v", len(snap.Pods), snap.Window)
	}
	if pm := s.PodMetrics(""); len(pm) != 0 {
		t.Errorf("first cycle: no rates yet, but %d PodMetrics", len(pm))
	}
	if _, ok := s.NodeMetrics("n1"); ok {
		t.Error("first cycle: NodeMetrics without a rate")
	}

	// 10 s later: app used 2 s of CPU (0.2 cores), side none; db
	// restarted (its counter went back).
	now = now.Add(10 * time.Second)
	g[cgroupOf(t, web, "app")].CPUUsageNSec = 4e9
	g[cgroupOf(t, web, "")].CPUUsageNSec = 5e9
	g[cgroupOf(t, db, "db")].CPUUsageNSec = 1e9
	g[NodeCgroup].CPUUsageNSec = 105e9
	if _, err := s.Collect(); err != nil {
		t.Fatal(err)
	}
	pms := s.PodMetrics("shop")
	if len(pms) != 1 || pms[0].Name != "web" {
		t.Fatalf("second cycle: want web only (db restarted), got %+v", pms)
	}
	pm := pms[0]
	if pm.Window.Duration != 10*time.Second || !pm.Timestamp.Time.Equal(now) || pm.Labels["app"] != "web" {
		t.Errorf("window %v, timestamp %v, labels %v", pm.Window, pm.Timestamp, pm.Labels)
	}
	want := map[string][2]string{"app": {"200m", "48Mi"}, "side": {"0", "1Mi"}}
	for _, c := range pm.Containers {
		w, ok := want[c.Name]
		cpu, mem := c.Usage[corev1.ResourceCPU], c.Usage[corev1.ResourceMemory]
		if !ok || cpu.Cmp(resource.MustParse(w[0])) != 0 || mem.Cmp(resource.MustParse(w[1])) != 0 {
			t.Errorf("container %s: cpu %s memory %s, want %v", c.Name, cpu.String(), mem.String(), w)
		}
	}
	nm, ok := s.NodeMetrics("n1")
	if cpu := nm.Usage[corev1.ResourceCPU]; !ok || cpu.MilliValue() != 500 || nm.Name != "n1" {
		t.Errorf("node: %v %s", ok, cpu.String())
	}
	if ns := s.Last().Namespaces; len(ns) != 1 || ns[0].Name != "shop" || !ns[0].HasRate || ns[0].CPU != 0 || ns[0].Stats.MemoryWorkingSet != 60<<20 {
		t.Errorf("namespaces: %+v", ns)
	}
	if s.PodMetrics("other") != nil {
		t.Error("another namespace has no pods")
	}

	// A third cycle: db has a rate again; side stopped (its group is
	// gone): web is listed with app alone, as the kubelet lists running
	// containers only. An unreadable group is counted, not fatal.
	now = now.Add(10 * time.Second)
	g[cgroupOf(t, db, "db")].CPUUsageNSec = 2e9
	delete(g, cgroupOf(t, web, "side"))
	g[cgroupOf(t, web, "app")] = nil
	snap, err = s.Collect()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Errors != 1 {
		t.Errorf("errors %d, want 1 (app unreadable)", snap.Errors)
	}
	names := map[string]int{}
	for _, pm := range s.PodMetrics("") {
		names[pm.Name] = len(pm.Containers)
	}
	if len(names) != 1 || names["db"] != 1 {
		t.Errorf("third cycle: %v, want db only (web has no readable container)", names)
	}
	if s.Cycles() != 3 || s.Last() != snap {
		t.Errorf("cycles %d", s.Cycles())
	}
}
