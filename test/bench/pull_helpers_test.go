package bench

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	gobuild "go/build"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/test/testenv"
)

// The benchmark image: one layer of many small files (a distribution's
// /usr: unpack cost is per entry, not per byte) and four layers of large
// files (a runtime, a model, assets), ~100 MB unpacked in all. Content is
// from a seeded PRNG, so every run pushes the same digests.
const (
	smallFiles  = 3000
	smallDirs   = 30
	bigLayers   = 4
	bigFilesPer = 11
	bigFileSize = 2 << 20
	imageSeed   = 20240611
)

// probes are files every unpack must produce, one in the small-file layer
// and one in the top layer.
var probes = []string{"usr/share/d03/f0123", "opt/l3/blob10"}

// benchImage is the built image and its sizes.
type benchImage struct {
	img          v1.Image
	layers       int
	unpacked     int64 // bytes of file content
	compressed   int64 // bytes of the gzip blobs
	regularFiles int
	probeSizes   map[string]int64 // probes → their size
}

// fill writes n bytes that compress about 2:1 overall, as real image
// content does: 64 KiB runs alternate between uniform random bytes (gzip
// stores them) and bytes from a 16-symbol alphabet (4 bits of entropy per
// byte), so both inflate paths — stored and Huffman-coded blocks — are
// exercised rather than only memcpy.
func fill(r *rand.Rand, n int) []byte {
	const run = 64 << 10
	const alphabet = "etaoinshrdlucmfw"
	b := make([]byte, n)
	for off := 0; off < n; off += run {
		end := min(off+run, n)
		if (off/run)%2 == 0 {
			for i := off; i < end; i++ {
				b[i] = byte(r.Uint32())
			}
		} else {
			for i := off; i < end; i++ {
				b[i] = alphabet[r.IntN(len(alphabet))]
			}
		}
	}
	return b
}

type tarEntry struct {
	name string
	dir  bool
	data []byte
}

// gzipTar builds one layer blob: a tar of the entries, gzip-compressed at
// the default level (what docker, buildah and ggcr push).
func gzipTar(entries []tarEntry) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	mtime := time.Date(2024, 6, 11, 0, 0, 0, 0, time.UTC)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, ModTime: mtime, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, e.name+"/"
		} else {
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// buildBenchImage builds the OCI image (OCI manifest, config and gzip layer
// media types) for the host platform.
func buildBenchImage() (*benchImage, error) {
	r := rand.New(rand.NewPCG(imageSeed, 0))
	bi := &benchImage{probeSizes: map[string]int64{}}

	var layerSets [][]tarEntry
	small := []tarEntry{{name: "usr", dir: true}, {name: "usr/share", dir: true}}
	for d := range smallDirs {
		small = append(small, tarEntry{name: fmt.Sprintf("usr/share/d%02d", d), dir: true})
	}
	for i := range smallFiles {
		// 512 B .. 8 KiB: the bulk of a distribution's files by count.
		data := fill(r, 512+r.IntN(8<<10-512))
		small = append(small, tarEntry{name: fmt.Sprintf("usr/share/d%02d/f%04d", i%smallDirs, i), data: data})
	}
	layerSets = append(layerSets, small)
	for l := range bigLayers {
		set := []tarEntry{{name: "opt", dir: true}, {name: fmt.Sprintf("opt/l%d", l), dir: true}}
		for f := range bigFilesPer {
			set = append(set, tarEntry{name: fmt.Sprintf("opt/l%d/blob%02d", l, f), data: fill(r, bigFileSize)})
		}
		layerSets = append(layerSets, set)
	}

	img, err := mutate.ConfigFile(mutate.MediaType(empty.Image, types.OCIManifestSchema1), &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		RootFS:       v1.RootFS{Type: "layers"},
		Config:       v1.Config{Cmd: []string{"/bin/true"}, Env: []string{"PATH=/usr/bin:/bin"}},
	})
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for i, set := range layerSets {
		for _, e := range set {
			bi.unpacked += int64(len(e.data))
			if !e.dir {
				bi.regularFiles++
			}
			for _, p := range probes {
				if e.name == p {
					bi.probeSizes[p] = int64(len(e.data))
				}
			}
		}
		blob, err := gzipTar(set)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		bi.compressed += int64(len(blob))
		// The opener hands out the finished gzip stream, so ggcr takes it as
		// the compressed blob as is (no recompression on every read).
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(blob)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{
			Layer:     layer,
			MediaType: types.OCILayer,
			History:   v1.History{CreatedBy: fmt.Sprintf("berth bench layer %d", i)},
		}); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	bi.img, bi.layers = img, len(layerSets)
	if len(bi.probeSizes) != len(probes) {
		return nil, fmt.Errorf("probe files %v not all in the image", probes)
	}
	return bi, nil
}

