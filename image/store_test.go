package image

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"
)

const (
	passwdV1 = "root:x:0:0:root:/root:/bin/sh\n"
	passwdV3 = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
	groupV1  = "root:x:0:\napp:x:1000:\n"
)

// testLayers builds a three-layer image (bottom first):
//
//	L1: etc/{passwd,group,secret}, data/{old.txt,keep/x}, usr/share/{f,link (hardlink)}, bin/tool (setuid), tmp/ 1777
//	L2: etc/.wh.secret, data/new.txt, and with opaque: data/.wh..wh..opq
//	L3: etc/passwd (new), symlinks etc/{alt,abs,escape,dir-link,loop1,loop2}
//
// root decides ownership: false → the caller's own uid/gid (unprivileged
// tier), true → root for system files and 1000:1000 for usr/share.
func testLayers(t *testing.T, root, opaque bool) []v1.Layer {
	t.Helper()
	owned := func(uid, gid int) func(h *tar.Header) {
		return func(h *tar.Header) {
			if root {
				h.Uid, h.Gid = uid, gid
			}
		}
	}
	l1 := mkLayer(t,
		tDir("etc/", 0o755), tFile("etc/passwd", passwdV1, 0o644), tFile("etc/group", groupV1, 0o644),
		tFile("etc/secret", "s3cret", 0o600),
		tDir("data/", 0o755), tFile("data/old.txt", "old", 0o644), tDir("data/keep/", 0o755), tFile("data/keep/x", "x", 0o644),
		tDir("usr/", 0o755), tDir("usr/share/", 0o755),
		tFile("usr/share/f", "shared", 0o640).with(owned(1000, 1000)),
		tHardlink("usr/share/link", "usr/share/f"),
		tDir("bin/", 0o755), tFile("bin/tool", "#!/bin/sh\n", 0o4755).with(owned(0, 0)),
		tDir("tmp/", 0o1777),
	)
	l2ents := []ent{tDir("etc/", 0o755), tFile("etc/.wh.secret", "", 0o644), tDir("data/", 0o755), tFile("data/new.txt", "new", 0o644)}
	if opaque {
		l2ents = append(l2ents, tFile("data/.wh..wh..opq", "", 0o644))
	}
	l2 := mkLayer(t, l2ents...)
	l3 := mkLayer(t,
		tDir("etc/", 0o755), tFile("etc/passwd", passwdV3, 0o644),
		tSymlink("etc/alt", "passwd"),
		tSymlink("etc/abs", "/etc/group"),
		tSymlink("etc/escape", "../../../../../../../../etc/shadow"),
		tSymlink("etc/dir-link", "/usr/share"),
		tSymlink("etc/loop1", "loop2"), tSymlink("etc/loop2", "loop1"),
	)
	return []v1.Layer{l1, l2, l3}
}

