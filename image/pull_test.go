package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/image/registrytest"
	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/testenv"
)

// testRegs parses a registries.yaml with quick retries, so that failure
// cases take milliseconds.
func testRegs(t *testing.T, doc string) *Registries {
	t.Helper()
	r, err := ParseRegistries([]byte("defaults: {timeout: 10s, retries: 2, backoff: 10ms}\n"+doc), "test")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// randomLayer is a layer holding one file of size incompressible bytes.
func randomLayer(t *testing.T, name string, size int) v1.Layer {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return mkLayer(t, tFile(name, string(b), 0o644))
}

// appImage is a small two-layer image; marker makes each call distinct.
func appImage(t *testing.T, marker string) v1.Image {
	return mkImage(t, HostPlatform(),
		mkLayer(t, tDir("etc/", 0o755), tFile("etc/passwd", passwdV1, 0o644)),
		mkLayer(t, tDir("app/", 0o755), tFile("app/marker", marker, 0o644)))
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

func readString(t *testing.T, s *Store, im *Image, p string) string {
	t.Helper()
	b, err := s.ReadFile(im, p)
	if err != nil {
		t.Fatalf("ReadFile(%s): %v", p, err)
	}
	return string(b)
}

func listed(t *testing.T, s *Store) []string {
	t.Helper()
	imgs, err := s.Images()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, im := range imgs {
		out = append(out, im.Digest)
	}
	return out
}

// TestPullByTagAndDigest: the recorded digest is the manifest digest, a tag
// moved later does not change a pulled image, and a pull by digest of a
// stored image fetches nothing.
func TestPullByTagAndDigest(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	front := registrytest.NewProxy(t, reg, registrytest.ProxyOptions{})
	v1img, v2img := appImage(t, "one"), appImage(t, "two")
	d1 := reg.Push(t, "lib/app:v1", v1img)
	s := newStore(t)
	regs := testRegs(t, "")
	ctx := context.Background()
	repo := front.Host + "/lib/app"

	im, res, err := s.Pull(ctx, regs, repo+":v1", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if im.Digest != d1.String() || res.Digest != d1 || res.IndexDigest != nil || res.Ref != repo+":v1" {
		t.Fatalf("pulled %s, resolved %+v; want %s", im.Digest, res, d1)
	}
	if sum := sha256.Sum256(res.Manifest); fmt.Sprintf("sha256:%x", sum) != d1.String() {
		t.Errorf("Resolved.Manifest does not hash to %s", d1)
	}
	if res.Endpoint.Host != front.Host || res.Endpoint.Mirror || res.Repo.Name() != repo {
		t.Errorf("resolved on %+v repo %s", res.Endpoint, res.Repo)
	}
	wantRefs := []string{repo + ":v1", repo + "@" + d1.String()}
	if !slices.Equal(im.Refs, wantRefs) {
		t.Errorf("Refs = %v, want %v", im.Refs, wantRefs)
	}
	if got := readString(t, s, im, "/app/marker"); got != "one" {
		t.Errorf("/app/marker = %q", got)
	}

	// The tag moves to another image. The pulled image is unchanged.
	d2 := reg.Push(t, "lib/app:v1", v2img)
	again, err := s.Image(d1.String())
	if err != nil || readString(t, s, again, "/app/marker") != "one" {
		t.Fatalf("Image(%s) after the tag moved: %v", d1, err)
	}
	// By digest: found in the store, nothing fetched.
	before := len(front.Requests())
	byDigest, res2, err := s.Pull(ctx, regs, repo+"@"+d1.String(), PullOptions{})
	if err != nil || byDigest.Digest != d1.String() || res2.Digest != d1 {
		t.Fatalf("pull by digest = %v, %v", byDigest, err)
	}
	for _, r := range front.Requests()[before:] {
		if strings.Contains(r, "/blobs/") {
			t.Errorf("pull of a stored digest fetched %s", r)
		}
	}
	// The tag now resolves to the new image; the tag ref moves with it.
	im2, _, err := s.Pull(ctx, regs, repo+":v1", PullOptions{})
	if err != nil || im2.Digest != d2.String() || readString(t, s, im2, "/app/marker") != "two" {
		t.Fatalf("re-pull of the moved tag = %v, %v; want %s", im2, err, d2)
	}
	lookups := map[string]string{
		repo + ":v1":                d2.String(),
		repo + "@" + d1.String():    d1.String(),
		repo + ":v1@" + d1.String(): d1.String(), // the digest decides
		repo + "@" + d2.String():    d2.String(),
	}
	for ref, want := range lookups {
		got, err := s.Lookup(ref)
		if err != nil || got.Digest != want {
			t.Errorf("Lookup(%s) = %v, %v; want %s", ref, got, err, want)
		}
	}
	for _, ref := range []string{repo + ":v2", "other.example/lib/app@" + d1.String(), repo + "x:v1"} {
		if _, err := s.Lookup(ref); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Lookup(%s) = %v, want not found", ref, err)
		}
	}
	if old, _ := s.Image(d1.String()); slices.Contains(old.Refs, repo+":v1") {
		t.Errorf("old image still carries the moved tag: %v", old.Refs)
	}
	if got := listed(t, s); !slices.Equal(got, sortedStrings(d1.String(), d2.String())) {
		t.Errorf("Images() = %v", got)
	}
	// Not there at all.
	_, _, err = s.Pull(ctx, regs, repo+":nope", PullOptions{})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), repo+":nope") {
		t.Errorf("pull of a missing tag = %v, want not found naming the ref", err)
	}
	var pe *PullError
	if !errors.As(err, &pe) || len(pe.Attempts) != 1 || pe.Attempts[0].Host != front.Host {
		t.Errorf("PullError = %+v", pe)
	}
}

