// Package storage is berth's part of Kubernetes' persistent volume
// machinery: a built-in local-path provisioner and what the PV controller
// (pkg/controller/volume/persistentvolume), the PVC and PV protection
// controllers (pkg/controller/volume/{pvcprotection,pvprotection}) and the
// DefaultStorageClass admission plugin do on a cluster, for one node.
//
//   - At start it makes sure the default StorageClass "local-path" exists
//     (EnsureDefaultClass).
//   - A Pending claim of a class whose provisioner is berth.dev/local-path
//     gets a directory <stateDir>/volumes/pvc-<claim uid>, a PersistentVolume
//     of that name (hostPath to the directory, the claim's size and access
//     modes, the class's reclaim policy) and is bound to it, as the PV
//     controller binds a dynamically provisioned volume.
//   - A claim being deleted keeps kubernetes.io/pvc-protection while a pod
//     that is not terminal uses it; a volume being deleted keeps
//     kubernetes.io/pv-protection while it is Bound.
//   - A volume whose claim is gone is Released; with reclaim policy Delete
//     berth removes the directory of a volume it provisioned, then the
//     volume; with Retain it stays Released and keeps the data.
//
// It is level-triggered: every change of claims, volumes, classes (and of
// pods while a claim waits for its pods to go) leads to one pass over the
// whole state (plan), and a periodic pass catches anything missed, so
// that a berthd restarted after a crash, or after a claim was deleted while
// it was down, carries on where the state says.
package storage

import (
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

// Store resources this package reads and writes, as api/server stores
// them.
const (
	Claims  store.Resource = "persistentvolumeclaims"
	Volumes store.Resource = "persistentvolumes"
	Classes store.Resource = "storageclasses"
	Pods    store.Resource = "pods"
)

const (
	// Provisioner is the local-path provisioner's name, a StorageClass's
	// provisioner.
	Provisioner = "berth.dev/local-path"
	// DefaultClassName is the StorageClass berthd creates.
	DefaultClassName = "local-path"

	// AnnIsDefaultClass marks the default StorageClass
	// (storageutil.IsDefaultStorageClassAnnotation); AnnBetaIsDefaultClass
	// is its beta form, still honoured upstream.
	AnnIsDefaultClass     = "storageclass.kubernetes.io/is-default-class"
	AnnBetaIsDefaultClass = "storageclass.beta.kubernetes.io/is-default-class"

	// PVCProtectionFinalizer and PVProtectionFinalizer are what the
	// StorageObjectInUseProtection admission plugin adds on create.
	PVCProtectionFinalizer = "kubernetes.io/pvc-protection"
	PVProtectionFinalizer  = "kubernetes.io/pv-protection"

	// The PV controller's annotations (pkg/controller/volume/persistentvolume/util).
	AnnDynamicallyProvisioned = "pv.kubernetes.io/provisioned-by"
	AnnBindCompleted          = "pv.kubernetes.io/bind-completed"
	AnnBoundByController      = "pv.kubernetes.io/bound-by-controller"
	AnnStorageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	AnnBetaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
)

// Dir is where the local-path provisioner keeps volumes: one directory
// per PersistentVolume, named as it.
func Dir(stateDir string) string { return filepath.Join(stateDir, "volumes") }

// ClaimClass is the claim's StorageClass name: the beta annotation, else
// spec.storageClassName (storageutil.GetPersistentVolumeClaimClass).
func ClaimClass(c *corev1.PersistentVolumeClaim) string {
	if class, ok := c.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		return class
	}
	if c.Spec.StorageClassName != nil {
		return *c.Spec.StorageClassName
	}
	return ""
}

// VolumeClass is the volume's StorageClass name, the same way
// (storageutil.GetPersistentVolumeClass).
func VolumeClass(v *corev1.PersistentVolume) string {
	if class, ok := v.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		return class
	}
	return v.Spec.StorageClassName
}

// IsDefaultClass is storageutil.IsDefaultAnnotation: either annotation
// "true".
func IsDefaultClass(m metav1.ObjectMeta) bool {
	return m.Annotations[AnnIsDefaultClass] == "true" || m.Annotations[AnnBetaIsDefaultClass] == "true"
}

// DefaultClass is the default StorageClass among classes, nil if none:
// of several, the newest, then the first by name (volume/util GetDefaultClass
// since Kubernetes 1.26).
func DefaultClass(classes []*storagev1.StorageClass) *storagev1.StorageClass {
	var defaults []*storagev1.StorageClass
	for _, c := range classes {
		if IsDefaultClass(c.ObjectMeta) {
			defaults = append(defaults, c)
		}
	}
	if len(defaults) == 0 {
		return nil
	}
	sort.Slice(defaults, func(i, j int) bool {
		a, b := defaults[i].CreationTimestamp.UnixNano(), defaults[j].CreationTimestamp.UnixNano()
		if a == b {
			return defaults[i].Name < defaults[j].Name
		}
		return a > b
	})
	return defaults[0]
}

// AccessModesString is the printers' GetAccessModesAsString: RWO, ROX, RWX,
// RWOP in that order, each once, joined with ",".
func AccessModesString(modes []corev1.PersistentVolumeAccessMode) string {
	has := map[corev1.PersistentVolumeAccessMode]bool{}
	for _, m := range modes {
		has[m] = true
	}
	var out []string
	for _, m := range []struct {
		mode  corev1.PersistentVolumeAccessMode
		short string
	}{
		{corev1.ReadWriteOnce, "RWO"}, {corev1.ReadOnlyMany, "ROX"}, {corev1.ReadWriteMany, "RWX"}, {corev1.ReadWriteOncePod, "RWOP"},
	} {
		if has[m.mode] {
			out = append(out, m.short)
		}
	}
	return strings.Join(out, ",")
}

func hasFinalizer(m metav1.Object, f string) bool {
	for _, x := range m.GetFinalizers() {
		if x == f {
			return true
		}
	}
	return false
}

// removeFinalizer drops f from m's finalizers; false if it had none.
func removeFinalizer(m metav1.Object, f string) bool {
	fs := m.GetFinalizers()
	out := fs[:0:0]
	for _, x := range fs {
		if x != f {
			out = append(out, x)
		}
	}
	if len(out) == len(fs) {
		return false
	}
	if len(out) == 0 {
		out = nil
	}
	m.SetFinalizers(out)
	return true
}

// podTerminal is podutil.IsPodTerminal: a pod that Succeeded or Failed
// uses no volume any more (the PVC protection controller's rule).
func podTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}
