package deployment

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/agent/store"
)

// fakeAPI creates and deletes in a real store, as the API would for the
// controller's ReplicaSets.
type fakeAPI struct{ st *store.Store }

func (a *fakeAPI) Create(resource string, obj store.Object) error {
	return a.st.Create(store.Resource(strings.TrimPrefix(resource, "apps/")), obj)
}

func (a *fakeAPI) Delete(resource, ns, name string, uid types.UID) error {
	_, err := a.st.Delete(store.Resource(strings.TrimPrefix(resource, "apps/")), ns, name, uid, "")
	return err
}

type events []string

func (e *events) Event(_ *corev1.ObjectReference, _, _, message string) { *e = append(*e, message) }

func newDeployment(replicas int32, surge, unavailable string, env string) *appsv1.Deployment {
	s, u := intstr.Parse(surge), intstr.Parse(unavailable)
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{Kind: "Deployment", APIVersion: "apps/v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &s, MaxUnavailable: &u}},
			RevisionHistoryLimit: ptr(int32(1)), ProgressDeadlineSeconds: ptr(int32(600)),
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i", Env: []corev1.EnvVar{{Name: "V", Value: env}}}}}}},
	}
}

func ptr[T any](v T) *T { return &v }

// The fenceposts: surge rounded up, unavailable down, 1 if both are 0.
func TestFenceposts(t *testing.T) {
	for _, tc := range []struct {
		replicas               int32
		surge, unavailable     string
		wantSurge, wantUnavail int32
	}{
		{10, "25%", "25%", 3, 2},
		{3, "25%", "25%", 1, 0},
		{3, "0", "0", 0, 1},
		{4, "1", "50%", 1, 2},
		{2, "0", "5", 0, 2}, // MaxUnavailable caps at the replicas
	} {
		d := newDeployment(tc.replicas, tc.surge, tc.unavailable, "")
		if s, u := maxSurge(d), maxUnavailable(d); s != tc.wantSurge || u != tc.wantUnavail {
			t.Errorf("%d replicas, surge %s, unavailable %s: %d, %d; want %d, %d", tc.replicas, tc.surge, tc.unavailable, s, u, tc.wantSurge, tc.wantUnavail)
		}
	}
}

// The hash is stable, changes with the template and with the collision
// count, and is in SafeEncodeString's alphabet.
func TestComputeHash(t *testing.T) {
	a, b := newDeployment(1, "1", "0", "a"), newDeployment(1, "1", "0", "b")
	h := ComputeHash(&a.Spec.Template, nil)
	if h != ComputeHash(&a.Spec.Template, nil) || h == ComputeHash(&b.Spec.Template, nil) || h == ComputeHash(&a.Spec.Template, ptr(int32(1))) {
		t.Errorf("hash %s not stable or not distinct", h)
	}
	if strings.Trim(h, "bcdfghjklmnpqrstvwxz2456789") != "" {
		t.Errorf("hash %q outside the alphabet", h)
	}
}

