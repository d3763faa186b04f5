package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxIndexDepth bounds nested indexes; a hostile layout could otherwise loop.
const maxIndexDepth = 8

// HostPlatform is the platform multi-platform indexes resolve to.
func HostPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// LayoutImage is an image found in an OCI image layout by OpenLayout. It
// reads its manifest, config and layer blobs from Dir, each with a bound.
type LayoutImage struct {
	v1.Image
	// Dir is the layout directory as read: absolute, with every symlink
	// resolved. Trust policy scopes of the oci transport are matched
	// against it, not against the path OpenLayout was given, so that a
	// symlink cannot borrow the scope of another directory.
	Dir string
	// RefName is the org.opencontainers.image.ref.name annotation of the
	// descriptor the image was found by ("" when it has none).
	RefName string
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
// dir is resolved first (filepath.Abs, filepath.EvalSymlinks) and every file
// is read beneath the result, LayoutImage.Dir. Manifests and indexes read
// on the way are checked against their digests; layer blobs are checked
// later, while Store.Import streams them.
//
// Every read is bounded: index.json, indexes and manifests to 4 MiB, the
// config to 8 MiB, and a blob to the size its descriptor declares (a larger
// blob is an error naming it); only regular files are read, so a FIFO or a
// device in place of a blob is refused rather than waited on or read
// forever.
func OpenLayout(ctx context.Context, dir, ref string) (*LayoutImage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &layoutResolver{dir: dir, ref: ref, platform: HostPlatform()}
	root, err := resolveDir(dir)
	if err != nil {
		return nil, r.errorf("%w", err)
	}
	r.root = root
	raw, err := readFileMax(filepath.Join(root, "index.json"), maxManifestBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, r.errorf("no OCI layout (index.json): %w", err)
	}
	if err != nil {
		return nil, r.errorf("read index.json: %w", err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, r.errorf("parse index.json: %w", err)
	}

	var found *v1.Descriptor
	switch {
	case ref == "":
		found, err = r.only(im)
	case strings.HasPrefix(ref, "sha256:"):
		h, herr := v1.NewHash(ref)
		if herr != nil {
			return nil, r.errorf("malformed digest: %w", herr)
		}
		found, err = r.find(im, 0, func(d v1.Descriptor) bool { return d.Digest == h })
		if err == nil && found == nil {
			err = r.errorf("%w: no manifest or index with digest %s", errdefs.ErrNotFound, ref)
		}
	default:
		found, err = r.find(im, 0, func(d v1.Descriptor) bool { return d.Annotations[ocispec.AnnotationRefName] == ref })
		if err == nil && found == nil {
			tags, terr := r.tags(im)
			if terr != nil {
				return nil, terr
			}
			err = r.errorf("%w: no descriptor annotated %s=%q (tags in layout: %s)", errdefs.ErrNotFound, ocispec.AnnotationRefName, ref, listOrNone(tags))
		}
	}
	if err != nil {
		return nil, err
	}
	img, err := r.materialize(*found, 0)
	if err != nil {
		return nil, err
	}
	return &LayoutImage{Image: img, Dir: root, RefName: found.Annotations[ocispec.AnnotationRefName]}, nil
}

// resolveDir makes dir absolute and resolves its symlinks: what is judged
// (LayoutImage.Dir) is then what is read.
func resolveDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolve directory: %w", err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("no OCI layout (index.json): resolve directory: %w", err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("resolve directory: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("no OCI layout (index.json): %s is not a directory: %w", real, errdefs.ErrInvalidArgument)
	}
	return real, nil
}

type layoutResolver struct {
	dir, ref string
	root     string // dir resolved
	platform v1.Platform
}

func (r *layoutResolver) errorf(format string, args ...any) error {
	where := r.dir
	if r.root != "" && r.root != r.dir {
		where = fmt.Sprintf("%s (%s)", r.dir, r.root)
	}
	return fmt.Errorf("oci layout %s: ref %q: "+format, append([]any{where, r.ref}, args...)...)
}

