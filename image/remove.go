package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Remove deletes the image with manifest digest digest and then every
// layer, blob and sidecar no remaining image references, in garbage
// collection's crash-safe order (the record first). Whether a container
// still uses the image is the caller's to decide (the store does not know
// containers); an image a pull, an import or a Hold keeps right now is
// refused with errdefs.ErrConflict.
func (s *Store) Remove(ctx context.Context, digest string) (GCReport, error) {
	var rep GCReport
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	if _, err := s.Image(digest); err != nil {
		return rep, err
	}
	removed, err := s.removeImage(digest)
	if err != nil {
		return rep, err
	}
	if !removed {
		return rep, fmt.Errorf("image %s is in use: a pull, an import or a container start holds it: %w", digest, errdefs.ErrConflict)
	}
	rep.RemovedImages = []string{digest}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if err := s.sweep(&rep); err != nil {
		return rep, fmt.Errorf("remove image %s: %w", digest, err)
	}
	return rep, nil
}

// Hold keeps the image with manifest digest digest from being removed
// (Remove answers errdefs.ErrConflict, GC skips it) until release is
// called: the pod worker holds the images of a pod from the moment it has
// them until the pod's bundles name them (what ImagesInUse reads), so that
// `berth image rm` cannot take an image between the two. errdefs.ErrNotFound
// when the image is not stored (any more).
func (s *Store) Hold(digest string) (release func(), err error) {
	h, err := v1.NewHash(digest)
	if err != nil || h.Algorithm != "sha256" {
		return nil, fmt.Errorf("image %q: not a sha256 digest: %w", digest, errdefs.ErrInvalidArgument)
	}
	// recMu orders this with removeImage, which checks the leases and
	// removes the record under it.
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if _, err := os.Stat(s.recordPath(h.Hex)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("image %s: %w", digest, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("image %s: %w", digest, err)
	}
	s.acquire([]string{h.Hex})
	var once sync.Once
	return func() { once.Do(func() { s.release([]string{h.Hex}) }) }, nil
}
