package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/events"
	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/unitgen"
)

// Fakes for the pure decision: the host view is a value, the removals are
// recorded in order.

type fakeStore []*corev1.Pod

func (s fakeStore) List(res store.Resource, ns string, fn func([]byte) error) (uint64, error) {
	if res != PodsResource {
		return 0, fmt.Errorf("listed %q", res)
	}
	for _, p := range s {
		b, _ := json.Marshal(p)
		if err := fn(b); err != nil {
			return 0, err
		}
	}
	return 1, nil
}

type fakeHost struct {
	h    pods.Host
	mu   sync.Mutex
	ops  []string
	fail map[string]error // op → error
}

func (f *fakeHost) Host(context.Context) (*pods.Host, error) { return &f.h, nil }
func (f *fakeHost) do(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, op)
	return f.fail[op]
}
func (f *fakeHost) StopUnit(_ context.Context, name string) error { return f.do("stop " + name) }
func (f *fakeHost) RemoveBundle(key string) error                 { return f.do("bundle " + key) }
func (f *fakeHost) RemovePodDirs(_ context.Context, key string) error {
	return f.do("dirs " + key)
}
func (f *fakeHost) GCNetwork(context.Context) error { return nil }

// The recorder berthd wires.
var _ Recorder = (*events.Recorder)(nil)

type event struct{ kind, name, typ, reason, msg string }

type fakeRecorder struct {
	mu     sync.Mutex
	events []event
}

func (f *fakeRecorder) Event(ref *corev1.ObjectReference, typ, reason, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, event{ref.Kind, ref.Name, typ, reason, msg})
}

func storedPod(ns, name, uid string, ctrs ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)}}
	for _, c := range ctrs {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c})
	}
	return p
}

// hostPod is a pod directory with a record whose containers were all
// released and whose namespaces are pinned.
func hostPod(ns, name, uid string, ctrs ...string) pods.HostPod {
	return pods.HostPod{Key: unitgen.PodKey(ns, name), Namespace: ns, Name: name, UID: types.UID(uid),
		Containers: ctrs, Released: ctrs, Begun: ctrs, State: true, Run: true, Pinned: true}
}

func unit(ns, pod, ctr, active string) pods.HostUnit {
	return pods.HostUnit{Name: unitgen.UnitName(ns, pod, ctr), Key: unitgen.ContainerKey(ns, pod, ctr), ActiveState: active, LoadState: "loaded"}
}

func ck(ns, pod, ctr string) string { return unitgen.ContainerKey(ns, pod, ctr) }

func run(t *testing.T, stored fakeStore, h *fakeHost) (*Report, error, *fakeRecorder) {
	t.Helper()
	rec := &fakeRecorder{}
	r := New(Config{Store: stored, Host: h, Recorder: rec, NodeName: "node1"})
	rep, err := r.Run(context.Background())
	return rep, err, rec
}

func TestAdoptsStoredPodsAndTouchesNothing(t *testing.T) {
	h := &fakeHost{h: pods.Host{
		Pods:    []pods.HostPod{hostPod("default", "web", "u1", "app", "side")},
		Units:   []pods.HostUnit{unit("default", "web", "app", "active"), unit("default", "web", "side", "failed")},
		Bundles: []string{ck("default", "web", "app"), ck("default", "web", "side")},
		Mounts:  []pods.HostMount{{Path: "/run/berth/pods/default_web/ns/net", Kind: "pod", Key: "default_web", Type: "nsfs"}},
	}}
	rep, err, rec := run(t, fakeStore{storedPod("default", "web", "u1", "app", "side")}, h)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.ops) != 0 || len(rec.events) != 0 {
		t.Fatalf("a stored, running pod was touched: ops %v events %v", h.ops, rec.events)
	}
	want := []Adopted{{PodRef: PodRef{"default", "web", "u1"}, Key: "default_web"}}
	if !reflect.DeepEqual(rep.Adopted, want) || len(rep.Removed) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

