package image

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Size is the size of the image with manifest digest "sha256:<hex>" as a
// container runtime reports it to the kubelet, which puts it in its Pulled
// event ("Image size: N bytes", from CRI ImageStatus's size) and in the
// node's status.images: the bytes of the image as a registry stores it, its
// manifest, its config and its compressed layers, as the manifest's
// descriptors give them. containerd's CRI sums the same blobs (and, for an
// image pulled through a multi-platform index, the index too, which berth
// does not keep); it is not the space the unpacked layers take on disk.
func (s *Store) Size(digest string) (int64, error) {
	h, err := v1.NewHash(digest)
	if err != nil || h.Algorithm != "sha256" {
		return 0, fmt.Errorf("image %q: not a sha256 digest: %w", digest, errdefs.ErrInvalidArgument)
	}
	raw, err := readFileMax(s.blobPath(h.Hex), maxManifestBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("image %s: manifest: %w", digest, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("image %s: manifest: %w", digest, err)
	}
	if got := sha256Digest(raw); got != digest {
		return 0, fmt.Errorf("image %s: %w", digest, &DigestError{What: "stored manifest", Want: digest, Got: got})
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return 0, fmt.Errorf("image %s: parse manifest: %w", digest, err)
	}
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size, nil
}
