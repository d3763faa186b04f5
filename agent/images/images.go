// Package images gets the images a pod's containers run into the local
// store, judged by the trust policy before any layer is fetched or
// unpacked: pulled from their registries, or imported from a local OCI
// layout. It also holds the image GC policy: what may be collected and when.
package images

import (
	"context"
	"fmt"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/trust"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/verify"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Config is where images come from and how they are judged.
type Config struct {
	Store      *image.Store
	Registries *image.Registries
	// Policy is the trust policy file (absent: every image is rejected).
	Policy string
	// Progress, if set, is told how each pull goes.
	Progress func(ref string, p image.Progress)
}

// Images resolves pods' images.
type Images struct{ cfg Config }

// New returns Images over cfg.
func New(cfg Config) *Images {
	if cfg.Policy == "" {
		cfg.Policy = verify.DefaultPolicyPath
	}
	if abs, err := filepath.Abs(cfg.Policy); err == nil {
		cfg.Policy = abs
	}
	return &Images{cfg: cfg}
}

// Pull fetches ref from its registry, judged by the trust policy before any
// layer is fetched.
func (m *Images) Pull(ctx context.Context, ref string) (*trust.Pulled, error) {
	var progress func(image.Progress)
	if m.cfg.Progress != nil {
		progress = func(p image.Progress) { m.cfg.Progress(ref, p) }
	}
	return trust.Pull(ctx, m.cfg.Store, m.cfg.Registries, m.cfg.Policy, ref, progress)
}

// ForPod resolves the image of every container of pod: pulled from its
// registry, or, when layout is set, looked up in that OCI layout by its
// org.opencontainers.image.ref.name annotation and imported.
func (m *Images) ForPod(ctx context.Context, pod *corev1.Pod, layout string) (map[string]pods.PodImage, error) {
	out := map[string]pods.PodImage{}
	for _, c := range pod.Spec.Containers {
		var pi pods.PodImage
		var err error
		if layout == "" {
			var p *trust.Pulled
			p, err = m.Pull(ctx, c.Image)
			if err == nil {
				pi = pods.PodImage{Image: p.Image, Repo: p.Resolved.Repo.Name()}
			}
		} else {
			pi, err = m.Import(ctx, layout, c.Image)
		}
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", c.Name, err)
		}
		out[c.Name] = pi
	}
	return out, nil
}

// Import takes ref from the OCI layout at dir into the store. The layout's
// path is resolved first (symlinks included, image.OpenLayout), so that the
// policy's oci scopes match the directory the image really comes from, and
// the image is judged by its manifest digest before any of its layers is
// unpacked (image.ImportOptions.Verify).
func (m *Images) Import(ctx context.Context, dir, ref string) (pods.PodImage, error) {
	img, err := image.OpenLayout(ctx, dir, ref)
	if err != nil {
		return pods.PodImage{}, err
	}
	policy, err := verify.Load(m.cfg.Policy)
	if err != nil {
		return pods.PodImage{}, err
	}
	imported, err := m.cfg.Store.Import(ctx, img, image.ImportOptions{
		Verify: func(ctx context.Context, digest v1.Hash) error {
			return policy.EvaluateLayout(ctx, img.Dir, digest).Error()
		},
	})
	if err != nil {
		return pods.PodImage{}, fmt.Errorf("import %s from %s: %w", ref, img.Dir, err)
	}
	return pods.PodImage{Image: imported, Layout: img.Dir}, nil
}

// InUse tells which images containers use (*pods.Runtime reads them from
// the bundles).
type InUse interface {
	ImagesInUse() (map[string]bool, error)
}

// GC removes images no container uses: least recently used first while the
// store's filesystem is above 85 % until it is at 80 % (the kubelet's
// defaults, --image-gc-high-threshold and --image-gc-low-threshold), or all
// of them with force. keep names images to spare besides those in use (the
// one just pulled, which no container uses yet).
func (m *Images) GC(ctx context.Context, inUse InUse, force bool, keep ...string) (image.GCReport, error) {
	used, err := inUse.ImagesInUse()
	if err != nil {
		return image.GCReport{}, fmt.Errorf("image gc: %w", err)
	}
	for _, d := range keep {
		used[d] = true
	}
	return m.cfg.Store.GC(ctx, image.GCOptions{InUse: used, Force: force})
}
