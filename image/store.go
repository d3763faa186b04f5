package image

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image is an image recorded in the Store.
type Image struct {
	// Digest is the manifest digest, "sha256:<hex>" (what a registry and a
	// signature name).
	Digest string
	// Config is the image configuration (image-spec config.md).
	Config ocispec.Image
	// DiffIDs are the uncompressed layer digests, bottom-most first, as in
	// the config's rootfs.diff_ids.
	DiffIDs []string
}

// Store keeps images on disk, laid out so that any source of v1.Image (an OCI
// layout now, a registry pull next) plugs into Import:
//
//	<root>/blobs/sha256/<hex>           manifests and configs, content-addressed
//	<root>/layers/sha256/<diffid-hex>/  unpacked layers in overlayfs format, shared by images
//	<root>/images/sha256/<hex>.json     one record per imported image (written last)
//	<root>/tmp/                         work in progress, emptied by New
//
// Everything appears by rename(2) of a finished temporary, so a reader sees
// a layer or an image completely or not at all, and an interrupted Import
// leaves nothing listed. A root belongs to one Store (one process).
type Store struct {
	root   string
	limits Limits

	layerLocks keyedMutex // one unpack per DiffID at a time
	imageLocks keyedMutex // one import per manifest digest at a time

	mu     sync.Mutex
	leases map[string]int // DiffID hex → imports in progress using the layer

	unpacks atomic.Int64 // layers actually unpacked (tests check sharing)
}

// Option configures a Store.
type Option func(*Store)

// WithLimits sets the per-layer unpack limits (zero fields keep defaults).
func WithLimits(l Limits) Option { return func(s *Store) { s.limits = l.withDefaults() } }

// New opens (creating if needed) the store rooted at root and empties its
// tmp directory of whatever an interrupted run left.
func New(root string, opts ...Option) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", root, err)
	}
	s := &Store{root: abs, limits: DefaultLimits(), leases: map[string]int{}}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{"", "blobs/sha256", "layers/sha256", "images/sha256", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store %s: %w", abs, err)
		}
	}
	// Layers hold image files with their owners and setuid bits; a root that
	// other host users can traverse would let them run those binaries (the
	// reason containerd's and Docker's roots are 0700 too). overlayfs reads
	// lower layers with the mounter's credentials, so containers are unaffected.
	if err := os.Chmod(abs, 0o700); err != nil {
		return nil, fmt.Errorf("image store %s: %w", abs, err)
	}
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", abs, err)
	}
	for _, e := range ents {
		if err := removeAll(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			return nil, fmt.Errorf("image store %s: clean tmp: %w", abs, err)
		}
	}
	return s, nil
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

func (s *Store) tmpDir() string { return filepath.Join(s.root, "tmp") }

func (s *Store) layerPath(diffHex string) string {
	return filepath.Join(s.root, "layers", "sha256", diffHex)
}

func (s *Store) blobPath(hexDigest string) string {
	return filepath.Join(s.root, "blobs", "sha256", hexDigest)
}

func (s *Store) recordPath(hexDigest string) string {
	return filepath.Join(s.root, "images", "sha256", hexDigest+".json")
}

// record is the on-disk form of an imported image.
type record struct {
	SchemaVersion int      `json:"schemaVersion"`
	Digest        string   `json:"digest"`
	MediaType     string   `json:"mediaType"`
	Config        string   `json:"config"`
	DiffIDs       []string `json:"diffIDs"`
}

