package storage

import (
	"fmt"
	"path/filepath"

	"k8s.io/apimachinery/pkg/api/resource"

	corev1 "k8s.io/api/core/v1"
)

// expand is what the external resizer does for a volume whose driver
// needs no node step (kubernetes-csi/external-resizer, with
// RecoverVolumeExpansionFailure, beta and on in 1.32): the claim's
// status.allocatedResources says what is being given, the volume's
// capacity grows (with its project quota, where the filesystem enforces
// one), then the claim's status.capacity follows and the resize is
// reported done. A local-path volume is a directory: nothing on disk
// changes size but the quota. A crash between the steps is finished by
// the next pass: a volume already grown is bound again (claimStatusMatches
// sees the claim's status behind it), and the bind writes the capacity.
func (c *Controller) expand(cl *corev1.PersistentVolumeClaim, v *corev1.PersistentVolume) error {
	size := requestOf(cl)
	c.event(cl, corev1.EventTypeNormal, "Resizing", fmt.Sprintf("External resizer is resizing volume %s", v.Name))
	if err := c.modifyClaim(cl, func(x *corev1.PersistentVolumeClaim) bool {
		if q, ok := x.Status.AllocatedResources[corev1.ResourceStorage]; ok && q.Cmp(size) == 0 {
			return false
		}
		if x.Status.AllocatedResources == nil {
			x.Status.AllocatedResources = corev1.ResourceList{}
		}
		x.Status.AllocatedResources[corev1.ResourceStorage] = size
		x.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{
			corev1.ResourceStorage: corev1.PersistentVolumeClaimControllerResizeInProgress,
		}
		return true
	}); err != nil {
		return err
	}
	if err := c.resizeQuota(v, size); err != nil {
		c.event(cl, corev1.EventTypeWarning, "VolumeResizeFailed", fmt.Sprintf("resize volume %q by resizer %q failed: %v", v.Name, Provisioner, err))
		return err
	}
	if err := c.modifyVolume(v, func(x *corev1.PersistentVolume) bool {
		if have := x.Spec.Capacity[corev1.ResourceStorage]; have.Cmp(size) >= 0 {
			return false
		}
		x.Spec.Capacity[corev1.ResourceStorage] = size
		return true
	}); err != nil {
		return err
	}
	if err := c.modifyClaim(cl, func(x *corev1.PersistentVolumeClaim) bool {
		if x.Spec.VolumeName != v.Name {
			return false
		}
		if x.Status.Capacity == nil {
			x.Status.Capacity = corev1.ResourceList{}
		}
		x.Status.Capacity[corev1.ResourceStorage] = size
		x.Status.AllocatedResourceStatuses = nil
		return true
	}); err != nil {
		return err
	}
	c.log.Info("expanded volume", "claim", cl.Namespace+"/"+cl.Name, "volume", v.Name, "size", size.String())
	c.event(cl, corev1.EventTypeNormal, "VolumeResizeSuccessful", "Resize volume succeeded")
	return nil
}

// resizeQuota moves the limit of a volume berth provisioned (the plan
// expands no other) to its new size.
func (c *Controller) resizeQuota(v *corev1.PersistentVolume, size resource.Quantity) error {
	dir := filepath.Join(c.dir, v.Name)
	if v.Spec.HostPath == nil || filepath.Clean(v.Spec.HostPath.Path) != dir {
		return nil
	}
	return c.limit(dir, size)
}
