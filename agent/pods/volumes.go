package pods

import (
	"context"
	"fmt"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berth-dev/berth/agent/volumes"
	"github.com/berth-dev/berth/unitgen"
)

// Volumes materialises pods' volumes (*volumes.Manager).
type Volumes interface {
	Setup(pod *corev1.Pod, dir string, res volumes.ResourceResolver) (*volumes.Set, error)
	Update(pod *corev1.Pod, dir string, res volumes.ResourceResolver) error
}

var _ Volumes = (*volumes.Manager)(nil)

// MountError is a volume the pod's containers cannot get: the kubelet
// reports it as a FailedMount event and keeps retrying.
type MountError struct{ Err error }

func (e *MountError) Error() string { return e.Err.Error() }
func (e *MountError) Unwrap() error { return e.Err }

// volumeDir is where a pod's volumes live: in its state directory (0700),
// so that emptyDirs survive a berthd restart as they survive a kubelet's.
func (d podDirs) volumeDir() string { return filepath.Join(d.state, "volumes") }

// resources is the downward API's view of the pod's containers: unset
// limits are the node's (the kubelet's allocatable; berth reserves none).
func (r *Runtime) resources(pod *corev1.Pod) volumes.ResourceResolver {
	alloc := corev1.ResourceList{}
	if m := r.cfg.Node.MemoryCapacity; m > 0 {
		alloc[corev1.ResourceMemory] = *resource.NewQuantity(m, resource.BinarySI)
	}
	return volumes.NodeResources(pod, alloc)
}

// setupVolumes makes the pod's volumes and its shared /dev/shm.
func (r *Runtime) setupVolumes(d podDirs, pod *corev1.Pod) (*volumes.Set, string, error) {
	set, err := r.cfg.Volumes.Setup(pod, d.volumeDir(), r.resources(pod))
	if err != nil {
		return nil, "", &MountError{err}
	}
	shm, err := volumes.SetupShm(d.volumeDir(), 0)
	if err != nil {
		return nil, "", err
	}
	return set, shm, nil
}

// containerMounts are c's volumeMounts as binds for unitgen; subPathExpr
// expands against the container's environment, as the kubelet's does.
func containerMounts(set *volumes.Set, c *corev1.Container) ([]specs.Mount, error) {
	if set == nil || len(c.VolumeMounts) == 0 {
		return nil, nil
	}
	// The container's env as the process gets it (c's valueFrom and
	// envFrom are resolved by now): each value $(VAR)-expanded against
	// those before it, as unitgen builds it.
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = unitgen.Expand(e.Value, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	}
	privileged := c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
	ms, err := set.ContainerMounts(c, env, privileged)
	if err != nil {
		return nil, &MountError{err}
	}
	out := make([]specs.Mount, 0, len(ms))
	for _, m := range ms {
		if m.RecursiveReadOnly {
			return nil, &MountError{fmt.Errorf("volumeMount %q: recursiveReadOnly is not supported by berth yet", m.Name)}
		}
		out = append(out, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: m.Options()})
	}
	return out, nil
}

// UpdateVolumes brings a running pod's configMap, secret, downwardAPI and
// projected volumes up to date (the kubelet's periodic remount): the
// AtomicWriter swap makes the change appear at once in every container.
func (r *Runtime) UpdateVolumes(ctx context.Context, pod *corev1.Pod) error {
	d, err := r.dirs(pod.Namespace, pod.Name)
	if err != nil {
		return err
	}
	unlock, err := r.lock(ctx, d)
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := loadPod(d)
	if err != nil {
		return err
	}
	if rec.UID != pod.UID {
		return nil // another incarnation; its own sync follows
	}
	return r.cfg.Volumes.Update(pod, d.volumeDir(), r.resources(pod))
}
