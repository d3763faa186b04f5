package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxIndexDepth bounds nested indexes; a hostile layout could otherwise loop.
const maxIndexDepth = 8

// HostPlatform is the platform multi-platform indexes resolve to.
func HostPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// OpenLayout returns the image named by ref in the OCI image layout at dir
// (image-spec image-layout.md). ref is one of
//   - "": the layout's only top-level manifest (or the only one matching
//     the host platform);
//   - a tag, matched exactly against the org.opencontainers.image.ref.name
//     annotation of a descriptor in index.json or in a nested index;
//   - a digest "sha256:<hex>" of an image manifest or of an index.
//
// An index (possibly nested) is resolved to the manifest for HostPlatform.
// Manifests and indexes read on the way are checked against their digests;
// layer blobs are checked later, while Store.Import streams them.
func OpenLayout(ctx context.Context, dir, ref string) (v1.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &layoutResolver{dir: dir, ref: ref, platform: HostPlatform()}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, r.errorf("no OCI layout (index.json): %w", err)
	}
	root, err := p.ImageIndex()
	if err != nil {
		return nil, r.errorf("read index.json: %w", err)
	}
	im, err := root.IndexManifest()
	if err != nil {
		return nil, r.errorf("parse index.json: %w", err)
	}

	var found *located
	switch {
	case ref == "":
		found, err = r.only(root, im)
	case strings.HasPrefix(ref, "sha256:"):
		h, herr := v1.NewHash(ref)
		if herr != nil {
			return nil, r.errorf("malformed digest: %w", herr)
		}
		found, err = r.find(root, 0, func(d v1.Descriptor) bool { return d.Digest == h })
		if err == nil && found == nil {
			err = r.errorf("%w: no manifest or index with digest %s", errdefs.ErrNotFound, ref)
		}
	default:
		found, err = r.find(root, 0, func(d v1.Descriptor) bool { return d.Annotations[ocispec.AnnotationRefName] == ref })
		if err == nil && found == nil {
			tags, terr := r.tags(root, 0)
			if terr != nil {
				return nil, terr
			}
			err = r.errorf("%w: no descriptor annotated %s=%q (tags in layout: %s)", errdefs.ErrNotFound, ocispec.AnnotationRefName, ref, listOrNone(tags))
		}
	}
	if err != nil {
		return nil, err
	}
	return r.materialize(found.parent, found.desc, 0)
}

type layoutResolver struct {
	dir, ref string
	platform v1.Platform
}

type located struct {
	parent v1.ImageIndex
	desc   v1.Descriptor
}

func (r *layoutResolver) errorf(format string, args ...any) error {
	return fmt.Errorf("oci layout %s: ref %q: "+format, append([]any{r.dir, r.ref}, args...)...)
}

// only picks the single top-level manifest, or the single one for the host
// platform when index.json lists several platform-annotated manifests.
func (r *layoutResolver) only(root v1.ImageIndex, im *v1.IndexManifest) (*located, error) {
	switch len(im.Manifests) {
	case 0:
		return nil, r.errorf("%w: index.json lists no manifests", errdefs.ErrNotFound)
	case 1:
		return &located{root, im.Manifests[0]}, nil
	}
	var match []v1.Descriptor
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Satisfies(r.platform) {
			match = append(match, d)
		}
	}
	if len(match) == 1 {
		return &located{root, match[0]}, nil
	}
	tags, err := r.tags(root, 0)
	if err != nil {
		return nil, err
	}
	return nil, r.errorf("index.json lists %d manifests; name one by tag or digest (tags in layout: %s)", len(im.Manifests), listOrNone(tags))
}

// find walks the index tree breadth-first (index.json before nested indexes)
// and returns the first descriptor that matches.
func (r *layoutResolver) find(idx v1.ImageIndex, depth int, match func(v1.Descriptor) bool) (*located, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, r.errorf("parse index: %w", err)
	}
	for _, d := range im.Manifests {
		if match(d) {
			return &located{idx, d}, nil
		}
	}
	for _, d := range im.Manifests {
		if !isIndex(d.MediaType) {
			continue
		}
		child, err := r.child(idx, d, depth)
		if err != nil {
			return nil, err
		}
		if l, err := r.find(child, depth+1, match); err != nil || l != nil {
			return l, err
		}
	}
	return nil, nil
}