func sortedStrings(s ...string) []string { slices.Sort(s); return s }

// TestPullLayerSemantics pulls images whose layers use whiteouts, opaque
// directories and hardlinks, and busybox, and reads the merged view.
func TestPullLayerSemantics(t *testing.T) {
	testenv.RequireRoot(t) // root-owned files, trusted.overlay.opaque
	reg := registrytest.Start(t, registrytest.Options{})
	app := mkImage(t, HostPlatform(), testLayers(t, true, true)...)
	dApp := reg.Push(t, "lib/layers:v1", app)
	bb, err := imagetest.BusyboxImage(nil)
	if err != nil {
		t.Fatal(err)
	}
	dBB := reg.Push(t, "lib/busybox:latest", bb)
	s := newStore(t)
	regs := testRegs(t, "")
	ctx := context.Background()

	im, _, err := s.Pull(ctx, regs, reg.Ref("lib/layers:v1"), PullOptions{})
	if err != nil || im.Digest != dApp.String() {
		t.Fatalf("pull = %v, %v", im, err)
	}
	cases := []struct {
		path, want string // want "" = must not exist
	}{
		{"/etc/passwd", passwdV3},     // replaced by the top layer
		{"/etc/group", groupV1},       // from the bottom layer
		{"/etc/secret", ""},           // whiteout
		{"/data/old.txt", ""},         // under an opaque directory
		{"/data/keep/x", ""},          // likewise, one level down
		{"/data/new.txt", "new"},      // added beside the opaque marker
		{"/usr/share/link", "shared"}, // hardlink
		{"/etc/dir-link/f", "shared"}, // absolute symlink, resolved in the image
	}
	for _, c := range cases {
		b, err := s.ReadFile(im, c.path)
		switch {
		case c.want == "" && !errors.Is(err, fs.ErrNotExist):
			t.Errorf("ReadFile(%s) = %q, %v; want not-exist", c.path, b, err)
		case c.want != "" && (err != nil || string(b) != c.want):
			t.Errorf("ReadFile(%s) = %q, %v; want %q", c.path, b, err, c.want)
		}
	}
	// The hardlink is a hardlink on disk, with the owner from the tar.
	bottom := s.LayerDirs(im)[len(im.DiffIDs)-1]
	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(bottom, "usr/share/f"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(bottom, "usr/share/link"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 2 || a.Uid != 1000 {
		t.Errorf("usr/share/{f,link}: inodes %d/%d nlink %d uid %d; want one inode, 2 links, uid 1000", a.Ino, b.Ino, a.Nlink, a.Uid)
	}

	bim, _, err := s.Pull(ctx, regs, reg.Ref("lib/busybox"), PullOptions{})
	if err != nil || bim.Digest != dBB.String() {
		t.Fatalf("pull busybox = %v, %v", bim, err)
	}
	if got := readString(t, s, bim, "/etc/passwd"); got != imagetest.Passwd {
		t.Errorf("busybox /etc/passwd = %q", got)
	}
	want, _ := os.ReadFile(imagetest.Busybox)
	if got, err := s.ReadFile(bim, "/bin/sh"); err != nil || !bytes.Equal(got, want) {
		t.Errorf("busybox /bin/sh (symlink to busybox): %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	if !slices.Equal(bim.Config.Config.Cmd, []string{"/bin/sh"}) {
		t.Errorf("busybox config cmd = %v", bim.Config.Config.Cmd)
	}
}

// TestPullMultiPlatform: an index resolves to the host's platform (or the
// one asked for); the index digest is kept beside the manifest digest.
func TestPullMultiPlatform(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	arches := append([]string{runtime.GOARCH}, otherArches()...)
	idx, imgs := platformIndex(t, arches...)
	idxDigest := reg.PushIndex(t, "lib/multi:v1", idx)
	s := newStore(t)
	regs := testRegs(t, "")
	ctx := context.Background()
	repo := reg.Ref("lib/multi")

	im, res, err := s.Pull(ctx, regs, repo+":v1", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	host := mustDigest(t, imgs[runtime.GOARCH])
	if im.Digest != host || res.Digest.String() != host || res.IndexDigest == nil || *res.IndexDigest != idxDigest {
		t.Fatalf("pulled %s (index %v), want %s from index %s", im.Digest, res.IndexDigest, host, idxDigest)
	}
	if got := readString(t, s, im, "/arch"); got != runtime.GOARCH {
		t.Errorf("/arch = %q, want %q", got, runtime.GOARCH)
	}
	for _, ref := range []string{repo + ":v1", repo + "@" + idxDigest.String(), repo + "@" + host} {
		if got, err := s.Lookup(ref); err != nil || got.Digest != host {
			t.Errorf("Lookup(%s) = %v, %v", ref, got, err)
		}
	}

	other := otherArches()[0]
	im2, res2, err := s.Pull(ctx, regs, repo+"@"+idxDigest.String(), PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: other}})
	if err != nil || im2.Digest != mustDigest(t, imgs[other]) || *res2.IndexDigest != idxDigest {
		t.Fatalf("pull for %s = %v, %v", other, im2, err)
	}
	if got := readString(t, s, im2, "/arch"); got != other {
		t.Errorf("/arch = %q, want %q", got, other)
	}

	before := listed(t, s)
	_, _, err = s.Pull(ctx, regs, repo+":v1", PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: "mips64"}})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "linux/mips64") {
		t.Errorf("pull for a platform not in the index = %v, want not found naming it", err)
	}
	if got := listed(t, s); !slices.Equal(got, before) {
		t.Errorf("failed pull changed the listing: %v → %v", before, got)
	}
}