// cosignBin finds the cosign CLI; `go install` puts it in GOPATH/bin,
// which a plain `go test` environment may not have on PATH.
func cosignBin(b testing.TB) string {
	b.Helper()
	if p, err := exec.LookPath("cosign"); err == nil {
		return p
	}
	p := filepath.Join(gobuild.Default.GOPATH, "bin", "cosign")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return testenv.RequireCommand(b, "cosign") // skips, or fails under BERTH_TEST_ALL=1
}

// run runs a command and returns its combined output, failing b with it.
func run(b testing.TB, ctx context.Context, dir string, env []string, name string, args ...string) string {
	b.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cosign runs the cosign CLI in dir. Its HOME, TUF root and docker config
// are kept in dir so the host's are neither read nor written.
type cosign struct{ bin, dir string }

func newCosign(b testing.TB, dir string) cosign { return cosign{bin: cosignBin(b), dir: dir} }

func (c cosign) run(b testing.TB, args ...string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := []string{"COSIGN_PASSWORD=", "HOME=" + c.dir, "TUF_ROOT=" + filepath.Join(c.dir, "tuf"),
		"DOCKER_CONFIG=" + filepath.Join(c.dir, "docker")}
	run(b, ctx, c.dir, env, c.bin, args...)
}

// signImage makes a key pair and signs repo@digest with it, offline (no
// transparency log); it returns the public key path.
func (c cosign) signImage(b testing.TB, repo string, digest v1.Hash) string {
	b.Helper()
	c.run(b, "generate-key-pair")
	c.run(b, "sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", repo+"@"+digest.String())
	return filepath.Join(c.dir, "cosign.pub")
}

// verify checks the signature of repo@digest as `cosign verify` does for a
// user of the containers tools, offline (the signature is in no log).
func (c cosign) verify(b testing.TB, pub, repo string, digest v1.Hash) {
	b.Helper()
	c.run(b, "verify", "--key", pub, "--insecure-ignore-tlog=true", repo+"@"+digest.String())
}

// writePolicy writes a containers-policy.json(5) file that rejects every
// image except those under scope, which must meet req (verify/POLICY.md;
// skopeo reads the same format).
func writePolicy(b testing.TB, path, scope string, req map[string]string) {
	b.Helper()
	p := map[string]any{
		"default":    []any{map[string]string{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{scope: []any{req}}},
	}
	js, err := json.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, js, 0o600); err != nil {
		b.Fatal(err)
	}
}

// median of the samples (the mean of the middle two for an even count).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func secs(d time.Duration) float64 { return d.Seconds() }

func fmtDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.2fs", d.Seconds())
	}
	return strings.Join(parts, " ")
}

// checkUnpacked fails b unless every probe file is a regular file of its
// size in one of the root directories (a rootfs, or a store's layer
// directories): an unpack that silently produced nothing would make any
// timing meaningless.
func checkUnpacked(b testing.TB, bi *benchImage, roots ...string) {
	b.Helper()
	for _, p := range probes {
		found := false
		for _, r := range roots {
			fi, err := os.Lstat(filepath.Join(r, p))
			if err != nil {
				continue
			}
			if !fi.Mode().IsRegular() || fi.Size() != bi.probeSizes[p] {
				b.Fatalf("unpacked image: %s is %v, %d bytes; want a regular file of %d",
					filepath.Join(r, p), fi.Mode(), fi.Size(), bi.probeSizes[p])
			}
			found = true
		}
		if !found {
			b.Fatalf("unpacked image: %s in none of %v", p, roots)
		}
	}
}