func (r *layoutResolver) tags(idx v1.ImageIndex, depth int) ([]string, error) {
	var tags []string
	_, err := r.find(idx, depth, func(d v1.Descriptor) bool {
		if t, ok := d.Annotations[ocispec.AnnotationRefName]; ok {
			tags = append(tags, t)
		}
		return false
	})
	sort.Strings(tags)
	return tags, err
}

// child opens a nested index and checks it against its descriptor.
func (r *layoutResolver) child(parent v1.ImageIndex, d v1.Descriptor, depth int) (v1.ImageIndex, error) {
	if depth >= maxIndexDepth {
		return nil, r.errorf("indexes nested deeper than %d at %s", maxIndexDepth, d.Digest)
	}
	child, err := parent.ImageIndex(d.Digest)
	if err != nil {
		return nil, r.errorf("open nested index %s: %w", d.Digest, err)
	}
	raw, err := child.RawManifest()
	if err != nil {
		return nil, r.errorf("read nested index %s: %w", d.Digest, err)
	}
	if err := checkBlob("index", d, raw); err != nil {
		return nil, r.errorf("%w", err)
	}
	return child, nil
}

// materialize turns a descriptor into an image, resolving an index to the
// host platform's manifest.
func (r *layoutResolver) materialize(parent v1.ImageIndex, d v1.Descriptor, depth int) (v1.Image, error) {
	switch {
	case isIndex(d.MediaType):
		child, err := r.child(parent, d, depth)
		if err != nil {
			return nil, err
		}
		im, err := child.IndexManifest()
		if err != nil {
			return nil, r.errorf("parse index %s: %w", d.Digest, err)
		}
		var have []string
		for _, m := range im.Manifests {
			if m.Platform == nil {
				continue
			}
			if m.Platform.Satisfies(r.platform) && (isIndex(m.MediaType) || isManifest(m.MediaType)) {
				return r.materialize(child, m, depth+1)
			}
			have = append(have, m.Platform.String())
		}
		// An index may group further indexes without a platform of their own
		// (image-spec image-index.md allows nesting); look inside them in order.
		for _, m := range im.Manifests {
			if m.Platform != nil || !isIndex(m.MediaType) {
				continue
			}
			img, err := r.materialize(child, m, depth+1)
			if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
				return img, err
			}
			have = append(have, "nested index "+m.Digest.String())
		}
		return nil, r.errorf("%w: index %s has no manifest for platform %s (has: %s)", errdefs.ErrNotFound, d.Digest, r.platform, listOrNone(have))
	case isManifest(d.MediaType):
		img, err := parent.Image(d.Digest)
		if err != nil {
			return nil, r.errorf("open manifest %s: %w", d.Digest, err)
		}
		raw, err := img.RawManifest()
		if err != nil {
			return nil, r.errorf("read manifest %s: %w", d.Digest, err)
		}
		if err := checkBlob("manifest", d, raw); err != nil {
			return nil, r.errorf("%w", err)
		}
		return img, nil
	}
	return nil, r.errorf("descriptor %s has media type %q, neither an image manifest nor an index", d.Digest, d.MediaType)
}

func isIndex(mt types.MediaType) bool {
	return mt == types.OCIImageIndex || mt == types.DockerManifestList
}

func isManifest(mt types.MediaType) bool {
	return mt == types.OCIManifestSchema1 || mt == types.DockerManifestSchema2
}

// checkBlob verifies raw against its descriptor: ggcr's layout reader hands
// back index and manifest bytes without hashing them.
func checkBlob(what string, d v1.Descriptor, raw []byte) error {
	sum := sha256.Sum256(raw)
	got := "sha256:" + hex.EncodeToString(sum[:])
	if d.Digest.Algorithm != "sha256" || got != d.Digest.String() {
		return &DigestError{What: what + " blob", Want: d.Digest.String(), Got: got}
	}
	if d.Size != int64(len(raw)) {
		return fmt.Errorf("%s %s: size %d, descriptor says %d", what, d.Digest, len(raw), d.Size)
	}
	return nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
