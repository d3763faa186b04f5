package storage

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

type recorded struct{ reason, message string }

type events []recorded

func (e *events) Event(_ *corev1.ObjectReference, _, reason, message string) {
	*e = append(*e, recorded{reason, message})
}

func newController(t *testing.T, fresh bool) (*Controller, *store.Store, *events) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ev := &events{}
	c := New(Config{Store: st, StateDir: dir, NodeName: "n1", FreshStore: fresh, Events: ev})
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return c, st, ev
}

// storeClaim stores c as the API's create would leave it.
func storeClaim(t *testing.T, st *store.Store, c *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	t.Helper()
	c.TypeMeta = metav1.TypeMeta{Kind: "PersistentVolumeClaim", APIVersion: "v1"}
	c.UID = ""
	if err := st.Create(Claims, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// deleteObject is the API's delete of an object with finalizers: a
// deletionTimestamp and grace period 0, the object kept.
func deleteObject(t *testing.T, st *store.Store, res store.Resource, ns, name string, obj store.Object) {
	t.Helper()
	if _, err := st.Modify(res, ns, name, obj, func(cur store.Object) (store.Decision, error) {
		now := metav1.Now()
		var zero int64
		cur.SetDeletionTimestamp(&now)
		cur.SetDeletionGracePeriodSeconds(&zero)
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
}

func getClaim(t *testing.T, st *store.Store, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	var c corev1.PersistentVolumeClaim
	if err := st.Get(Claims, "ns", name, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func pass(t *testing.T, c *Controller) {
	t.Helper()
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestDefaultClassOnce: made on a new state directory, kept when there,
// not made again once the operator deleted it, made again on a fresh
// store.
func TestDefaultClassOnce(t *testing.T) {
	c, st, _ := newController(t, false)
	if err := c.EnsureDefaultClass(); err != nil {
		t.Fatal(err)
	}
	var sc storagev1.StorageClass
	if err := st.Get(Classes, "", DefaultClassName, &sc); err != nil {
		t.Fatal(err)
	}
	if sc.Provisioner != Provisioner || !IsDefaultClass(sc.ObjectMeta) || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete ||
		*sc.VolumeBindingMode != storagev1.VolumeBindingImmediate {
		t.Errorf("default class: %+v", sc)
	}
	if _, err := st.Delete(Classes, "", DefaultClassName, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureDefaultClass(); err != nil {
		t.Fatal(err)
	}
	if err := st.Get(Classes, "", DefaultClassName, &sc); !errdefs.IsNotFound(err) {
		t.Errorf("the deleted default class came back: %v", err)
	}
	c.cfg.FreshStore = true
	if err := c.EnsureDefaultClass(); err != nil {
		t.Fatal(err)
	}
	if err := st.Get(Classes, "", DefaultClassName, &sc); err != nil {
		t.Errorf("a fresh store has no default class: %v", err)
	}
}

// TestLifecycle drives a claim through a real store and directory:
// provisioned and bound, kept while a pod uses it, released, reclaimed.
func TestLifecycle(t *testing.T) {
	c, st, ev := newController(t, true)
	if err := c.EnsureDefaultClass(); err != nil {
		t.Fatal(err)
	}
	storeClaim(t, st, claim("a"))
	pass(t, c)
	cl := getClaim(t, st, "a")
	name := VolumeName(cl)
	var v corev1.PersistentVolume
	if err := st.Get(Volumes, "", name, &v); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(c.dir, name)
	if cl.Status.Phase != corev1.ClaimBound || cl.Spec.VolumeName != name || cl.Status.Capacity.Storage().String() != "1Gi" ||
		len(cl.Status.AccessModes) != 1 || cl.Annotations[AnnBindCompleted] != "yes" || cl.Annotations[AnnBoundByController] != "yes" {
		t.Errorf("claim after a pass: %+v %+v", cl.Spec, cl.Status)
	}
	if v.Status.Phase != corev1.VolumeBound || v.Spec.HostPath.Path != dir || v.Spec.ClaimRef.UID != cl.UID ||
		v.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || v.Spec.StorageClassName != DefaultClassName ||
		v.Finalizers[0] != PVProtectionFinalizer || v.Spec.NodeAffinity == nil || v.Status.LastPhaseTransitionTime == nil {
		t.Errorf("volume: %+v %+v", v.Spec, v.Status)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o777 {
		t.Errorf("volume directory: %v %v", fi, err)
	}
	if len(*ev) != 1 || (*ev)[0].reason != "ProvisioningSucceeded" {
		t.Errorf("events: %v", *ev)
	}
	// A settled state: a pass writes nothing.
	rv, _ := st.ResourceVersion()
	pass(t, c)
	if rv2, _ := st.ResourceVersion(); rv2 != rv {
		t.Errorf("a pass over a settled state wrote (%d -> %d)", rv, rv2)
	}

	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := pod("a", corev1.PodRunning)
	p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
	if err := st.Create(Pods, p); err != nil {
		t.Fatal(err)
	}
	deleteObject(t, st, Claims, "ns", "a", &corev1.PersistentVolumeClaim{})
	pass(t, c)
	if cl := getClaim(t, st, "a"); cl.DeletionTimestamp == nil || len(cl.Finalizers) != 1 {
		t.Errorf("a claim in use lost its protection: %+v", cl.ObjectMeta)
	}
	// The pod ends: the claim goes, then its volume and directory.
	if _, err := st.Modify(Pods, "ns", p.Name, &corev1.Pod{}, func(cur store.Object) (store.Decision, error) {
		cur.(*corev1.Pod).Status.Phase = corev1.PodSucceeded
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	pass(t, c)
	if err := st.Get(Claims, "ns", "a", &corev1.PersistentVolumeClaim{}); !errdefs.IsNotFound(err) {
		t.Fatalf("claim after its pod ended: %v", err)
	}
	pass(t, c)
	if err := st.Get(Volumes, "", name, &v); !errdefs.IsNotFound(err) {
		t.Errorf("volume after its claim went: %v %+v", err, v.Status)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("volume directory after reclaim: %v", err)
	}
}

// TestRetainAndResume: a Retain volume keeps its data when released; a
// volume a crash left unbound is bound by the next pass; deleting a
// Released volume removes the object only.
func TestRetainAndResume(t *testing.T) {
	c, st, _ := newController(t, true)
	retain := NewDefaultClass()
	retain.Name, retain.Annotations = "keep", nil
	*retain.ReclaimPolicy = corev1.PersistentVolumeReclaimRetain
	if err := st.Create(Classes, retain); err != nil {
		t.Fatal(err)
	}
	cl := storeClaim(t, st, claim("k", func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = ptr("keep") }))
	// As if berthd died right after creating the volume.
	dir := filepath.Join(c.dir, VolumeName(cl))
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(Volumes, c.newVolume(cl, retain, VolumeName(cl), dir)); err != nil {
		t.Fatal(err)
	}
	pass(t, c)
	if got := getClaim(t, st, "k"); got.Status.Phase != corev1.ClaimBound || got.Spec.VolumeName != VolumeName(cl) {
		t.Fatalf("claim a crash left: %+v", got.Status)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	deleteObject(t, st, Claims, "ns", "k", &corev1.PersistentVolumeClaim{})
	pass(t, c) // the claim goes
	pass(t, c) // its volume is Released
	var v corev1.PersistentVolume
	if err := st.Get(Volumes, "", VolumeName(cl), &v); err != nil || v.Status.Phase != corev1.VolumeReleased {
		t.Fatalf("retained volume: %v %+v", err, v.Status)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("retained data: %v", err)
	}
	deleteObject(t, st, Volumes, "", v.Name, &corev1.PersistentVolume{})
	pass(t, c)
	if err := st.Get(Volumes, "", v.Name, &v); !errdefs.IsNotFound(err) {
		t.Errorf("released volume being deleted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("Retain: the data went with the volume object: %v", err)
	}
}

// TestUnknownClassWarnsOnce: a claim of a class that does not exist stays
// Pending with one event however many passes see it.
func TestUnknownClassWarnsOnce(t *testing.T) {
	c, st, ev := newController(t, true)
	storeClaim(t, st, claim("x", func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = ptr("nope") }))
	pass(t, c)
	pass(t, c)
	if got := getClaim(t, st, "x"); got.Status.Phase != corev1.ClaimPending {
		t.Errorf("claim of an unknown class: %+v", got.Status)
	}
	if len(*ev) != 1 || (*ev)[0] != (recorded{"ProvisioningFailed", `storageclass.storage.k8s.io "nope" not found`}) {
		t.Errorf("events: %v", *ev)
	}
}

// TestReclaimOnStart: a volume whose claim went while berthd was down is
// reclaimed by the first pass of the next berthd, directory included.
func TestReclaimOnStart(t *testing.T) {
	c, st, _ := newController(t, true)
	if err := c.EnsureDefaultClass(); err != nil {
		t.Fatal(err)
	}
	cl := storeClaim(t, st, claim("a"))
	pass(t, c)
	dir := filepath.Join(c.dir, VolumeName(cl))
	if _, err := st.Delete(Claims, "ns", "a", "", ""); err != nil {
		t.Fatal(err)
	}
	next := New(Config{Store: st, StateDir: c.cfg.StateDir})
	pass(t, next)
	if err := st.Get(Volumes, "", VolumeName(cl), &corev1.PersistentVolume{}); !errdefs.IsNotFound(err) {
		t.Errorf("volume of a claim gone while berthd was down: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("its directory: %v", err)
	}
}
