package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Image garbage collection thresholds: the kubelet's defaults
// (--image-gc-high-threshold=85, --image-gc-low-threshold=80).
const (
	DefaultGCHighPercent = 85
	DefaultGCLowPercent  = 80
)

// GCOptions control one garbage collection.
type GCOptions struct {
	// InUse holds the manifest digests ("sha256:…") of images that
	// containers use; they are never removed.
	InUse map[string]bool
	// HighPercent: collection starts when the filesystem holding the
	// store is at least this full (default 85). LowPercent: it removes
	// images until usage is at or below this (default 80).
	HighPercent, LowPercent int
	// Force removes every image not in use, whatever the usage.
	Force bool

	// statfs reports the filesystem's capacity and the bytes available
	// to unprivileged users (tests replace it); nil is statfs(2).
	statfs func(path string) (capacity, available uint64, err error)
}

// GCReport says what a collection did.
type GCReport struct {
	// UsageBefore and UsageAfter are the filesystem's use in percent, as
	// the kubelet computes it: 100 - available*100/capacity.
	UsageBefore, UsageAfter int
	// Triggered: usage was at or above HighPercent (or Force).
	Triggered bool
	// RemovedImages are manifest digests, least recently used first.
	RemovedImages []string
	// RemovedLayers are the DiffIDs of removed layer directories.
	RemovedLayers []string
	// RemovedBlobs counts manifests and configs removed; RemovedMeta
	// the sidecar directories.
	RemovedBlobs, RemovedMeta int
	// FreedBytes is the growth of available space.
	FreedBytes int64
}

// GC removes images no container uses, least recently used first (by
// Image.LastUsed), when the filesystem holding the store is at least
// HighPercent full, until it is at most LowPercent full — or all of them
// with Force — and then every layer, blob and sidecar no remaining image
// references. Leftovers of interrupted imports are swept on every call.
//
// Removal is crash-safe: an image's record goes first (the image is gone
// the moment it is not listed), then what only it referenced; a crash in
// between leaves unreferenced files that the next GC sweeps. Images and
// layers an import or pull in progress holds are left alone. An image a
// caller has just obtained but not yet started a container from is not
// protected unless it is in InUse.
func (s *Store) GC(ctx context.Context, o GCOptions) (GCReport, error) {
	var rep GCReport
	if o.HighPercent == 0 {
		o.HighPercent = DefaultGCHighPercent
	}
	if o.LowPercent == 0 {
		o.LowPercent = DefaultGCLowPercent
	}
	if o.LowPercent < 0 || o.HighPercent > 100 || o.LowPercent > o.HighPercent {
		return rep, fmt.Errorf("image gc: thresholds low %d%% high %d%%: need 0 <= low <= high <= 100", o.LowPercent, o.HighPercent)
	}
	if o.statfs == nil {
		o.statfs = statfs
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()

	capacity, avail0, err := o.statfs(s.root)
	if err != nil {
		return rep, fmt.Errorf("image gc: statfs %s: %w", s.root, err)
	}
	rep.UsageBefore = usagePercent(capacity, avail0)
	avail := avail0
	rep.Triggered = o.Force || rep.UsageBefore >= o.HighPercent

	if err := s.sweep(&rep); err != nil {
		return rep, fmt.Errorf("image gc: %w", err)
	}
	if rep.Triggered {
		victims, err := s.gcCandidates(o.InUse)
		if err != nil {
			return rep, fmt.Errorf("image gc: %w", err)
		}
		for _, rec := range victims {
			if err := ctx.Err(); err != nil {
				return rep, fmt.Errorf("image gc: %w", err)
			}
			if !o.Force {
				if _, avail, err = o.statfs(s.root); err != nil {
					return rep, fmt.Errorf("image gc: statfs %s: %w", s.root, err)
				}
				if usagePercent(capacity, avail) <= o.LowPercent {
					break
				}
			}
			removed, err := s.removeImage(rec.Digest)
			if err != nil {
				return rep, fmt.Errorf("image gc: %w", err)
			}
			if !removed {
				continue
			}
			rep.RemovedImages = append(rep.RemovedImages, rec.Digest)
			if err := s.sweep(&rep); err != nil {
				return rep, fmt.Errorf("image gc: %w", err)
			}
		}
	}
	if _, avail, err = o.statfs(s.root); err != nil {
		return rep, fmt.Errorf("image gc: statfs %s: %w", s.root, err)
	}
	rep.UsageAfter = usagePercent(capacity, avail)
	rep.FreedBytes = int64(avail) - int64(avail0)
	return rep, nil
}

func usagePercent(capacity, available uint64) int {
	if capacity == 0 {
		return 0
	}
	return 100 - int(available*100/capacity)
}

func statfs(path string) (uint64, uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize), nil
}

// gcCandidates lists images not in use, least recently used first.
func (s *Store) gcCandidates(inUse map[string]bool) ([]*record, error) {
	recs, err := s.records()
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, r := range recs {
		if !inUse[r.Digest] {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.LastUsed.Equal(b.LastUsed) {
			return a.LastUsed.Before(b.LastUsed)
		}
		if !a.Stored.Equal(b.Stored) {
			return a.Stored.Before(b.Stored)
		}
		return a.Digest < b.Digest
	})
	return out, nil
}

// removeImage deletes an image's record unless a pull or import holds it.
func (s *Store) removeImage(digest string) (bool, error) {
	h, err := v1.NewHash(digest)
	if err != nil {
		return false, err
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.mu.Lock()
	held := s.leases[h.Hex] > 0
	s.mu.Unlock()
	if held {
		return false, nil
	}
	if err := os.Remove(s.recordPath(h.Hex)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("remove image %s: %w", digest, err)
	}
	return true, nil
}

// sweep removes layers, blobs and sidecar directories that no image record
// references and no import or pull in progress holds. Everything is first
// renamed into tmp/ under s.mu (so an import either holds its lease or
// finds its layer gone and unpacks it again), then deleted outside it.
func (s *Store) sweep(rep *GCReport) error {
	var doomed []string
	err := func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		recs, err := s.records()
		if err != nil {
			return err
		}
		layers, blobs, images := map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, r := range recs {
			if h, err := v1.NewHash(r.Digest); err == nil {
				blobs[h.Hex], images[h.Hex] = true, true
			}
			if h, err := v1.NewHash(r.Config); err == nil {
				blobs[h.Hex] = true
			}
			for _, d := range r.DiffIDs {
				layers[strings.TrimPrefix(d, "sha256:")] = true
			}
		}
		kinds := []struct {
			dir  string
			keep map[string]bool
			hit  func(name string)
		}{
			{"layers", layers, func(n string) { rep.RemovedLayers = append(rep.RemovedLayers, "sha256:"+n) }},
			{"blobs", blobs, func(string) { rep.RemovedBlobs++ }},
			{"meta", images, func(string) { rep.RemovedMeta++ }},
		}
		for _, k := range kinds {
			dir := filepath.Join(s.root, k.dir, "sha256")
			ents, err := os.ReadDir(dir)
			if err != nil {
				return err
			}
			for _, e := range ents {
				n := e.Name()
				if k.keep[n] || s.leases[n] > 0 {
					continue
				}
				dst, err := os.MkdirTemp(s.tmpDir(), "gc-")
				if err != nil {
					return err
				}
				if err := os.Rename(filepath.Join(dir, n), filepath.Join(dst, n)); err != nil {
					os.Remove(dst)
					return err
				}
				doomed = append(doomed, dst)
				k.hit(n)
			}
		}
		return nil
	}()
	for _, d := range doomed {
		if rerr := removeAll(d); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}