// TestPullTLS: a registry with a self-signed certificate works with its CA
// configured and fails with a certificate error without it.
func TestPullTLS(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{TLS: true})
	d := reg.Push(t, "lib/app:v1", appImage(t, "tls"))
	ctx := context.Background()

	s := newStore(t)
	_, _, err := s.Pull(ctx, testRegs(t, ""), reg.Ref("lib/app:v1"), PullOptions{})
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("pull without the CA = %v, want a certificate error", err)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("a TLS failure is classified unavailable: %v", err)
	}
	assertEmptyStore(t, s)

	regs := testRegs(t, fmt.Sprintf("registries:\n  %q: {ca: %q}\n", reg.Host, reg.CAFile))
	im, _, err := s.Pull(ctx, regs, reg.Ref("lib/app:v1"), PullOptions{})
	if err != nil || im.Digest != d.String() {
		t.Fatalf("pull with the CA = %v, %v", im, err)
	}
}

// TestPullPlainHTTPPolicy: plain HTTP to a host that does not look like
// loopback happens only when the host is configured insecure. Made-up host
// names are dialled to the loopback registry.
func TestPullPlainHTTPPolicy(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	d := reg.Push(t, "lib/app:v1", appImage(t, "plain"))
	dialTo := func(r *Registries) {
		var dialer net.Dialer
		r.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, reg.Host)
		}
	}
	ctx := context.Background()
	cases := []struct {
		host string
		// go-containerregistry falls back to plain HTTP by itself for
		// RFC 1918 addresses (name.Registry.Scheme); berth's transport
		// refuses that fallback. Other names fail at HTTPS.
		refused bool
	}{{"registry.example:5000", false}, {"10.1.2.3:5000", true}, {"192.168.7.8:5000", true}, {"mirror.local:5000", false}}
	for _, c := range cases {
		host := c.host
		t.Run(host, func(t *testing.T) {
			s := newStore(t)
			regs := testRegs(t, "")
			dialTo(regs)
			_, _, err := s.Pull(ctx, regs, host+"/lib/app:v1", PullOptions{})
			if err == nil {
				t.Fatal("pulled over plain HTTP from a host not configured insecure")
			}
			var pe *PlainHTTPError
			if !strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") || errors.As(err, &pe) != c.refused {
				t.Errorf("error = %v; want an HTTPS failure (and a plain-HTTP refusal: %v)", err, c.refused)
			}
			assertEmptyStore(t, s)

			regs = testRegs(t, fmt.Sprintf("registries:\n  %q: {insecure: true}\n", host))
			dialTo(regs)
			im, res, err := s.Pull(ctx, regs, host+"/lib/app:v1", PullOptions{})
			if err != nil || im.Digest != d.String() || !res.Endpoint.Insecure {
				t.Fatalf("pull from %s configured insecure = %v, %v", host, im, err)
			}
		})
	}
}

