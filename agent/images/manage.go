package images

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/verify"
)

// What `berth image ls|rm|load` ask of the store, beside Pull.

// List returns the stored images, ordered by digest.
func (m *Images) List() ([]*image.Image, error) { return m.cfg.Store.Images() }

// Resolve finds a stored image by reference: a manifest digest
// ("sha256:…"), a unique prefix of one of at least 12 hex digits (as
// `crictl rmi` and `podman rmi` take image IDs), or a reference it was pulled
// as ("nginx:1.27", "registry/app@sha256:…").
func (m *Images) Resolve(ref string) (*image.Image, error) {
	hexPart, isDigest := strings.CutPrefix(ref, "sha256:")
	if !isDigest && len(ref) >= 12 && isHex(ref) {
		hexPart, isDigest = ref, true
	}
	if isDigest {
		if len(hexPart) == 64 {
			return m.cfg.Store.Image("sha256:" + hexPart)
		}
		if len(hexPart) < 12 || !isHex(hexPart) {
			return nil, fmt.Errorf("image %q: a digest prefix needs at least 12 hexadecimal digits: %w", ref, errdefs.ErrInvalidArgument)
		}
		all, err := m.cfg.Store.Images()
		if err != nil {
			return nil, err
		}
		var found *image.Image
		for _, im := range all {
			if strings.HasPrefix(strings.TrimPrefix(im.Digest, "sha256:"), hexPart) {
				if found != nil {
					return nil, fmt.Errorf("image %q: the prefix matches more than one image: %w", ref, errdefs.ErrInvalidArgument)
				}
				found = im
			}
		}
		if found == nil {
			return nil, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
		}
		return found, nil
	}
	return m.cfg.Store.Lookup(ref)
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// Local is the stored image a container's image reference names, as a pull
// of it would have recorded it (Store.Lookup: the repository must match),
// for imagePullPolicy IfNotPresent and Never; errdefs.ErrNotFound when the
// store has none.
func (m *Images) Local(ref string) (pods.PodImage, error) {
	r, err := image.ParseRef(ref)
	if err != nil {
		return pods.PodImage{}, err
	}
	repo, err := r.Name()
	if err != nil {
		return pods.PodImage{}, fmt.Errorf("%w %q: %w", image.ErrBadReference, ref, err)
	}
	img, err := m.cfg.Store.Lookup(ref)
	if err != nil {
		return pods.PodImage{}, err
	}
	return pods.PodImage{Image: img, Repo: repo.Name()}, nil
}

// Remove deletes the stored image ref names, refusing (errdefs.ErrConflict,
// in the words of podman and containerd) while a container uses it: its
// layers are the lower directories of that container's overlay.
func (m *Images) Remove(ctx context.Context, ref string, inUse InUse) (*image.Image, error) {
	img, err := m.Resolve(ref)
	if err != nil {
		return nil, err
	}
	used, err := inUse.ImagesInUse()
	if err != nil {
		return nil, fmt.Errorf("image rm: %w", err)
	}
	if used[img.Digest] {
		return nil, fmt.Errorf("image %s (%s) is in use by a container: %w", ref, img.Digest, errdefs.ErrConflict)
	}
	if _, err := m.cfg.Store.Remove(ctx, img.Digest); err != nil {
		return nil, err
	}
	return img, nil
}

// LoadOptions adjust one Load.
type LoadOptions struct {
	// Ref picks the image of a layout that holds several, by its
	// org.opencontainers.image.ref.name annotation or its digest; empty
	// means the layout's only image.
	Ref string
	// MaxBytes bounds the archive (image.ArchiveOptions).
	MaxBytes int64
	// Received, if set, is told the bytes of the archive received so far;
	// Progress how the import of its layers goes.
	Received func(n int64)
	Progress func(image.Progress)
}

// Loaded is an image Load stored and the policy's judgement of it.
type Loaded struct {
	Image     *image.Image
	Judgement verify.Judgement
}

// Load stores the image of an oci-archive read from r (berth image load):
// the archive's files are received into the store's staging area, the
// image is resolved in that layout and judged by the trust policy
// (verify.Policy.EvaluateArchive: the policy's oci-archive default) by its
// manifest digest, and only an accepted image has its layers unpacked. The
// staging area is removed whatever happens.
func (m *Images) Load(ctx context.Context, r io.Reader, o LoadOptions) (*Loaded, error) {
	policy, err := verify.Load(m.cfg.Policy)
	if err != nil {
		return nil, err
	}
	dir, err := m.cfg.Store.ReceiveArchive(ctx, r, image.ArchiveOptions{MaxBytes: o.MaxBytes, Progress: o.Received})
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// What follows the tar's end (its zero blocks, record padding) is
	// read too, so that the whole request body is consumed before the
	// answer starts (the API streams progress from here on).
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, fmt.Errorf("oci-archive: %w", err)
	}
	img, err := image.OpenLayout(ctx, dir, o.Ref)
	if err != nil {
		// The staging directory's name means nothing to the client.
		return nil, &renamed{msg: strings.ReplaceAll(err.Error(), dir, "archive"), err: err}
	}
	var judgement verify.Judgement
	stored, err := m.cfg.Store.Import(ctx, img, image.ImportOptions{
		// Named as the layout names it, so that a pod whose image is that
		// reference finds it in the store (imagePullPolicy IfNotPresent or
		// Never). Judging it for a pod is another matter: at every start
		// the image is judged under its repository's scope, like a pulled
		// one, and a loaded image brings no signatures.
		Refs:     image.NamedRefs(img.RefName, digestOf(img)),
		Progress: o.Progress,
		Verify: func(ctx context.Context, digest v1.Hash) error {
			judgement = policy.EvaluateArchive(ctx, digest)
			return judgement.Error()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return &Loaded{Image: stored, Judgement: judgement}, nil
}

// renamed is err with another message (the staging path replaced), still
// unwrapping to err for its class.
type renamed struct {
	msg string
	err error
}

func (r *renamed) Error() string { return r.msg }
func (r *renamed) Unwrap() error { return r.err }

func digestOf(img v1.Image) string {
	d, err := img.Digest()
	if err != nil {
		return ""
	}
	return d.String()
}
