package storage

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berth-dev/berth/agent/store"
)

// A bound claim of a class that allows expansion grows: the volume's
// capacity, then the claim's status, with the external resizer's events;
// a class that does not allow it leaves both as they are.
func TestExpand(t *testing.T) {
	c, st, ev := newController(t, true)
	sc := NewDefaultClass()
	sc.Name, sc.Annotations = "expandable", nil
	sc.AllowVolumeExpansion = ptr(true)
	if err := st.Create(Classes, sc); err != nil {
		t.Fatal(err)
	}
	storeClaim(t, st, claim("a", func(cl *corev1.PersistentVolumeClaim) { cl.Spec.StorageClassName = ptr("expandable") }))
	pass(t, c)
	ask := func(size string) {
		t.Helper()
		if _, err := st.Modify(Claims, "ns", "a", &corev1.PersistentVolumeClaim{}, func(cur store.Object) (store.Decision, error) {
			cur.(*corev1.PersistentVolumeClaim).Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse(size)
			return store.Decision{}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	cl := getClaim(t, st, "a")
	if cl.Status.Phase != corev1.ClaimBound {
		t.Fatalf("claim not bound: %+v", cl.Status)
	}
	ask("3Gi")
	*ev = nil
	pass(t, c)
	var v corev1.PersistentVolume
	if err := st.Get(Volumes, "", cl.Spec.VolumeName, &v); err != nil {
		t.Fatal(err)
	}
	if got := v.Spec.Capacity[corev1.ResourceStorage]; got.String() != "3Gi" {
		t.Errorf("volume capacity %s, want 3Gi", got.String())
	}
	cl = getClaim(t, st, "a")
	if got := cl.Status.Capacity[corev1.ResourceStorage]; got.String() != "3Gi" {
		t.Errorf("claim capacity %s, want 3Gi", got.String())
	}
	if got := cl.Status.AllocatedResources[corev1.ResourceStorage]; got.String() != "3Gi" || cl.Status.AllocatedResourceStatuses != nil {
		t.Errorf("claim allocated %s %v, want 3Gi and no status", got.String(), cl.Status.AllocatedResourceStatuses)
	}
	want := events{{"Resizing", "External resizer is resizing volume " + v.Name}, {"VolumeResizeSuccessful", "Resize volume succeeded"}}
	if !reflect.DeepEqual(*ev, want) {
		t.Errorf("events %v, want %v", *ev, want)
	}
	// Settled: the next pass does nothing.
	*ev = nil
	pass(t, c)
	if len(*ev) != 0 {
		t.Errorf("a pass after the resize: %v", *ev)
	}

	// A crash after the volume grew, before the claim's status did: the
	// next pass finishes the claim's side.
	if _, err := st.Modify(Volumes, "", cl.Spec.VolumeName, &corev1.PersistentVolume{}, func(cur store.Object) (store.Decision, error) {
		cur.(*corev1.PersistentVolume).Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("3584Mi")
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	ask("3584Mi")
	if _, err := st.Modify(Claims, "ns", "a", &corev1.PersistentVolumeClaim{}, func(cur store.Object) (store.Decision, error) {
		cur.(*corev1.PersistentVolumeClaim).Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{
			corev1.ResourceStorage: corev1.PersistentVolumeClaimControllerResizeInProgress}
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	pass(t, c)
	cl = getClaim(t, st, "a")
	if got := cl.Status.Capacity[corev1.ResourceStorage]; got.String() != "3584Mi" || cl.Status.AllocatedResourceStatuses != nil {
		t.Errorf("after a cut-short resize: capacity %s, statuses %v; want 3584Mi and none", got.String(), cl.Status.AllocatedResourceStatuses)
	}

	// The class stops allowing it: a further request is left alone.
	if _, err := st.Modify(Classes, "", "expandable", &storagev1.StorageClass{}, func(cur store.Object) (store.Decision, error) {
		cur.(*storagev1.StorageClass).AllowVolumeExpansion = ptr(false)
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	ask("4Gi")
	pass(t, c)
	if err := st.Get(Volumes, "", cl.Spec.VolumeName, &v); err != nil {
		t.Fatal(err)
	}
	if got := v.Spec.Capacity[corev1.ResourceStorage]; got.String() != "3584Mi" {
		t.Errorf("volume capacity %s after its class stopped allowing expansion, want 3584Mi", got.String())
	}
}