// TestPullMirror: a configured mirror serves the pull (the origin sees no
// request from berth); a mirror that is down, or lacks the image, is
// skipped for the origin.
func TestPullMirror(t *testing.T) {
	origin := registrytest.Start(t, registrytest.Options{})
	img := appImage(t, "mirrored")
	d := origin.Push(t, "lib/app:v1", img)
	originFront := registrytest.NewProxy(t, origin, registrytest.ProxyOptions{})
	// A pull-through cache of the origin, as docker.io mirrors run; it
	// reaches the origin directly, not through originFront.
	mirror := registrytest.Start(t, registrytest.Options{ProxyRemote: origin.URL})
	mirrorFront := registrytest.NewProxy(t, mirror, registrytest.ProxyOptions{})
	empty := registrytest.Start(t, registrytest.Options{})
	emptyFront := registrytest.NewProxy(t, empty, registrytest.ProxyOptions{})
	down := registrytest.ClosedAddr(t)
	ctx := context.Background()
	ref := originFront.Host + "/lib/app:v1"

	t.Run("mirror serves", func(t *testing.T) {
		s := newStore(t)
		regs := testRegs(t, fmt.Sprintf("registries:\n  %q:\n    mirrors: [{host: %q}]\n", originFront.Host, mirrorFront.Host))
		im, res, err := s.Pull(ctx, regs, ref, PullOptions{})
		if err != nil || im.Digest != d.String() {
			t.Fatalf("pull = %v, %v", im, err)
		}
		if !res.Endpoint.Mirror || res.Endpoint.Host != mirrorFront.Host {
			t.Errorf("resolved on %+v, want the mirror", res.Endpoint)
		}
		if n := originFront.Count(""); n != 0 {
			t.Errorf("origin saw %d requests from berth: %v", n, originFront.Requests())
		}
		for _, l := range layerDigests(t, img) {
			if mirrorFront.Count("/blobs/"+l) != 1 {
				t.Errorf("mirror served layer %s %d times: %v", l, mirrorFront.Count("/blobs/"+l), mirrorFront.Requests())
			}
		}
		// Recorded under the reference asked for, not the mirror's name.
		if !slices.Contains(im.Refs, ref) {
			t.Errorf("Refs = %v, want %s", im.Refs, ref)
		}
	})
	t.Run("mirrors down or empty", func(t *testing.T) {
		s := newStore(t)
		regs := testRegs(t, fmt.Sprintf("registries:\n  %q:\n    mirrors: [{host: %q}, {host: %q}]\n", originFront.Host, down, emptyFront.Host))
		beforeOrigin := originFront.Count("/manifests/")
		im, res, err := s.Pull(ctx, regs, ref, PullOptions{})
		if err != nil || im.Digest != d.String() {
			t.Fatalf("pull = %v, %v", im, err)
		}
		if res.Endpoint.Mirror || res.Endpoint.Host != originFront.Host {
			t.Errorf("resolved on %+v, want the origin", res.Endpoint)
		}
		if emptyFront.Count("/manifests/v1") == 0 {
			t.Errorf("the empty mirror was not asked: %v", emptyFront.Requests())
		}
		if originFront.Count("/manifests/") == beforeOrigin {
			t.Error("the origin was not asked")
		}
	})
	t.Run("all down", func(t *testing.T) {
		s := newStore(t)
		regs := testRegs(t, fmt.Sprintf("registries:\n  %q:\n    mirrors: [{host: %q}]\n", down, emptyFront.Host))
		_, _, err := s.Pull(ctx, regs, down+"/lib/app:v1", PullOptions{})
		var pe *PullError
		if !errors.As(err, &pe) || len(pe.Attempts) != 2 || !pe.Attempts[0].Mirror || pe.Attempts[1].Host != down {
			t.Fatalf("error = %v (%+v), want a mirror then the origin", err, pe)
		}
		// The origin's failure classifies the pull; the mirror's 404 is
		// reported but does not make it "not found".
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("classes: unavailable %v, not found %v; want the origin's (unavailable)", errors.Is(err, ErrUnavailable), errors.Is(err, errdefs.ErrNotFound))
		}
		for _, want := range []string{"mirror " + emptyFront.Host, "registry " + down, "MANIFEST_UNKNOWN", "connection refused"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})
}

