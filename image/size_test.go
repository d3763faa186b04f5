package image

import (
	"context"
	"os"
	"testing"

	"github.com/containerd/errdefs"
)

// Size is manifest, config and compressed layers, the sum a registry's
// descriptors give, for an imported image; an unknown or damaged manifest
// is an error.
func TestSize(t *testing.T) {
	img, _ := openTestImage(t, false, false)
	s := newStore(t)
	im, err := s.Import(context.Background(), img, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	want := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		want += l.Size
	}
	if len(m.Layers) == 0 || m.Config.Size == 0 {
		t.Fatalf("test image has no layers or no config: %+v", m)
	}
	got, err := s.Size(im.Digest)
	if err != nil || got != want {
		t.Fatalf("Size = %d, %v; want %d", got, err, want)
	}
	if _, err := s.Size("sha256:" + sha256Hex([]byte("none"))); !errdefs.IsNotFound(err) {
		t.Errorf("unknown image: %v, want not found", err)
	}
	if _, err := s.Size("md5:00"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad digest: %v, want invalid argument", err)
	}
	if err := os.WriteFile(s.blobPath(im.Digest[len("sha256:"):]), append(raw, ' '), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Size(im.Digest); err == nil {
		t.Error("a manifest that no longer matches its digest gave a size")
	}
}