func TestRemovesOrphansInOrder(t *testing.T) {
	// gone: its record names a pod the store no longer has.
	// again: the store's pod of that name is a later one (another uid).
	// half: its second container was never released.
	// norec: a directory without a record (a start cut before it).
	gone := hostPod("default", "gone", "u-gone", "app")
	again := hostPod("default", "again", "u-old", "app")
	half := hostPod("default", "half", "u-half", "a", "b")
	half.Released = []string{"a"}
	norec := pods.HostPod{Key: "default_norec", Run: true, RecordErr: fmt.Errorf("x: %w", errdefs.ErrNotFound)}
	h := &fakeHost{h: pods.Host{
		Pods: []pods.HostPod{again, gone, half, norec},
		Units: []pods.HostUnit{
			unit("default", "again", "app", "active"),
			unit("default", "gone", "app", "active"),
			unit("default", "half", "a", "active"),
			unit("default", "half", "b", "activating"),
			unit("default", "stray", "c", "active"), // no directory at all
		},
		Bundles: []string{ck("default", "again", "app"), ck("default", "gone", "app"), ck("default", "half", "a"), ck("default", "half", "b"), ck("other", "x", "y")},
		Mounts:  []pods.HostMount{{Path: "/run/berth/pods/default_norec/ns/net", Kind: "pod", Key: "default_norec", Type: "nsfs"}},
	}}
	stored := fakeStore{storedPod("default", "again", "u-new", "app"), storedPod("default", "half", "u-half", "a", "b")}
	rep, err, rec := run(t, stored, h)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Adopted) != 0 {
		t.Errorf("adopted %+v", rep.Adopted)
	}
	// Every unit is stopped before any bundle goes, every bundle before
	// any directory (the records last).
	phase := map[string]int{"stop": 0, "bundle": 1, "dirs": 2}
	last := 0
	for _, op := range h.ops {
		p := phase[strings.Fields(op)[0]]
		if p < last {
			t.Fatalf("out of order: %v", h.ops)
		}
		last = p
	}
	got := map[string]bool{}
	for _, op := range h.ops {
		got[op] = true
	}
	for _, want := range []string{
		"stop " + unitgen.UnitName("default", "again", "app"),
		"stop " + unitgen.UnitName("default", "gone", "app"),
		"stop " + unitgen.UnitName("default", "half", "a"),
		"stop " + unitgen.UnitName("default", "half", "b"),
		"stop " + unitgen.UnitName("default", "stray", "c"),
		"bundle " + ck("default", "again", "app"), "bundle " + ck("default", "gone", "app"),
		"bundle " + ck("default", "half", "a"), "bundle " + ck("default", "half", "b"), "bundle " + ck("other", "x", "y"),
		"dirs default_again", "dirs default_gone", "dirs default_half", "dirs default_norec",
	} {
		if !got[want] {
			t.Errorf("not done: %s (done: %v)", want, h.ops)
		}
	}
	if len(h.ops) != 14 {
		t.Errorf("%d operations, want 14: %v", len(h.ops), h.ops)
	}
	// One event per orphan, against the Node.
	var reasons []string
	for _, e := range rec.events {
		if e.kind != "Node" || e.name != "node1" || e.typ != corev1.EventTypeNormal {
			t.Errorf("event %+v", e)
		}
		reasons = append(reasons, e.reason+": "+e.msg)
	}
	if len(rec.events) != len(rep.Removed) || len(rep.Removed) != 6 {
		t.Fatalf("%d events for %d orphans:\n%s", len(rec.events), len(rep.Removed), strings.Join(reasons, "\n"))
	}
	all := strings.Join(reasons, "\n")
	for _, want := range []string{
		`RemovingOrphanedPod: Removing orphaned pod "default/gone" (uid u-gone): it is not in the store`,
		`RemovingOrphanedPod: Removing orphaned pod "default/again" (uid u-old): the store's pod of that name has uid u-new`,
		`RemovingOrphanedPod: Removing orphaned pod "default/half" (uid u-half): its start never completed (1 of 2 containers released)`,
		`RemovingOrphanedPod: Removing orphaned pod directory default_norec: it has no pod record`,
		`RemovingOrphanedContainer: Removing orphaned unit ` + unitgen.UnitName("default", "stray", "c"),
		`RemovingOrphanedContainer: Removing orphaned bundle other_x_y`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no event %q in\n%s", want, all)
		}
	}
}

