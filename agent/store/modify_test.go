package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Modify is one read-modify-write: the apiserver's bookkeeping applies,
// an unchanged result writes nothing, a stale resourceVersion is refused.
func TestModify(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"), Options{})
	p := newPod("default", "web")
	if err := s.Create(pods, p); err != nil {
		t.Fatal(err)
	}
	deleted, err := s.Modify(pods, "default", "web", &corev1.Pod{}, func(cur Object) (Decision, error) {
		cur.(*corev1.Pod).Spec.Containers[0].Image = "app:2"
		cur.SetUID("forged")
		return Decision{BumpGeneration: true}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got corev1.Pod
	if err := s.Get(pods, "default", "web", &got); err != nil || deleted || got.UID != p.UID || got.Generation != 2 || got.ResourceVersion != "2" || got.Spec.Containers[0].Image != "app:2" {
		t.Fatalf("modified: %+v %v %v", got.ObjectMeta, deleted, err)
	}
	// No change: no new resourceVersion.
	if _, err := s.Modify(pods, "default", "web", &corev1.Pod{}, func(Object) (Decision, error) { return Decision{}, nil }); err != nil {
		t.Fatal(err)
	}
	if rv, _ := s.ResourceVersion(); rv != 2 {
		t.Errorf("a no-op update wrote: rv %d", rv)
	}
	stale := newPod("default", "web")
	stale.ResourceVersion = "1"
	if err := s.Update(pods, stale, false); !errdefs.IsConflict(err) {
		t.Errorf("stale update: %v", err)
	}
	if _, err := s.Modify(pods, "default", "nope", &corev1.Pod{}, func(Object) (Decision, error) { return Decision{}, nil }); !errdefs.IsNotFound(err) {
		t.Errorf("missing: %v", err)
	}
}

// Update keeps the deletion fields; FinishDeletion removes a pod without
// finalizers, and leaves one with finalizers to the update that removes
// the last of them.
func TestFinishDeletionAndFinalizers(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := s.Watch(ctx, pods, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	terminating := func(name string, finalizers ...string) *corev1.Pod {
		p := newPod("default", name)
		p.Finalizers = finalizers
		if err := s.Create(pods, p); err != nil {
			t.Fatal(err)
		}
		// What the API's graceful delete stores.
		if _, err := s.Modify(pods, "default", name, &corev1.Pod{}, func(cur Object) (Decision, error) {
			ts := metav1.NewTime(time.Now().Add(30 * time.Second))
			cur.SetDeletionTimestamp(&ts)
			g := int64(30)
			cur.SetDeletionGracePeriodSeconds(&g)
			return Decision{}, nil
		}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := terminating("a")
	// A plain Update may not clear the deletion.
	up := newPod("default", "a")
	if err := s.Update(pods, up, false); err != nil || up.DeletionTimestamp == nil || *up.DeletionGracePeriodSeconds != 30 {
		t.Fatalf("update cleared the deletion: %+v %v", up.ObjectMeta, err)
	}
	if err := s.FinishDeletion(pods, "default", "a", "other-uid"); !errdefs.IsConflict(err) {
		t.Errorf("wrong uid: %v", err)
	}
	if err := s.FinishDeletion(pods, "default", "a", a.UID); err != nil {
		t.Fatal(err)
	}
	if err := s.Get(pods, "default", "a", &corev1.Pod{}); !errdefs.IsNotFound(err) {
		t.Errorf("a after FinishDeletion: %v", err)
	}

	b := terminating("b", "example.com/keep")
	if err := s.FinishDeletion(pods, "default", "b", b.UID); err != nil {
		t.Fatal(err)
	}
	var got corev1.Pod
	if err := s.Get(pods, "default", "b", &got); err != nil || got.DeletionGracePeriodSeconds == nil || *got.DeletionGracePeriodSeconds != 0 {
		t.Fatalf("b with a finalizer: %+v %v", got.ObjectMeta, err)
	}
	got.Finalizers = nil
	if err := s.Update(pods, &got, false); err != nil || !Finalized(&got) {
		t.Fatalf("removing the last finalizer: %v %v", err, Finalized(&got))
	}
	if err := s.Get(pods, "default", "b", &corev1.Pod{}); !errdefs.IsNotFound(err) {
		t.Errorf("b after its last finalizer: %v", err)
	}
	var types []string
	for len(types) == 0 || types[len(types)-1] != "b:DELETED" {
		ev := <-w.Events()
		types = append(types, ev.Name+":"+string(ev.Type))
	}
	want := "[a:ADDED a:MODIFIED a:DELETED b:ADDED b:MODIFIED b:MODIFIED b:DELETED]"
	if fmt.Sprint(types) != want {
		t.Errorf("events %v, want %s", types, want)
	}
}

// A bookmark follows every change before it.
func TestBookmark(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := s.Watch(ctx, pods, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(pods, newPod("default", "a")); err != nil {
		t.Fatal(err)
	}
	w.Bookmark()
	if ev := <-w.Events(); ev.Type != Added {
		t.Fatalf("first %+v", ev)
	}
	if ev := <-w.Events(); ev.Type != Bookmark || ev.ResourceVersion != 1 {
		t.Fatalf("bookmark %+v", ev)
	}
	w.Stop()
	w.Bookmark() // a stopped watch gets none, and does not panic
}

// ModifyEach changes several objects in one transaction: each its own
// resourceVersion and event, in order; an unchanged one none; any error
// undoes all.
func TestModifyEach(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"), Options{})
	for _, n := range []string{"a", "b", "c"} {
		if err := s.Create(pods, newPod("default", n)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := s.Watch(ctx, pods, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	newObj := func() Object { return &corev1.Pod{} }
	err = s.ModifyEach(pods, "default", []string{"c", "b", "a"}, newObj, func(cur Object) (Decision, error) {
		if cur.GetName() != "b" { // b stays as it is
			cur.(*corev1.Pod).Spec.Containers[0].Image = "app:" + cur.GetName()
		}
		return Decision{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"c@4", "a@5"} {
		ev := <-w.Events()
		if got := fmt.Sprintf("%s@%d", ev.Name, ev.ResourceVersion); got != want || ev.Type != Modified {
			t.Errorf("event %s %s, want %s", ev.Type, got, want)
		}
	}
	if rv, _ := s.ResourceVersion(); rv != 5 {
		t.Errorf("resourceVersion %d after two changes from 3", rv)
	}
	// A missing object: nothing of the transaction is kept.
	err = s.ModifyEach(pods, "default", []string{"a", "nope"}, newObj, func(cur Object) (Decision, error) {
		cur.(*corev1.Pod).Spec.Containers[0].Image = "app:lost"
		return Decision{}, nil
	})
	var a corev1.Pod
	if !errdefs.IsNotFound(err) || s.Get(pods, "default", "a", &a) != nil || a.Spec.Containers[0].Image != "app:a" {
		t.Errorf("failed transaction: %v, a's image %q", err, a.Spec.Containers[0].Image)
	}
	select {
	case ev := <-w.Events():
		t.Errorf("event of an undone transaction: %+v", ev)
	default:
	}
}
