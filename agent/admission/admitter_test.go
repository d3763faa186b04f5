package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func testPod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
}

func testQuota(ns, name string, hard corev1.ResourceList) *corev1.ResourceQuota {
	return &corev1.ResourceQuota{
		TypeMeta:   metav1.TypeMeta{Kind: "ResourceQuota", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ResourceQuotaSpec{Hard: hard},
	}
}

// create is what the API's create does around the store: validating
// admission, the create, the commit.
func create(a *Admitter, st *store.Store, res store.Resource, obj store.Object) error {
	commit, err := a.Validate(res, obj, nil, false)
	if err != nil {
		return err
	}
	err = st.Create(res, obj)
	commit(err == nil)
	return err
}

func quotaStatus(t *testing.T, st *store.Store, ns, name string) corev1.ResourceQuotaStatus {
	t.Helper()
	var q corev1.ResourceQuota
	if err := st.Get("resourcequotas", ns, name, &q); err != nil {
		t.Fatal(err)
	}
	return q.Status
}

// Concurrent creates against a pods quota never overshoot: admission is
// serialised per namespace from the check to the stored status.
func TestConcurrentCreatesFitTheQuota(t *testing.T) {
	st := openStore(t)
	a := New(st, Options{})
	if err := create(a, st, "resourcequotas", testQuota("ns", "five", corev1.ResourceList{corev1.ResourcePods: resource.MustParse("5")})); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted, refused := 0, 0
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := create(a, st, "pods", testPod("ns", fmt.Sprintf("p%d", i)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				admitted++
			case errdefs.IsPermissionDenied(err) && err.Error() == "exceeded quota: five, requested: pods=1, used: pods=5, limited: pods=5":
				refused++
			default:
				t.Errorf("create p%d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if admitted != 5 || refused != 15 {
		t.Errorf("%d admitted, %d refused; want 5 and 15", admitted, refused)
	}
	if used := quotaStatus(t, st, "ns", "five").Used[corev1.ResourcePods]; used.String() != "5" {
		t.Errorf("status.used.pods = %s, want 5", used.String())
	}
}

// A quota's status is there as soon as it is created, counting what the
// namespace already holds; a dry run charges nothing.
func TestQuotaStatusAtCreate(t *testing.T) {
	st := openStore(t)
	a := New(st, Options{})
	for _, n := range []string{"a", "b"} {
		if err := create(a, st, "pods", testPod("ns", n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := create(a, st, "resourcequotas", testQuota("ns", "q", corev1.ResourceList{corev1.ResourcePods: resource.MustParse("3"), "count/configmaps": resource.MustParse("1")})); err != nil {
		t.Fatal(err)
	}
	s := quotaStatus(t, st, "ns", "q")
	if p, c := s.Used[corev1.ResourcePods], s.Used["count/configmaps"]; p.String() != "2" || c.String() != "0" || len(s.Hard) != 2 {
		t.Errorf("status at create: %+v", s)
	}
	commit, err := a.Validate("pods", testPod("ns", "dry"), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	commit(true)
	if p := quotaStatus(t, st, "ns", "q").Used[corev1.ResourcePods]; p.String() != "2" {
		t.Errorf("a dry run was charged: pods=%s", p.String())
	}
}

// slices records SetNamespaceLimits.
type slices struct {
	mu  sync.Mutex
	set map[string][2]int64
}

func (s *slices) SetNamespaceLimits(_ context.Context, ns string, cpu, mem int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set[ns] = [2]int64{cpu, mem}
	return nil
}

func (s *slices) get(ns string) ([2]int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.set[ns]
	return v, ok
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened", what)
		}
	}
}

// The controller gives usage back when a pod finishes or goes, follows a
// quota's spec, and applies its limits to the namespace's slice.
func TestControllerReplenishesAndLimitsSlices(t *testing.T) {
	st := openStore(t)
	a := New(st, Options{Resources: []store.Resource{"pods", "configmaps"}})
	sl := &slices{set: map[string][2]int64{}}
	a.SetSlices(sl)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := st.Create("namespaces", &corev1.Namespace{TypeMeta: metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "ns"}}); err != nil {
		t.Fatal(err)
	}
	if err := create(a, st, "resourcequotas", testQuota("ns", "q", corev1.ResourceList{
		corev1.ResourcePods: resource.MustParse("2"), corev1.ResourceLimitsMemory: resource.MustParse("1Gi"), corev1.ResourceLimitsCPU: resource.MustParse("1500m")})); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the slice's limits", func() bool { v, _ := sl.get("ns"); return v == [2]int64{1500, 1 << 30} })
	p := testPod("ns", "done")
	p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("1Mi")}
	if err := create(a, st, "pods", p); err != nil {
		t.Fatal(err)
	}
	if u := quotaStatus(t, st, "ns", "q").Used[corev1.ResourcePods]; u.String() != "1" {
		t.Fatalf("pods used %s after a create", u.String())
	}
	// The pod finishes: its usage is given back.
	if _, err := st.Modify("pods", "ns", "done", &corev1.Pod{}, func(cur store.Object) (store.Decision, error) {
		cur.(*corev1.Pod).Status.Phase = corev1.PodSucceeded
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a finished pod's usage given back", func() bool {
		s := quotaStatus(t, st, "ns", "q")
		p, m := s.Used[corev1.ResourcePods], s.Used[corev1.ResourceLimitsMemory]
		return p.String() == "0" && m.String() == "0"
	})
	// The quota's spec changes (an update, not admitted): its status and
	// the slice follow.
	if _, err := st.Modify("resourcequotas", "ns", "q", &corev1.ResourceQuota{}, func(cur store.Object) (store.Decision, error) {
		cur.(*corev1.ResourceQuota).Spec.Hard = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("4"), corev1.ResourceLimitsMemory: resource.MustParse("512Mi")}
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new spec in status and slice", func() bool {
		s := quotaStatus(t, st, "ns", "q")
		v, _ := sl.get("ns")
		p := s.Hard[corev1.ResourcePods]
		return p.String() == "4" && len(s.Hard) == 2 && v == [2]int64{0, 512 << 20}
	})
	// The quota goes: so do the slice's limits.
	var q corev1.ResourceQuota
	if err := st.Get("resourcequotas", "ns", "q", &q); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Delete("resourcequotas", "ns", "q", q.UID, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the slice's limits removed", func() bool { v, _ := sl.get("ns"); return v == [2]int64{} })
}

func TestSliceLimits(t *testing.T) {
	q := func(hard map[corev1.ResourceName]string, scoped bool) corev1.ResourceQuota {
		rl := corev1.ResourceList{}
		for k, v := range hard {
			rl[k] = resource.MustParse(v)
		}
		out := *testQuota("ns", "q", rl)
		if scoped {
			out.Spec.Scopes = []corev1.ResourceQuotaScope{corev1.ResourceQuotaScopeNotBestEffort}
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		quotas   []corev1.ResourceQuota
		cpu, mem int64
	}{
		{"none", nil, 0, 0},
		{"requests only", []corev1.ResourceQuota{q(map[corev1.ResourceName]string{"requests.cpu": "1", "requests.memory": "1Gi"}, false)}, 0, 0},
		{"one", []corev1.ResourceQuota{q(map[corev1.ResourceName]string{"limits.cpu": "2", "limits.memory": "1Gi"}, false)}, 2000, 1 << 30},
		{"smallest of two", []corev1.ResourceQuota{
			q(map[corev1.ResourceName]string{"limits.cpu": "2", "limits.memory": "512Mi"}, false),
			q(map[corev1.ResourceName]string{"limits.cpu": "500m", "limits.memory": "1Gi"}, false)}, 500, 512 << 20},
		{"scoped ignored", []corev1.ResourceQuota{q(map[corev1.ResourceName]string{"limits.cpu": "1"}, true)}, 0, 0},
		{"1m is the least cpu", []corev1.ResourceQuota{q(map[corev1.ResourceName]string{"limits.cpu": "1m"}, false)}, 1, 0},
		{"zero is the least, not no limit", []corev1.ResourceQuota{q(map[corev1.ResourceName]string{"limits.cpu": "0", "limits.memory": "0"}, false)}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if cpu, mem := SliceLimits(tc.quotas); cpu != tc.cpu || mem != tc.mem {
				t.Errorf("SliceLimits = %d, %d; want %d, %d", cpu, mem, tc.cpu, tc.mem)
			}
		})
	}
}

func TestChangesUsage(t *testing.T) {
	pod := func(phase corev1.PodPhase, deleting bool) []byte {
		p := testPod("ns", "p")
		p.Status.Phase = phase
		if deleting {
			now := metav1.Now()
			p.DeletionTimestamp = &now
		}
		b, _ := json.Marshal(p)
		return b
	}
	quota := func(spec, status string) []byte {
		q := testQuota("ns", "q", corev1.ResourceList{corev1.ResourcePods: resource.MustParse(spec)})
		if status != "" {
			q.Status.Hard = corev1.ResourceList{corev1.ResourcePods: resource.MustParse(status)}
		}
		b, _ := json.Marshal(q)
		return b
	}
	for _, tc := range []struct {
		name string
		ev   store.Event
		want bool
	}{
		{"pod created", store.Event{Type: store.Added, Resource: "pods", Object: pod(corev1.PodPending, false)}, false},
		{"pod running", store.Event{Type: store.Modified, Resource: "pods", Object: pod(corev1.PodRunning, false), Prev: pod(corev1.PodPending, false)}, false},
		{"pod finished", store.Event{Type: store.Modified, Resource: "pods", Object: pod(corev1.PodSucceeded, false), Prev: pod(corev1.PodRunning, false)}, true},
		{"pod failed", store.Event{Type: store.Modified, Resource: "pods", Object: pod(corev1.PodFailed, false), Prev: pod(corev1.PodRunning, false)}, true},
		{"pod being deleted", store.Event{Type: store.Modified, Resource: "pods", Object: pod(corev1.PodRunning, true), Prev: pod(corev1.PodRunning, false)}, true},
		{"pod gone", store.Event{Type: store.Deleted, Resource: "pods", Object: pod(corev1.PodRunning, true)}, true},
		{"pod changed, no before", store.Event{Type: store.Modified, Resource: "pods", Object: pod(corev1.PodRunning, false)}, true},
		{"configmap created", store.Event{Type: store.Added, Resource: "configmaps", Object: []byte(`{}`)}, false},
		{"configmap deleted", store.Event{Type: store.Deleted, Resource: "configmaps", Object: []byte(`{}`)}, true},
		{"quota created, no status", store.Event{Type: store.Added, Resource: "resourcequotas", Object: quota("2", "")}, true},
		{"quota status current", store.Event{Type: store.Modified, Resource: "resourcequotas", Object: quota("2", "2")}, false},
		{"quota spec changed", store.Event{Type: store.Modified, Resource: "resourcequotas", Object: quota("3", "2")}, true},
		{"bookmark", store.Event{Type: store.Bookmark}, false},
	} {
		if got := changesUsage(tc.ev); got != tc.want {
			t.Errorf("%s: changesUsage = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func testClaim(ns, name, size string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		TypeMeta:   metav1.TypeMeta{Kind: "PersistentVolumeClaim", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
}

// resize is what the API's update does around the store: Update's lock
// before the write, its validate inside it, done after.
func resize(a *Admitter, st *store.Store, ns, name, size string) error {
	validate, done := a.Update(ns)
	_, err := st.Modify("persistentvolumeclaims", ns, name, &corev1.PersistentVolumeClaim{}, func(cur store.Object) (store.Decision, error) {
		old := cur.DeepCopyObject().(*corev1.PersistentVolumeClaim)
		c := cur.(*corev1.PersistentVolumeClaim)
		c.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse(size)
		if err := validate("persistentvolumeclaims", c, old); err != nil {
			return store.Decision{}, err
		}
		return store.Decision{Replace: c}, nil
	})
	done(err == nil)
	return err
}

// Updates are serialised with creates: claims growing while others are
// created never take a storage quota past its hard limit, each is charged
// its growth, and a refused resize charges nothing. A LimitRange's
// maximum holds on a resize, and a pod's update is not charged.
func TestUpdatesFitTheQuota(t *testing.T) {
	st := openStore(t)
	a := New(st, Options{})
	if err := create(a, st, "resourcequotas", testQuota("ns", "storage", corev1.ResourceList{corev1.ResourceRequestsStorage: resource.MustParse("10Gi")})); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := create(a, st, "persistentvolumeclaims", testClaim("ns", fmt.Sprintf("c%d", i), "1Gi")); err != nil {
			t.Fatal(err)
		}
	}
	// 4Gi used, 6Gi left: four resizes by 2Gi and four 1Gi creates race
	// (14Gi asked for); whatever wins, the total stays within 10Gi.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range 4 {
		wg.Add(2)
		go func() { defer wg.Done(); errs[i] = resize(a, st, "ns", fmt.Sprintf("c%d", i), "3Gi") }()
		go func() {
			defer wg.Done()
			errs[4+i] = create(a, st, "persistentvolumeclaims", testClaim("ns", fmt.Sprintf("n%d", i), "1Gi"))
		}()
	}
	wg.Wait()
	want := resource.MustParse("4Gi")
	for i, err := range errs {
		switch {
		case err == nil && i < 4:
			want.Add(resource.MustParse("2Gi"))
		case err == nil:
			want.Add(resource.MustParse("1Gi"))
		case !errdefs.IsPermissionDenied(err):
			t.Errorf("write %d: %v, want admitted or forbidden", i, err)
		}
	}
	used := quotaStatus(t, st, "ns", "storage").Used[corev1.ResourceRequestsStorage]
	if used.Cmp(want) != 0 || used.Cmp(resource.MustParse("10Gi")) > 0 {
		t.Errorf("requests.storage used %s after the race, admitted writes add up to %s (hard 10Gi)", used.String(), want.String())
	}
	// What was stored adds up to what is charged.
	var total resource.Quantity
	if _, err := st.List("persistentvolumeclaims", "ns", func(b []byte) error {
		var c corev1.PersistentVolumeClaim
		if err := json.Unmarshal(b, &c); err != nil {
			return err
		}
		total.Add(c.Spec.Resources.Requests[corev1.ResourceStorage])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if total.Cmp(used) != 0 {
		t.Errorf("claims' requests add up to %s, the quota charges %s", total.String(), used.String())
	}

	if err := create(a, st, "limitranges", &corev1.LimitRange{
		TypeMeta:   metav1.TypeMeta{Kind: "LimitRange", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "max"},
		Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{Type: corev1.LimitTypePersistentVolumeClaim,
			Max: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("4Gi")}}}},
	}); err != nil {
		t.Fatal(err)
	}
	err := resize(a, st, "ns", "c0", "5Gi")
	if want := "maximum storage usage per PersistentVolumeClaim is 4Gi, but request is 5Gi"; err == nil || err.Error() != want {
		t.Errorf("resize over the LimitRange: %v, want %q", err, want)
	}
	if got := quotaStatus(t, st, "ns", "storage").Used[corev1.ResourceRequestsStorage]; got.Cmp(used) != 0 {
		t.Errorf("requests.storage used %s after a refused resize, want %s", got.String(), used.String())
	}
}

// What berthd's controllers create (Events) is admitted as a client's
// create: a count/events quota holds for them and is charged.
func TestAdmittedStoreCountsEvents(t *testing.T) {
	st := openStore(t)
	a := New(st, Options{})
	if err := create(a, st, "resourcequotas", testQuota("ns", "events", corev1.ResourceList{"count/events": resource.MustParse("2")})); err != nil {
		t.Fatal(err)
	}
	as := AdmittedStore{Store: st, A: a}
	event := func(name string) *corev1.Event {
		return &corev1.Event{TypeMeta: metav1.TypeMeta{Kind: "Event", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "p"}, Reason: "Started"}
	}
	for _, name := range []string{"e1", "e2"} {
		if err := as.Create("events", event(name)); err != nil {
			t.Fatalf("event %s within the quota: %v", name, err)
		}
	}
	err := as.Create("events", event("e3"))
	if want := "exceeded quota: events, requested: count/events=1, used: count/events=2, limited: count/events=2"; err == nil || err.Error() != want {
		t.Errorf("third event: %v, want %q", err, want)
	}
	if err := st.Get("events", "ns", "e3", &corev1.Event{}); !errdefs.IsNotFound(err) {
		t.Errorf("a refused event was stored: %v", err)
	}
	if got := quotaStatus(t, st, "ns", "events").Used["count/events"]; got.String() != "2" {
		t.Errorf("count/events used %s, want 2", got.String())
	}
	// Without an admitter it is the store's create.
	if err := (AdmittedStore{Store: st}).Create("events", event("e4")); err != nil {
		t.Errorf("create without admission: %v", err)
	}
}
