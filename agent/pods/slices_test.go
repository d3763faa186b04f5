package pods

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/unitgen"
)

// sliceUnits plays systemd's slices on top of fakeUnits: what EnsureSlice
// was given, which slices run, and each unit's Slice=. systemd's own
// handling of slices (nesting, live properties, daemon-reload) is tested
// on a real node in test/e2e/slices_test.go.
type sliceUnits struct {
	*fakeUnits
	smu       sync.Mutex
	props     map[string][]unitgen.Property // the last EnsureSlice of each slice
	active    map[string]bool
	unitSlice map[string]string
}

func newSliceUnits(f *fakeUnits) *sliceUnits {
	return &sliceUnits{fakeUnits: f, props: map[string][]unitgen.Property{}, active: map[string]bool{}, unitSlice: map[string]string{}}
}

func (s *sliceUnits) EnsureSlice(ctx context.Context, name string, props []unitgen.Property) error {
	s.log("slice " + name)
	s.smu.Lock()
	defer s.smu.Unlock()
	s.props[name], s.active[name] = props, true
	return nil
}

func (s *sliceUnits) Start(ctx context.Context, name string, props []unitgen.Property) error {
	for _, p := range props {
		if p.Name == "Slice" {
			s.smu.Lock()
			sl := p.Value.(string)
			s.unitSlice[name] = sl
			if !s.active[sl] {
				s.smu.Unlock()
				return fmt.Errorf("unit %s names slice %s, which was not made first", name, sl)
			}
			s.smu.Unlock()
		}
	}
	return s.fakeUnits.Start(ctx, name, props)
}

func (s *sliceUnits) Stop(ctx context.Context, name string) error {
	if !strings.HasSuffix(name, ".slice") {
		return s.fakeUnits.Stop(ctx, name)
	}
	s.log("stop " + name)
	s.smu.Lock()
	defer s.smu.Unlock()
	if !s.active[name] {
		return fmt.Errorf("unit %s: %w", name, errdefs.ErrNotFound)
	}
	delete(s.active, name)
	return nil
}

func (s *sliceUnits) Status(ctx context.Context, name string) (*UnitState, error) {
	if !strings.HasSuffix(name, ".slice") {
		return s.fakeUnits.Status(ctx, name)
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	if !s.active[name] {
		return nil, fmt.Errorf("unit %s: %w", name, errdefs.ErrNotFound)
	}
	return &UnitState{ActiveState: "active", SubState: "active"}, nil
}

// prop is the rendered value of a slice's property, "" if absent.
func (s *sliceUnits) prop(slice, name string) string {
	s.smu.Lock()
	defer s.smu.Unlock()
	for _, p := range s.props[slice] {
		if p.Name == name {
			return fmt.Sprint(p.Value)
		}
	}
	return ""
}

func (s *sliceUnits) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.fakeUnits.calls...)
}

func limited(pod *corev1.Pod, cpu, mem string) {
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
	}
}

