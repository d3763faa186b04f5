// Package registrytest runs real OCI registries for tests: Debian's
// docker-registry (CNCF distribution 2.8) on a loopback port, plain HTTP or
// TLS with a certificate generated here, optionally with htpasswd
// authentication or as a pull-through cache (a mirror) of another registry;
// and Proxy, a reverse proxy in front of one that counts requests and can
// fail, corrupt or stall them.
//
// Nothing is installed here: a test without /usr/bin/docker-registry skips
// (fails under BERTH_TEST_ALL=1, see testenv), and every process, port and
// directory is released in t.Cleanup, also when the test fails.
package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-dev/berth/test/testenv"
)

// Command is the registry binary of Debian's docker-registry package.
const Command = "docker-registry"

// Options configure a registry.
type Options struct {
	// TLS serves HTTPS with a self-signed certificate for 127.0.0.1, ::1
	// and localhost; Registry.CAFile is its PEM.
	TLS bool
	// Users turns on htpasswd authentication (distribution's `auth:
	// htpasswd:`; bcrypt hashes are the only kind it accepts) with these
	// user → password pairs.
	Users map[string]string
	// ProxyRemote, a registry URL ("http://127.0.0.1:5001"), makes this
	// registry a pull-through cache of that one (distribution's `proxy:
	// remoteurl:`), the way a docker.io mirror runs. Such a registry
	// refuses pushes.
	ProxyRemote string
}

// Registry is a running docker-registry.
type Registry struct {
	Host   string // "127.0.0.1:<port>"
	URL    string // "http://127.0.0.1:<port>" or "https://…"
	CAFile string // PEM of the self-signed certificate (TLS only)
	Dir    string // filesystem storage root
	Log    string // the registry's log (also printed when the test fails)

	pool  *x509.CertPool
	users map[string]string
	stop  func()
}

// Stop ends the registry now (a test of offline behaviour); Cleanup would
// anyway. Safe to call more than once.
func (r *Registry) Stop() { r.stop() }

// Start runs a registry on a free loopback port until the test ends.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	bin := testenv.RequireCommand(t, Command)
	dir := t.TempDir()
	r := &Registry{Dir: filepath.Join(dir, "storage"), Log: filepath.Join(dir, "registry.log"), users: o.Users}
	port := FreePort(t)
	r.Host = fmt.Sprintf("127.0.0.1:%d", port)

	var cfg strings.Builder
	fmt.Fprintf(&cfg, "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n")
	fmt.Fprintf(&cfg, "storage:\n  filesystem:\n    rootdirectory: %q\n  maintenance:\n    uploadpurging:\n      enabled: false\n", r.Dir)
	fmt.Fprintf(&cfg, "http:\n  addr: %q\n  secret: %q\n", r.Host, randomHex(16))
	r.URL = "http://" + r.Host
	if o.TLS {
		crt, key, pool := selfSigned(t, dir)
		fmt.Fprintf(&cfg, "  tls:\n    certificate: %q\n    key: %q\n", crt, key)
		r.URL, r.CAFile, r.pool = "https://"+r.Host, crt, pool
	}
	if len(o.Users) > 0 {
		path := filepath.Join(dir, "htpasswd")
		writeHtpasswd(t, path, o.Users)
		fmt.Fprintf(&cfg, "auth:\n  htpasswd:\n    realm: berth-test\n    path: %q\n", path)
	}
	if o.ProxyRemote != "" {
		fmt.Fprintf(&cfg, "proxy:\n  remoteurl: %q\n", o.ProxyRemote)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(r.Log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Die with the test binary even if it is killed before Cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			logf.Close()
		})
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			dumpLog(t, r.Log)
		}
	})
	if err := r.waitReady(exited); err != nil {
		dumpLog(t, r.Log)
		t.Fatalf("registry on %s: %v", r.Host, err)
	}
	return r
}

// waitReady polls GET /v2/ until the registry answers 200 or 401.
func (r *Registry) waitReady(exited <-chan error) error {
	c := &http.Client{Transport: r.Transport(), Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("exited before it was ready: %v", err)
		default:
		}
		resp, err := c.Get(r.URL + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 20s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dumpLog(t testing.TB, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(b) > 16<<10 {
		b = b[len(b)-16<<10:]
	}
	t.Logf("%s (tail):\n%s", path, b)
}

// Transport is an HTTP transport that trusts the registry's certificate.
func (r *Registry) Transport() http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.pool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: r.pool}
	}
	return tr
}

// RemoteOptions are go-containerregistry options for talking to the
// registry: its transport, and the first user's credentials if any.
func (r *Registry) RemoteOptions() []remote.Option {
	opts := []remote.Option{remote.WithTransport(r.Transport())}
	if u, p, ok := r.User(); ok {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: u, Password: p}))
	}
	return opts
}

// User returns one configured user and password (the first by name).
func (r *Registry) User() (user, password string, ok bool) {
	var names []string
	for u := range r.users {
		names = append(names, u)
	}
	if len(names) == 0 {
		return "", "", false
	}
	sort.Strings(names)
	return names[0], r.users[names[0]], true
}

// Ref returns "<host>/<repoTag>".
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// Push writes img as <host>/<repoTag> and returns its manifest digest.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, r.RemoteOptions()...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// PushIndex writes idx (and every image in it) as <host>/<repoTag> and
// returns the index digest.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, r.RemoteOptions()...); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// FreePort returns a loopback TCP port that was free a moment ago (the
// registry binds it itself, so there is a small window for a clash).
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ClosedAddr returns "127.0.0.1:<port>" with nothing listening: a registry
// that is down (connections are refused).
func ClosedAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

func writeHtpasswd(t testing.TB, path string, users map[string]string) {
	t.Helper()
	var b strings.Builder
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// selfSigned writes a self-signed ECDSA P-256 certificate valid for
// 127.0.0.1, ::1 and localhost; the certificate is its own CA.
func selfSigned(t testing.TB, dir string) (crtPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "berth test registry"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crtPath, keyPath = filepath.Join(dir, "registry.crt"), filepath.Join(dir, "registry.key")
	crtPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(crtPath, crtPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(crtPEM)
	return crtPath, keyPath, pool
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
