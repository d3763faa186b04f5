package image

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// mtime is the modification time every crafted entry carries unless set.
var mtime = time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

// ent is one crafted tar entry.
type ent struct {
	hdr  tar.Header
	body string
}

// Entries are owned by the test's own uid/gid so that unprivileged runs can
// keep ownership; root tests set other owners explicitly.
func own(h tar.Header) tar.Header {
	h.Uid, h.Gid = os.Getuid(), os.Getgid()
	if h.ModTime.IsZero() {
		h.ModTime = mtime
	}
	h.Format = tar.FormatPAX
	return h
}

func tDir(name string, mode int64) ent {
	return ent{hdr: own(tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode})}
}

func tFile(name, body string, mode int64) ent {
	return ent{hdr: own(tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body))}), body: body}
}

func tSymlink(name, target string) ent {
	return ent{hdr: own(tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777})}
}

func tHardlink(name, target string) ent {
	return ent{hdr: own(tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target, Mode: 0o644})}
}

func tType(name string, typ byte) ent {
	return ent{hdr: own(tar.Header{Name: name, Typeflag: typ, Mode: 0o644, Devmajor: 1, Devminor: 3})}
}

// with returns e with its header changed by f.
func (e ent) with(f func(h *tar.Header)) ent { f(&e.hdr); return e }

func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for _, e := range ents {
		h := e.hdr
		if err := w.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := io.WriteString(w, e.body); err != nil {
			t.Fatalf("write body %q: %v", h.Name, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mkLayer makes a gzip-compressed OCI layer from crafted entries.
func mkLayer(t testing.TB, ents ...ent) v1.Layer {
	t.Helper()
	raw := mkTar(t, ents...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// mkImage stacks layers (bottom first) into an OCI image for platform p.
func mkImage(t testing.TB, p v1.Platform, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.Env = []string{"PATH=/usr/bin:/bin"}
	cf.Config.Cmd = []string{"/bin/tool"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustDigest(t testing.TB, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