// RunPod makes namespace → QoS → pod slice before the pod's first unit,
// the units name the pod slice, and RemovePod stops the pod slice after
// the units; the namespace and QoS slices are made once and stay.
func TestPodSlicesMadeAndRemoved(t *testing.T) {
	f := newFixture(t)
	su := newSliceUnits(f.units)
	f.rt.units = su
	ctx := context.Background()

	g, imgs := f.pod("guaranteed", "app", "side")
	limited(g, "500m", "64Mi")
	g.UID = "1111-2222"
	must(t, f.rt.RunPod(ctx, g, imgs))
	be, imgs2 := f.pod("besteffort", "app")
	be.UID = "3333-4444"
	must(t, f.rt.RunPod(ctx, be, imgs2))
	be2, imgs3 := f.pod("besteffort2", "app")
	be2.UID = "5555-6666"
	must(t, f.rt.RunPod(ctx, be2, imgs3))

	var order []string
	for _, c := range su.calls() {
		if strings.HasPrefix(c, "slice ") || strings.HasPrefix(c, "start ") {
			order = append(order, c)
		}
	}
	// The namespace and QoS slices are made once per process; the
	// namespace's is given its new sums after each pod slice.
	want := []string{
		"slice berth-default.slice", "slice berth-default-pod1111_2222.slice", "slice berth-default.slice",
		"start berth-default_guaranteed_app.service", "start berth-default_guaranteed_side.service",
		"slice berth-default-besteffort.slice", "slice berth-default-besteffort-pod3333_4444.slice", "slice berth-default.slice",
		"start berth-default_besteffort_app.service",
		"slice berth-default-besteffort-pod5555_6666.slice", "slice berth-default.slice",
		"start berth-default_besteffort2_app.service",
	}
	if strings.Join(order, "\n") != strings.Join(want, "\n") {
		t.Errorf("order:\n  %s\nwant\n  %s", strings.Join(order, "\n  "), strings.Join(want, "\n  "))
	}
	for unit, slice := range map[string]string{
		"berth-default_guaranteed_app.service":  "berth-default-pod1111_2222.slice",
		"berth-default_guaranteed_side.service": "berth-default-pod1111_2222.slice",
		"berth-default_besteffort_app.service":  "berth-default-besteffort-pod3333_4444.slice",
	} {
		if got := su.unitSlice[unit]; got != slice {
			t.Errorf("%s in %s, want %s", unit, got, slice)
		}
	}
	// The pod-level values (cgroup v1 here): the sums of the containers.
	for _, c := range []struct{ slice, prop, want string }{
		{"berth-default-pod1111_2222.slice", "CPUShares", "1024"},
		{"berth-default-pod1111_2222.slice", "CPUQuotaPerSecUSec", "1000000"},
		{"berth-default-pod1111_2222.slice", "MemoryMax", "134217728"},
		{"berth-default-besteffort.slice", "CPUShares", "2"},
		{"berth-default-besteffort-pod3333_4444.slice", "CPUShares", "2"},
		{"berth-default-besteffort-pod3333_4444.slice", "MemoryMax", ""},
		{"berth-default.slice", "CPUQuotaPerSecUSec", ""}, // no limits known: none said
		{"berth-default.slice", "CPUShares", "1024"},      // the Guaranteed pod's 2×500m; BestEffort adds nothing
	} {
		if got := su.prop(c.slice, c.prop); got != c.want {
			t.Errorf("%s %s = %q, want %q", c.slice, c.prop, got, c.want)
		}
	}

	f.units.mu.Lock()
	f.units.calls = nil
	f.units.mu.Unlock()
	must(t, f.rt.RemovePod(ctx, "default", "guaranteed"))
	stops := su.calls()
	// app, side, the pause (none here), the slice, the namespace's sums
	if len(stops) != 5 || stops[3] != "stop berth-default-pod1111_2222.slice" || stops[4] != "slice berth-default.slice" {
		t.Errorf("removal %v, want the units, then the pod's slice, then the namespace's sums", stops)
	}
	if got := su.prop("berth-default.slice", "CPUShares"); got != "2" {
		t.Errorf("namespace slice's CPUShares %s after its only pod with requests went, want the minimum 2", got)
	}
	if su.active["berth-default-pod1111_2222.slice"] || !su.active["berth-default.slice"] || !su.active["berth-default-besteffort.slice"] {
		t.Errorf("slices left: %v, want the namespace's and the class's only", su.active)
	}

	// A pod started before pod slices: its units were in the namespace
	// slice, its pod slice was never made. Its removal finds the units by
	// name and has no slice to stop.
	su.smu.Lock()
	delete(su.active, "berth-default-besteffort-pod3333_4444.slice")
	su.smu.Unlock()
	must(t, f.rt.RemovePod(ctx, "default", "besteffort"))
	must(t, f.rt.RemovePod(ctx, "default", "besteffort2"))
	if l := f.leftovers(t); len(l) > 0 {
		t.Errorf("left after remove: %v", l)
	}
}

