package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berth-dev/berth/api/authz"
)

func TestCAPersistsWithPrivateKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ServerTLS(dir); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{".": 0o700, caKey: 0o600, serverKey: 0o600, caCert: 0o644, serverCert: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	again, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(again.CertPEM()) != string(ca.CertPEM()) {
		t.Error("a second start made a new CA")
	}
	if again.key.Curve.Params().Name != "P-256" {
		t.Errorf("CA key curve %s", again.key.Curve.Params().Name)
	}
	os.Remove(filepath.Join(dir, caKey))
	if _, err := LoadOrCreate(dir); err == nil {
		t.Error("a CA without its key was replaced or accepted")
	}
	// A key without its certificate is a creation cut short between the two
	// writes: made again, not refused at every start.
	cut := filepath.Join(t.TempDir(), "pki")
	if _, err := LoadOrCreate(cut); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(cut, caCert))
	remade, err := LoadOrCreate(cut)
	if err != nil {
		t.Fatalf("a CA creation cut short: %v", err)
	}
	if again, err := LoadOrCreate(cut); err != nil || string(again.CertPEM()) != string(remade.CertPEM()) {
		t.Errorf("the CA made again does not persist: %v", err)
	}
}

// The listener end to end: TLS 1.2+, a client certificate required and
// verified, its CN and O reaching api/authz.
func TestServerTLSAndClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.ServerTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("tls config: min %x auth %v", cfg.MinVersion, cfg.ClientAuth)
	}
	srv := httptest.NewUnstartedServer(authz.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := authz.IdentityFrom(r.Context())
		json.NewEncoder(w).Encode(id)
	}), authz.Options{}))
	srv.TLS = cfg
	srv.StartTLS()
	defer srv.Close()

	client := func(certPEM, keyPEM []byte) *http.Client {
		tc := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
		if certPEM != nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	get := func(c *http.Client, path string) (int, string, error) {
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if _, _, err := get(client(nil, nil), "/version"); err == nil {
		t.Error("no client certificate accepted")
	}
	for _, tc := range []struct {
		groups []string
		writer bool
	}{{[]string{authz.WritersGroup}, true}, {[]string{authz.ReadersGroup}, false}, {nil, false}} {
		// root: a user that exists and may write on every host, as
		// api/authz checks a writer's certificate against the user database.
		c, k, err := ca.IssueClient("root", tc.groups, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		code, body, err := get(client(c, k), "/api/v1/namespaces")
		if err != nil {
			t.Fatal(err)
		}
		var id authz.Identity
		json.Unmarshal([]byte(body), &id)
		if code != 200 || id.Name != "root" || id.Writer != tc.writer || id.Via != authz.ViaCertificate {
			t.Errorf("O=%v: %d %s", tc.groups, code, body)
		}
		code, _, _ = get(client(c, k), "/api/v1/namespaces/default/secrets")
		if want := map[bool]int{true: 200, false: 403}[tc.writer]; code != want {
			t.Errorf("O=%v secrets: %d, want %d", tc.groups, code, want)
		}
	}
	// A certificate from another CA is refused in the handshake.
	other, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, k, _ := other.IssueClient("mallory", []string{authz.WritersGroup}, time.Hour)
	if _, _, err := get(client(c, k), "/version"); err == nil {
		t.Error("a certificate of another CA accepted")
	}
}

func TestKubeconfigHandler(t *testing.T) {
	call := func(h http.Handler, id *authz.Identity) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", authz.KubeconfigPath, nil)
		if id != nil {
			r = r.WithContext(authz.WithIdentity(r.Context(), *id))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	// Off: 404 saying how to turn it on.
	rec := call(KubeconfigHandler(nil, "127.0.0.1:6443"), &authz.Identity{Name: "root", Writer: true, Via: authz.ViaSocket})
	var st metav1.Status
	json.Unmarshal(rec.Body.Bytes(), &st)
	if rec.Code != 404 || st.Reason != metav1.StatusReasonNotFound || st.Message != "the loopback HTTPS listener is off (https.enabled in /etc/berth/berthd.yaml)" {
		t.Errorf("listener off: %d %s", rec.Code, rec.Body)
	}

	ca, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := KubeconfigHandler(ca, "127.0.0.1:6443")
	for _, id := range []authz.Identity{{Name: "root", Writer: true, Via: authz.ViaSocket}, {Name: "alice", Via: authz.ViaSocket}} {
		rec := call(h, &id)
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", id.Name, rec.Code, rec.Body)
		}
		cfg, err := clientcmd.Load(rec.Body.Bytes())
		if err != nil {
			t.Fatalf("%s: %v\n%s", id.Name, err, rec.Body)
		}
		rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		if rc.Host != "https://127.0.0.1:6443" || string(rc.CAData) != string(ca.CertPEM()) {
			t.Errorf("%s: host %s", id.Name, rc.Host)
		}
		block, _ := pem.Decode(rc.CertData)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		wantO := map[bool]string{true: authz.WritersGroup, false: authz.ReadersGroup}[id.Writer]
		if cert.Subject.CommonName != id.Name || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != wantO {
			t.Errorf("%s: subject %v", id.Name, cert.Subject)
		}
		if v := cert.NotAfter.Sub(cert.NotBefore); v < ClientValidity || v > ClientValidity+time.Hour {
			t.Errorf("%s: validity %v", id.Name, v)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: %v", id.Name, err)
		}
	}
	// Over HTTPS (a certificate's identity): not handed out.
	if rec := call(h, &authz.Identity{Name: "alice", Via: authz.ViaCertificate}); rec.Code != 404 {
		t.Errorf("over HTTPS: %d", rec.Code)
	}
}
