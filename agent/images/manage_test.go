package images

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/test/imagetest"
)

type inUse map[string]bool

func (u inUse) ImagesInUse() (map[string]bool, error) {
	out := map[string]bool{}
	for k, v := range u {
		out[k] = v
	}
	return out, nil
}

// Remove refuses an image a container uses, resolves digests, prefixes and
// refuses ambiguous or short ones, and removes the image's layers with it.
func TestRemove(t *testing.T) {
	root := t.TempDir()
	layer, err := imagetest.Layer([]imagetest.Entry{{Name: "hello", Type: '0', Mode: 0o644, Body: []byte("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "layout")
	if _, err := imagetest.WriteLayout(dir, "app:1", img); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(root, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := image.New(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m := New(Config{Store: store, Policy: policy})
	pi, err := m.Import(context.Background(), dir, "app:1")
	if err != nil {
		t.Fatal(err)
	}
	d := pi.Image.Digest
	hexd := strings.TrimPrefix(d, "sha256:")
	ctx := context.Background()

	if _, err := m.Remove(ctx, hexd[:12], inUse{d: true}); !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "is in use by a container") {
		t.Errorf("remove of an image in use: %v", err)
	}
	for _, bad := range []string{"sha256:abc", hexd[:11] + "z"} {
		if _, err := m.Remove(ctx, bad, inUse{}); !errdefs.IsInvalidArgument(err) && !errdefs.IsNotFound(err) {
			t.Errorf("remove %q: %v, want invalid or not found", bad, err)
		}
	}
	if _, err := m.Remove(ctx, strings.Repeat("0", 12), inUse{}); !errdefs.IsNotFound(err) {
		t.Errorf("remove of an unknown prefix: %v", err)
	}
	// Held (a container being started from it): refused until released.
	release, err := m.Hold(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Remove(ctx, d, inUse{}); !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "holds it") {
		t.Errorf("remove of a held image: %v", err)
	}
	release()
	release() // idempotent
	got, err := m.Remove(ctx, d, inUse{})
	if err != nil || got.Digest != d {
		t.Fatalf("remove: %v %v", got, err)
	}
	if _, err := store.Image(d); !errdefs.IsNotFound(err) {
		t.Errorf("image still stored: %v", err)
	}
	if layers, _ := os.ReadDir(filepath.Join(store.Root(), "layers", "sha256")); len(layers) != 0 {
		t.Errorf("%d layers left", len(layers))
	}
	if _, err := m.Hold(d); !errdefs.IsNotFound(err) {
		t.Errorf("hold of a removed image: %v", err)
	}
}