func TestSetNamespaceLimits(t *testing.T) {
	f := newFixture(t)
	su := newSliceUnits(f.units)
	f.rt.units = su
	ctx := context.Background()
	ensures := func(slice string) int {
		n := 0
		for _, c := range su.calls() {
			if c == "slice "+slice {
				n++
			}
		}
		return n
	}

	for _, tc := range []struct {
		name     string
		ns       string
		cpu, mem int64
	}{
		{"negative cpu", "shop", -1, 0},
		{"negative memory", "shop", 0, -1},
		{"invalid namespace", "Shop_1", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.rt.SetNamespaceLimits(ctx, tc.ns, tc.cpu, tc.mem); !errdefs.IsInvalidArgument(err) {
				t.Errorf("SetNamespaceLimits(%q, %d, %d) = %v, want invalid argument", tc.ns, tc.cpu, tc.mem, err)
			}
		})
	}

	// No limits on a namespace without a slice: nothing to do, nothing made.
	must(t, f.rt.SetNamespaceLimits(ctx, "idle", 0, 0))
	if n := ensures("berth-idle.slice"); n != 0 {
		t.Errorf("zero limits made the slice (%d ensures)", n)
	}
	// Limits: the slice is made with them, at once.
	must(t, f.rt.SetNamespaceLimits(ctx, "team-a", 2000, 1<<30))
	if got, got2 := su.prop("berth-team_a.slice", "CPUQuotaPerSecUSec"), su.prop("berth-team_a.slice", "MemoryMax"); got != "2000000" || got2 != "1073741824" {
		t.Errorf("team-a: CPUQuotaPerSecUSec %q, MemoryMax %q", got, got2)
	}
	// Changed: set live on the existing slice.
	must(t, f.rt.SetNamespaceLimits(ctx, "team-a", 500, 0))
	if got, got2 := su.prop("berth-team_a.slice", "CPUQuotaPerSecUSec"), su.prop("berth-team_a.slice", "MemoryMax"); got != "500000" || got2 != fmt.Sprint(uint64(1<<64-1)) {
		t.Errorf("team-a changed: CPUQuotaPerSecUSec %q, MemoryMax %q (want infinity)", got, got2)
	}
	// A pod of the namespace finds the slice made: given its sums, with
	// the limits kept.
	pod, imgs := f.pod("web", "app")
	pod.Namespace = "team-a"
	before := ensures("berth-team_a.slice")
	must(t, f.rt.RunPod(ctx, pod, imgs))
	if n := ensures("berth-team_a.slice"); n != before+1 {
		t.Errorf("RunPod set the namespace slice %d times, want once (its sums)", n-before)
	}
	if got, got2 := su.prop("berth-team_a.slice", "CPUQuotaPerSecUSec"), su.prop("berth-team_a.slice", "CPUShares"); got != "500000" || got2 != "2" {
		t.Errorf("team-a with a pod: CPUQuotaPerSecUSec %q (want the limit kept), CPUShares %q", got, got2)
	}
	// Lifted on a running slice: infinity for both.
	must(t, f.rt.SetNamespaceLimits(ctx, "team-a", 0, 0))
	if got := su.prop("berth-team_a.slice", "CPUQuotaPerSecUSec"); got != fmt.Sprint(uint64(1<<64-1)) {
		t.Errorf("lifted: CPUQuotaPerSecUSec %q, want infinity", got)
	}
	must(t, f.rt.RemovePod(ctx, "team-a", "web"))

	// Remembered: a namespace's slice made later by its first pod carries
	// the limits set before.
	su.smu.Lock()
	delete(su.active, "berth-idle.slice")
	su.smu.Unlock()
	must(t, f.rt.SetNamespaceLimits(ctx, "later", 1500, 256<<20))
	su.smu.Lock()
	delete(su.active, "berth-later.slice") // stopped by hand meanwhile
	su.smu.Unlock()
	f.rt.slices.Delete("berth-later.slice") // as after a zero-limits no-op or a new process
	pod, imgs = f.pod("web", "app")
	pod.Namespace = "later"
	must(t, f.rt.RunPod(ctx, pod, imgs))
	if got, got2 := su.prop("berth-later.slice", "CPUQuotaPerSecUSec"), su.prop("berth-later.slice", "MemoryMax"); got != "1500000" || got2 != "268435456" {
		t.Errorf("later: CPUQuotaPerSecUSec %q, MemoryMax %q", got, got2)
	}
	must(t, f.rt.RemovePod(ctx, "later", "web"))
}