// TestPullRegistryDown: a failing registry is retried as configured, then
// the error names the registry, the reference and the last error.
func TestPullRegistryDown(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	failing := registrytest.NewProxy(t, reg, registrytest.ProxyOptions{
		Intercept: func(w http.ResponseWriter, r *http.Request) bool {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return true
		},
	})
	ctx := context.Background()
	s := newStore(t)
	for _, retries := range []int{0, 3} {
		before := failing.Count("GET /v2/")
		regs, err := ParseRegistries([]byte(fmt.Sprintf("defaults: {retries: %d, backoff: 5ms}\n", retries)), "t")
		if err != nil {
			t.Fatal(err)
		}
		ref := failing.Host + "/lib/app:v1"
		_, _, err = s.Pull(ctx, regs, ref, PullOptions{})
		if got := failing.Count("GET /v2/") - before; got != retries+1 {
			t.Errorf("retries %d: %d attempts, want %d", retries, got, retries+1)
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("retries %d: %v, want ErrUnavailable", retries, err)
		}
		for _, want := range []string{ref, "registry " + failing.Host, "503"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v lacks %q", err, want)
			}
		}
		if retries > 0 && !strings.Contains(err.Error(), "gave up after 3 retries") {
			t.Errorf("error %v does not say how often it retried", err)
		}
	}

	// Nothing listening: connection refused, retried with backoff.
	down := registrytest.ClosedAddr(t)
	regs, _ := ParseRegistries([]byte("defaults: {retries: 2, backoff: 100ms}\n"), "t")
	start := time.Now()
	_, _, err := s.Pull(ctx, regs, down+"/lib/app:v1", PullOptions{})
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("gave up after %s; the backoff (100ms, 200ms) was not waited for", took)
	}
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), down+"/lib/app:v1") {
		t.Errorf("pull from a closed port = %v", err)
	}
	assertEmptyStore(t, s)
}

// TestPullCorruptBlob: a blob whose bytes do not match its digest is
// refused and nothing is stored; from a mirror, the origin is used instead.
func TestPullCorruptBlob(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	img := mkImage(t, HostPlatform(), mkLayer(t, tFile("small", "s", 0o644)), randomLayer(t, "big", 256<<10))
	d := reg.Push(t, "lib/app:v1", img)
	bad := layerDigests(t, img)[1]
	corrupt := registrytest.NewProxy(t, reg, registrytest.ProxyOptions{
		ModifyResponse: func(resp *http.Response) error {
			if registrytest.IsBlob(resp.Request, bad) {
				registrytest.WrapBody(resp, registrytest.FlipByte(100<<10))
			}
			return nil
		},
	})
	ctx := context.Background()

	s := newStore(t)
	_, _, err := s.Pull(ctx, testRegs(t, ""), corrupt.Host+"/lib/app:v1", PullOptions{})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("pull of a corrupt blob = %v, want a digest mismatch naming %s", err, bad)
	}
	assertEmptyStore(t, s)
	if n := dirNames(t, filepath.Join(s.Root(), "blobs", "sha256")); len(n) != 0 {
		t.Errorf("blobs stored after a refused pull: %v", n)
	}

	// The same corrupting proxy as a mirror of the intact registry.
	regs := testRegs(t, fmt.Sprintf("registries:\n  %q:\n    mirrors: [{host: %q}]\n", reg.Host, corrupt.Host))
	im, res, err := s.Pull(ctx, regs, reg.Ref("lib/app:v1"), PullOptions{})
	if err != nil || im.Digest != d.String() {
		t.Fatalf("pull with a corrupting mirror = %v, %v", im, err)
	}
	if !res.Endpoint.Mirror {
		t.Errorf("resolved on %+v; the mirror should have answered the manifest", res.Endpoint)
	}
	if b := readString(t, s, im, "/small"); b != "s" {
		t.Errorf("/small = %q", b)
	}
}

