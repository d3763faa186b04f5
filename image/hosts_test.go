package image

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// writeTestCA writes a freshly generated self-signed certificate.
func writeTestCA(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

func x509Pool(t *testing.T) *x509.CertPool {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(writeTestCA(t, t.TempDir()))
	if err != nil || !pool.AppendCertsFromPEM(b) {
		t.Fatal("no test CA")
	}
	return pool
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRepo(t *testing.T, s string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseRegistriesExample(t *testing.T) {
	dir := t.TempDir()
	ca := writeTestCA(t, dir)
	auth := writeFile(t, dir, "auth.json", `{"auths":{}}`)
	regAuth := writeFile(t, dir, "reg-auth.json", `{"auths":{"registry.local":{"auth":"dTpw"}}}`)
	doc := fmt.Sprintf(`
defaults: {timeout: 7s, retries: 5, backoff: 250ms}
registries:
  docker.io:
    mirrors: [{host: "mirror.local:5000", insecure: true}, {host: "m2.example", ca: %q}]
  "127.0.0.1:5001": {insecure: true}   # plain HTTP
  registry.local: {ca: %q, auth: %q}
auth: %q
`, ca, ca, regAuth, auth)
	r, err := ParseRegistries([]byte(doc), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if r.Timeout() != 7*time.Second || r.Retries() != 5 || r.Backoff() != 250*time.Millisecond {
		t.Errorf("defaults = %s %d %s", r.Timeout(), r.Retries(), r.Backoff())
	}
	type want struct {
		host             string
		mirror, insecure bool
		rebased, scheme  string
	}
	cases := []struct {
		repo string
		eps  []want
	}{
		{"docker.io/library/nginx", []want{
			{"mirror.local:5000", true, true, "mirror.local:5000/library/nginx", "http"},
			{"m2.example", true, false, "m2.example/library/nginx", "https"},
			{"index.docker.io", false, false, "index.docker.io/library/nginx", "https"},
		}},
		// "index.docker.io" is the same registry as "docker.io".
		{"index.docker.io/user/app", []want{
			{"mirror.local:5000", true, true, "mirror.local:5000/user/app", "http"},
			{"m2.example", true, false, "m2.example/user/app", "https"},
			{"index.docker.io", false, false, "index.docker.io/user/app", "https"},
		}},
		{"127.0.0.1:5001/a/b", []want{{"127.0.0.1:5001", false, true, "127.0.0.1:5001/a/b", "http"}}},
		{"registry.local/x", []want{{"registry.local", false, false, "registry.local/x", "https"}}},
		{"quay.io/o/r", []want{{"quay.io", false, false, "quay.io/o/r", "https"}}},
	}
	for _, c := range cases {
		eps := r.Endpoints(mustRepo(t, c.repo))
		if len(eps) != len(c.eps) {
			t.Errorf("%s: %d endpoints, want %d", c.repo, len(eps), len(c.eps))
			continue
		}
		for i, ep := range eps {
			w := c.eps[i]
			if ep.Host != w.host || ep.Mirror != w.mirror || ep.Insecure != w.insecure || len(ep.Options) == 0 {
				t.Errorf("%s endpoint %d = %+v, want %+v", c.repo, i, ep, w)
			}
			rb, err := r.Rebase(mustRepo(t, c.repo), ep)
			if err != nil || rb.Name() != w.rebased || rb.Scheme() != w.scheme {
				t.Errorf("%s Rebase(%s) = %s (%s), %v; want %s (%s)", c.repo, ep.Host, rb.Name(), rb.Scheme(), err, w.rebased, w.scheme)
			}
		}
	}
	// The per-registry auth file wins over the default one.
	if got := r.hosts["registry.local"].origin.authFile; got != regAuth {
		t.Errorf("registry.local auth = %q, want %q", got, regAuth)
	}
	if got := r.registry("quay.io").origin.authFile; got != auth {
		t.Errorf("quay.io auth = %q, want the default %q", got, auth)
	}
	if r.hosts["registry.local"].origin.pool == nil {
		t.Error("registry.local has no CA pool")
	}
}

func TestParseRegistriesDefaults(t *testing.T) {
	for _, doc := range []string{"", "# nothing\n", "registries: {}\n", "defaults: {}\n"} {
		r, err := ParseRegistries([]byte(doc), "t")
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if r.Timeout() != DefaultTimeout || r.Retries() != DefaultRetries || r.Backoff() != DefaultBackoff {
			t.Errorf("%q: %s %d %s, want the defaults", doc, r.Timeout(), r.Retries(), r.Backoff())
		}
		if eps := r.Endpoints(mustRepo(t, "docker.io/library/x")); len(eps) != 1 || eps[0].Host != "index.docker.io" || eps[0].Mirror {
			t.Errorf("%q: endpoints %+v", doc, eps)
		}
	}
	if r := DefaultRegistries(); r.Retries() != DefaultRetries {
		t.Errorf("DefaultRegistries retries %d", r.Retries())
	}
	// retries: 0 is allowed (and different from "not set").
	r, err := ParseRegistries([]byte("defaults: {retries: 0}\n"), "t")
	if err != nil || r.Retries() != 0 {
		t.Errorf("retries: 0 → %v, %v", r, err)
	}
}

func TestParseRegistriesErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := writeFile(t, dir, "not.pem", "hello")
	badAuth := writeFile(t, dir, "bad.json", "{not json")
	cases := []struct {
		name, doc string
		want      []string // all must appear in the error
	}{
		{"unknown top-level key", "defaults: {}\nmirrors: []\n", []string{"line 2", "mirrors"}},
		{"unknown registry key", "registries:\n  docker.io:\n    insecure: true\n    skip_verify: true\n", []string{"line 4", "skip_verify"}},
		{"unknown mirror key", "registries:\n  docker.io:\n    mirrors:\n      - host: m\n        prefix: /v2\n", []string{"line 5", "prefix"}},
		{"unknown defaults key", "defaults:\n  timeout: 1s\n  retry: 3\n", []string{"line 3", "retry"}},
		{"bare number duration", "defaults:\n  timeout: 30\n", []string{"line 2"}},
		{"bad duration", "defaults:\n  backoff: soon\n", []string{"line 2"}},
		{"tiny timeout", "defaults:\n  timeout: 1ns\n", []string{"line 2", "timeout"}},
		{"negative retries", "defaults:\n  retries: -1\n", []string{"line 2", "retries"}},
		{"wrong type", "registries:\n  docker.io:\n    insecure: yes please\n", []string{"line 3"}},
		{"duplicate key", "registries:\n  a.io: {}\n  a.io: {}\n", []string{"line 3", "already defined"}},
		{"same registry twice", "registries:\n  docker.io: {}\n  index.docker.io: {}\n", []string{"configured twice"}},
		{"URL as host", "registries:\n  \"https://a.io\": {}\n", []string{"line 2", "https://a.io"}},
		{"host with path", "registries:\n  a.io/ns: {}\n", []string{"line 2", "a.io/ns"}},
		{"mirror without host", "registries:\n  a.io:\n    mirrors:\n      - insecure: true\n", []string{"line 4", "host is required"}},
		{"missing CA file", "registries:\n  a.io:\n    ca: /nonexistent/ca.pem\n", []string{"line 3", "/nonexistent/ca.pem"}},
		{"CA without PEM", fmt.Sprintf("registries:\n  a.io:\n    ca: %s\n", notPEM), []string{"line 3", "no PEM certificate"}},
		{"missing auth file", "auth: /nonexistent/config.json\n", []string{"line 1", "/nonexistent/config.json"}},
		{"missing mirror CA", "registries:\n  a.io:\n    mirrors:\n      - host: m.io\n        ca: /nonexistent/m.pem\n", []string{"line 5", "mirror \"m.io\"", "/nonexistent/m.pem"}},
		{"bad mirror host", "registries:\n  a.io:\n    mirrors:\n      - {host: \"m.io/path\"}\n", []string{"line 4", "m.io/path"}},
		{"malformed auth file", fmt.Sprintf("registries:\n  a.io:\n    auth: %s\n", badAuth), []string{"line 3", badAuth}},
		{"not a mapping", "- a\n- b\n", []string{"line 1"}},
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
	if _, err := LoadRegistries(filepath.Join(dir, "absent.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadRegistries(absent) = %v, want not-exist", err)
	}
}

func TestPlainHTTPPolicy(t *testing.T) {
	cases := []struct {
		name     string
		host     string
		insecure bool
		ca       bool
		req      string
		from     string // URL that redirected here, "" for a first request
		want     bool
	}{
		{"remote name", "registry.example:5000", false, false, "registry.example:5000", "", false},
		{"remote name configured insecure", "registry.example:5000", true, false, "registry.example:5000", "", true},
		{"RFC 1918 address", "10.1.2.3:5000", false, false, "10.1.2.3:5000", "", false}, // go-containerregistry would allow it
		{"RFC 1918 short", "192.168.1.9", false, false, "192.168.1.9", "", false},       // likewise
		{"*.local name", "mirror.local:5000", false, false, "mirror.local:5000", "", false},
		{"loopback v4", "127.0.0.1:5000", false, false, "127.0.0.1:5000", "", true},
		{"loopback v4 other address", "127.9.9.9:5000", false, false, "127.9.9.9:5000", "", true},
		{"loopback v6", "[::1]:5000", false, false, "[::1]:5000", "", true},
		{"localhost", "localhost:5000", false, false, "localhost:5000", "", true},
		{"loopback with a CA", "127.0.0.1:5000", false, true, "127.0.0.1:5000", "", false}, // a CA means TLS is intended
		{"loopback with a CA, insecure", "127.0.0.1:5000", true, true, "127.0.0.1:5000", "", true},
		// A remote registry naming a loopback URL itself (a token realm).
		{"remote registry sends to loopback", "registry.example", false, false, "127.0.0.1", "", false},
		// Redirects.
		{"insecure covers its redirects", "registry.example", true, false, "cdn.example", "https://registry.example/v2/a/blobs/x", true},
		{"redirect https → loopback http", "registry.example", false, false, "127.0.0.1:80", "https://registry.example/v2/a/blobs/x", false},
		{"redirect https → http on loopback registry", "127.0.0.1:5000", false, false, "127.0.0.1:5001", "https://127.0.0.1:5000/v2/a/blobs/x", false},
		{"redirect http → http within a loopback registry", "127.0.0.1:5000", false, false, "127.0.0.1:5000", "http://127.0.0.1:5000/v2/a/blobs/x", true},
		{"redirect from an unknown URL", "127.0.0.1:5000", false, false, "127.0.0.1:5000", "?", false},
		{"redirect from loopback http → remote http", "127.0.0.1:5000", false, false, "cdn.example", "http://127.0.0.1:5000/v2/a/blobs/x", false},
	}
	for _, c := range cases {
		hc := &hostConfig{host: c.host, insecure: c.insecure}
		if c.ca {
			hc.caFile, hc.pool = "ca.pem", x509Pool(t)
		}
		var from *url.URL
		switch c.from {
		case "":
		case "?":
			from = &url.URL{}
		default:
			u, err := url.Parse(c.from)
			if err != nil {
				t.Fatal(err)
			}
			from = u
		}
		if got := hc.plainHTTPAllowed(c.req, from); got != c.want {
			t.Errorf("%s: host %s insecure=%v ca=%v: plain HTTP to %s (redirected from %q) allowed=%v, want %v", c.name, c.host, c.insecure, c.ca, c.req, c.from, got, c.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"timeout", &TimeoutError{Host: "h", After: time.Second}, true},
		{"503", &transport.Error{StatusCode: 503}, true},
		{"404", &transport.Error{StatusCode: 404}, false},
		{"401", &transport.Error{StatusCode: 401}, false},
		{"canceled", context.Canceled, false},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"plain HTTP refused", &PlainHTTPError{Host: "h"}, false},
		{"other", errors.New("tls: bad certificate"), false},
	}
	for _, c := range cases {
		if got := retryable(c.err); got != c.want {
			t.Errorf("%s: retryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

func TestDockerConfigKeychain(t *testing.T) {
	dir := t.TempDir()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	path := writeFile(t, dir, "config.json", fmt.Sprintf(`{"auths": {
		"127.0.0.1:5000": {"auth": %q},
		"https://index.docker.io/v1/": {"username": "hub", "password": "hubpw"},
		"ghcr.io/org/special": {"auth": %q},
		"ghcr.io": {"auth": %q}
	}}`, b64("alice:pw1"), b64("special:pw3"), b64("gh:pw2")))
	kc := dockerConfigKeychain{path: path}
	cases := []struct {
		repo       string
		user, pass string // "" = anonymous
	}{
		{"127.0.0.1:5000/a/b", "alice", "pw1"},
		{"docker.io/library/nginx", "hub", "hubpw"},
		{"ghcr.io/org/special", "special", "pw3"}, // the repository entry before the registry one
		{"ghcr.io/org/other", "gh", "pw2"},
		{"quay.io/x/y", "", ""},
	}
	for _, c := range cases {
		a, err := kc.Resolve(mustRepo(t, c.repo))
		if err != nil {
			t.Fatalf("%s: %v", c.repo, err)
		}
		cfg, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if c.user == "" {
			if a != authn.Anonymous {
				t.Errorf("%s: %+v, want anonymous", c.repo, cfg)
			}
			continue
		}
		u, p := cfg.Username, cfg.Password
		if cfg.Auth != "" {
			raw, _ := base64.StdEncoding.DecodeString(cfg.Auth)
			u, p, _ = strings.Cut(string(raw), ":")
		}
		if u != c.user || p != c.pass {
			t.Errorf("%s: credentials %s/%s, want %s/%s", c.repo, u, p, c.user, c.pass)
		}
	}
	os.Remove(path)
	if _, err := kc.Resolve(mustRepo(t, "quay.io/x/y")); err == nil {
		t.Error("a configured auth file that vanished resolved anonymously")
	}
}

// TestTimeouts checks that the timeout bounds waiting for headers and
// stalls within a body, not a body that keeps flowing.
func TestTimeouts(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow-headers":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/stalled-body":
			w.Write([]byte("first part"))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/steady-body":
			for i := 0; i < 8; i++ {
				w.Write([]byte("chunk"))
				w.(http.Flusher).Flush()
				time.Sleep(50 * time.Millisecond)
			}
		}
	}))
	defer srv.Close()
	defer close(release)
	regs, err := ParseRegistries([]byte("defaults: {timeout: 200ms}\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	c := &http.Client{Transport: regs.transport(regs.registry(host).origin)}

	start := time.Now()
	_, err = c.Get(srv.URL + "/slow-headers")
	var te *TimeoutError
	if !errors.As(err, &te) || te.Host != host {
		t.Errorf("slow headers: %v, want a TimeoutError for %s", err, host)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("slow headers took %s", d)
	}

	resp, err := c.Get(srv.URL + "/stalled-body")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.As(err, &te) || string(b) != "first part" {
		t.Errorf("stalled body: %q, %v; want the first part, then a TimeoutError", b, err)
	}

	// 8 chunks 50ms apart take 400ms, twice the timeout, and never stall.
	resp, err = c.Get(srv.URL + "/steady-body")
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(b) != 40 {
		t.Errorf("steady body: %d bytes, %v", len(b), err)
	}
}