func rsOf(t *testing.T, st *store.Store) map[string]*appsv1.ReplicaSet {
	t.Helper()
	out := map[string]*appsv1.ReplicaSet{}
	if _, err := st.List(replicaSets, "ns", func(b []byte) error {
		var rs appsv1.ReplicaSet
		if err := json.Unmarshal(b, &rs); err != nil {
			return err
		}
		out[rs.Spec.Template.Spec.Containers[0].Env[0].Value] = &rs
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// setAvailable plays the ReplicaSet controller: every ReplicaSet's pods
// exist and are available.
func setAvailable(t *testing.T, st *store.Store) {
	t.Helper()
	for _, rs := range rsOf(t, st) {
		if _, err := st.Modify(replicaSets, "ns", rs.Name, &appsv1.ReplicaSet{}, func(cur store.Object) (store.Decision, error) {
			x := cur.(*appsv1.ReplicaSet)
			n := *x.Spec.Replicas
			x.Status = appsv1.ReplicaSetStatus{Replicas: n, ReadyReplicas: n, AvailableReplicas: n, FullyLabeledReplicas: n, ObservedGeneration: x.Generation}
			return store.Decision{}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// A rolling update from template a to b with maxSurge 1, maxUnavailable 0:
// the new ReplicaSet never takes the total above 4, the old one never
// goes below what keeps 3 available; at the end the old one has 0 and,
// beyond revisionHistoryLimit, older ones go.
func TestRollingUpdate(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ev := &events{}
	c := New(Config{Store: st, API: &fakeAPI{st}, Events: ev})
	ctx := context.Background()
	if err := st.Create(deployments, newDeployment(3, "1", "0", "a")); err != nil {
		t.Fatal(err)
	}
	pass := func() {
		t.Helper()
		if err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pass()
	setAvailable(t, st)
	pass()
	rs := rsOf(t, st)
	a := rs["a"]
	if a == nil || *a.Spec.Replicas != 3 || a.Labels[hashLabel] == "" || a.Name != "web-"+a.Labels[hashLabel] || a.Annotations[revisionAnn] != "1" {
		t.Fatalf("first replicaset: %+v", a)
	}
	var d appsv1.Deployment
	if err := st.Get(deployments, "ns", "web", &d); err != nil {
		t.Fatal(err)
	}
	if d.Status.AvailableReplicas != 3 || d.Annotations[revisionAnn] != "1" || condition(d.Status.Conditions, appsv1.DeploymentProgressing).Reason != reasonNewRSAvailable {
		t.Errorf("deployment status %+v", d.Status)
	}

	change := func(env string) {
		t.Helper()
		if _, err := st.Modify(deployments, "ns", "web", &appsv1.Deployment{}, func(cur store.Object) (store.Decision, error) {
			cur.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Env[0].Value = env
			return store.Decision{BumpGeneration: true}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	change("b")
	for step := 0; step < 10; step++ {
		pass()
		rs = rsOf(t, st)
		total := *rs["a"].Spec.Replicas
		if rs["b"] != nil {
			total += *rs["b"].Spec.Replicas
		}
		if total > 4 {
			t.Fatalf("step %d: %d replicas, above 3 + maxSurge 1", step, total)
		}
		setAvailable(t, st)
		if rs["b"] != nil && *rs["b"].Spec.Replicas == 3 && *rs["a"].Spec.Replicas == 0 {
			break
		}
	}
	rs = rsOf(t, st)
	if *rs["a"].Spec.Replicas != 0 || *rs["b"].Spec.Replicas != 3 || rs["b"].Annotations[revisionAnn] != "2" {
		t.Fatalf("after the rollout: a %d, b %d (revision %s)", *rs["a"].Spec.Replicas, *rs["b"].Spec.Replicas, rs["b"].Annotations[revisionAnn])
	}
	want := "Scaled down replica set " + rs["a"].Name + " to 2 from 3"
	if !strings.Contains(strings.Join(*ev, "\n"), want) {
		t.Errorf("events %v lack %q", *ev, want)
	}
	// A third template: a (revision 1, idle) is beyond the history limit of 1.
	change("c")
	for step := 0; step < 10; step++ {
		pass()
		setAvailable(t, st)
	}
	pass()
	rs = rsOf(t, st)
	if rs["a"] != nil || rs["b"] == nil || rs["c"] == nil || *rs["c"].Spec.Replicas != 3 {
		t.Errorf("replicasets after a third template: %v", rs)
	}
}

// Proportional scaling, the example of the Deployment documentation: 10
// replicas, maxSurge 3, maxUnavailable 2, a rollout under way with the
// old ReplicaSet at 8 and the new one at 5 (none of its pods available
// yet); scaled to 15, the 5 replicas maxSurge now allows are shared in
// proportion: 3 to the old one (11), 2 to the new one (7). Scaled down to
// 5, the shares shrink the same way, the oldest first between equals.
func TestProportionalScaling(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ev := &events{}
	c := New(Config{Store: st, API: &fakeAPI{st}, Events: ev})
	pass := func() {
		t.Helper()
		if err := c.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Create(deployments, newDeployment(10, "3", "2", "a")); err != nil {
		t.Fatal(err)
	}
	pass()
	setAvailable(t, st)
	pass()
	modify := func(fn func(d *appsv1.Deployment)) {
		t.Helper()
		if _, err := st.Modify(deployments, "ns", "web", &appsv1.Deployment{}, func(cur store.Object) (store.Decision, error) {
			fn(cur.(*appsv1.Deployment))
			return store.Decision{BumpGeneration: true}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// settle plays the ReplicaSet controller without any new pod becoming
	// available: each ReplicaSet has the pods its spec asks for.
	settle := func() {
		t.Helper()
		for _, rs := range rsOf(t, st) {
			if _, err := st.Modify(replicaSets, "ns", rs.Name, &appsv1.ReplicaSet{}, func(cur store.Object) (store.Decision, error) {
				x := cur.(*appsv1.ReplicaSet)
				x.Status.Replicas = *x.Spec.Replicas
				x.Status.AvailableReplicas = min(x.Status.AvailableReplicas, *x.Spec.Replicas)
				x.Status.ReadyReplicas = x.Status.AvailableReplicas
				return store.Decision{}, nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	modify(func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Env[0].Value = "b" })
	pass()
	sizes := func() (int32, int32) {
		rs := rsOf(t, st)
		return *rs["a"].Spec.Replicas, *rs["b"].Spec.Replicas
	}
	// The old ReplicaSet's 2 pods not yet deleted count: the new one
	// waits at 3 (8 + 3 + 2 = 13 pods).
	pass()
	if a, b := sizes(); a != 8 || b != 3 {
		t.Fatalf("before the old pods are deleted: old %d, new %d; want 8 and 3", a, b)
	}
	settle()
	pass()
	settle()
	if a, b := sizes(); a != 8 || b != 5 {
		t.Fatalf("the rollout under way: old %d, new %d; want 8 and 5", a, b)
	}
	modify(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(15)) })
	pass()
	if a, b := sizes(); a != 11 || b != 7 {
		t.Errorf("scaled to 15: old %d, new %d; want 11 and 7", a, b)
	}
	rs := rsOf(t, st)
	for _, want := range []string{"Scaled up replica set " + rs["a"].Name + " to 11 from 8", "Scaled up replica set " + rs["b"].Name + " to 7 from 5"} {
		if !strings.Contains(strings.Join(*ev, "\n"), want) {
			t.Errorf("events %v lack %q", *ev, want)
		}
	}
	if rs["a"].Annotations[desiredAnn] != "15" || rs["b"].Annotations[maxAnn] != "18" {
		t.Errorf("annotations: %v %v", rs["a"].Annotations, rs["b"].Annotations)
	}
	// Down to 5 (allowed 8 with maxSurge 3): 18 → 8, 10 fewer; the old
	// one round(11*8/18) = 5, the new one round(7*8/18) = 3.
	modify(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(5)) })
	pass()
	if a, b := sizes(); a != 5 || b != 3 {
		t.Errorf("scaled to 5: old %d, new %d; want 5 and 3", a, b)
	}
}

// progressDeadlineSeconds: a rollout whose pods never become available
// is Progressing=True (NewReplicaSetCreated) until the deadline passes
// from its last progress, then False with ProgressDeadlineExceeded and
// upstream's message; the pass before the deadline asks to be woken at it.
func TestProgressDeadline(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	c := New(Config{Store: st, API: &fakeAPI{st}, Events: &events{}, Now: func() time.Time { return now }})
	if err := st.Create(deployments, newDeployment(2, "1", "0", "a")); err != nil {
		t.Fatal(err)
	}
	progressing := func() appsv1.DeploymentCondition {
		t.Helper()
		if err := c.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		var d appsv1.Deployment
		if err := st.Get(deployments, "ns", "web", &d); err != nil {
			t.Fatal(err)
		}
		if p := condition(d.Status.Conditions, appsv1.DeploymentProgressing); p != nil {
			return *p
		}
		return appsv1.DeploymentCondition{}
	}
	if p := progressing(); p.Status != corev1.ConditionTrue || p.Reason != reasonNewRSCreated {
		t.Fatalf("at the start: %+v", p)
	}
	now = now.Add(599 * time.Second)
	if p := progressing(); p.Status != corev1.ConditionTrue {
		t.Fatalf("before the deadline: %+v", p)
	}
	now = now.Add(2 * time.Second)
	name := rsOf(t, st)["a"].Name
	if p := progressing(); p.Status != corev1.ConditionFalse || p.Reason != "ProgressDeadlineExceeded" || p.Message != `ReplicaSet "`+name+`" has timed out progressing.` {
		t.Errorf("past the deadline: %+v", p)
	}
}

// A ReplicaSet whose desired-replicas annotation disagrees while its size
// is right (sized by hand) is a scaling event once: its annotations are
// written, and a template change then rolls out.
func TestScalingEventEnds(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := New(Config{Store: st, API: &fakeAPI{st}, Events: &events{}})
	pass := func() {
		t.Helper()
		if err := c.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Create(deployments, newDeployment(3, "1", "0", "a")); err != nil {
		t.Fatal(err)
	}
	pass()
	setAvailable(t, st)
	pass()
	a := rsOf(t, st)["a"]
	if _, err := st.Modify(replicaSets, "ns", a.Name, &appsv1.ReplicaSet{}, func(cur store.Object) (store.Decision, error) {
		cur.(*appsv1.ReplicaSet).Annotations[desiredAnn] = "2"
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Modify(deployments, "ns", "web", &appsv1.Deployment{}, func(cur store.Object) (store.Decision, error) {
		cur.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Env[0].Value = "b"
		return store.Decision{BumpGeneration: true}, nil
	}); err != nil {
		t.Fatal(err)
	}
	pass()
	pass()
	rs := rsOf(t, st)
	if rs["a"].Annotations[desiredAnn] != "3" || rs["b"] == nil {
		t.Errorf("after two passes: a's desired-replicas %q, new replicaset %v", rs["a"].Annotations[desiredAnn], rs["b"] != nil)
	}
}
