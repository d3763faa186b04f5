package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestParseRegistriesKeyCase: a key in any case but the schema's is
// refused with its line and the spelling to use, also when the right
// spelling is set as well (a case-folding decoder would merge the two).
func TestParseRegistriesKeyCase(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"registry key", "registries:\n  a.io:\n    Insecure: true\n", []string{"line 3", `key "Insecure"`, `write "insecure"`}},
		{"both spellings", "registries:\n  a.io:\n    insecure: false\n    Insecure: true\n", []string{"line 4", `key "Insecure"`, `write "insecure"`}},
		{"top-level key", "Registries:\n  a.io: {}\n", []string{"line 1", `write "registries"`}},
		{"defaults key", "defaults:\n  TIMEOUT: 1s\n", []string{"line 2", `write "timeout"`}},
		{"mirror key", "registries:\n  a.io:\n    mirrors:\n      - host: m.io\n        CA: /x.pem\n", []string{"line 5", `write "ca"`}},
		{"mirrors key", "registries:\n  a.io:\n    Mirrors: []\n", []string{"line 3", `write "mirrors"`}},
		{"through a merge key", "registries:\n  a.io: &base\n    ca: /nonexistent\n  b.io:\n    <<: {Auth: x}\n", []string{"line 5", `write "auth"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRegistries([]byte(c.doc), "reg.yaml")
			if err == nil {
				t.Fatalf("parsed:\n%s", c.doc)
			}
			for _, w := range append(c.want, "reg.yaml") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestRegistryHostsLowerCased: host names are matched in lower case, in
// the configuration and in the references pulled.
func TestRegistryHostsLowerCased(t *testing.T) {
	regs, err := ParseRegistries([]byte(`
registries:
  "Registry.Example:5000":
    insecure: true
    mirrors: [{host: "Mirror.EXAMPLE"}]
`), "t")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"registry.example:5000/app", "REGISTRY.example:5000/app:v1", "Registry.Example:5000/team/app"} {
		t.Run(ref, func(t *testing.T) {
			r, err := ParseRef(ref)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(r.Repository, "registry.example:5000/") {
				t.Errorf("ParseRef(%s).Repository = %s, want the host in lower case", ref, r.Repository)
			}
			repo, err := r.Name()
			if err != nil {
				t.Fatal(err)
			}
			eps := regs.Endpoints(repo)
			if len(eps) != 2 || eps[0].Host != "mirror.example" || !eps[0].Mirror ||
				eps[1].Host != "registry.example:5000" || !eps[1].Insecure {
				t.Errorf("Endpoints(%s) = %+v, want the configured mirror, then the insecure origin", repo, eps)
			}
		})
	}
	// A repository named with upper case by a caller that did not go
	// through ParseRef finds its configuration too.
	if eps := regs.Endpoints(mustRepo(t, "Registry.Example:5000/app")); len(eps) != 2 || !eps[1].Insecure {
		t.Errorf("Endpoints of an upper-case repository = %+v", eps)
	}
	_, err = ParseRegistries([]byte("registries:\n  a.io: {}\n  A.IO: {insecure: true}\n"), "t")
	if err == nil || !strings.Contains(err.Error(), "configured twice") {
		t.Errorf("a.io and A.IO both configured = %v, want configured twice", err)
	}
}

// redirectingRegistry is a registry over TLS, reached as example.com (the
// name its certificate carries), whose blob GETs redirect to the same
// registry served over plain HTTP on loopback — the way a registry hands
// blobs to a storage backend. The redirect names the loopback server as
// target says: "127.0.0.1" or "localhost".
type redirectingRegistry struct {
	tls, plain *httptest.Server
	plainHits  atomic.Int64
	target     atomic.Value // string
}

func startRedirectingRegistry(t *testing.T) *redirectingRegistry {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	rr := &redirectingRegistry{}
	rr.target.Store("127.0.0.1")
	rr.plain = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rr.plainHits.Add(1)
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(rr.plain.Close)
	rr.tls = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, "http://"+rr.plainHost()+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(rr.tls.Close)
	return rr
}

// plainHost is the redirect target, host:port.
func (rr *redirectingRegistry) plainHost() string {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rr.plain.URL, "http://"))
	return net.JoinHostPort(rr.target.Load().(string), port)
}

// regs parses doc and routes example.com:443 to the TLS server (trusted
// like a public registry: no CA configured) and the redirect target to
// the plain server; nothing else is reachable.
func (rr *redirectingRegistry) regs(t *testing.T, doc string) *Registries {
	regs := testRegs(t, doc)
	tlsAddr := strings.TrimPrefix(rr.tls.URL, "https://")
	plainAddr := strings.TrimPrefix(rr.plain.URL, "http://")
	_, port, _ := net.SplitHostPort(plainAddr)
	var dialer net.Dialer
	regs.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		switch addr {
		case "example.com:443":
			return dialer.DialContext(ctx, network, tlsAddr)
		case plainAddr, net.JoinHostPort("localhost", port):
			return dialer.DialContext(ctx, network, plainAddr)
		}
		return nil, fmt.Errorf("test: no route to %s", addr)
	}
	regs.roots = rr.tls.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	return regs
}

func (rr *redirectingRegistry) push(t *testing.T, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(strings.TrimPrefix(rr.tls.URL, "https://") + "/lib/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithTransport(rr.tls.Client().Transport)); err != nil {
		t.Fatal(err)
	}
}

// TestRedirectToPlainHTTP: a registry reached over HTTPS that redirects a
// blob to plain HTTP on loopback is refused with a clear error, and the
// plain-HTTP server sees no request; the same registry configured insecure
// may do it. (go-containerregistry refuses a redirect to a loopback IP
// literal itself; a name such as localhost gets past it, not past berth.)
func TestRedirectToPlainHTTP(t *testing.T) {
	rr := startRedirectingRegistry(t)
	img := appImage(t, "redirected")
	rr.push(t, img)
	ctx := context.Background()

	t.Run("pull, redirect to localhost", func(t *testing.T) {
		rr.target.Store("localhost")
		s := newStore(t)
		_, _, err := s.Pull(ctx, rr.regs(t, ""), "example.com/lib/app:v1", PullOptions{})
		var pe *PlainHTTPError
		if !errors.As(err, &pe) || pe.Host != rr.plainHost() || !strings.HasPrefix(pe.RedirectedFrom, "https://example.com/v2/lib/app/blobs/") {
			t.Fatalf("pull redirected to plain HTTP = %v, want a PlainHTTPError for the redirect", err)
		}
		if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "redirected there from https://example.com/") {
			t.Errorf("error %q: not permission denied, or does not name the redirect", err)
		}
		if n := rr.plainHits.Load(); n != 0 {
			t.Errorf("the plain-HTTP server got %d requests", n)
		}
		assertEmptyStore(t, s)
	})

	t.Run("pull, redirect to 127.0.0.1", func(t *testing.T) {
		rr.target.Store("127.0.0.1")
		s := newStore(t)
		if _, _, err := s.Pull(ctx, rr.regs(t, ""), "example.com/lib/app:v1", PullOptions{}); err == nil {
			t.Fatal("pulled through a redirect to plain HTTP on 127.0.0.1")
		}
		if n := rr.plainHits.Load(); n != 0 {
			t.Errorf("the plain-HTTP server got %d requests", n)
		}
		assertEmptyStore(t, s)
	})

	// Beneath go-containerregistry's own redirect check: berth's transport
	// refuses the IP literal too.
	t.Run("transport, redirect to 127.0.0.1", func(t *testing.T) {
		rr.target.Store("127.0.0.1")
		regs := rr.regs(t, "")
		c := &http.Client{Transport: regs.transport(regs.registry("example.com").origin)}
		resp, err := c.Get("https://example.com/v2/lib/app/blobs/sha256:" + strings.Repeat("0", 64))
		if err == nil {
			resp.Body.Close()
		}
		var pe *PlainHTTPError
		if !errors.As(err, &pe) || pe.Host != rr.plainHost() || !strings.Contains(err.Error(), "redirected there from https://example.com/v2/lib/app/blobs/") {
			t.Fatalf("GET redirected to plain HTTP on 127.0.0.1 = %v, want a PlainHTTPError naming the redirect", err)
		}
		if n := rr.plainHits.Load(); n != 0 {
			t.Errorf("the plain-HTTP server got %d requests", n)
		}
	})

	t.Run("pull from the registry configured insecure", func(t *testing.T) {
		rr.target.Store("localhost")
		s := newStore(t)
		im, _, err := s.Pull(ctx, rr.regs(t, "registries:\n  example.com: {insecure: true}\n"), "example.com/lib/app:v1", PullOptions{})
		if err != nil || im.Digest != mustDigest(t, img) {
			t.Fatalf("pull = %v, %v", im, err)
		}
		if rr.plainHits.Load() == 0 {
			t.Error("the insecure registry's redirect was not followed")
		}
	})
}

// TestRegistryResponsesBounded: what a registry sends besides blobs (a
// manifest, a token) is cut at the manifest bound; blobs, also behind a
// redirect, are not (their descriptors bound them).
func TestRegistryResponsesBounded(t *testing.T) {
	body := func(n int) []byte { return bytes.Repeat([]byte("m"), n) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/lib/app/manifests/at-bound":
			w.Write(body(maxManifestBytes))
		case "/v2/lib/app/manifests/over":
			w.Write(body(maxManifestBytes + 1))
		case "/token":
			w.Write(body(maxManifestBytes + 1))
		case "/v2/lib/app/blobs/sha256:big":
			w.Write(body(maxManifestBytes + 1))
		case "/v2/lib/app/blobs/sha256:moved":
			http.Redirect(w, r, "/storage/big", http.StatusTemporaryRedirect)
		case "/storage/big":
			w.Write(body(maxManifestBytes + 1))
		}
	}))
	defer srv.Close()
	regs := testRegs(t, "")
	host := strings.TrimPrefix(srv.URL, "http://")
	c := &http.Client{Transport: regs.transport(regs.registry(host).origin)}
	cases := []struct {
		path    string
		refused bool
	}{
		{"/v2/lib/app/manifests/at-bound", false},
		{"/v2/lib/app/manifests/over", true},
		{"/token", true},
		{"/v2/lib/app/blobs/sha256:big", false},
		{"/v2/lib/app/blobs/sha256:moved", false}, // redirected to /storage/big
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := c.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !tc.refused {
				if err != nil || len(b) < maxManifestBytes {
					t.Fatalf("read %d bytes, %v; want the whole body", len(b), err)
				}
				return
			}
			var rt *ResponseTooLargeError
			if !errors.As(err, &rt) || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.path) || len(b) > maxManifestBytes {
				t.Fatalf("read %d bytes, %v; want at most %d, then a ResponseTooLargeError naming %s", len(b), err, maxManifestBytes, tc.path)
			}
		})
	}
}