// TestPullKilledMidway: a pull whose process is SIGKILLed while a layer
// streams leaves nothing listed; the next pull completes, reusing what was
// finished.
func TestPullKilledMidway(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	img := mkImage(t, HostPlatform(), mkLayer(t, tFile("first", "1", 0o644)), randomLayer(t, "big", 4<<20))
	d := reg.Push(t, "lib/app:v1", img)
	big := layerDigests(t, img)[1]
	var stall atomic.Bool
	stall.Store(true)
	stalled := make(chan struct{})
	front := registrytest.NewProxy(t, reg, registrytest.ProxyOptions{
		ModifyResponse: func(resp *http.Response) error {
			if stall.Load() && registrytest.IsBlob(resp.Request, big) {
				registrytest.WrapBody(resp, registrytest.StallAfter(1<<20, stalled))
			}
			return nil
		},
	})
	root := filepath.Join(t.TempDir(), "store")
	t.Cleanup(func() { removeAll(root) })
	ref := front.Host + "/lib/app:v1"

	cmd := exec.Command(os.Args[0], "-test.run=^TestPullKilledMidwayChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BERTH_PULL_CHILD_ROOT="+root, "BERTH_PULL_CHILD_REF="+ref)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with this test, whatever happens
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case <-stalled:
	case err := <-exited:
		t.Fatalf("child exited before the stall: %v\n%s", err, out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("no stall after 60s\n%s", out.String())
	}
	// The child has streamed 1 MiB of the big layer into tmp/.
	if n := dirNames(t, filepath.Join(root, "tmp")); len(n) == 0 {
		t.Errorf("tmp/ is empty while the child unpacks")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited

	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := listed(t, s); len(got) != 0 {
		t.Fatalf("killed pull left %v listed", got)
	}
	if n := dirNames(t, filepath.Join(root, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ after reopening: %v", n)
	}
	if _, err := s.Lookup(ref); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Lookup after the killed pull = %v", err)
	}
	stall.Store(false)
	im, _, err := s.Pull(context.Background(), testRegs(t, ""), ref, PullOptions{})
	if err != nil || im.Digest != d.String() {
		t.Fatalf("pull after the kill = %v, %v", im, err)
	}
	// The first layer was committed by the child and is reused.
	if got := s.unpacks.Load(); got != 1 {
		t.Errorf("unpacked %d layers, want 1 (the one the kill interrupted)", got)
	}
	if got := readString(t, s, im, "/first"); got != "1" {
		t.Errorf("/first = %q", got)
	}
}

// TestPullKilledMidwayChild is the process TestPullKilledMidway kills.
func TestPullKilledMidwayChild(t *testing.T) {
	root := os.Getenv("BERTH_PULL_CHILD_ROOT")
	if root == "" {
		return // only as TestPullKilledMidway's child
	}
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Pull(context.Background(), testRegs(t, ""), os.Getenv("BERTH_PULL_CHILD_REF"), PullOptions{})
	t.Fatalf("pull returned (%v); it should have been killed while stalled", err)
}

// TestPullConcurrent: concurrent pulls of one image fetch and unpack each
// layer once.
func TestPullConcurrent(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	img := mkImage(t, HostPlatform(), randomLayer(t, "a", 64<<10), randomLayer(t, "b", 64<<10), mkLayer(t, tFile("c", "c", 0o644)))
	d := reg.Push(t, "lib/app:v1", img)
	front := registrytest.NewProxy(t, reg, registrytest.ProxyOptions{})
	s := newStore(t)
	regs := testRegs(t, "")
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	digests := make([]string, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ref := front.Host + "/lib/app:v1"
			if i%2 == 1 {
				ref = front.Host + "/lib/app@" + d.String()
			}
			im, _, err := s.Pull(context.Background(), regs, ref, PullOptions{})
			errs[i] = err
			if im != nil {
				digests[i] = im.Digest
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || digests[i] != d.String() {
			t.Errorf("pull %d = %s, %v", i, digests[i], errs[i])
		}
	}
	if got := s.unpacks.Load(); got != 3 {
		t.Errorf("unpacked %d layers, want 3", got)
	}
	// The config too is fetched once: pulls of one digest wait for each other.
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if c := front.Count("/blobs/" + cfgName.String()); c != 1 {
		t.Errorf("config fetched %d times, want once", c)
	}
	for _, l := range layerDigests(t, img) {
		if c := front.Count("/blobs/" + l); c != 1 {
			t.Errorf("layer %s fetched %d times, want once", l, c)
		}
	}
	if got, err := s.Lookup(front.Host + "/lib/app:v1"); err != nil || got.Digest != d.String() {
		t.Errorf("Lookup = %v, %v", got, err)
	}
}

// TestPullCredentials: an htpasswd registry accepts the credentials from
// a Docker config.json named in the configuration, and refuses without.
func TestPullCredentials(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{Users: map[string]string{"alice": "s3cret"}})
	d := reg.Push(t, "private/app:v1", appImage(t, "secret"))
	dir := t.TempDir()
	auth := func(user, pass string) string {
		return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	}
	good := writeFile(t, dir, "good.json", fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, reg.Host, auth("alice", "s3cret")))
	wrong := writeFile(t, dir, "wrong.json", fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, reg.Host, auth("alice", "guess")))
	other := writeFile(t, dir, "other.json", `{"auths": {"elsewhere.example": {"auth": "eDp5"}}}`)
	ctx := context.Background()
	ref := reg.Ref("private/app:v1")

	fails := map[string]string{
		"no auth file":            "",
		"wrong password":          "auth: " + wrong + "\n",
		"no entry for the host":   "auth: " + other + "\n",
		"registry entry wrong pw": fmt.Sprintf("auth: %s\nregistries:\n  %q: {auth: %q}\n", good, reg.Host, wrong),
	}
	for name, doc := range fails {
		s := newStore(t)
		_, _, err := s.Pull(ctx, testRegs(t, doc), ref, PullOptions{})
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), ref) {
			t.Errorf("%s: %v, want unauthorized naming %s", name, err, ref)
		}
		assertEmptyStore(t, s)
	}
	for name, doc := range map[string]string{
		"default auth file":  "auth: " + good + "\n",
		"registry auth file": fmt.Sprintf("auth: %s\nregistries:\n  %q: {auth: %q}\n", wrong, reg.Host, good),
	} {
		s := newStore(t)
		im, _, err := s.Pull(ctx, testRegs(t, doc), ref, PullOptions{})
		if err != nil || im.Digest != d.String() {
			t.Errorf("%s: %v, %v", name, im, err)
		}
	}
}