// only picks the single top-level manifest, or the single one for the host
// platform when index.json lists several platform-annotated manifests.
func (r *layoutResolver) only(im *v1.IndexManifest) (*v1.Descriptor, error) {
	switch len(im.Manifests) {
	case 0:
		return nil, r.errorf("%w: index.json lists no manifests", errdefs.ErrNotFound)
	case 1:
		return &im.Manifests[0], nil
	}
	var match []v1.Descriptor
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Satisfies(r.platform) {
			match = append(match, d)
		}
	}
	if len(match) == 1 {
		return &match[0], nil
	}
	tags, err := r.tags(im)
	if err != nil {
		return nil, err
	}
	return nil, r.errorf("index.json lists %d manifests; name one by tag or digest (tags in layout: %s)", len(im.Manifests), listOrNone(tags))
}

// find walks the index tree breadth-first (index.json before nested indexes)
// and returns the first descriptor that matches.
func (r *layoutResolver) find(im *v1.IndexManifest, depth int, match func(v1.Descriptor) bool) (*v1.Descriptor, error) {
	for i := range im.Manifests {
		if match(im.Manifests[i]) {
			return &im.Manifests[i], nil
		}
	}
	for _, d := range im.Manifests {
		if !isIndex(d.MediaType) {
			continue
		}
		child, err := r.child(d, depth)
		if err != nil {
			return nil, err
		}
		if l, err := r.find(child, depth+1, match); err != nil || l != nil {
			return l, err
		}
	}
	return nil, nil
}

func (r *layoutResolver) tags(im *v1.IndexManifest) ([]string, error) {
	var tags []string
	_, err := r.find(im, 0, func(d v1.Descriptor) bool {
		if t, ok := d.Annotations[ocispec.AnnotationRefName]; ok {
			tags = append(tags, t)
		}
		return false
	})
	sort.Strings(tags)
	return tags, err
}

// child reads a nested index, bounded and checked against its descriptor.
func (r *layoutResolver) child(d v1.Descriptor, depth int) (*v1.IndexManifest, error) {
	if depth >= maxIndexDepth {
		return nil, r.errorf("indexes nested deeper than %d at %s", maxIndexDepth, d.Digest)
	}
	raw, err := readLayoutBlob(r.root, "index", d, maxManifestBytes)
	if err != nil {
		return nil, r.errorf("%w", err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, r.errorf("parse nested index %s: %w", d.Digest, err)
	}
	return im, nil
}

// materialize turns a descriptor into an image, resolving an index to the
// host platform's manifest.
func (r *layoutResolver) materialize(d v1.Descriptor, depth int) (v1.Image, error) {
	switch {
	case isIndex(d.MediaType):
		im, err := r.child(d, depth)
		if err != nil {
			return nil, err
		}
		var have []string
		for _, m := range im.Manifests {
			if m.Platform == nil {
				continue
			}
			if m.Platform.Satisfies(r.platform) && (isIndex(m.MediaType) || isManifest(m.MediaType)) {
				return r.materialize(m, depth+1)
			}
			have = append(have, m.Platform.String())
		}
		// An index may group further indexes without a platform of their own
		// (image-spec image-index.md allows nesting); look inside them in order.
		for _, m := range im.Manifests {
			if m.Platform != nil || !isIndex(m.MediaType) {
				continue
			}
			img, err := r.materialize(m, depth+1)
			if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
				return img, err
			}
			have = append(have, "nested index "+m.Digest.String())
		}
		return nil, r.errorf("%w: index %s has no manifest for platform %s (has: %s)", errdefs.ErrNotFound, d.Digest, r.platform, listOrNone(have))
	case isManifest(d.MediaType):
		raw, err := readLayoutBlob(r.root, "manifest", d, maxManifestBytes)
		if err != nil {
			return nil, r.errorf("%w", err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, r.errorf("parse manifest %s: %w", d.Digest, err)
		}
		img, err := partial.CompressedToImage(&layoutImage{root: r.root, desc: d, raw: raw, manifest: m})
		if err != nil {
			return nil, r.errorf("manifest %s: %w", d.Digest, err)
		}
		return img, nil
	}
	return nil, r.errorf("descriptor %s has media type %q, neither an image manifest nor an index", d.Digest, d.MediaType)
}

// layoutImage is an image manifest of a layout whose config and layers are
// read on demand from root/blobs, with the same bounds as the manifest.
// (go-containerregistry's layout package reads every blob but layers whole,
// whatever its size, and opens whatever file is there.)
type layoutImage struct {
	root     string
	desc     v1.Descriptor
	raw      []byte
	manifest *v1.Manifest
}

var _ partial.CompressedImageCore = (*layoutImage)(nil)

func (li *layoutImage) RawManifest() ([]byte, error)        { return li.raw, nil }
func (li *layoutImage) MediaType() (types.MediaType, error) { return li.desc.MediaType, nil }

func (li *layoutImage) RawConfigFile() ([]byte, error) {
	return readLayoutBlob(li.root, "config", li.manifest.Config, maxConfigBytes)
}

func (li *layoutImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == li.manifest.Config.Digest {
		return &layoutBlob{root: li.root, desc: li.manifest.Config}, nil
	}
	for _, d := range li.manifest.Layers {
		if d.Digest == h {
			return &layoutBlob{root: li.root, desc: d}, nil
		}
	}
	return nil, fmt.Errorf("blob %s is not in manifest %s: %w", h, li.desc.Digest, errdefs.ErrNotFound)
}

// layoutBlob is a layer blob, opened only when Store.Import streams it
// (which bounds and hashes what it reads).
type layoutBlob struct {
	root string
	desc v1.Descriptor
}

func (b *layoutBlob) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *layoutBlob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *layoutBlob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }

