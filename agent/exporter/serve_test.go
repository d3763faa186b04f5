package exporter

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The TCP listener serves /metrics only, and only with the token.
func TestListener(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := Listener(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("series")) }), tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, auth string
		code       int
	}{
		{"/metrics", "", 401},
		{"/metrics", "Bearer wrong", 401},
		{"/metrics", "s3cret", 401},
		{"/metrics", "Bearer s3cret", 200},
		{"/api/v1/pods", "Bearer s3cret", 404},
	} {
		req := httptest.NewRequest("GET", tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code || tc.code == 200 && rec.Body.String() != "series" {
			t.Errorf("%s %q: %d %q, want %d", tc.path, tc.auth, rec.Code, rec.Body.String(), tc.code)
		}
	}
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := Listener(http.NotFoundHandler(), empty); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty token file: %v", err)
	}
	if _, err := TLSConfig(filepath.Join(dir, "none.pem"), filepath.Join(dir, "none.key"), ""); err == nil {
		t.Error("TLS without its files")
	}
}

// certPair writes a certificate signed by ca (self-signed when ca is nil)
// and its key as PEM files.
func certPair(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, key, certFile, keyFile
}

// With clientCAFile, a scraper without a certificate from that CA does
// not get past the handshake; one with it does.
func TestListenerClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile, _ := certPair(t, dir, "ca", nil, nil, true)
	_, _, srvCert, srvKey := certPair(t, dir, "server", ca, caKey, false)
	_, _, cliCert, cliKey := certPair(t, dir, "scraper", ca, caKey, false)
	_, _, otherCert, otherKey := certPair(t, dir, "other", nil, nil, false)
	cfg, err := TLSConfig(srvCert, srvKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := Listener(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("series")) }), "")
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = cfg
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	get := func(certFile, keyFile string) error {
		tc := &tls.Config{RootCAs: pool}
		if certFile != "" {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}).Get(srv.URL + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "series" {
			return fmt.Errorf("%s %q", resp.Status, b)
		}
		return nil
	}
	if err := get(cliCert, cliKey); err != nil {
		t.Errorf("the CA's client: %v", err)
	}
	if err := get("", ""); err == nil {
		t.Error("no client certificate: served")
	}
	if err := get(otherCert, otherKey); err == nil {
		t.Error("another CA's client certificate: served")
	}
}