// Import unpacks every layer of img that the store does not have yet and
// records the image. Layer blobs are verified while they stream: the
// compressed bytes against the manifest's layer digest and size, the
// uncompressed tar against the config's DiffID (ggcr's layout reader does not
// hash blobs; remote layers are hashed twice, which is cheap). Concurrent
// imports share layers: each DiffID is unpacked once. On error, layers this
// call unpacked that no recorded image or running import uses are removed.
func (s *Store) Import(ctx context.Context, img v1.Image) (_ *Image, retErr error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("import image: read manifest: %w", err)
	}
	digest := sha256Digest(rawManifest)
	if d, err := img.Digest(); err != nil {
		return nil, fmt.Errorf("import image: manifest digest: %w", err)
	} else if d.String() != digest {
		return nil, fmt.Errorf("import image: %w", &DigestError{What: "manifest", Want: d.String(), Got: digest})
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("import image %s: "+format, append([]any{digest}, args...)...)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, fail("parse manifest: %w", err)
	}
	mediaType := m.MediaType
	if mediaType == "" {
		if mt, err := img.MediaType(); err == nil {
			mediaType = mt
		}
	}
	if !isManifest(mediaType) {
		return nil, fail("media type %q is not an image manifest", mediaType)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, fail("read config %s: %w", m.Config.Digest, err)
	}
	if err := checkBlob("config", m.Config, rawConfig); err != nil {
		return nil, fail("%w", err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(rawConfig, &cfg); err != nil {
		return nil, fail("parse config %s: %w", m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fail("config lists %d DiffIDs for %d layers", len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	diffIDs := make([]v1.Hash, len(m.Layers))
	for i, d := range cfg.RootFS.DiffIDs {
		h, err := v1.NewHash(d.String())
		if err != nil || h.Algorithm != "sha256" {
			return nil, fail("config DiffID %d %q is not a sha256 digest", i, d)
		}
		diffIDs[i] = h
	}

	unlock, err := s.imageLocks.lock(ctx, digest)
	if err != nil {
		return nil, fail("%w", err)
	}
	defer unlock()
	if im, err := s.Image(digest); err == nil {
		return im, nil // already imported
	}

	uniq := uniqueHex(diffIDs)
	s.acquire(uniq)
	var created []string
	defer func() {
		s.release(uniq)
		if retErr != nil && len(created) > 0 {
			s.removeUnused(created)
		}
	}()
	for i, ld := range m.Layers {
		made, err := s.ensureLayer(ctx, img, ld, diffIDs[i])
		if err != nil {
			return nil, fail("layer %d/%d %s (DiffID %s): %w", i+1, len(m.Layers), ld.Digest, diffIDs[i], err)
		}
		if made {
			created = append(created, diffIDs[i].Hex)
		}
	}

	if err := s.writeBlob(m.Config.Digest.Hex, rawConfig); err != nil {
		return nil, fail("store config: %w", err)
	}
	if err := s.writeBlob(sha256Hex(rawManifest), rawManifest); err != nil {
		return nil, fail("store manifest: %w", err)
	}
	rec := record{SchemaVersion: 1, Digest: digest, MediaType: string(mediaType), Config: m.Config.Digest.String()}
	for _, h := range diffIDs {
		rec.DiffIDs = append(rec.DiffIDs, h.String())
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, fail("encode record: %w", err)
	}
	if err := s.writeFileAtomic(s.recordPath(sha256Hex(rawManifest)), b); err != nil {
		return nil, fail("write record: %w", err)
	}
	return &Image{Digest: digest, Config: cfg, DiffIDs: rec.DiffIDs}, nil
}

// ensureLayer makes sure layers/sha256/<diffID> exists, unpacking it if not,
// and reports whether this call created it.
func (s *Store) ensureLayer(ctx context.Context, img v1.Image, desc v1.Descriptor, diffID v1.Hash) (bool, error) {
	unlock, err := s.layerLocks.lock(ctx, diffID.Hex)
	if err != nil {
		return false, err
	}
	defer unlock()
	final := s.layerPath(diffID.Hex)
	if fi, err := os.Lstat(final); err == nil {
		if !fi.IsDir() {
			return false, fmt.Errorf("%s exists and is not a directory", final)
		}
		return false, nil // shared with an image imported before
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	layer, err := img.LayerByDigest(desc.Digest)
	if err != nil {
		return false, fmt.Errorf("open layer: %w", err)
	}
	tmp, err := os.MkdirTemp(s.tmpDir(), "layer-"+diffID.Hex[:12]+"-")
	if err != nil {
		return false, err
	}
	// MkdirTemp makes 0700; the layer root becomes the merged root's mode
	// when no layer carries a "./" entry, so give it the usual 0755.
	if err := os.Chmod(tmp, 0o755); err != nil {
		removeAll(tmp)
		return false, err
	}
	s.unpacks.Add(1)
	if err := s.unpackVerified(ctx, layer, desc, diffID, tmp); err != nil {
		removeAll(tmp)
		return false, err
	}
	if err := os.Rename(tmp, final); err != nil {
		removeAll(tmp)
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			return false, nil // another process committed the same layer first
		}
		return false, fmt.Errorf("commit layer: %w", err)
	}
	return true, nil
}

// unpackVerified streams one layer blob into dir, hashing the compressed and
// the uncompressed bytes on the way. A digest mismatch is reported in
// preference to an unpack error (corruption explains a broken stream), except
// after a refusal or cancellation, where the rest of the blob is not read.
func (s *Store) unpackVerified(ctx context.Context, layer v1.Layer, desc v1.Descriptor, diffID v1.Hash, dir string) error {
	if desc.Digest.Algorithm != "sha256" {
		return fmt.Errorf("layer digest %s: only sha256 is supported", desc.Digest)
	}
	if desc.Size < 0 {
		return fmt.Errorf("layer descriptor size %d is negative", desc.Size)
	}
	rc, err := layer.Compressed()
	if err != nil {
		return fmt.Errorf("open layer blob: %w", err)
	}
	defer rc.Close()

	compressed := &hashingReader{r: io.LimitReader(rc, desc.Size+1), h: sha256.New()}
	br := bufio.NewReaderSize(compressed, 64<<10)
	ur, closeU, derr := decompressor(br)
	var uerr error
	uncompressed := &hashingReader{h: sha256.New()}
	if derr != nil {
		uerr = derr
	} else {
		uncompressed.r = &boundedReader{ctx: ctx, r: ur, max: s.limits.MaxBytes}
		uerr = Unpack(ctx, uncompressed, dir, s.limits)
		if uerr == nil {
			// The DiffID covers the whole stream, also the zero blocks after
			// the end-of-archive marker that tar.Reader leaves unread.
			if _, err := io.Copy(io.Discard, uncompressed); err != nil {
				uerr = fmt.Errorf("read layer after end of archive: %w", err)
			}
		}
		closeU()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if errors.Is(uerr, ErrRefused) {
		// Hostile or corrupt, the layer is rejected either way; no need to
		// read (for a registry: download) the rest of it first.
		return uerr
	}
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		return fmt.Errorf("read layer blob: %w", err)
	}
	if got := compressed.digest(); got != desc.Digest.String() {
		derr := &DigestError{What: "layer blob", Want: desc.Digest.String(), Got: got}
		if uerr != nil {
			return fmt.Errorf("%w (and unpacking failed: %v)", derr, uerr)
		}
		return derr
	}
	if compressed.n != desc.Size {
		return fmt.Errorf("layer blob is %d bytes, descriptor says %d", compressed.n, desc.Size)
	}
	if uerr != nil {
		return uerr
	}
	if got := uncompressed.digest(); got != diffID.String() {
		return &DigestError{What: "layer DiffID", Want: diffID.String(), Got: got}
	}
	return nil
}

// decompressor picks gzip, zstd or none by magic number (as ggcr and
// containerd do) rather than trusting the media type.
func decompressor(br *bufio.Reader) (io.Reader, func(), error) {
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (r *hashingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	return n, err
}

func (r *hashingReader) digest() string { return "sha256:" + hex.EncodeToString(r.h.Sum(nil)) }

// Image returns the recorded image with manifest digest "sha256:<hex>".
func (s *Store) Image(digest string) (*Image, error) {
	h, err := v1.NewHash(digest)
	if err != nil || h.Algorithm != "sha256" {
		return nil, fmt.Errorf("image %q: not a sha256 digest", digest)
	}
	b, err := os.ReadFile(s.recordPath(h.Hex))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", digest, err)
	}
	return s.loadRecord(digest, b)
}

func (s *Store) loadRecord(digest string, b []byte) (*Image, error) {
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("image %s: parse record: %w", digest, err)
	}
	if rec.Digest != digest {
		return nil, fmt.Errorf("image %s: record names %s", digest, rec.Digest)
	}
	ch, err := v1.NewHash(rec.Config)
	if err != nil || ch.Algorithm != "sha256" {
		return nil, fmt.Errorf("image %s: record has bad config digest %q", digest, rec.Config)
	}
	raw, err := os.ReadFile(s.blobPath(ch.Hex))
	if err != nil {
		return nil, fmt.Errorf("image %s: read config: %w", digest, err)
	}
	if got := sha256Digest(raw); got != rec.Config {
		return nil, fmt.Errorf("image %s: %w", digest, &DigestError{What: "stored config", Want: rec.Config, Got: got})
	}
	im := &Image{Digest: rec.Digest, DiffIDs: rec.DiffIDs}
	if err := json.Unmarshal(raw, &im.Config); err != nil {
		return nil, fmt.Errorf("image %s: parse config: %w", digest, err)
	}
	return im, nil
}

// Images returns every recorded image, sorted by digest.
func (s *Store) Images() ([]*Image, error) {
	dir := filepath.Join(s.root, "images", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []*Image
	for _, e := range ents {
		hexd, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		im, err := s.loadRecord("sha256:"+hexd, b)
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// LayerDirs returns the image's unpacked layer directories top-most first,
// the order overlayfs wants in lowerdir= (Documentation/filesystems/
// overlayfs.rst "Multiple lower layers": the first is the top). A layer that
// occurs twice is listed once, at its top-most place: every file of the lower
// copy is shadowed by the same file in the upper one, so the merged view is
// unchanged — and overlayfs refuses a directory given twice ("overlayfs:
// conflicting lowerdir path", ELOOP; seen on Linux 6.18).
func (s *Store) LayerDirs(img *Image) []string {
	dirs := make([]string, 0, len(img.DiffIDs))
	seen := map[string]bool{}
	for i := len(img.DiffIDs) - 1; i >= 0; i-- {
		d := img.DiffIDs[i]
		if seen[d] {
			continue
		}
		seen[d] = true
		dirs = append(dirs, s.layerPath(strings.TrimPrefix(d, "sha256:")))
	}
	return dirs
}

func (s *Store) writeBlob(hexDigest string, data []byte) error {
	p := s.blobPath(hexDigest)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	return s.writeFileAtomic(p, data)
}

// writeFileAtomic writes data to a temporary under tmp/ and renames it into
// place. Records and blobs are small and are what makes an import visible,
// so they are fsynced; layer trees are not (a crash loses at most
// unreferenced layers, which are unpacked again).
func (s *Store) writeFileAtomic(p string, data []byte) error {
	f, err := os.CreateTemp(s.tmpDir(), "write-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (s *Store) acquire(diffHex []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range diffHex {
		s.leases[d]++
	}
}

func (s *Store) release(diffHex []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range diffHex {
		if s.leases[d]--; s.leases[d] <= 0 {
			delete(s.leases, d)
		}
	}
}

// removeUnused deletes layers a failed import created, unless another import
// holds them or a recorded image references them. Records are written while
// their import still holds its leases, so checking both under s.mu is enough.
// Each layer is first renamed into tmp/, so it vanishes atomically.
func (s *Store) removeUnused(diffHex []string) {
	var doomed []string
	s.mu.Lock()
	used, err := s.referencedLayers()
	if err == nil {
		for _, d := range diffHex {
			if s.leases[d] > 0 || used[d] {
				continue
			}
			dst, err := os.MkdirTemp(s.tmpDir(), "dead-")
			if err != nil {
				continue
			}
			if err := os.Rename(s.layerPath(d), filepath.Join(dst, "layer")); err != nil {
				os.Remove(dst)
				continue
			}
			doomed = append(doomed, dst)
		}
	}
	s.mu.Unlock()
	for _, d := range doomed {
		removeAll(d) // best effort: New empties tmp/ anyway
	}
}

func (s *Store) referencedLayers() (map[string]bool, error) {
	imgs, err := s.Images()
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, im := range imgs {
		for _, d := range im.DiffIDs {
			used[strings.TrimPrefix(d, "sha256:")] = true
		}
	}
	return used, nil
}

func uniqueHex(hs []v1.Hash) []string {
	seen := map[string]bool{}
	var out []string
	for _, h := range hs {
		if !seen[h.Hex] {
			seen[h.Hex] = true
			out = append(out, h.Hex)
		}
	}
	return out
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func sha256Digest(b []byte) string { return "sha256:" + sha256Hex(b) }

// removeAll is os.RemoveAll that also copes with directories an unprivileged
// unpack left without write or search permission (a layer's 0555 /usr).
func removeAll(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	// WalkDir visits a directory before reading it, so fixing its mode on
	// that first visit lets the walk (and then RemoveAll) descend.
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// keyedMutex is a set of context-aware mutexes, one per key.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (k *keyedMutex) lock(ctx context.Context, key string) (func(), error) {
	for {
		k.mu.Lock()
		if k.m == nil {
			k.m = map[string]chan struct{}{}
		}
		ch, busy := k.m[key]
		if !busy {
			ch = make(chan struct{})
			k.m[key] = ch
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.m, key)
				k.mu.Unlock()
				close(ch)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