func (b *layoutBlob) Compressed() (io.ReadCloser, error) {
	p, err := layoutBlobPath(b.root, b.desc.Digest)
	if err != nil {
		return nil, err
	}
	if b.desc.Size < 0 {
		return nil, fmt.Errorf("blob %s: descriptor declares %d bytes: %w", b.desc.Digest, b.desc.Size, errdefs.ErrInvalidArgument)
	}
	f, err := openRegular(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", b.desc.Digest, err)
	}
	// One byte beyond the declared size lets the reader see a blob that is
	// longer than its descriptor says.
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, b.desc.Size+1), f}, nil
}

func layoutBlobPath(root string, h v1.Hash) (string, error) {
	// v1.Hash parsing already allows only sha256 and hex; this keeps the
	// path beneath blobs/ whatever produced h.
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return "", fmt.Errorf("blob digest %q: only sha256 is supported: %w", h, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(root, "blobs", h.Algorithm, h.Hex), nil
}

// readLayoutBlob reads the blob d names, refusing a descriptor that
// declares more than max bytes (or no size) and a file longer than its
// descriptor says, then checks it against the descriptor.
func readLayoutBlob(root, what string, d v1.Descriptor, max int64) ([]byte, error) {
	if d.Size < 0 || d.Size > max {
		return nil, fmt.Errorf("%s %s: descriptor declares %d bytes, not within 0..%d: %w", what, d.Digest, d.Size, max, errdefs.ErrInvalidArgument)
	}
	p, err := layoutBlobPath(root, d.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, d.Digest, err)
	}
	raw, err := readFileMax(p, d.Size)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, d.Digest, err)
	}
	if err := checkBlob(what, d, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

func isIndex(mt types.MediaType) bool {
	return mt == types.OCIImageIndex || mt == types.DockerManifestList
}

func isManifest(mt types.MediaType) bool {
	return mt == types.OCIManifestSchema1 || mt == types.DockerManifestSchema2
}

// checkBlob verifies raw against its descriptor: a layout's files are named
// by their digests, but nothing guarantees they hold what the name says.
func checkBlob(what string, d v1.Descriptor, raw []byte) error {
	sum := sha256.Sum256(raw)
	got := "sha256:" + hex.EncodeToString(sum[:])
	if d.Digest.Algorithm != "sha256" || got != d.Digest.String() {
		return &DigestError{What: what + " blob", Want: d.Digest.String(), Got: got}
	}
	if d.Size != int64(len(raw)) {
		return fmt.Errorf("%s %s: size %d, descriptor says %d: %w", what, d.Digest, len(raw), d.Size, errdefs.ErrInvalidArgument)
	}
	return nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
