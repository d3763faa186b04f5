package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func tag(t string) layout.Option {
	return layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: t})
}

// otherArches returns two architectures that are not the host's.
func otherArches() []string {
	var out []string
	for _, a := range []string{"s390x", "ppc64le", "riscv64"} {
		if a != runtime.GOARCH && len(out) < 2 {
			out = append(out, a)
		}
	}
	return out
}

func archImage(t *testing.T, arch string) v1.Image {
	return mkImage(t, v1.Platform{OS: "linux", Architecture: arch}, mkLayer(t, tFile("arch", arch, 0o644)))
}

func platformIndex(t *testing.T, arches ...string) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	imgs := map[string]v1.Image{}
	var adds []mutate.IndexAddendum
	for _, a := range arches {
		img := archImage(t, a)
		imgs[a] = img
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: a},
		}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	return idx, imgs
}

type layoutFixture struct {
	dir            string
	v1, v2         v1.Image
	multi          v1.ImageIndex
	multiImgs      map[string]v1.Image
	nestedInner    v1.ImageIndex
	nestedInnerImg map[string]v1.Image
}

func writeLayout(t *testing.T) layoutFixture {
	t.Helper()
	f := layoutFixture{dir: t.TempDir()}
	p, err := layout.Write(f.dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	host := runtime.GOARCH
	other := otherArches()
	f.v1 = mkImage(t, HostPlatform(), mkLayer(t, tFile("which", "v1", 0o644)))
	f.v2 = mkImage(t, HostPlatform(), mkLayer(t, tFile("which", "v2", 0o644)))
	f.multi, f.multiImgs = platformIndex(t, other[0], host, other[1])
	f.nestedInner, f.nestedInnerImg = platformIndex(t, other[1], host)
	nested := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: f.nestedInner}), types.OCIImageIndex)
	foreign, _ := platformIndex(t, other...)
	for _, step := range []error{
		p.AppendImage(f.v1, tag("v1")),
		p.AppendImage(f.v2, tag("v2")),
		p.AppendIndex(f.multi, tag("multi")),
		p.AppendIndex(nested, tag("nested")),
		p.AppendIndex(foreign, tag("foreign")),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	return f
}

func TestOpenLayoutResolvesRefs(t *testing.T) {
	f := writeLayout(t)
	other := otherArches()
	hostMulti := mustDigest(t, f.multiImgs[runtime.GOARCH])
	multiDigest, _ := f.multi.Digest()
	cases := []struct {
		name, ref, want string
	}{
		{"tag of an image", "v1", mustDigest(t, f.v1)},
		{"another tag", "v2", mustDigest(t, f.v2)},
		{"tag of a multi-platform index → host platform", "multi", hostMulti},
		{"tag of a nested index → host platform", "nested", mustDigest(t, f.nestedInnerImg[runtime.GOARCH])},
		{"digest of an image", mustDigest(t, f.v2), mustDigest(t, f.v2)},
		{"digest of an index → host platform", multiDigest.String(), hostMulti},
		{"digest of a foreign image in a nested index is taken as is", mustDigest(t, f.nestedInnerImg[other[1]]), mustDigest(t, f.nestedInnerImg[other[1]])},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, err := OpenLayout(context.Background(), f.dir, c.ref)
			if err != nil {
				t.Fatal(err)
			}
			if got := mustDigest(t, img); got != c.want {
				t.Errorf("OpenLayout(%q) = %s, want %s", c.ref, got, c.want)
			}
		})
	}
	t.Run("host platform image has the host architecture", func(t *testing.T) {
		img, err := OpenLayout(context.Background(), f.dir, "multi")
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil || cf.Architecture != runtime.GOARCH {
			t.Fatalf("config architecture %v (%v), want %s", cf, err, runtime.GOARCH)
		}
	})
}

func TestOpenLayoutSingleManifestWithoutRef(t *testing.T) {
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := mkImage(t, HostPlatform(), mkLayer(t, tFile("f", "x", 0o644)))
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	got, err := OpenLayout(context.Background(), dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, got) != mustDigest(t, img) {
		t.Fatalf("got %s, want %s", mustDigest(t, got), mustDigest(t, img))
	}

	// A layout holding only a multi-platform index resolves to the host.
	dir2 := t.TempDir()
	idx, imgs := platformIndex(t, append(otherArches(), runtime.GOARCH)...)
	if _, err := layout.Write(dir2, idx); err != nil {
		t.Fatal(err)
	}
	got, err = OpenLayout(context.Background(), dir2, "")
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, got) != mustDigest(t, imgs[runtime.GOARCH]) {
		t.Fatalf("got %s, want the host image %s", mustDigest(t, got), mustDigest(t, imgs[runtime.GOARCH]))
	}
}

func TestOpenLayoutErrors(t *testing.T) {
	f := writeLayout(t)
	other := otherArches()
	missing := "sha256:" + strings.Repeat("0", 64)
	cases := []struct {
		name, dir, ref string
		notFound       bool
		want           []string
	}{
		{"unknown tag", f.dir, "v3", true, []string{f.dir, `"v3"`, "org.opencontainers.image.ref.name", "tags in layout: foreign, multi, nested, v1, v2"}},
		{"unknown digest", f.dir, missing, true, []string{f.dir, missing, "no manifest or index with digest"}},
		{"no manifest for the host platform", f.dir, "foreign", true, []string{f.dir, `"foreign"`, "no manifest for platform linux/" + runtime.GOARCH, "has: linux/" + other[0] + ", linux/" + other[1]}},
		{"empty ref with several manifests", f.dir, "", false, []string{f.dir, "lists 5 manifests", "name one by tag or digest"}},
		{"malformed digest", f.dir, "sha256:xyz", false, []string{"malformed digest"}},
		{"not a layout", t.TempDir(), "v1", false, []string{"no OCI layout (index.json)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := OpenLayout(context.Background(), c.dir, c.ref)
			if err == nil {
				t.Fatal("OpenLayout succeeded, want an error")
			}
			if errors.Is(err, errdefs.ErrNotFound) != c.notFound {
				t.Errorf("errors.Is(errdefs.ErrNotFound) = %v, want %v: %v", !c.notFound, c.notFound, err)
			}
			for _, w := range append(c.want, c.dir) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestOpenLayoutCorruptManifest(t *testing.T) {
	f := writeLayout(t)
	d, _ := f.v1.Digest()
	blob := filepath.Join(f.dir, "blobs", "sha256", d.Hex)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = OpenLayout(context.Background(), f.dir, "v1")
	var de *DigestError
	if !errors.As(err, &de) || de.What != "manifest blob" || de.Want != d.String() {
		t.Fatalf("OpenLayout of a corrupt manifest = %v, want a manifest DigestError", err)
	}
	if !strings.Contains(err.Error(), f.dir) {
		t.Errorf("error %q does not name the layout", err)
	}
}
