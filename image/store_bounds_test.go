package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// TestGetMetaBounded: GetMeta reads at most MaxMetaBytes, and only from a
// regular file (a FIFO in its place would block the read forever).
func TestGetMetaBounded(t *testing.T) {
	const digest = "sha256:" + "ab" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	cases := []struct {
		name    string
		put     func(t *testing.T, p string)
		wantErr string // "" = success
	}{
		{"at the limit", func(t *testing.T, p string) { writeBytes(t, p, MaxMetaBytes) }, ""},
		{"one byte over", func(t *testing.T, p string) { writeBytes(t, p, MaxMetaBytes+1) }, "larger than 4194304 bytes"},
		{"a FIFO", func(t *testing.T, p string) {
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			p, err := metaPath(s, digest, "sig")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			c.put(t, p)
			b, err := s.GetMeta(digest, "sig")
			if c.wantErr == "" {
				if err != nil || len(b) != MaxMetaBytes {
					t.Fatalf("GetMeta = %d bytes, %v; want %d bytes", len(b), err, MaxMetaBytes)
				}
				return
			}
			if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), digest+"/sig") {
				t.Fatalf("GetMeta = %d bytes, %v; want an invalid-argument error naming %s/sig: %s", len(b), err, digest, c.wantErr)
			}
		})
	}
}

func writeBytes(t *testing.T, p string, n int) {
	t.Helper()
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), n), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sizedConfigImage is img with its manifest's config descriptor declaring
// size; it counts reads of the config.
type sizedConfigImage struct {
	v1.Image
	raw         []byte
	configReads *atomic.Int64
}

func withConfigSize(t *testing.T, img v1.Image, size int64) sizedConfigImage {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	m = m.DeepCopy()
	m.Config.Size = size
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return sizedConfigImage{Image: img, raw: raw, configReads: new(atomic.Int64)}
}

func (i sizedConfigImage) RawManifest() ([]byte, error) { return i.raw, nil }
func (i sizedConfigImage) Digest() (v1.Hash, error) {
	return v1.Hash{Algorithm: "sha256", Hex: sha256Hex(i.raw)}, nil
}
func (i sizedConfigImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i sizedConfigImage) RawConfigFile() ([]byte, error) {
	i.configReads.Add(1)
	return i.Image.RawConfigFile()
}

// TestImportRefusesUnboundedConfig: a config whose descriptor declares no
// size (-1, which go-containerregistry reads to the end of whatever the
// registry sends) or more than the bound is refused before it is read.
func TestImportRefusesUnboundedConfig(t *testing.T) {
	img := mkImage(t, HostPlatform(), mkLayer(t, tFile("f", "x", 0o644)))
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	real := int64(len(raw))
	cases := []struct {
		name   string
		size   int64
		refuse bool
	}{
		{"no size (-1)", -1, true},
		{"one over the bound", maxConfigBytes + 1, true},
		{"the bound itself passes the check (then mismatches)", maxConfigBytes, false},
		{"its real size", real, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			im := withConfigSize(t, img, c.size)
			_, err := s.Import(context.Background(), im, ImportOptions{})
			if c.refuse {
				if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "descriptor declares") {
					t.Fatalf("Import = %v, want an invalid-argument refusal of the config's declared size", err)
				}
				if n := im.configReads.Load(); n != 0 {
					t.Errorf("the config was read %d times before the refusal", n)
				}
				assertEmptyStore(t, s)
				return
			}
			if im.configReads.Load() == 0 {
				t.Errorf("the config was never read (Import = %v)", err)
			}
			if c.size == real && err != nil {
				t.Fatalf("Import = %v", err)
			}
		})
	}
}

// layerCountingImage counts the layers Import opens.
type layerCountingImage struct {
	v1.Image
	opened *atomic.Int64
}

func (i layerCountingImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	i.opened.Add(1)
	return i.Image.LayerByDigest(h)
}

// TestImportVerify: ImportOptions.Verify judges the manifest digest before
// any layer is opened; its refusal aborts the import and stores nothing.
// It runs again for an image already stored.
func TestImportVerify(t *testing.T) {
	li, _ := openTestImage(t, false, false)
	img := layerCountingImage{Image: li, opened: new(atomic.Int64)}
	want, err := li.Digest()
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	ctx := context.Background()

	denied := errors.New("no signature")
	var judged []v1.Hash
	_, err = s.Import(ctx, img, ImportOptions{Verify: func(_ context.Context, d v1.Hash) error {
		judged = append(judged, d)
		return denied
	}})
	if !errors.Is(err, denied) || !strings.Contains(err.Error(), want.String()) || !strings.Contains(err.Error(), "verification failed") {
		t.Fatalf("Import refused by Verify = %v, want it wrapped, naming %s", err, want)
	}
	if len(judged) != 1 || judged[0] != want {
		t.Errorf("Verify saw %v, want [%s]", judged, want)
	}
	if n := img.opened.Load(); n != 0 {
		t.Errorf("%d layers opened despite Verify's refusal", n)
	}
	assertEmptyStore(t, s)

	im, err := s.Import(ctx, img, ImportOptions{Verify: func(_ context.Context, d v1.Hash) error {
		if n := img.opened.Load(); n != 0 {
			t.Errorf("Verify called after %d layers were opened", n)
		}
		judged = append(judged, d)
		return nil
	}})
	if err != nil || im.Digest != want.String() || len(judged) != 2 {
		t.Fatalf("Import accepted by Verify = %v, %v (judged %d times)", im, err, len(judged))
	}

	// Stored already: judged again, and a refusal still refuses.
	_, err = s.Import(ctx, img, ImportOptions{Verify: func(context.Context, v1.Hash) error { return denied }})
	if !errors.Is(err, denied) {
		t.Errorf("Import of a stored image refused by Verify = %v, want the refusal", err)
	}
}
