package replicaset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/store"
)

// fakeAPI stands in for api/server's in-process calls over a real store:
// creates name from generateName and store; deletes remove at once; a
// limit refuses creates beyond it with a quota's Forbidden.
type fakeAPI struct {
	st    *store.Store
	n     int
	limit int // creates allowed; -1: any
}

func (a *fakeAPI) Create(resource string, obj store.Object) error {
	if a.limit >= 0 && a.n >= a.limit {
		return apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, obj.GetGenerateName()+"xxxxx", errors.New("exceeded quota: q"))
	}
	a.n++
	obj.SetName(fmt.Sprintf("%s%05d", obj.GetGenerateName(), a.n))
	return a.st.Create(store.Resource(resource), obj)
}

func (a *fakeAPI) Delete(resource, ns, name string, uid types.UID) error {
	_, err := a.st.Delete(store.Resource(resource), ns, name, uid, "")
	return err
}

type events []string

func (e *events) Event(_ *corev1.ObjectReference, _, reason, message string) {
	*e = append(*e, reason+": "+message)
}

func setup(t *testing.T) (*Controller, *store.Store, *fakeAPI, *events) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	api := &fakeAPI{st: st, limit: -1}
	ev := &events{}
	return New(Config{Store: st, API: api, Events: ev}), st, api, ev
}

func newRS(name string, replicas int32) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{
		TypeMeta:   metav1.TypeMeta{Kind: "ReplicaSet", APIVersion: "apps/v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}},
	}
}