// Reconcile's removal of an orphan's directories stops the pod slice its
// record names; a corrupt record names none, and the removal goes on.
func TestRemovePodDirsStopsPodSlice(t *testing.T) {
	f := newFixture(t)
	su := newSliceUnits(f.units)
	f.rt.units = su
	ctx := context.Background()
	pod, imgs := f.pod("orphan", "app")
	pod.UID = "aaaa-bbbb"
	must(t, f.rt.RunPod(ctx, pod, imgs))
	slice := "berth-default-besteffort-podaaaa_bbbb.slice"
	if !su.active[slice] {
		t.Fatalf("no pod slice: %v", su.active)
	}
	// What reconcile does: the units (StopUnit, which also checks whose
	// they are), the bundles, then the directories.
	must(t, su.Stop(ctx, "berth-default_orphan_app.service"))
	must(t, f.rt.RemoveBundle("default_orphan_app"))
	must(t, f.rt.RemovePodDirs(ctx, "default_orphan"))
	if su.active[slice] {
		t.Errorf("pod slice %s left after RemovePodDirs", slice)
	}

	// A corrupt record: nothing stopped, the directories still go.
	dir := filepath.Join(f.state, "pods", "default_bad")
	must(t, os.MkdirAll(dir, 0o700))
	must(t, os.WriteFile(filepath.Join(dir, podRecord), []byte("{not json"), 0o600))
	// A record filed under another pod's key names that pod's slice: not
	// trusted.
	other := filepath.Join(f.state, "pods", "default_misfiled")
	must(t, os.MkdirAll(other, 0o700))
	b, _ := json.Marshal(pod)
	must(t, os.WriteFile(filepath.Join(other, podRecord), b, 0o600))
	su.smu.Lock()
	su.active[slice] = true
	su.smu.Unlock()
	f.units.mu.Lock()
	f.units.calls = nil
	f.units.mu.Unlock()
	must(t, f.rt.RemovePodDirs(ctx, "default_bad"))
	must(t, f.rt.RemovePodDirs(ctx, "default_misfiled"))
	if c := su.calls(); len(c) != 0 || !su.active[slice] {
		t.Errorf("calls %v (slice still active: %v), want none", c, su.active[slice])
	}
	if l := f.leftovers(t); len(l) > 0 {
		t.Errorf("left: %v", l)
	}
}

