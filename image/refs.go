package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Image records carry the references an image was pulled as and its use
// times; these helpers read and rewrite them. Every rewrite is a whole new
// record renamed into place (writeFileAtomic), under s.recMu.

func (s *Store) readRecord(hexDigest string) (*record, error) {
	b, err := os.ReadFile(s.recordPath(hexDigest))
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("parse record %s: %w", hexDigest, err)
	}
	return &rec, nil
}

func (s *Store) writeRecord(rec *record) error {
	h, err := v1.NewHash(rec.Digest)
	if err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.writeFileAtomic(s.recordPath(h.Hex), b)
}

// records reads every image record (without loading configs).
func (s *Store) records() ([]*record, error) {
	dir := filepath.Join(s.root, "images", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, e := range ents {
		hexd, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		rec, err := s.readRecord(hexd)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile (GC)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// updateRecord adds refs to an existing image, marks it used now, and
// returns the image.
func (s *Store) updateRecord(digest string, refs []string) (*Image, error) {
	h, err := v1.NewHash(digest)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", digest, err)
	}
	s.recMu.Lock()
	rec, err := s.readRecord(h.Hex)
	if err == nil {
		rec.Refs = addRefs(rec.Refs, refs)
		rec.LastUsed = s.now().UTC()
		err = s.writeRecord(rec)
		if err == nil {
			err = s.untagOthers(digest, refs)
		}
	}
	s.recMu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", digest, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: update record: %w", digest, err)
	}
	return s.Image(digest)
}

// untagOthers removes the tag refs ("repo:tag") among refs from every image
// but digest: a tag names one image at a time. Called with s.recMu held,
// after the new owner's record is written, so a crash in between leaves the
// tag on two images, where Lookup picks the most recently used.
func (s *Store) untagOthers(digest string, refs []string) error {
	var tags []string
	for _, r := range refs {
		if !strings.Contains(r, "@") {
			tags = append(tags, r)
		}
	}
	if len(tags) == 0 {
		return nil
	}
	recs, err := s.records()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.Digest == digest {
			continue
		}
		kept := slices.DeleteFunc(slices.Clone(rec.Refs), func(r string) bool { return slices.Contains(tags, r) })
		if len(kept) == len(rec.Refs) {
			continue
		}
		rec.Refs = kept
		if err := s.writeRecord(rec); err != nil {
			return err
		}
	}
	return nil
}

func addRefs(have, add []string) []string {
	out := slices.Clone(have)
	for _, r := range add {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return out
}

// Lookup returns the stored image a reference names: for a reference with
// a digest, the image pulled as repo@digest (the manifest or the index it
// was resolved through) — the digest decides, a tag beside it is ignored;
// for a tag, the image the tag pointed to at the last pull. The repository
// must match too: an image pulled from one repository is not found under
// another, because trust decisions are made per repository. Errors wrap
// errdefs.ErrNotFound or ErrBadReference.
func (s *Store) Lookup(ref string) (*Image, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return nil, err
	}
	key := r.Pinned()
	recs, err := s.records()
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", key, err)
	}
	var best *record
	for _, rec := range recs {
		if slices.Contains(rec.Refs, key) && (best == nil || rec.LastUsed.After(best.LastUsed)) {
			best = rec
		}
	}
	if best == nil {
		return nil, fmt.Errorf("lookup %s: %w", key, errdefs.ErrNotFound)
	}
	return s.Image(best.Digest)
}

// Touch marks the image used now (call it when a container starts from
// it), which keeps it from being collected before images unused for longer.
func (s *Store) Touch(digest string) error {
	_, err := s.updateRecord(digest, nil)
	return err
}
