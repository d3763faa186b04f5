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
	"time"

	"golang.org/x/sys/unix"

	"github.com/containerd/errdefs"
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
	// Refs are the references the image was pulled as, normalised:
	// "repo@sha256:<manifest>" always, "repo@sha256:<index>" when pulled
	// through a multi-platform index, "repo:tag" while the tag still
	// points here (a later pull that moves the tag removes it). Empty for
	// images imported from a layout.
	Refs []string
	// Stored is when the image was first recorded; LastUsed when it was
	// last pulled, imported or Touched (garbage collection removes the
	// least recently used first).
	Stored, LastUsed time.Time
}

// Store keeps images on disk, laid out so that any source of v1.Image (an OCI
// layout now, a registry pull next) plugs into Import:
//
//	<root>/blobs/sha256/<hex>           manifests and configs, content-addressed
//	<root>/layers/sha256/<diffid-hex>/  unpacked layers in overlayfs format, shared by images
//	<root>/images/sha256/<hex>.json     one record per imported image (written last)
//	<root>/meta/sha256/<hex>/<name>     small sidecar files per image (PutMeta)
//	<root>/tmp/                         work in progress, emptied by New
//
// Everything appears by rename(2) of a finished temporary, so a reader sees
// a layer or an image completely or not at all, and an interrupted Import
// leaves nothing listed. A root belongs to one Store (one process).
type Store struct {
	root   string
	limits Limits
	lock   *os.File // shared flock on <root>/lock while open

	layerLocks keyedMutex // one unpack per DiffID at a time
	imageLocks keyedMutex // one import per manifest digest at a time
	pullLocks  keyedMutex // one registry fetch per manifest digest at a time

	mu     sync.Mutex
	leases map[string]int // DiffID or blob hex → imports/pulls in progress using it

	recMu sync.Mutex // serialises read-modify-write of image records (refs, times)
	gcMu  sync.Mutex // one GC at a time

	now func() time.Time // clock of record times (tests)

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
	s := &Store{root: abs, limits: DefaultLimits(), leases: map[string]int{}, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{"", "blobs/sha256", "layers/sha256", "images/sha256", "meta/sha256", "tmp"} {
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
	// Several processes may open the store at once (berthd, berth-verify
	// before a container start, a second berthd command). Each holds a shared
	// flock on <root>/lock for its lifetime; tmp/ holds only the leftovers of
	// dead processes when nobody else holds it, so it is emptied only then.
	lock, err := os.OpenFile(filepath.Join(abs, "lock"), os.O_CREATE|os.O_RDONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", abs, err)
	}
	s.lock = lock
	if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
		ents, err := os.ReadDir(s.tmpDir())
		if err != nil {
			lock.Close()
			return nil, fmt.Errorf("image store %s: %w", abs, err)
		}
		for _, e := range ents {
			if err := removeAll(filepath.Join(s.tmpDir(), e.Name())); err != nil {
				lock.Close()
				return nil, fmt.Errorf("image store %s: clean tmp: %w", abs, err)
			}
		}
	}
	// Downgrade (or take) the shared lock: flock converts atomically.
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_SH); err != nil {
		lock.Close()
		return nil, fmt.Errorf("image store %s: lock: %w", abs, err)
	}
	return s, nil
}

// Close releases the store's shared lock (process exit does too).
func (s *Store) Close() error { return s.lock.Close() }

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
	// Added with registry pulls; absent (zero) in older records.
	Refs     []string  `json:"refs,omitempty"`
	Stored   time.Time `json:"stored,omitzero"`
	LastUsed time.Time `json:"lastUsed,omitzero"`
}

// maxConfigBytes bounds an image config, which is read into memory before
// anything else is checked. Real configs are a few KiB; image history of
// thousands of steps stays under 1 MiB.
const maxConfigBytes = 8 << 20

// maxManifestBytes bounds an image manifest or index, from a registry
// (Registries' transport cuts the response there) or a layout, and
// index.json: 4 MiB, the limit of containerd and of the distribution
// registry. Real manifests are a few KiB.
const maxManifestBytes = 4 << 20

// ImportOptions adjust one Import.
type ImportOptions struct {
	// Refs are recorded for the image (see Image.Refs); a "repo:tag" ref
	// moves to this image from any other that had it.
	Refs []string
	// Progress receives bytes of compressed layer blobs as they stream.
	Progress func(Progress)
	// Verify judges the image by its manifest digest once the manifest and
	// the config are read and checked, before any layer is opened; an error
	// aborts the import, is returned wrapped, and leaves nothing stored.
	// It runs for every import, also when the image is already stored (as
	// PullOptions.Verify does). Sidecars it writes with PutMeta are kept
	// from garbage collection while it runs.
	Verify func(ctx context.Context, digest v1.Hash) error
}

