// Package pki is the certificate authority of berthd's loopback HTTPS
// listener: a CA berthd generates on first start (ECDSA P-256, under
// <stateDir>/pki, keys 0600), the listener's server certificate for
// 127.0.0.1, ::1 and localhost, and client certificates whose Common Name
// is the user and whose Organization is the role (api/authz's
// berth:writers or berth:readers), handed out in a kubeconfig by the
// socket endpoint GET /berth/v1/kubeconfig.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/agent/bundle"
	"github.com/containerd/errdefs"
)

// Validity of what the CA issues.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 365 * 24 * time.Hour
	ClientValidity = 365 * 24 * time.Hour
	// renewBefore: a server certificate this close to expiry is reissued
	// at start.
	renewBefore = 30 * 24 * time.Hour
)

// File names under the PKI directory.
const (
	caCert     = "ca.crt"
	caKey      = "ca.key"
	serverCert = "server.crt"
	serverKey  = "server.key"
)

// CA is berthd's certificate authority.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
	now     func() time.Time
}

// LoadOrCreate opens the CA in dir, creating it (dir 0700, key 0600) if
// absent. A half-written CA (one file of two) is an error to fix by hand,
// not a reason to issue a new CA under existing kubeconfigs' feet.
func LoadOrCreate(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki directory: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, caCert), filepath.Join(dir, caKey)
	_, cerr := os.Stat(certPath)
	_, kerr := os.Stat(keyPath)
	switch {
	// The key is written first: a key without a certificate is a creation
	// cut short (a kill between the two writes), which no kubeconfig can
	// refer to yet, so it is made again rather than refused forever.
	case errors.Is(cerr, fs.ErrNotExist) && (errors.Is(kerr, fs.ErrNotExist) || kerr == nil):
		ca, err := newCA()
		if err != nil {
			return nil, err
		}
		keyPEM, err := encodeKey(ca.key)
		if err != nil {
			return nil, err
		}
		if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
			return nil, err
		}
		if err := writeFile(certPath, ca.certPEM, 0o644); err != nil {
			return nil, err
		}
		return ca, nil
	case cerr != nil || kerr != nil:
		return nil, fmt.Errorf("%w: the CA in %s is incomplete (%s and %s must both exist or both be absent)",
			errdefs.ErrFailedPrecondition, dir, caCert, caKey)
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("%w: CA in %s: %v", errdefs.ErrFailedPrecondition, dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: CA key in %s is not ECDSA", errdefs.ErrFailedPrecondition, dir)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: CA certificate: %v", errdefs.ErrFailedPrecondition, err)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, certPEM: certPEM, key: key, now: time.Now}, nil
}

func newCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "berthd-ca@" + host, Organization: []string{"berth"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, certPEM: pemBlock("CERTIFICATE", der), key: key, now: time.Now}, nil
}

// CertPEM is the CA certificate (a kubeconfig's certificate-authority-data).
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Pool is the CA as the only root (the listener's ClientCAs).
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// IssueClient returns a client certificate and key (PEM) for user in the
// given groups (the certificate's Organization).
func (ca *CA) IssueClient(user string, groups []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if user == "" {
		return nil, nil, fmt.Errorf("%w: a client certificate needs a user name", errdefs.ErrInvalidArgument)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    now.Add(-5 * time.Minute), // a client clock slightly behind
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl)
}

// ServerTLS returns the listener's TLS configuration: the server
// certificate under dir (issued, or reissued when absent, for other names,
// or near expiry), TLS 1.2 or later, and client certificates required and
// verified against the CA. hosts are the names and IPs the certificate
// covers besides 127.0.0.1, ::1 and localhost.
func (ca *CA) ServerTLS(dir string, hosts ...string) (*tls.Config, error) {
	certPath, keyPath := filepath.Join(dir, serverCert), filepath.Join(dir, serverKey)
	var ips []net.IP
	dns := []string{"localhost"}
	for _, h := range append([]string{"127.0.0.1", "::1"}, hosts...) {
		if ip := net.ParseIP(h); ip != nil {
			if !containsIP(ips, ip) {
				ips = append(ips, ip)
			}
		} else if h != "" && h != "localhost" {
			dns = append(dns, h)
		}
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil || !ca.serverCertGood(pair, ips, dns) {
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: "berthd", Organization: []string{"berth"}},
			NotBefore:    ca.now().Add(-time.Hour),
			NotAfter:     ca.now().Add(ServerValidity),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			DNSNames:     dns,
			IPAddresses:  ips,
		}
		certPEM, keyPEM, err := ca.issue(tmpl)
		if err != nil {
			return nil, err
		}
		if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
			return nil, err
		}
		if err := writeFile(certPath, certPEM, 0o644); err != nil {
			return nil, err
		}
		if pair, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
			return nil, err
		}
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

func (ca *CA) serverCertGood(pair tls.Certificate, ips []net.IP, dns []string) bool {
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || ca.now().Add(renewBefore).After(leaf.NotAfter) {
		return false
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return false // issued by an earlier CA
	}
	for _, ip := range ips {
		if leaf.VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	for _, d := range dns {
		if leaf.VerifyHostname(d) != nil {
			return false
		}
	}
	return true
}

func (ca *CA) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), keyPEM, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

// writeFile replaces path atomically (agent/bundle's writer: a temporary
// created 0600, so a key is never readable by others even briefly, synced,
// chmod'ed to mode, renamed, the directory synced).
func writeFile(path string, data []byte, mode fs.FileMode) error {
	return bundle.WriteFileAtomic(path, data, mode)
}
