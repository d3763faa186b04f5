package images

import (
	"context"
	"errors"
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
	"github.com/berth-dev/berth/verify"
)

// A layout is judged before any of its layers is unpacked, against the
// directory it really is: a symlink from inside an accepted scope to a
// layout elsewhere is judged as elsewhere.
func TestLayoutJudgedFirstAndResolved(t *testing.T) {
	root := t.TempDir()
	trusted := filepath.Join(root, "trusted")
	elsewhere := filepath.Join(root, "elsewhere")
	for _, d := range []string{trusted, elsewhere} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	layer, err := imagetest.Layer([]imagetest.Entry{{Name: "hello", Type: '0', Mode: 0o644, Body: []byte("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(trusted, "good"), elsewhere} {
		if _, err := imagetest.WriteLayout(d, "app:1", img); err != nil {
			t.Fatal(err)
		}
	}
	// Inside the trusted scope, a symlink to the layout elsewhere.
	if err := os.Symlink(elsewhere, filepath.Join(trusted, "link")); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(root, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"reject"}],"transports":{"oci":{"`+trusted+`":[{"type":"insecureAcceptAnything"}]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := image.New(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	m := New(Config{Store: store, Policy: policy})

	_, err = m.Import(context.Background(), filepath.Join(trusted, "link"), "app:1")
	var rej *verify.RejectedError
	if !errors.As(err, &rej) || !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), elsewhere) {
		t.Fatalf("layout through a symlink: %v, want the policy's rejection naming %s", err, elsewhere)
	}
	if imgs, _ := store.Images(); len(imgs) != 0 {
		t.Fatalf("a rejected layout was imported: %v", imgs)
	}
	if layers, _ := filepath.Glob(filepath.Join(root, "store", "layers", "*", "*")); len(layers) != 0 {
		t.Fatalf("a rejected layout's layers were unpacked: %v", layers)
	}

	pi, err := m.Import(context.Background(), filepath.Join(trusted, "good"), "app:1")
	if err != nil {
		t.Fatal(err)
	}
	if pi.Layout != filepath.Join(trusted, "good") || pi.Image == nil {
		t.Fatalf("imported %+v", pi)
	}
	// The control: an accepted import does leave its layer where the
	// rejected one must not.
	if layers, _ := filepath.Glob(filepath.Join(root, "store", "layers", "*", "*")); len(layers) != 1 {
		t.Fatalf("accepted import: layers %v", layers)
	}
}