// Import unpacks every layer of img that the store does not have yet and
// records the image. Layer blobs are verified while they stream: the
// compressed bytes against the manifest's layer digest and size, the
// uncompressed tar against the config's DiffID (a layout's blobs are not
// hashed when opened; remote layers are hashed twice, which is cheap).
// Concurrent imports share layers: each DiffID is unpacked once. On error,
// layers this call unpacked that no recorded image or running import uses
// are removed. Layers larger (compressed) than Limits.MaxCompressedBytes are
// refused before they are read, and so is a config whose descriptor
// declares no size or more than 8 MiB (the sources berth uses read a
// config no further than its declared size).
func (s *Store) Import(ctx context.Context, img v1.Image, o ImportOptions) (_ *Image, retErr error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("import image: read manifest: %w", err)
	}
	if len(rawManifest) > maxManifestBytes {
		return nil, fmt.Errorf("import image: manifest is %d bytes, more than the %d berth accepts: %w", len(rawManifest), maxManifestBytes, errdefs.ErrInvalidArgument)
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
	// A size of -1 ("unknown" to go-containerregistry) would let a registry
	// stream a config of any length into memory.
	if m.Config.Size < 0 || m.Config.Size > maxConfigBytes {
		return nil, fail("config %s: descriptor declares %d bytes, not within 0..%d: %w", m.Config.Digest, m.Config.Size, int64(maxConfigBytes), errdefs.ErrInvalidArgument)
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

	if o.Verify != nil {
		// Sidecars written by Verify (PutMeta) belong to this digest before
		// its record exists; the lease keeps GC off them.
		h := v1.Hash{Algorithm: "sha256", Hex: sha256Hex(rawManifest)}
		lease := []string{h.Hex}
		s.acquire(lease)
		err := o.Verify(ctx, h)
		s.release(lease)
		if err != nil {
			return nil, fail("verification failed: %w", err)
		}
	}

	unlock, err := s.imageLocks.lock(ctx, digest)
	if err != nil {
		return nil, fail("%w", err)
	}
	defer unlock()
	prog := newProgressState(o.Progress, m.Layers)
	if _, err := s.Image(digest); err == nil {
		prog.allCached()
		return s.updateRecord(digest, o.Refs) // already imported
	}

	// The leases keep GC away from this import's layers, config and
	// manifest until its record exists.
	uniq := append(uniqueHex(diffIDs), m.Config.Digest.Hex, sha256Hex(rawManifest))
	s.acquire(uniq)
	var created []string
	defer func() {
		s.release(uniq)
		if retErr != nil && len(created) > 0 {
			s.removeUnused(created)
		}
	}()
	for i, ld := range m.Layers {
		made, err := s.ensureLayer(ctx, img, ld, diffIDs[i], prog)
		if err != nil {
			var re *RefusedError
			if errors.As(err, &re) && re.Layer == "" {
				re.Layer = ld.Digest.String()
			}
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
	now := s.now().UTC()
	rec := record{SchemaVersion: 1, Digest: digest, MediaType: string(mediaType), Config: m.Config.Digest.String(),
		Stored: now, LastUsed: now}
	for _, h := range diffIDs {
		rec.DiffIDs = append(rec.DiffIDs, h.String())
	}
	rec.Refs = addRefs(nil, o.Refs)
	s.recMu.Lock()
	err = s.writeRecord(&rec)
	if err == nil {
		err = s.untagOthers(digest, rec.Refs)
	}
	s.recMu.Unlock()
	if err != nil {
		return nil, fail("write record: %w", err)
	}
	return &Image{Digest: digest, Config: cfg, DiffIDs: rec.DiffIDs, Refs: rec.Refs, Stored: rec.Stored, LastUsed: rec.LastUsed}, nil
}

// ensureLayer makes sure layers/sha256/<diffID> exists, unpacking it if not,
// and reports whether this call created it.
func (s *Store) ensureLayer(ctx context.Context, img v1.Image, desc v1.Descriptor, diffID v1.Hash, prog *progressState) (bool, error) {
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
		prog.cached(desc)
		return false, nil // shared with an image imported before
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if max := s.limits.MaxCompressedBytes; desc.Size > max {
		// Checked before the blob is opened: from a registry, nothing of
		// it is downloaded.
		return false, refuse("", RuleMaxCompressedBytes, "layer blob is %d bytes, limit %d (Limits.MaxCompressedBytes)", desc.Size, max)
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
	if err := s.unpackVerified(ctx, layer, desc, diffID, tmp, prog); err != nil {
		removeAll(tmp)
		return false, err
	}
	if err := os.Rename(tmp, final); err != nil {
		removeAll(tmp)
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			prog.done(desc)
			return false, nil // another process committed the same layer first
		}
		return false, fmt.Errorf("commit layer: %w", err)
	}
	prog.done(desc)
	return true, nil
}

// unpackVerified streams one layer blob into dir, hashing the compressed and
// the uncompressed bytes on the way. A digest mismatch is reported in
// preference to an unpack error (corruption explains a broken stream), except
// after a refusal or cancellation, where the rest of the blob is not read.
func (s *Store) unpackVerified(ctx context.Context, layer v1.Layer, desc v1.Descriptor, diffID v1.Hash, dir string, prog *progressState) error {
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

	compressed := &hashingReader{r: io.LimitReader(prog.reader(desc, rc), desc.Size+1), h: sha256.New()}
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
	if isRefused(uerr) {
		// Hostile or corrupt, the layer is rejected either way; no need to
		// read (for a registry: download) the rest of it first.
		return uerr
	}
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		// A source that verifies digests itself (go-containerregistry's
		// remote layers) fails the read at the end of a corrupt blob; it
		// is still a digest mismatch, and reported as one.
		if got := compressed.digest(); compressed.n >= desc.Size && got != desc.Digest.String() {
			return fmt.Errorf("%w (read: %w)", &DigestError{What: "layer blob", Want: desc.Digest.String(), Got: got}, err)
		}
		return fmt.Errorf("read layer blob: %w", err)
	}
	if got := compressed.digest(); got != desc.Digest.String() {
		derr := &DigestError{What: "layer blob", Want: desc.Digest.String(), Got: got}
		if uerr != nil {
			return fmt.Errorf("%w (and unpacking failed: %w)", derr, uerr)
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
		return nil, fmt.Errorf("image %s: %w", digest, errdefs.ErrNotFound)
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
	im := &Image{Digest: rec.Digest, DiffIDs: rec.DiffIDs, Refs: rec.Refs, Stored: rec.Stored, LastUsed: rec.LastUsed}
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

// metaDir is <root>/meta/sha256/<hex>, the sidecar files of one image.
func (s *Store) metaDir(hexDigest string) string {
	return filepath.Join(s.root, "meta", "sha256", hexDigest)
}

func metaPath(s *Store, digest, name string) (string, error) {
	h, err := v1.NewHash(digest)
	if err != nil || h.Algorithm != "sha256" {
		return "", fmt.Errorf("image meta %q: not a sha256 digest", digest)
	}
	if !validMetaName(name) {
		return "", fmt.Errorf("image meta %s: name %q: use letters, digits, '.', '_' and '-', not starting with '.'", digest, name)
	}
	return filepath.Join(s.metaDir(h.Hex), name), nil
}

func validMetaName(name string) bool {
	if name == "" || len(name) > 128 || name[0] == '.' {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// MaxMetaBytes bounds one sidecar file: they hold signatures and
// judgements, not content.
const MaxMetaBytes = 4 << 20

// PutMeta stores a small sidecar file name for the image with manifest
// digest (signatures, the trust judgement), replacing any previous one
// atomically. It may be called before the image is recorded (during a
// pull's Verify); garbage collection removes it with the image, or when no
// image and no pull in progress owns it.
func (s *Store) PutMeta(digest, name string, data []byte) error {
	p, err := metaPath(s, digest, name)
	if err != nil {
		return err
	}
	if len(data) > MaxMetaBytes {
		return fmt.Errorf("image meta %s/%s: %d bytes, limit %d", digest, name, len(data), MaxMetaBytes)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("image meta %s/%s: %w", digest, name, err)
	}
	if err := s.writeFileAtomic(p, data); err != nil {
		return fmt.Errorf("image meta %s/%s: %w", digest, name, err)
	}
	return nil
}

// GetMeta reads a sidecar file written by PutMeta; a missing one is
// errdefs.ErrNotFound.
func (s *Store) GetMeta(digest, name string) ([]byte, error) {
	p, err := metaPath(s, digest, name)
	if err != nil {
		return nil, err
	}
	b, err := readFileMax(p, MaxMetaBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image meta %s/%s: %w", digest, name, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("image meta %s/%s: %w", digest, name, err)
	}
	return b, nil
}

// readFileMax reads the regular file at p, refusing one of more than max
// bytes (errdefs.ErrInvalidArgument) without reading past max+1. The file
// is opened non-blocking, so that a FIFO put in its place is refused
// rather than waited on.
func readFileMax(p string, max int64) ([]byte, error) {
	f, err := openRegular(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", p, max, errdefs.ErrInvalidArgument)
	}
	return b, nil
}

// openRegular opens p for reading (following symlinks) and checks that it
// is a regular file: a device (/dev/zero) never ends, and opening a FIFO
// would block for a writer.
func openRegular(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not a regular file (mode %#o): %w", p, st.Mode&unix.S_IFMT, errdefs.ErrInvalidArgument)
	}
	// Back to blocking reads: O_NONBLOCK means nothing for a regular file,
	// but os.File would otherwise hand it to the poller.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "fcntl", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}
