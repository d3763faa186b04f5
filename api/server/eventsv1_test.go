package server

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// client-go's events.k8s.io/v1 client (what its new event recorder,
// tools/events, writes with) creates, updates, patches and deletes Events;
// they are the same objects core/v1 reads, converted as the apiserver
// converts them.
func TestEventsV1Writes(t *testing.T) {
	ts, _ := newHTTP(t)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := metav1.NewMicroTime(time.Now().Truncate(time.Microsecond))
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: "web.1", Namespace: "default"},
		EventTime:           now,
		ReportingController: "example.com/ctl",
		ReportingInstance:   "ctl-1",
		Action:              "Reconcile",
		Reason:              "Synced",
		Regarding:           corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web", UID: "u1"},
		Note:                "synced the pod",
		Type:                corev1.EventTypeNormal,
	}
	got, err := cs.EventsV1().Events("default").Create(ctx, ev, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.UID == "" || got.ResourceVersion == "" || got.Note != ev.Note || got.Regarding.Name != "web" {
		t.Fatalf("created: %+v", got)
	}
	core, err := cs.CoreV1().Events("default").Get(ctx, "web.1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if core.Message != "synced the pod" || core.InvolvedObject.Name != "web" || core.ReportingController != "example.com/ctl" || core.Action != "Reconcile" || core.UID != got.UID || core.ResourceVersion != got.ResourceVersion {
		t.Errorf("core/v1 view: %+v", core)
	}
	// The recorder's update of a series, then a strategic merge patch.
	got.Series = &eventsv1.EventSeries{Count: 2, LastObservedTime: now}
	upd, err := cs.EventsV1().Events("default").Update(ctx, got, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if upd.Series == nil || upd.Series.Count != 2 || upd.ResourceVersion == got.ResourceVersion {
		t.Errorf("updated: %+v", upd)
	}
	got.Note = "stale"
	if _, err := cs.EventsV1().Events("default").Update(ctx, got, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("update with a stale resourceVersion: %v", err)
	}
	pat, err := cs.EventsV1().Events("default").Patch(ctx, "web.1", types.StrategicMergePatchType, []byte(`{"series":{"count":3,"lastObservedTime":"`+now.Format(metav1.RFC3339Micro)+`"}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pat.Series.Count != 3 || pat.Note != "synced the pod" {
		t.Errorf("patched: %+v", pat)
	}
	if core, err = cs.CoreV1().Events("default").Get(ctx, "web.1", metav1.GetOptions{}); err != nil || core.Series == nil || core.Series.Count != 3 {
		t.Errorf("core/v1 view after the patch: %+v %v", core, err)
	}
	// The apiserver's validation of the events.k8s.io form.
	bad := ev.DeepCopy()
	bad.Name, bad.ReportingController = "web.2", ""
	if _, err := cs.EventsV1().Events("default").Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("create without reportingController: %v", err)
	}
	if err := cs.EventsV1().Events("default").Delete(ctx, "web.1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Events("default").Get(ctx, "web.1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after delete: %v", err)
	}
}
