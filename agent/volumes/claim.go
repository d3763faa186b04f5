package volumes

import (
	"fmt"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
)

// claimedVolume resolves a persistentVolumeClaim volume to the host
// directory of the volume its claim is bound to, with the checks and
// messages of the scheduler (a missing claim) and the kubelet's
// desired-state populator (getPVCExtractPV, getPVSpecFromCache): a claim
// that is missing, not bound yet, or being deleted (for a volume not set
// up yet: a running pod keeps its claim until it ends) makes the pod wait.
// berth mounts volumes with a hostPath or local source; others are
// refused.
func (m *Manager) claimedVolume(pod *corev1.Pod, src *corev1.PersistentVolumeClaimVolumeSource, fresh bool) (*corev1.HostPathVolumeSource, error) {
	if m.cfg.Claims == nil {
		return nil, fmt.Errorf("no claim source: %w", errdefs.ErrUnavailable)
	}
	ns, name := pod.Namespace, src.ClaimName
	c, err := m.cfg.Claims.PersistentVolumeClaim(ns, name)
	if errdefs.IsNotFound(err) {
		return nil, errdefs.ErrNotFound.WithMessage(fmt.Sprintf("persistentvolumeclaim %q not found", name))
	}
	if err != nil {
		return nil, fmt.Errorf("error processing PVC %s/%s: failed to fetch PVC from API server: %w", ns, name, err)
	}
	if c.DeletionTimestamp != nil && fresh {
		return nil, errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("error processing PVC %s/%s: PVC is being deleted", ns, name))
	}
	if c.Status.Phase != corev1.ClaimBound || c.Spec.VolumeName == "" {
		return nil, errdefs.ErrUnavailable.WithMessage(fmt.Sprintf("error processing PVC %s/%s: PVC %s/%s has non-bound phase (%q) or empty pvc.Spec.VolumeName (%q)",
			ns, name, ns, name, c.Status.Phase, c.Spec.VolumeName))
	}
	v, err := m.cfg.Claims.PersistentVolume(c.Spec.VolumeName)
	if err != nil {
		return nil, fmt.Errorf("error processing PVC %s/%s: failed to fetch PV %q from API server: %w", ns, name, c.Spec.VolumeName, err)
	}
	if v.Spec.ClaimRef == nil {
		return nil, errdefs.ErrUnavailable.WithMessage(fmt.Sprintf("error processing PVC %s/%s: found PV object %q but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim",
			ns, name, v.Name))
	}
	if v.Spec.ClaimRef.UID != c.UID {
		return nil, errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("error processing PVC %s/%s: found PV object %q but its pv.Spec.ClaimRef.UID (%q) does not point to claim.UID (%q)",
			ns, name, v.Name, v.Spec.ClaimRef.UID, c.UID))
	}
	switch s := v.Spec.PersistentVolumeSource; {
	case s.HostPath != nil:
		return s.HostPath, nil
	case s.Local != nil:
		// A local volume is a directory (or a block device, which berth
		// does not serve) on this node: the same as a hostPath Directory.
		typ := corev1.HostPathDirectory
		return &corev1.HostPathVolumeSource{Path: s.Local.Path, Type: &typ}, nil
	}
	return nil, errdefs.ErrNotImplemented.WithMessage(fmt.Sprintf("volume %q: PersistentVolume %q: only hostPath and local volumes are supported by berth", src.ClaimName, v.Name))
}
