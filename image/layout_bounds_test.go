package image

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// layoutEdit is a layout holding one image tagged "app", to be damaged.
type layoutEdit struct {
	dir string
	img v1.Image
}

func newLayoutEdit(t *testing.T) layoutEdit {
	t.Helper()
	img := mkImage(t, HostPlatform(), mkLayer(t, tFile("f", "x", 0o644)))
	return layoutEdit{dir: writeTestLayout(t, map[string]v1.Image{"app": img}), img: img}
}

func (l layoutEdit) blob(t *testing.T, h v1.Hash) string {
	return filepath.Join(l.dir, "blobs", h.Algorithm, h.Hex)
}

// padJSON appends spaces (insignificant in JSON) up to size bytes.
func padJSON(t *testing.T, raw []byte, size int) []byte {
	t.Helper()
	if len(raw) > size {
		t.Fatalf("JSON of %d bytes does not fit %d", len(raw), size)
	}
	return append(raw, bytes.Repeat([]byte(" "), size-len(raw))...)
}

// writeIndex writes index.json padded to size bytes (0: as marshalled).
func (l layoutEdit) writeIndex(t *testing.T, im *v1.IndexManifest, size int) {
	t.Helper()
	raw, err := json.Marshal(im)
	if err != nil {
		t.Fatal(err)
	}
	if size > 0 {
		raw = padJSON(t, raw, size)
	}
	if err := os.WriteFile(filepath.Join(l.dir, "index.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (l layoutEdit) index(t *testing.T) *v1.IndexManifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// setManifest stores raw as the image's manifest blob and points index.json
// at it, declaring size.
func (l layoutEdit) setManifest(t *testing.T, raw []byte, size int64) {
	t.Helper()
	h := v1.Hash{Algorithm: "sha256", Hex: sha256Hex(raw)}
	if err := os.WriteFile(l.blob(t, h), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	im := l.index(t)
	im.Manifests[0].Digest, im.Manifests[0].Size = h, size
	l.writeIndex(t, im, 0)
}

func (l layoutEdit) manifest(t *testing.T) (*v1.Manifest, []byte, v1.Hash) {
	t.Helper()
	raw, err := l.img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := l.img.Digest()
	return m, raw, d
}

// replaceBlob puts a FIFO, or a symlink to /dev/zero, where blob h was.
func (l layoutEdit) replaceBlob(t *testing.T, h v1.Hash, with string) {
	t.Helper()
	p := l.blob(t, h)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	var err error
	switch with {
	case "fifo":
		err = unix.Mkfifo(p, 0o644)
	case "/dev/zero":
		err = os.Symlink("/dev/zero", p)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestLayoutReadsBounded: everything OpenLayout and Import read from a
// layout is bounded, by a documented maximum or by the descriptor's size,
// and only regular files are read; refusals name what was refused.
func TestLayoutReadsBounded(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(t *testing.T, l layoutEdit)
		stage string // where it fails: "open", "import", or "" (success)
		want  string
	}{
		{"index.json at the bound", func(t *testing.T, l layoutEdit) { l.writeIndex(t, l.index(t), maxManifestBytes) }, "", ""},
		{"index.json one byte over", func(t *testing.T, l layoutEdit) { l.writeIndex(t, l.index(t), maxManifestBytes+1) }, "open", "index.json is larger than 4194304 bytes"},
		{"manifest at the bound", func(t *testing.T, l layoutEdit) {
			_, raw, _ := l.manifest(t)
			l.setManifest(t, padJSON(t, raw, maxManifestBytes), maxManifestBytes)
		}, "", ""},
		{"manifest one byte over", func(t *testing.T, l layoutEdit) {
			_, raw, _ := l.manifest(t)
			l.setManifest(t, padJSON(t, raw, maxManifestBytes+1), maxManifestBytes+1)
		}, "open", "descriptor declares 4194305 bytes, not within 0..4194304"},
		{"manifest declaring no size", func(t *testing.T, l layoutEdit) {
			_, raw, _ := l.manifest(t)
			l.setManifest(t, raw, -1)
		}, "open", "descriptor declares -1 bytes"},
		{"manifest longer than its descriptor", func(t *testing.T, l layoutEdit) {
			_, raw, d := l.manifest(t)
			if err := os.WriteFile(l.blob(t, d), append(raw, bytes.Repeat([]byte(" "), 1<<20)...), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "open", "is larger than"},
		{"manifest is a FIFO", func(t *testing.T, l layoutEdit) {
			_, _, d := l.manifest(t)
			l.replaceBlob(t, d, "fifo")
		}, "open", "not a regular file"},
		{"config is /dev/zero", func(t *testing.T, l layoutEdit) {
			m, _, _ := l.manifest(t)
			l.replaceBlob(t, m.Config.Digest, "/dev/zero")
		}, "import", "not a regular file"},
		{"layer is a FIFO", func(t *testing.T, l layoutEdit) {
			m, _, _ := l.manifest(t)
			l.replaceBlob(t, m.Layers[0].Digest, "fifo")
		}, "import", "not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLayoutEdit(t)
			c.edit(t, l)
			img, err := OpenLayout(context.Background(), l.dir, "app")
			if c.stage == "open" {
				checkRefusal(t, "OpenLayout", err, c.want, l.dir)
				return
			}
			if err != nil {
				t.Fatalf("OpenLayout = %v", err)
			}
			s := newStore(t)
			_, err = s.Import(context.Background(), img, ImportOptions{})
			if c.stage == "import" {
				checkRefusal(t, "Import", err, c.want, "")
				assertEmptyStore(t, s)
				return
			}
			if err != nil {
				t.Fatalf("Import = %v", err)
			}
		})
	}
}

func checkRefusal(t *testing.T, op string, err error, want, dir string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want an error containing %q", op, want)
	}
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("%s = %v: not in the invalid-argument class", op, err)
	}
	for _, w := range []string{want, dir} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s = %v, want it to mention %q", op, err, w)
		}
	}
}

// TestOpenLayoutResolvesDir: the directory reported (and read) is absolute
// with its symlinks resolved, whatever path the caller gave.
func TestOpenLayoutResolvesDir(t *testing.T) {
	l := newLayoutEdit(t)
	real, err := filepath.EvalSymlinks(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	links := t.TempDir()
	link := filepath.Join(links, "via-link")
	if err := os.Symlink(l.dir, link); err != nil {
		t.Fatal(err)
	}
	parentLink := filepath.Join(links, "parent")
	if err := os.Symlink(filepath.Dir(l.dir), parentLink); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, dir string }{
		{"as written", l.dir},
		{"symlink to the layout", link},
		{"symlink to its parent", filepath.Join(parentLink, filepath.Base(l.dir))},
		{"with dot-dot", l.dir + "/blobs/.."}, // not cleaned: filepath.Join would
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, err := OpenLayout(context.Background(), c.dir, "app")
			if err != nil {
				t.Fatal(err)
			}
			if img.Dir != real || !filepath.IsAbs(img.Dir) {
				t.Errorf("OpenLayout(%s).Dir = %s, want %s", c.dir, img.Dir, real)
			}
			if mustDigest(t, img) != mustDigest(t, l.img) {
				t.Errorf("OpenLayout(%s) = %s, want %s", c.dir, mustDigest(t, img), mustDigest(t, l.img))
			}
		})
	}
}