// TestPullLimits: a layer over MaxCompressedBytes is refused before any of
// it is downloaded, and refusals name the layer and the rule.
func TestPullLimits(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	front := registrytest.NewProxy(t, reg, registrytest.ProxyOptions{})
	big := mkImage(t, HostPlatform(), mkLayer(t, tFile("ok", "ok", 0o644)), randomLayer(t, "big", 64<<10))
	reg.Push(t, "lib/big:v1", big)
	var many []ent
	for i := range 20 {
		many = append(many, tFile(fmt.Sprintf("f%02d", i), "x", 0o644))
	}
	wide := mkImage(t, HostPlatform(), mkLayer(t, many...))
	reg.Push(t, "lib/wide:v1", wide)
	ctx := context.Background()

	cases := []struct {
		ref          string
		limits       Limits
		layer        string
		rule         Rule
		neverFetched bool
	}{
		{"lib/big:v1", Limits{MaxCompressedBytes: 32 << 10}, layerDigests(t, big)[1], RuleMaxCompressedBytes, true},
		{"lib/big:v1", Limits{MaxBytes: 32 << 10}, layerDigests(t, big)[1], RuleMaxBytes, false},
		{"lib/wide:v1", Limits{MaxEntries: 10}, layerDigests(t, wide)[0], RuleMaxEntries, false},
	}
	for _, c := range cases {
		t.Run(string(c.rule), func(t *testing.T) {
			s := newStore(t, WithLimits(c.limits))
			_, _, err := s.Pull(ctx, testRegs(t, ""), front.Host+"/"+c.ref, PullOptions{})
			var re *RefusedError
			if !errors.As(err, &re) || re.Rule != c.rule || re.Layer != c.layer {
				t.Fatalf("pull = %v (%+v), want a %s refusal of layer %s", err, re, c.rule, c.layer)
			}
			for _, want := range []string{c.layer, string(c.rule)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if c.neverFetched && front.Count("/blobs/"+c.layer) != 0 {
				t.Errorf("the refused layer was downloaded: %v", front.Requests())
			}
			assertEmptyStore(t, s)
		})
	}
	if DefaultLimits().MaxCompressedBytes != DefaultMaxCompressedBytes || DefaultMaxCompressedBytes > DefaultMaxBytes {
		t.Errorf("default compressed limit %d vs uncompressed %d", DefaultMaxCompressedBytes, DefaultMaxBytes)
	}
}

// TestPullProgressAndVerify: Verify runs before any blob is fetched and can
// stop the pull; Progress counts every layer byte.
func TestPullProgressAndVerify(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	img := mkImage(t, HostPlatform(), randomLayer(t, "a", 200<<10), mkLayer(t, tFile("b", "b", 0o644)))
	d := reg.Push(t, "lib/app:v1", img)
	front := registrytest.NewProxy(t, reg, registrytest.ProxyOptions{})
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ref := front.Host + "/lib/app:v1"
	s := newStore(t)
	regs := testRegs(t, "")

	// Refused by Verify: no blob fetched, nothing stored.
	denied := errors.New("no signature")
	_, res, err := s.Pull(ctx, regs, ref, PullOptions{Verify: func(ctx context.Context, r Resolved) error { return denied }})
	if !errors.Is(err, denied) || res == nil || res.Digest != d || !strings.Contains(err.Error(), d.String()) {
		t.Fatalf("pull refused by Verify = %v, %+v", err, res)
	}
	if c := front.Count("/blobs/"); c != 0 {
		t.Errorf("blobs fetched before/despite Verify: %v", front.Requests())
	}
	assertEmptyStore(t, s)

	var events []Progress
	verified := 0
	im, _, err := s.Pull(ctx, regs, ref, PullOptions{
		Verify: func(ctx context.Context, r Resolved) error {
			verified++
			if c := front.Count("/blobs/"); c != 0 {
				t.Errorf("Verify called after %d blob fetches", c)
			}
			return s.PutMeta(r.Digest.String(), "signature", []byte("sig of "+r.Digest.String()))
		},
		Progress: func(p Progress) { events = append(events, p) },
	})
	if err != nil || im.Digest != d.String() || verified != 1 {
		t.Fatalf("pull = %v, %v (verified %d)", im, err, verified)
	}
	if b, err := s.GetMeta(d.String(), "signature"); err != nil || string(b) != "sig of "+d.String() {
		t.Errorf("GetMeta = %q, %v", b, err)
	}
	checkProgress(t, events, m, false)

	// Again: already stored, Verify still runs, every layer reported cached.
	events = nil
	if _, _, err := s.Pull(ctx, regs, ref, PullOptions{
		Verify:   func(context.Context, Resolved) error { verified++; return nil },
		Progress: func(p Progress) { events = append(events, p) },
	}); err != nil || verified != 2 {
		t.Fatalf("second pull: %v, verified %d", err, verified)
	}
	checkProgress(t, events, m, true)
}

func checkProgress(t *testing.T, events []Progress, m *v1.Manifest, cached bool) {
	t.Helper()
	var total int64
	sizes := map[string]int64{}
	for _, l := range m.Layers {
		total += l.Size
		sizes[l.Digest.String()] = l.Size
	}
	done := map[string]bool{}
	var last int64
	for i, p := range events {
		if p.Total != total || p.LayerTotal != sizes[p.Layer] || p.Bytes < last || p.LayerBytes > p.LayerTotal || p.Bytes > p.Total {
			t.Fatalf("event %d = %+v (total %d, layer size %d, previous bytes %d)", i, p, total, sizes[p.Layer], last)
		}
		last = p.Bytes
		if p.Done {
			if p.LayerBytes != p.LayerTotal || done[p.Layer] || p.Cached != cached {
				t.Errorf("done event %+v (cached want %v, already done %v)", p, cached, done[p.Layer])
			}
			done[p.Layer] = true
		}
	}
	if len(done) != len(sizes) || last != total {
		t.Errorf("%d of %d layers done, %d of %d bytes", len(done), len(sizes), last, total)
	}
	if !cached && len(events) <= len(sizes) {
		t.Errorf("only %d events for %d streamed layers", len(events), len(sizes))
	}
}