// The Burstable, namespace and root slices carry their pods' summed
// requests (cgroup v2 here: weights and MemoryMin), updated on each start
// and removal; a restarted runtime finds the running pods' requests in
// their records; an orphan's removal takes its requests off too.
func TestSlicesSums(t *testing.T) {
	f := newFixture(t)
	su := newSliceUnits(f.units)
	f.rt.units = su
	f.rt.cfg.Node.CgroupV2 = true
	f.rt.cfg.Node.MemoryCapacity = 4 << 30
	ctx := context.Background()
	requesting := func(name, cpu, mem string) (*corev1.Pod, map[string]PodImage) {
		pod, imgs := f.pod(name, "app")
		pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
		return pod, imgs
	}
	weight := func(milli int64) string { return fmt.Sprint(cgroup.SharesToWeight(cgroup.MilliCPUToShares(milli))) }
	check := func(when string, want map[[2]string]string) {
		t.Helper()
		for k, w := range want {
			if got := su.prop(k[0], k[1]); got != w {
				t.Errorf("%s: %s %s = %q, want %q", when, k[0], k[1], got, w)
			}
		}
	}
	const mi = 1 << 20
	a, ai := requesting("a", "100m", "32Mi")
	b, bi := requesting("b", "200m", "64Mi")
	g, gi := f.pod("g", "app")
	limited(g, "1", "128Mi")
	other, oi := requesting("o", "1", "16Mi")
	other.Namespace = "other"
	for _, p := range []struct {
		pod  *corev1.Pod
		imgs map[string]PodImage
	}{{a, ai}, {b, bi}, {g, gi}, {other, oi}} {
		must(t, f.rt.RunPod(ctx, p.pod, p.imgs))
	}
	check("four pods", map[[2]string]string{
		{"berth-default-burstable.slice", "CPUWeight"}: weight(300),
		{"berth-default-burstable.slice", "MemoryMin"}: fmt.Sprint(96 * mi),
		{"berth-default.slice", "CPUWeight"}:           weight(1300),
		{"berth-default.slice", "MemoryMin"}:           fmt.Sprint(224 * mi),
		{"berth-other.slice", "CPUWeight"}:             weight(1000),
		{"berth-other.slice", "MemoryMin"}:             fmt.Sprint(16 * mi),
		{"berth.slice", "MemoryMin"}:                   fmt.Sprint(240 * mi),
	})

	must(t, f.rt.RemovePod(ctx, "default", "b"))
	check("b removed", map[[2]string]string{
		{"berth-default-burstable.slice", "CPUWeight"}: weight(100),
		{"berth-default-burstable.slice", "MemoryMin"}: fmt.Sprint(32 * mi),
		{"berth-default.slice", "MemoryMin"}:           fmt.Sprint(160 * mi),
		{"berth.slice", "MemoryMin"}:                   fmt.Sprint(176 * mi),
	})

	// berthd restarted: a new runtime over the same state counts the
	// pods that kept running when the next one starts.
	rt := New(f.rt.cfg, su, f.images)
	f.rt = rt
	c, ci := requesting("c", "50m", "8Mi")
	must(t, rt.RunPod(ctx, c, ci))
	check("after a restart", map[[2]string]string{
		{"berth-default-burstable.slice", "CPUWeight"}: weight(150),
		{"berth-default-burstable.slice", "MemoryMin"}: fmt.Sprint(40 * mi),
		{"berth.slice", "MemoryMin"}:                   fmt.Sprint(184 * mi),
	})
	// The last Burstable pods go, one as reconcile removes an orphan: the
	// class is back to the minimum and protects nothing.
	must(t, rt.RemovePod(ctx, "default", "c"))
	must(t, su.Stop(ctx, "berth-default_a_app.service"))
	must(t, rt.RemoveBundle("default_a_app"))
	must(t, rt.RemovePodDirs(ctx, "default_a"))
	check("no Burstable pod left", map[[2]string]string{
		{"berth-default-burstable.slice", "CPUWeight"}: "1",
		{"berth-default-burstable.slice", "MemoryMin"}: "0",
		{"berth-default.slice", "CPUWeight"}:           weight(1000),
		{"berth-default.slice", "MemoryMin"}:           fmt.Sprint(128 * mi),
		{"berth.slice", "MemoryMin"}:                   fmt.Sprint(144 * mi),
	})
	// berth plan shows the sums a new pod would bring.
	d, _ := requesting("d", "500m", "1Mi")
	d.UID = "dddd"
	ss, err := rt.PlanSlices(d)
	must(t, err)
	for _, s := range ss {
		if s.Name == "berth-default-burstable.slice" {
			if p, _ := s.Property("CPUWeight"); fmt.Sprint(p.Value) != weight(500) {
				t.Errorf("plan: burstable CPUWeight %v, want %s", p.Value, weight(500))
			}
		}
	}
	must(t, rt.RemovePod(ctx, "default", "g"))
	must(t, rt.RemovePod(ctx, "other", "o"))
	if l := f.leftovers(t); len(l) > 0 {
		t.Errorf("left after remove: %v", l)
	}
}