func listPods(t *testing.T, st *store.Store) []*corev1.Pod {
	t.Helper()
	var out []*corev1.Pod
	if _, err := st.List(pods, "ns", func(b []byte) error {
		var p corev1.Pod
		if err := jsonUnmarshal(b, &p); err != nil {
			return err
		}
		out = append(out, &p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func getRS(t *testing.T, st *store.Store, name string) *appsv1.ReplicaSet {
	t.Helper()
	var rs appsv1.ReplicaSet
	if err := st.Get(replicaSets, "ns", name, &rs); err != nil {
		t.Fatal(err)
	}
	return &rs
}

func pass(t *testing.T, c *Controller) error {
	t.Helper()
	return c.Sync(context.Background())
}

// A ReplicaSet gets its pods from its template, owned by it; adopts an
// orphan it selects and deletes the surplus; releases a pod it no longer
// selects; counts them in its status; its pods go with it.
func TestReplicaSetPods(t *testing.T) {
	c, st, _, ev := setup(t)
	if err := st.Create(replicaSets, newRS("web", 3)); err != nil {
		t.Fatal(err)
	}
	if err := pass(t, c); err != nil {
		t.Fatal(err)
	}
	ps := listPods(t, st)
	if len(ps) != 3 {
		t.Fatalf("%d pods, want 3", len(ps))
	}
	rs := getRS(t, st, "web")
	for _, p := range ps {
		ref := metav1.GetControllerOf(p)
		if !strings.HasPrefix(p.Name, "web-") || p.Labels["app"] != "web" || ref == nil || ref.UID != rs.UID || ref.Kind != "ReplicaSet" || !*ref.BlockOwnerDeletion {
			t.Errorf("pod %s: %+v", p.Name, p.ObjectMeta)
		}
	}
	if rs.Status.Replicas != 3 || rs.Status.FullyLabeledReplicas != 3 || rs.Status.ReadyReplicas != 0 || rs.Status.ObservedGeneration != rs.Generation {
		t.Errorf("status %+v", rs.Status)
	}
	if len(*ev) != 3 || (*ev)[0] != "SuccessfulCreate: Created pod: web-00001" {
		t.Errorf("events %v", *ev)
	}
	// Settled: nothing more.
	*ev = nil
	if err := pass(t, c); err != nil || len(*ev) != 0 || len(listPods(t, st)) != 3 {
		t.Errorf("a settled pass: %v %v", err, *ev)
	}

	// Ready pods count, after minReadySeconds as available.
	now := time.Now()
	c.cfg.Now = func() time.Time { return now }
	for i, p := range ps {
		ready := metav1.NewTime(now.Add(-time.Duration(i) * time.Minute))
		if _, err := st.Modify(pods, "ns", p.Name, &corev1.Pod{}, func(cur store.Object) (store.Decision, error) {
			x := cur.(*corev1.Pod)
			x.Status.Phase = corev1.PodRunning
			x.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: ready}}
			return store.Decision{}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Modify(replicaSets, "ns", "web", &appsv1.ReplicaSet{}, func(cur store.Object) (store.Decision, error) {
		cur.(*appsv1.ReplicaSet).Spec.MinReadySeconds = 90
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := pass(t, c); err != nil {
		t.Fatal(err)
	}
	if st := getRS(t, st, "web").Status; st.ReadyReplicas != 3 || st.AvailableReplicas != 1 {
		t.Errorf("ready %d available %d, want 3 and 1 (ready for 90 s)", st.ReadyReplicas, st.AvailableReplicas)
	}

	// An orphan it selects is adopted; one too many: the one ranked first
	// (not ready) goes.
	orphan := &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "orphan", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	if err := st.Create(pods, orphan); err != nil {
		t.Fatal(err)
	}
	*ev = nil
	if err := pass(t, c); err != nil {
		t.Fatal(err)
	}
	ps = listPods(t, st)
	if len(ps) != 3 {
		t.Errorf("%d pods after the adoption, want 3", len(ps))
	}
	for _, p := range ps {
		if p.Name == "orphan" {
			t.Errorf("the adopted surplus pod, not ready, is still there")
		}
	}
	if len(*ev) != 1 || (*ev)[0] != "SuccessfulDelete: Deleted pod: orphan" {
		t.Errorf("events %v", *ev)
	}

	// Relabelled out of the selector: released, and replaced.
	if _, err := st.Modify(pods, "ns", ps[0].Name, &corev1.Pod{}, func(cur store.Object) (store.Decision, error) {
		cur.(*corev1.Pod).Labels["app"] = "debug"
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := pass(t, c); err != nil {
		t.Fatal(err)
	}
	var released *corev1.Pod
	n := 0
	for _, p := range listPods(t, st) {
		if p.Name == ps[0].Name {
			released = p
		} else {
			n++
		}
	}
	if released == nil || metav1.GetControllerOf(released) != nil || n != 3 {
		t.Errorf("released %+v, %d others (want 3)", released, n)
	}

	// The ReplicaSet goes: its pods go, the released one stays.
	if _, err := st.Delete(replicaSets, "ns", "web", "", ""); err != nil {
		t.Fatal(err)
	}
	if err := pass(t, c); err != nil {
		t.Fatal(err)
	}
	if left := listPods(t, st); len(left) != 1 || left[0].Name != ps[0].Name {
		t.Errorf("pods left: %d", len(left))
	}
}

// A refused create stops the pass: the FailedCreate Event with the API's
// message, the ReplicaFailure condition; it goes once creates succeed.
func TestReplicaFailure(t *testing.T) {
	c, st, api, ev := setup(t)
	api.limit = 2
	if err := st.Create(replicaSets, newRS("capped", 4)); err != nil {
		t.Fatal(err)
	}
	if err := pass(t, c); err == nil {
		t.Fatal("a pass with a refused create reports no error")
	}
	if n := len(listPods(t, st)); n != 2 {
		t.Errorf("%d pods, want 2", n)
	}
	want := `Error creating: pods "capped-xxxxx" is forbidden: exceeded quota: q`
	if len(*ev) != 3 || (*ev)[2] != "FailedCreate: "+want {
		t.Errorf("events %v", *ev)
	}
	rs := getRS(t, st, "capped")
	if len(rs.Status.Conditions) != 1 || rs.Status.Conditions[0].Type != appsv1.ReplicaSetReplicaFailure || rs.Status.Conditions[0].Reason != "FailedCreate" ||
		rs.Status.Conditions[0].Message != strings.TrimPrefix(want, "Error creating: ") || rs.Status.Replicas != 2 {
		t.Errorf("status %+v", rs.Status)
	}
	api.limit = -1
	if err := pass(t, c); err != nil {
		t.Fatal(err)
	}
	if rs := getRS(t, st, "capped"); len(rs.Status.Conditions) != 0 || rs.Status.Replicas != 4 {
		t.Errorf("after room was made: %+v", rs.Status)
	}
}

// The deletion ranking: pending before running, not ready before ready,
// ready for less time first, more restarts first, newer first.
func TestPodsToDelete(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pod := func(name string, phase corev1.PodPhase, ready *time.Time, restarts int32, created time.Time) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}, Status: corev1.PodStatus{Phase: phase,
			ContainerStatuses: []corev1.ContainerStatus{{RestartCount: restarts}}}}
		if ready != nil {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(*ready)}}
		}
		return p
	}
	early, late := t0.Add(time.Minute), t0.Add(time.Hour)
	ps := []*corev1.Pod{
		pod("old-ready", corev1.PodRunning, &early, 0, t0),
		pod("new-ready", corev1.PodRunning, &late, 0, t0),
		pod("running-not-ready", corev1.PodRunning, nil, 0, t0),
		pod("restarts", corev1.PodRunning, nil, 3, t0),
		pod("newer", corev1.PodRunning, nil, 0, t0.Add(time.Second)),
		pod("pending", corev1.PodPending, nil, 0, t0),
	}
	var got []string
	for _, p := range podsToDelete(ps, len(ps)) {
		got = append(got, p.Name)
	}
	if want := "pending restarts newer running-not-ready new-ready old-ready"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
