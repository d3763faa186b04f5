package volumes

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// claims is the ClaimSource berthd implements over its store, as maps.
type claims struct {
	pvcs map[string]*corev1.PersistentVolumeClaim
	pvs  map[string]*corev1.PersistentVolume
}

func (c *claims) PersistentVolumeClaim(ns, name string) (*corev1.PersistentVolumeClaim, error) {
	if x, ok := c.pvcs[ns+"/"+name]; ok {
		return x.DeepCopy(), nil
	}
	return nil, fmt.Errorf("persistentvolumeclaims %q: %w", name, errdefs.ErrNotFound)
}

func (c *claims) PersistentVolume(name string) (*corev1.PersistentVolume, error) {
	if x, ok := c.pvs[name]; ok {
		return x.DeepCopy(), nil
	}
	return nil, fmt.Errorf("persistentvolumes %q: %w", name, errdefs.ErrNotFound)
}

func claimVol(name, claim string, readOnly bool) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: readOnly}}}
}

// TestClaimVolume: a pod's persistentVolumeClaim volume waits, in the
// kubelet's words, until its claim is bound, then pins the bound volume's
// directory with hostPath's checks (under the provisioner's root or the
// allowed prefixes, no symlink out), read-only on request.
func TestClaimVolume(t *testing.T) {
	privateNS(t)
	base := t.TempDir()
	root := filepath.Join(base, "volumes")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root + "/pvc-1", outside} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink(outside, filepath.Join(root, "pvc-link"))
	dirType := corev1.HostPathDirectory
	pv := func(name, path string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &dirType}},
			ClaimRef:               &corev1.ObjectReference{Namespace: "ns", Name: "c", UID: "c-uid"},
		}}
	}
	bound := func(name, volume string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: "c-uid"},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: volume}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}}
	}
	src := &claims{pvcs: map[string]*corev1.PersistentVolumeClaim{
		"ns/pending": {ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pending"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}},
		"ns/c":       bound("c", "pvc-1"),
		"ns/going":   bound("going", "pvc-1"),
		"ns/other":   bound("other", "pvc-other"),
		"ns/out":     bound("out", "pvc-out"),
		"ns/link":    bound("link", "pvc-link"),
		"ns/nfs":     bound("nfs", "pvc-nfs"),
	}, pvs: map[string]*corev1.PersistentVolume{
		"pvc-1":     pv("pvc-1", root+"/pvc-1"),
		"pvc-other": pv("pvc-other", root+"/pvc-1"),
		"pvc-out":   pv("pvc-out", outside),
		"pvc-link":  pv("pvc-link", root+"/pvc-link"),
		"pvc-nfs":   {ObjectMeta: metav1.ObjectMeta{Name: "pvc-nfs"}, Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{UID: "c-uid"}, PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "s", Path: "/"}}}},
	}}
	now := metav1.Now()
	src.pvcs["ns/going"].DeletionTimestamp = &now
	src.pvs["pvc-other"].Spec.ClaimRef.UID = "someone-else"
	m := New(Config{Claims: src, LocalPathRoot: root}, nil)

	for _, c := range []struct {
		claim string
		want  string
		class func(error) bool
	}{
		{"missing", `persistentvolumeclaim "missing" not found`, errdefs.IsNotFound},
		{"pending", `error processing PVC ns/pending: PVC ns/pending has non-bound phase ("Pending") or empty pvc.Spec.VolumeName ("")`, errdefs.IsUnavailable},
		{"going", "error processing PVC ns/going: PVC is being deleted", errdefs.IsFailedPrecondition},
		{"other", `found PV object "pvc-other" but its pv.Spec.ClaimRef.UID ("someone-else") does not point to claim.UID ("c-uid")`, errdefs.IsFailedPrecondition},
		{"out", "is not under a prefix", errdefs.IsPermissionDenied},
		{"link", "not under a prefix", errdefs.IsPermissionDenied},
		{"nfs", "only hostPath and local volumes are supported by berth", errdefs.IsNotImplemented},
	} {
		_, err := m.Setup(newPod(claimVol("data", c.claim, false)), podDir(t), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || !c.class(err) {
			t.Errorf("claim %s: %v, want %q", c.claim, err, c.want)
		}
	}
	if _, err := New(Config{}, nil).Setup(newPod(claimVol("data", "c", false)), podDir(t), nil); !errdefs.IsUnavailable(err) {
		t.Errorf("no claim source: %v", err)
	}

	set, err := m.Setup(newPod(claimVol("data", "c", false), claimVol("ro", "c", true)), podDir(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rw, ro := set.Volumes["data"], set.Volumes["ro"]
	if rw.ReadOnly || !ro.ReadOnly || rw.Kind != PersistentVolumeClaim {
		t.Errorf("volumes: %+v %+v", rw, ro)
	}
	if ok, err := isMountPoint(rw.Path); !ok || err != nil {
		t.Errorf("claim volume %s is not pinned: %v", rw.Path, err)
	}
	ctr := bindLike(t, rw.Path)
	if err := os.WriteFile(filepath.Join(ctr, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "pvc-1", "f")); got != "kept" {
		t.Errorf("written through the pin: %q", got)
	}
	ms, err := set.ContainerMounts(&corev1.Container{Name: "app", VolumeMounts: []corev1.VolumeMount{{Name: "ro", MountPath: "/ro"}}}, nil, false)
	if err != nil || len(ms) != 1 || !ms[0].ReadOnly {
		t.Errorf("readOnly claim mount: %+v %v", ms, err)
	}
	// A claim being deleted still serves a pod whose volume is set up (a
	// berthd restart, a later init step): only new mounts wait.
	dir := podDir(t)
	if _, err := m.Setup(newPod(claimVol("data", "c", false)), dir, nil); err != nil {
		t.Fatal(err)
	}
	src.pvcs["ns/c"].DeletionTimestamp = &now
	if _, err := m.Setup(newPod(claimVol("data", "c", false)), dir, nil); err != nil {
		t.Errorf("set up again while the claim is being deleted: %v", err)
	}
}