// writeTestLayout writes img into a fresh OCI layout, tagged "app".
func writeTestLayout(t *testing.T, imgs map[string]v1.Image) string {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for name, img := range imgs {
		if err := p.AppendImage(img, tag(name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newStore(t *testing.T, opts ...Option) *Store {
	t.Helper()
	root := filepath.Join(t.TempDir(), "store")
	s, err := New(root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAll(root) })
	return s
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// assertEmptyStore checks that nothing is listed and no layer or temporary
// was left behind.
func assertEmptyStore(t *testing.T, s *Store) {
	t.Helper()
	imgs, err := s.Images()
	if err != nil || len(imgs) != 0 {
		t.Errorf("Images() = %d images, %v; want none", len(imgs), err)
	}
	for _, d := range []string{"layers/sha256", "images/sha256", "tmp"} {
		if n := dirNames(t, filepath.Join(s.Root(), d)); len(n) != 0 {
			t.Errorf("%s holds %v, want nothing", d, n)
		}
	}
}

func openTestImage(t *testing.T, root, opaque bool) (v1.Image, string) {
	t.Helper()
	img := mkImage(t, HostPlatform(), testLayers(t, root, opaque)...)
	dir := writeTestLayout(t, map[string]v1.Image{"app": img})
	got, err := OpenLayout(context.Background(), dir, "app")
	if err != nil {
		t.Fatal(err)
	}
	return got, dir
}

func TestImportAndRead(t *testing.T) {
	img, _ := openTestImage(t, false, false)
	s := newStore(t)
	im, err := s.Import(context.Background(), img, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	var wantDiffIDs []string
	for _, d := range cf.RootFS.DiffIDs {
		wantDiffIDs = append(wantDiffIDs, d.String())
	}
	if im.Digest != mustDigest(t, img) || !slices.Equal(im.DiffIDs, wantDiffIDs) {
		t.Fatalf("Import = %s %v, want %s %v", im.Digest, im.DiffIDs, mustDigest(t, img), wantDiffIDs)
	}
	if !slices.Equal(im.Config.Config.Cmd, []string{"/bin/tool"}) || im.Config.Platform.Architecture != HostPlatform().Architecture {
		t.Errorf("config not kept: cmd %v arch %q", im.Config.Config.Cmd, im.Config.Platform.Architecture)
	}

	imgs, err := s.Images()
	if err != nil || len(imgs) != 1 || imgs[0].Digest != im.Digest || !slices.Equal(imgs[0].DiffIDs, im.DiffIDs) {
		t.Fatalf("Images() = %v, %v; want just %s", imgs, err, im.Digest)
	}
	again, err := s.Image(im.Digest)
	if err != nil || !slices.Equal(again.Config.Config.Cmd, im.Config.Config.Cmd) {
		t.Fatalf("Image(%s) = %v, %v", im.Digest, again, err)
	}

	dirs := s.LayerDirs(im)
	for i, d := range dirs {
		want := filepath.Join(s.Root(), "layers", "sha256", strings.TrimPrefix(im.DiffIDs[len(im.DiffIDs)-1-i], "sha256:"))
		if d != want {
			t.Errorf("LayerDirs[%d] = %s, want %s (top-most first)", i, d, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dirs[0], "etc/passwd")); err != nil || string(b) != passwdV3 {
		t.Errorf("top layer etc/passwd = %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dirs[1], "etc/secret"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("middle layer etc/secret is not a 0/0 whiteout: %v mode %o", err, st.Mode)
	}

	// Importing again reuses everything.
	before := s.unpacks.Load()
	if _, err := s.Import(context.Background(), img, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if s.unpacks.Load() != before {
		t.Errorf("second import unpacked %d layers again", s.unpacks.Load()-before)
	}
	// A reopened store sees the image.
	s2, err := New(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if imgs, err := s2.Images(); err != nil || len(imgs) != 1 {
		t.Errorf("reopened store lists %d images, %v", len(imgs), err)
	}

	readCases := []struct {
		path string
		want string
		err  error  // errors.Is target
		text string // or a message part
	}{
		{path: "/etc/passwd", want: passwdV3},
		{path: "etc/passwd", want: passwdV3},
		{path: "/etc/group", want: groupV1},
		{path: "/etc/../etc/./passwd", want: passwdV3},
		{path: "/../../etc/passwd", want: passwdV3},
		{path: "/etc/alt", want: passwdV3},
		{path: "/etc/abs", want: groupV1},
		{path: "/etc/dir-link/f", want: "shared"},
		{path: "/usr/share/link", want: "shared"},
		{path: "/etc/secret", err: fs.ErrNotExist},
		{path: "/etc/escape", err: fs.ErrNotExist},
		{path: "/etc/nothere", err: fs.ErrNotExist},
		{path: "/data/old.txt", want: "old"}, // no opaque marker in this image
		{path: "/data/new.txt", want: "new"},
		{path: "/etc", text: "not a regular file"},
		{path: "/etc/passwd/x", err: unix.ENOTDIR},
		{path: "/etc/loop1", text: "too many levels of symbolic links"},
	}
	for _, c := range readCases {
		b, err := s.ReadFile(im, c.path)
		switch {
		case c.err != nil:
			if !errors.Is(err, c.err) {
				t.Errorf("ReadFile(%s) = %q, %v; want %v", c.path, b, err, c.err)
			}
		case c.text != "":
			if err == nil || !strings.Contains(err.Error(), c.text) {
				t.Errorf("ReadFile(%s) = %v, want an error with %q", c.path, err, c.text)
			}
		default:
			if err != nil || string(b) != c.want {
				t.Errorf("ReadFile(%s) = %q, %v; want %q", c.path, b, err, c.want)
			}
		}
	}
}

func TestStoreImageLookups(t *testing.T) {
	s := newStore(t)
	if _, err := s.Image("sha256:" + strings.Repeat("0", 64)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Image(unknown) = %v, want errdefs.ErrNotFound", err)
	}
	for _, bad := range []string{"", "../../etc/passwd", "sha256:../../x", "sha512:" + strings.Repeat("0", 128)} {
		if _, err := s.Image(bad); err == nil || errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Image(%q) = %v, want a malformed-digest error", bad, err)
		}
	}
}

func TestNewEmptiesTmp(t *testing.T) {
	s := newStore(t)
	junk := filepath.Join(s.Root(), "tmp", "layer-abandoned")
	if err := os.MkdirAll(filepath.Join(junk, "ro"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(junk, "ro", "f"), []byte("x"), 0o444)
	os.Chmod(filepath.Join(junk, "ro"), 0o555) // as an unprivileged unpack leaves it
	s.Close()                                  // the leftovers of a process that is gone
	if _, err := New(s.Root()); err != nil {
		t.Fatal(err)
	}
	if n := dirNames(t, filepath.Join(s.Root(), "tmp")); len(n) != 0 {
		t.Fatalf("tmp holds %v after New", n)
	}
	fi, err := os.Stat(s.Root())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("store root mode %v, %v; want 0700", fi.Mode(), err)
	}
}

// flipByte corrupts one byte in the middle of a layout blob.
func flipByte(t *testing.T, layoutDir string, h v1.Hash) {
	t.Helper()
	p := filepath.Join(layoutDir, "blobs", h.Algorithm, h.Hex)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImportCorruptLayerBlob(t *testing.T) {
	for _, which := range []struct {
		name  string
		layer int
	}{{"bottom layer", 0}, {"top layer (after two good layers)", 2}} {
		t.Run(which.name, func(t *testing.T) {
			img, dir := openTestImage(t, false, false)
			m, _ := img.Manifest()
			bad := m.Layers[which.layer].Digest
			flipByte(t, dir, bad)
			img, err := OpenLayout(context.Background(), dir, "app")
			if err != nil {
				t.Fatal(err)
			}
			s := newStore(t)
			_, err = s.Import(context.Background(), img, ImportOptions{})
			var de *DigestError
			if !errors.As(err, &de) || !errdefs.IsInvalidArgument(err) || de.What != "layer blob" || de.Want != bad.String() {
				t.Fatalf("Import = %v, want a layer blob DigestError for %s", err, bad)
			}
			if !strings.Contains(err.Error(), bad.String()) {
				t.Errorf("error %q does not name the blob", err)
			}
			assertEmptyStore(t, s)
		})
	}
}

// TestImportDiffIDMismatch checks the uncompressed digest: the blob is
// intact, but the config claims another DiffID.
func TestImportDiffIDMismatch(t *testing.T) {
	img := mkImage(t, HostPlatform(), mkLayer(t, tFile("a", "a", 0o644)), mkLayer(t, tFile("b", "b", 0o644)))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	real := cf.RootFS.DiffIDs[1]
	cf.RootFS.DiffIDs[1] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	lying, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	_, err = s.Import(context.Background(), lying, ImportOptions{})
	var de *DigestError
	if !errors.As(err, &de) || de.What != "layer DiffID" || de.Got != real.String() {
		t.Fatalf("Import = %v, want a layer DiffID mismatch (got %s)", err, real)
	}
	assertEmptyStore(t, s)
}

// cancelImage cancels ctx as soon as the layer with digest at is read.
type cancelImage struct {
	v1.Image
	at     v1.Hash
	cancel func()
}

func (c cancelImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := c.Image.LayerByDigest(h)
	if err != nil || h != c.at {
		return l, err
	}
	return cancelLayer{Layer: l, cancel: c.cancel}, nil
}

type cancelLayer struct {
	v1.Layer
	cancel func()
}

func (l cancelLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	return cancelReader{rc, l.cancel}, err
}

type cancelReader struct {
	io.ReadCloser
	cancel func()
}

func (r cancelReader) Read(p []byte) (int, error) { r.cancel(); return r.ReadCloser.Read(p) }

func TestImportInterrupted(t *testing.T) {
	img, _ := openTestImage(t, false, false)
	m, _ := img.Manifest()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newStore(t)
	// Layer 1 is unpacked and committed, then layer 2 is cut short.
	_, err := s.Import(ctx, cancelImage{Image: img, at: m.Layers[1].Digest, cancel: cancel}, ImportOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Import = %v, want context.Canceled", err)
	}
	assertEmptyStore(t, s)
	if s.unpacks.Load() != 2 {
		t.Errorf("unpacks = %d, want 2 (the first layer, then the interrupted one)", s.unpacks.Load())
	}
	// The store still works afterwards.
	if _, err := s.Import(context.Background(), img, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestImportConcurrentSharesLayers(t *testing.T) {
	layers := testLayers(t, false, false)
	app := mkImage(t, HostPlatform(), layers...)
	// other shares the bottom layer with app.
	other := mkImage(t, HostPlatform(), layers[0], mkLayer(t, tFile("other", "o", 0o644)))
	dir := writeTestLayout(t, map[string]v1.Image{"app": app, "other": other})
	s := newStore(t)

	refs := []string{"app", "app", "app", "other", "other"}
	results := make([]*Image, len(refs))
	errs := make([]error, len(refs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := OpenLayout(context.Background(), dir, ref)
			if err != nil {
				errs[i] = err
				return
			}
			<-start
			results[i], errs[i] = s.Import(context.Background(), img, ImportOptions{})
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("import %d (%s): %v", i, refs[i], err)
		}
	}
	if results[0].Digest != results[1].Digest || results[1].Digest != results[2].Digest || results[3].Digest != mustDigest(t, other) {
		t.Errorf("concurrent imports disagree: %s %s %s / %s", results[0].Digest, results[1].Digest, results[2].Digest, results[3].Digest)
	}
	// 3 layers of app + 1 of other; the shared bottom layer once.
	if got := s.unpacks.Load(); got != 4 {
		t.Errorf("unpacked %d layers, want 4 (each unique layer once)", got)
	}
	if n := dirNames(t, filepath.Join(s.Root(), "layers", "sha256")); len(n) != 4 {
		t.Errorf("layer dirs %v, want 4", n)
	}
	imgs, err := s.Images()
	if err != nil || len(imgs) != 2 {
		t.Errorf("Images() = %d, %v; want 2", len(imgs), err)
	}
	if n := dirNames(t, filepath.Join(s.Root(), "tmp")); len(n) != 0 {
		t.Errorf("tmp holds %v", n)
	}
}

func TestLayerDirsDeduplicates(t *testing.T) {
	s := newStore(t)
	a, b := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	got := s.LayerDirs(&Image{DiffIDs: []string{a, b, a}})
	want := []string{s.layerPath(strings.Repeat("a", 64)), s.layerPath(strings.Repeat("b", 64))}
	if !slices.Equal(got, want) {
		t.Errorf("LayerDirs = %v, want %v (top-most occurrence kept)", got, want)
	}
}
