package image

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
)

// Remove deletes the image with manifest digest digest and then every
// layer, blob and sidecar no remaining image references, in garbage
// collection's crash-safe order (the record first). Whether a container
// still uses the image is the caller's to decide (the store does not know
// containers); an image a pull or import holds right now is refused with
// errdefs.ErrConflict.
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
		return rep, fmt.Errorf("image %s is being pulled or imported: %w", digest, errdefs.ErrConflict)
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
