package verify

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"

	"github.com/berth-dev/berth/image/registrytest"
	"github.com/berth-dev/berth/test/testenv"
)

// testRegistry is Debian's docker-registry (distribution 2.8) on a loopback
// port, started by image/registrytest. go-containerregistry talks plain HTTP
// to 127.0.0.1 without being told (name.Registry.Scheme).
type testRegistry struct {
	*registrytest.Registry
	host string // 127.0.0.1:<port>
}

func startRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := registrytest.Start(t, registrytest.Options{})
	return &testRegistry{Registry: r, host: r.Host}
}

func (r *testRegistry) stop() { r.Stop() }

// push writes a small random image to repo:tag and returns its digest.
func (r *testRegistry) push(t *testing.T, repoTag string) (name.Repository, v1.Hash) {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.Context(), d
}

// copySignatures copies the cosign signature manifest of from@fromDigest to
// the signature tag of to@toDigest, as an attacker with push access would.
func copySignatures(t *testing.T, from name.Repository, fromDigest v1.Hash, to name.Repository, toDigest v1.Hash) {
	t.Helper()
	src, err := ociremote.SignatureTag(from.Digest(fromDigest.String()))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := ociremote.SignatureTag(to.Digest(toDigest.String()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(src)
	if err != nil {
		t.Fatalf("get %s: %v", src, err)
	}
	if err := remote.Write(dst, img); err != nil {
		t.Fatalf("write %s: %v", dst, err)
	}
}

// cosignCLI runs the real cosign binary with a private HOME, so nothing it
// caches lands in the invoking user's home, and an empty key password.
type cosignCLI struct {
	bin  string
	home string
}

func requireCosign(t *testing.T) *cosignCLI {
	t.Helper()
	// `go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5` puts it in
	// $GOPATH/bin, which is often not on PATH.
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	if gobin := filepath.Join(gopath, "bin"); gopath != "" {
		if _, err := os.Stat(filepath.Join(gobin, "cosign")); err == nil {
			t.Setenv("PATH", os.Getenv("PATH")+string(os.PathListSeparator)+gobin)
		}
	}
	return &cosignCLI{bin: testenv.RequireCommand(t, "cosign"), home: t.TempDir()}
}

func (c *cosignCLI) run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=", "HOME="+c.home, "TUF_ROOT="+filepath.Join(c.home, "tuf"),
		"DOCKER_CONFIG="+filepath.Join(c.home, "docker"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// keyPair generates a cosign ECDSA P-256 key pair <prefix>.key/.pub in dir
// and returns the public key path.
func (c *cosignCLI) keyPair(t *testing.T, dir, prefix string) (priv, pub string) {
	t.Helper()
	c.run(t, dir, "generate-key-pair", "--output-key-prefix", prefix)
	return filepath.Join(dir, prefix+".key"), filepath.Join(dir, prefix+".pub")
}

// sign signs repo@digest with the key, without a transparency log (no network).
func (c *cosignCLI) sign(t *testing.T, key string, repo name.Repository, digest v1.Hash, annotations ...string) {
	t.Helper()
	args := []string{"sign", "--key", key, "--tlog-upload=false", "--yes"}
	for _, a := range annotations {
		args = append(args, "-a", a)
	}
	c.run(t, filepath.Dir(key), append(args, repo.Digest(digest.String()).String())...)
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadPolicy writes the JSON to dir/policy.json and loads it.
func loadPolicy(t *testing.T, dir, js string) *Policy {
	t.Helper()
	p, err := Load(writeFile(t, filepath.Join(dir, "policy.json"), js))
	if err != nil {
		t.Fatalf("load policy: %v\n%s", err, js)
	}
	return p
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fetch(t *testing.T, repo name.Repository, d v1.Hash) *SignatureSet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	set, err := FetchSignatures(ctx, repo, d)
	if err != nil {
		t.Fatalf("FetchSignatures(%s@%s): %v", repo, d, err)
	}
	return set
}

// wantAllowed / wantRejected assert a judgement and show it whole on failure.
func wantAllowed(t *testing.T, j Judgement) {
	t.Helper()
	if !j.Allowed || j.Error() != nil {
		t.Fatalf("want allowed, got %+v\nerror: %v", j, j.Error())
	}
}

func wantRejected(t *testing.T, j Judgement, reasonHas ...string) {
	t.Helper()
	if j.Allowed {
		t.Fatalf("want rejected, got allowed: %+v", j)
	}
	err := j.Error()
	if err == nil {
		t.Fatalf("rejected judgement without error: %+v", j)
	}
	for _, s := range reasonHas {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("rejection %q does not contain %q", err, s)
		}
	}
}
