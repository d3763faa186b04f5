package events

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/berth-dev/berth/agent/store"
)

func newRecorder(t *testing.T) (*Recorder, *store.Store, *clocktesting.FakeClock) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	return New(Config{Store: st, Host: "node1", Clock: clk}), st, clk
}

func list(t *testing.T, st *store.Store) []corev1.Event {
	t.Helper()
	var out []corev1.Event
	if _, err := st.List(Resource, "", func(b []byte) error {
		var ev corev1.Event
		if err := json.Unmarshal(b, &ev); err != nil {
			return err
		}
		out = append(out, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func testPod() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "u1", ResourceVersion: "7"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}}}}
}

// The kubelet's fields, and the same event counted on one object.
func TestCountsRepeats(t *testing.T) {
	r, st, clk := newRecorder(t)
	ref := ContainerRef(testPod(), "main")
	r.Event(ref, corev1.EventTypeNormal, "Pulling", `Pulling image "busybox"`)
	first := clk.Now()
	clk.Step(3 * time.Second)
	r.Event(ref, corev1.EventTypeNormal, "Pulling", `Pulling image "busybox"`)
	evs := list(t, st)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1: %+v", len(evs), evs)
	}
	ev := evs[0]
	if ev.Count != 2 || !ev.FirstTimestamp.Time.Equal(first) || !ev.LastTimestamp.Time.Equal(clk.Now()) {
		t.Errorf("count %d first %v last %v", ev.Count, ev.FirstTimestamp, ev.LastTimestamp)
	}
	if ev.Name != "web."+strconv.FormatInt(first.UnixNano(), 16) || ev.Namespace != "default" {
		t.Errorf("name %s/%s", ev.Namespace, ev.Name)
	}
	if ev.Source != (corev1.EventSource{Component: "kubelet", Host: "node1"}) || ev.ReportingController != "kubelet" || ev.ReportingInstance != "node1" {
		t.Errorf("source %+v reporting %s %s", ev.Source, ev.ReportingController, ev.ReportingInstance)
	}
	want := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: "default", Name: "web", UID: "u1", ResourceVersion: "7", FieldPath: "spec.containers{main}"}
	if ev.InvolvedObject != want {
		t.Errorf("involvedObject %+v", ev.InvolvedObject)
	}
}

// Past ten similar events (same reason, other messages) client-go combines
// them into one whose count grows.
func TestCombinesSimilar(t *testing.T) {
	r, st, clk := newRecorder(t)
	ref := PodRef(testPod())
	for i := range 12 {
		clk.Step(time.Second)
		r.Eventf(ref, corev1.EventTypeWarning, "Failed", "attempt %d", i)
	}
	evs := list(t, st)
	if len(evs) != 10 {
		t.Fatalf("got %d events, want 9 single and 1 combined", len(evs))
	}
	var combined *corev1.Event
	for i := range evs {
		if evs[i].Message == "(combined from similar events): attempt 11" {
			combined = &evs[i]
		}
	}
	if combined == nil || combined.Count != 3 {
		t.Fatalf("no combined event counting 3 (attempts 9-11): %+v", evs)
	}
}

// Events older than the TTL go; repeated ones stay.
func TestSweep(t *testing.T) {
	r, st, clk := newRecorder(t)
	ref := PodRef(testPod())
	r.Event(ref, corev1.EventTypeNormal, "Scheduled", "old")
	clk.Step(50 * time.Minute)
	r.Event(ref, corev1.EventTypeNormal, "Started", "young")
	clk.Step(20 * time.Minute)
	n, err := r.Sweep()
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	if evs := list(t, st); len(evs) != 1 || evs[0].Message != "young" {
		t.Fatalf("left %+v", evs)
	}
	// The expired one recurs: a new Event, count 1.
	r.Event(ref, corev1.EventTypeNormal, "Scheduled", "old")
	for _, ev := range list(t, st) {
		if ev.Message == "old" && ev.Count != 1 {
			t.Errorf("recreated event count %d", ev.Count)
		}
	}
}