func TestUnreadableRecordOfStoredPodIsKept(t *testing.T) {
	bad := pods.HostPod{Key: "default_web", State: true, Run: true, Pinned: true,
		RecordErr: fmt.Errorf("corrupt: %w", errdefs.ErrDataLoss)}
	h := &fakeHost{h: pods.Host{
		Pods:    []pods.HostPod{bad},
		Units:   []pods.HostUnit{unit("default", "web", "app", "active"), unit("default", "web", "extra", "active")},
		Bundles: []string{ck("default", "web", "app")},
	}}
	rep, err, rec := run(t, fakeStore{storedPod("default", "web", "u1", "app")}, h)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.ops) != 0 {
		t.Fatalf("touched a stored pod whose record is unreadable: %v", h.ops)
	}
	if len(rep.Kept) != 1 || len(rec.events) != 1 || rec.events[0].reason != ReasonUnreadablePodRecord || rec.events[0].typ != corev1.EventTypeWarning {
		t.Fatalf("report %+v events %+v", rep, rec.events)
	}
	// Without a stored pod of its key, the same directory is an orphan.
	h.ops = nil
	rep, err, _ = run(t, fakeStore{}, h)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 1 || !rep.Removed[0].Dirs || len(rep.Removed[0].Units) != 2 {
		t.Fatalf("report %+v", rep.Removed)
	}
}

func TestUnpinnedNamespaces(t *testing.T) {
	p := hostPod("default", "web", "u1", "app")
	p.Pinned = false
	stored := fakeStore{storedPod("default", "web", "u1", "app")}
	// A container still runs: adopted with a warning, nothing touched.
	h := &fakeHost{h: pods.Host{Pods: []pods.HostPod{p}, Units: []pods.HostUnit{unit("default", "web", "app", "active")}}}
	rep, err, _ := run(t, stored, h)
	if err != nil || len(h.ops) != 0 || len(rep.Adopted) != 1 || rep.Adopted[0].Warning == "" {
		t.Fatalf("running pod with unpinned namespaces: %v %v %+v", err, h.ops, rep)
	}
	// Nothing runs (after a reboot): removed, for the worker to start anew.
	h = &fakeHost{h: pods.Host{Pods: []pods.HostPod{p}, Units: []pods.HostUnit{unit("default", "web", "app", "failed")}}}
	rep, err, _ = run(t, stored, h)
	if err != nil || len(rep.Adopted) != 0 || len(rep.Removed) != 1 {
		t.Fatalf("dead pod with unpinned namespaces: %v %+v", err, rep)
	}
	if want := []string{"stop " + unitgen.UnitName("default", "web", "app"), "dirs default_web"}; !reflect.DeepEqual(h.ops, want) {
		t.Fatalf("ops %v, want %v", h.ops, want)
	}
}

// A pod's units are kept while its record names it, whatever they are
// called: a shortened key is attributed through the record.
func TestShortenedKeys(t *testing.T) {
	long := strings.Repeat("a", 240)
	p := hostPod("default", long, "u1", "app")
	h := &fakeHost{h: pods.Host{
		Pods:    []pods.HostPod{p},
		Units:   []pods.HostUnit{unit("default", long, "app", "active")},
		Bundles: []string{ck("default", long, "app")},
	}}
	if strings.Count(ck("default", long, "app"), "_") != 3 {
		t.Fatalf("key %s is not a shortened one", ck("default", long, "app"))
	}
	rep, err, _ := run(t, fakeStore{storedPod("default", long, "u1", "app")}, h)
	if err != nil || len(h.ops) != 0 || len(rep.Adopted) != 1 {
		t.Fatalf("%v %v %+v", err, h.ops, rep)
	}
	// Not stored: unit and bundle go with the directory, in one orphan.
	rep, err, _ = run(t, fakeStore{}, h)
	if err != nil || len(rep.Removed) != 1 || len(rep.Removed[0].Units) != 1 || len(rep.Removed[0].Bundles) != 1 || !rep.Removed[0].Dirs {
		t.Fatalf("%v %+v", err, rep.Removed)
	}
}

