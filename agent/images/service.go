package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/trust"
	"github.com/berth-dev/berth/image"
)

// Service is the node's image commands (berth image pull|ls|rm|load) and
// berth plan, over the Images the pod worker uses and the pods runtime
// (which images containers use; what a pod's units would be).
type Service struct {
	Images  *Images
	Runtime *pods.Runtime
}

// List returns the stored images.
func (s Service) List() ([]*image.Image, error) { return s.Images.List() }

// Pull fetches ref as the worker would, judged before any layer, telling
// progress how it goes.
func (s Service) Pull(ctx context.Context, ref string, progress func(image.Progress)) (*trust.Pulled, error) {
	return trust.Pull(ctx, s.Images.cfg.Store, s.Images.cfg.Registries, s.Images.cfg.Policy, ref, progress)
}

// Remove deletes a stored image no container uses.
func (s Service) Remove(ctx context.Context, ref string) (*image.Image, error) {
	return s.Images.Remove(ctx, ref, s.Runtime)
}

// Load stores the image of an oci-archive read from r.
func (s Service) Load(ctx context.Context, r io.Reader, o LoadOptions) (*Loaded, error) {
	return s.Images.Load(ctx, r, o)
}

// Plan renders the units and OCI specs pod's containers would get, as the
// pod worker would start them now, touching nothing. The images must be in
// the store (pulled): a unit depends on the image's config and its
// /etc/passwd and /etc/group, which only the stored image has.
//
// The slices come first, as the runtime makes them before any unit
// (namespace, QoS class, pod: the pod-level limits). A pod not created yet
// has no UID, which names its slice: it gets one here, as a create would.
func (s Service) Plan(_ context.Context, pod *corev1.Pod) (string, error) {
	var b strings.Builder
	pod = pod.DeepCopy()
	uidNote := ""
	if pod.UID == "" {
		pod.UID = types.UID(uuid.NewUUID())
		uidNote = ", which stands for the one the create assigns"
	}
	slices, err := s.Runtime.PlanSlices(pod)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "# slices of pod %s/%s, uid %s%s: each made before the pod's units, in its parent\n", pod.Namespace, pod.Name, pod.UID, uidNote)
	for _, sl := range slices {
		b.WriteString(sl.Render() + "\n")
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		// As the worker finds it (Local), not as `image rm` does: a name
		// of twelve hex digits is a repository here.
		pi, err := s.Images.Local(c.Image)
		img := pi.Image
		if errdefs.IsNotFound(err) {
			return "", fmt.Errorf("container %q: image %s is not in the store; `berth image pull %s` first: berth plan renders units from the image's config and files: %w", c.Name, c.Image, c.Image, errdefs.ErrNotFound)
		}
		if err != nil {
			return "", fmt.Errorf("container %q: %w", c.Name, err)
		}
		u, err := s.Runtime.Plan(pod, c, img)
		if err != nil {
			var fe interface{ FieldPath() string }
			if errors.As(err, &fe) {
				return "", err
			}
			return "", fmt.Errorf("container %q: %w", c.Name, err)
		}
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "# container %q, image %s (%s)\n", c.Name, c.Image, img.Digest)
		b.WriteString(u.Render())
	}
	return b.String(), nil
}