// A unit that will not stop keeps its bundle and its pod's record, so
// that the next start finds and finishes them; other orphans go on.
func TestFailedStopKeepsTheRest(t *testing.T) {
	h := &fakeHost{
		h: pods.Host{
			Pods:    []pods.HostPod{hostPod("default", "a", "ua", "c"), hostPod("default", "b", "ub", "c")},
			Units:   []pods.HostUnit{unit("default", "a", "c", "active"), unit("default", "b", "c", "active")},
			Bundles: []string{ck("default", "a", "c"), ck("default", "b", "c")},
		},
		fail: map[string]error{"stop " + unitgen.UnitName("default", "a", "c"): errors.New("job failed")},
	}
	rep, err, rec := run(t, fakeStore{}, h)
	if err == nil || !strings.Contains(err.Error(), "job failed") {
		t.Fatalf("error %v", err)
	}
	for _, op := range h.ops {
		if op == "bundle "+ck("default", "a", "c") || op == "dirs default_a" {
			t.Errorf("went on after its unit did not stop: %s", op)
		}
	}
	if !slicesContain(h.ops, "dirs default_b") {
		t.Errorf("the other orphan was not removed: %v", h.ops)
	}
	var failed int
	for _, g := range rep.Removed {
		if g.Error != "" {
			failed++
		}
	}
	warned := 0
	for _, e := range rec.events {
		if e.reason == ReasonFailedRemovingOrphan {
			warned++
		}
	}
	if failed != 1 || warned != 1 {
		t.Errorf("failed %d, warned %d: %+v", failed, warned, rec.events)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// mutatingHost applies each removal to its host view, as the real host
// would change, so that a reconcile cut short can be run again.
type mutatingHost struct{ fakeHost }

func (m *mutatingHost) StopUnit(ctx context.Context, name string) error {
	m.h.Units = filter(m.h.Units, func(u pods.HostUnit) bool { return u.Name != name })
	return m.do("stop " + name)
}

func (m *mutatingHost) RemoveBundle(key string) error {
	m.h.Bundles = filter(m.h.Bundles, func(b string) bool { return b != key })
	m.h.Mounts = filter(m.h.Mounts, func(x pods.HostMount) bool { return x.Kind != "container" || x.Key != key })
	return m.do("bundle " + key)
}

func (m *mutatingHost) RemovePodDirs(_ context.Context, key string) error {
	m.h.Pods = filter(m.h.Pods, func(p pods.HostPod) bool { return p.Key != key })
	m.h.Mounts = filter(m.h.Mounts, func(x pods.HostMount) bool { return x.Kind != "pod" || x.Key != key })
	return m.do("dirs " + key)
}

func (m *mutatingHost) apply(op string) {
	verb, arg, _ := strings.Cut(op, " ")
	switch verb {
	case "stop":
		_ = m.StopUnit(context.Background(), arg)
	case "bundle":
		// What a removal of a bundle leaves: the Released list of its pod
		// shrinks with it.
		for i := range m.h.Pods {
			p := &m.h.Pods[i]
			p.Released = filter(p.Released, func(c string) bool { return ck(p.Namespace, p.Name, c) != arg })
			p.Begun = filter(p.Begun, func(c string) bool { return ck(p.Namespace, p.Name, c) != arg })
		}
		_ = m.RemoveBundle(arg)
	case "dirs":
		_ = m.RemovePodDirs(context.Background(), arg)
	}
}

func filter[T any](s []T, keep func(T) bool) []T {
	var out []T
	for _, v := range s {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}

// A berthd killed in the middle of a reconcile, after any prefix of its
// removals, finds the rest at its next start, for the same reasons, and
// never the stored pod.
func TestReconcileCutShortIsFinishedNextTime(t *testing.T) {
	mk := func() *mutatingHost {
		half := hostPod("default", "half", "u-half", "a", "b")
		half.Released = []string{"a"}
		return &mutatingHost{fakeHost{h: pods.Host{
			Pods: []pods.HostPod{hostPod("default", "keep", "u-keep", "app"), hostPod("default", "gone", "u-gone", "app"), half},
			Units: []pods.HostUnit{unit("default", "keep", "app", "active"), unit("default", "gone", "app", "active"),
				unit("default", "half", "a", "active"), unit("default", "stray", "x", "active")},
			Bundles: []string{ck("default", "keep", "app"), ck("default", "gone", "app"), ck("default", "half", "a"), ck("default", "half", "b")},
			Mounts: []pods.HostMount{{Path: "/run/berth/pods/default_keep/ns/net", Kind: "pod", Key: "default_keep"},
				{Path: "/run/berth/pods/default_gone/ns/net", Kind: "pod", Key: "default_gone"}},
		}}}
	}
	store := fakeStore{storedPod("default", "keep", "u-keep", "app"), storedPod("default", "half", "u-half", "a", "b")}
	full := mk()
	if _, err, _ := run(t, store, &full.fakeHost); err != nil {
		t.Fatal(err)
	}
	// run used fakeHost's methods; the full list of removals:
	all := append([]string(nil), full.ops...)
	if len(all) != 8 {
		t.Fatalf("full run: %v", all)
	}
	for k := 0; k <= len(all); k++ {
		h := mk()
		for _, op := range all[:k] {
			h.apply(op)
		}
		h.ops = nil
		rec := &fakeRecorder{}
		rep, err := New(Config{Store: store, Host: h, Recorder: rec, NodeName: "n"}).Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Adopted) != 1 || rep.Adopted[0].Name != "keep" {
			t.Fatalf("after %d of %d: adopted %+v", k, len(all), rep.Adopted)
		}
		done := map[string]bool{}
		for _, op := range append(append([]string{}, all[:k]...), h.ops...) {
			if strings.Contains(op, "keep") {
				t.Fatalf("after %d of %d: touched the stored pod: %s", k, len(all), op)
			}
			done[op] = true
		}
		for _, op := range all {
			if !done[op] {
				t.Errorf("after %d of %d: %s never done (second run: %v)", k, len(all), op, h.ops)
			}
		}
		// The reasons do not change while the record is there.
		for _, g := range rep.Removed {
			if g.Pod != nil && g.Pod.Name == "half" && !strings.Contains(g.Why, "never completed") {
				t.Errorf("after %d: half is now %q", k, g.Why)
			}
		}
	}
}

// With a state file created by this start, running containers of pods the
// (empty) store does not know are left alone; what does not run is still
// cleaned up.
func TestFreshStoreSparesRunningContainers(t *testing.T) {
	h := &fakeHost{h: pods.Host{
		Pods:    []pods.HostPod{hostPod("default", "web", "u1", "app"), hostPod("default", "done", "u2", "app")},
		Units:   []pods.HostUnit{unit("default", "web", "app", "active"), unit("default", "done", "app", "failed")},
		Bundles: []string{ck("default", "web", "app"), ck("default", "done", "app")},
	}}
	r := New(Config{Store: fakeStore{}, Host: h, Recorder: &fakeRecorder{}, NodeName: "node1", FreshStore: true})
	rep, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range h.ops {
		if strings.Contains(op, "web") {
			t.Errorf("a running container was touched with a fresh store: %v", h.ops)
		}
	}
	if len(rep.Kept) != 1 || rep.Kept[0].Key != "default_web" {
		t.Errorf("kept %+v", rep.Kept)
	}
	if len(rep.Removed) != 1 || rep.Removed[0].Key != "default_done" {
		t.Errorf("removed %+v", rep.Removed)
	}
}

// Units of another state directory are another berth's: with an empty
// store, and even when a pod directory here has their pod's key, none of
// them is stopped, and none counts as a container of a pod here that runs.
func TestForeignUnitsAreLeftAlone(t *testing.T) {
	foreign := func(u pods.HostUnit, dir string) pods.HostUnit { u.StateDir = dir; return u }
	unpinned := hostPod("default", "web", "u1", "app")
	unpinned.Pinned = false
	h := &fakeHost{h: pods.Host{
		Pods:  []pods.HostPod{unpinned},
		Units: []pods.HostUnit{unit("default", "gone", "app", "active")},
		Foreign: []pods.HostUnit{
			foreign(unit("default", "other", "app", "active"), "/var/lib/berth2"),
			// Its name is that of the unpinned pod's container here: it
			// must not make that pod look as if it ran.
			foreign(unit("default", "web", "app", "active"), "/var/lib/berth2"),
			foreign(unit("default", "stray", "app", "active"), ""),
		},
		Bundles: []string{ck("default", "web", "app")},
	}}
	rep, err, _ := run(t, fakeStore{storedPod("default", "web", "u1", "app")}, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range h.ops {
		for _, f := range h.h.Foreign {
			if op == "stop "+f.Name {
				t.Errorf("a foreign unit was stopped: %s", op)
			}
		}
	}
	if len(rep.Adopted) != 0 {
		t.Errorf("adopted %+v: a foreign unit counted as its running container", rep.Adopted)
	}
	want := []string{"stop " + unitgen.UnitName("default", "gone", "app"), "bundle " + ck("default", "web", "app"), "dirs default_web"}
	if strings.Join(h.ops, ", ") != strings.Join(want, ", ") {
		t.Errorf("ops %v, want %v", h.ops, want)
	}
	if len(rep.Foreign) != 3 || rep.Foreign[0] != (Foreign{Unit: unitgen.UnitName("default", "other", "app"), StateDir: "/var/lib/berth2"}) {
		t.Errorf("foreign %+v", rep.Foreign)
	}
}

// Two berths that share a run directory: a run directory without a state
// directory here, whose pod another state directory's units run, is that
// berth's and is kept (with a Warning); one nobody's units run is removed.
func TestSharedRunDirectory(t *testing.T) {
	runOnly := func(name string) pods.HostPod {
		return pods.HostPod{Key: unitgen.PodKey("default", name), RecordErr: fmt.Errorf("no record: %w", errdefs.ErrNotFound), Run: true, Pinned: true}
	}
	other := unit("default", "other", "app", "active")
	other.StateDir = "/var/lib/berth-c"
	h := &fakeHost{h: pods.Host{
		Pods:    []pods.HostPod{runOnly("other"), runOnly("nobody")},
		Foreign: []pods.HostUnit{other},
		Mounts: []pods.HostMount{
			{Path: "/run/berth/pods/default_other/ns/net", Kind: "pod", Key: "default_other", Type: "nsfs"},
			{Path: "/run/berth/pods/default_nobody/ns/net", Kind: "pod", Key: "default_nobody", Type: "nsfs"},
		},
	}}
	rep, err, rec := run(t, nil, h)
	if err != nil {
		t.Fatal(err)
	}
	if want := "dirs default_nobody"; strings.Join(h.ops, ", ") != want {
		t.Errorf("ops %v, want %s", h.ops, want)
	}
	if len(rep.Kept) != 1 || rep.Kept[0].Key != "default_other" || !strings.Contains(rep.Kept[0].Why, "/var/lib/berth-c") {
		t.Errorf("kept %+v", rep.Kept)
	}
	var warned bool
	for _, ev := range rec.events {
		warned = warned || (ev.typ == corev1.EventTypeWarning && ev.reason == ReasonSharedRunDirectory && strings.Contains(ev.msg, "default_other"))
	}
	if !warned {
		t.Errorf("no %s event: %+v", ReasonSharedRunDirectory, rec.events)
	}
}
