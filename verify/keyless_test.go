package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	ct "github.com/google/certificate-transparency-go"
	cttls "github.com/google/certificate-transparency-go/tls"
	ctx509 "github.com/google/certificate-transparency-go/x509"
	ctx509util "github.com/google/certificate-transparency-go/x509util"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// Keyless signing needs Fulcio (a certificate for an OIDC identity, with an
// SCT from Fulcio's CT log embedded) and Rekor (the log entry whose signed
// timestamp proves when the short-lived certificate was used); `cosign sign`
// cannot produce either here without network. So these tests make
// Fulcio-like, CT-like and Rekor-like material themselves — a root CA, a leaf
// with the email SAN, Fulcio's OIDC-issuer extensions and an SCT signed by a
// test CT log key (built as sigstore-go's pkg/verify/sct_test.go does), a
// signature over the simple-signing payload, and a hashedrekord bundle whose
// SET is signed by a test Rekor key, built the way cosign's own tests do
// (pkg/cosign/verify_test.go CreateTestBundle) — and verify them through the
// policy, offline.

const (
	testEmail  = "me@example.com"
	testIssuer = "https://issuer.example"
)

var (
	oidFulcioIssuerV1 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1} // raw string (deprecated)
	oidFulcioIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8} // DER UTF8String
)

type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"sigstore.dev"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// sctSpec is the SCT a leaf embeds, as Fulcio embeds one from its CT log:
// signed by signKey, naming logKey's log ID (the same key unless a test
// forges one).
type sctSpec struct {
	signKey, logKey *ecdsa.PrivateKey
}

// leaf issues a Fulcio-style code-signing certificate for email from issuer,
// with an embedded SCT unless sct is nil.
func (ca *testCA) leaf(t *testing.T, email, issuer string, notBefore, notAfter time.Time, sct *sctSpec) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issuerDER, err := asn1.MarshalWithParams(issuer, "utf8")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(time.Now().UnixNano()),
		NotBefore:      notBefore,
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		EmailAddresses: []string{email},
		ExtraExtensions: []pkix.Extension{
			{Id: oidFulcioIssuerV1, Value: []byte(issuer)},
			{Id: oidFulcioIssuerV2, Value: issuerDER},
		},
	}
	if sct != nil {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{
			Id: asn1.ObjectIdentifier(ctx509.OIDExtensionCTSCT), Value: ca.embeddedSCTs(t, tmpl, &key.PublicKey, *sct)})
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// embeddedSCTs returns the value of the SCT list extension for a leaf made
// from tmpl (RFC 6962 §3.3): one SCT over the precertificate entry, which
// is the leaf's TBSCertificate without that extension plus the hash of the
// issuer's key. The TBS is taken from a leaf issued with a placeholder list
// and the extension removed as a verifier removes it, so the signed bytes
// are exactly what verification rebuilds from the final certificate.
func (ca *testCA) embeddedSCTs(t *testing.T, tmpl *x509.Certificate, pub *ecdsa.PublicKey, spec sctSpec) []byte {
	t.Helper()
	placeholder := *tmpl
	placeholder.ExtraExtensions = append(append([]pkix.Extension(nil), tmpl.ExtraExtensions...),
		pkix.Extension{Id: asn1.ObjectIdentifier(ctx509.OIDExtensionCTSCT), Value: []byte{4, 0}})
	der, err := x509.CreateCertificate(rand.Reader, &placeholder, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	tbs, err := ctx509.RemoveSCTList(c.RawTBSCertificate)
	if err != nil {
		t.Fatal(err)
	}
	// A CT log's ID is the sha256 of its DER public key (RFC 6962 §3.2).
	logDER, err := x509.MarshalPKIXPublicKey(&spec.logKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	logID := sha256.Sum256(logDER)
	sct := ct.SignedCertificateTimestamp{SCTVersion: ct.V1, LogID: ct.LogID{KeyID: logID}, Timestamp: uint64(time.Now().UnixMilli())}
	input, err := ct.SerializeSCTSignatureInput(sct, ct.LogEntry{Leaf: ct.MerkleTreeLeaf{
		Version: ct.V1, LeafType: ct.TimestampedEntryLeafType,
		TimestampedEntry: &ct.TimestampedEntry{
			Timestamp: sct.Timestamp, EntryType: ct.PrecertLogEntryType,
			PrecertEntry: &ct.PreCert{IssuerKeyHash: sha256.Sum256(ca.cert.RawSubjectPublicKeyInfo), TBSCertificate: tbs},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(input)
	sig, err := ecdsa.SignASN1(rand.Reader, spec.signKey, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sct.Signature = ct.DigitallySigned{
		Algorithm: cttls.SignatureAndHashAlgorithm{Hash: cttls.SHA256, Signature: cttls.ECDSA},
		Signature: sig,
	}
	list, err := ctx509util.MarshalSCTsIntoSCTList([]*ct.SignedCertificateTimestamp{&sct})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cttls.Marshal(*list)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := asn1.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	return ext
}

// rekorBundle returns the JSON of a cosign RekorBundle for a hashedrekord
// entry (payload hash, signature, certificate), its SET signed by setKey and
// naming logKey's log ID.
func rekorBundle(t *testing.T, setKey, logKey *ecdsa.PrivateKey, payloadBytes []byte, b64sig string, certPEM []byte, integrated time.Time) []byte {
	t.Helper()
	h := sha256.Sum256(payloadBytes)
	body, err := json.Marshal(map[string]any{
		"apiVersion": "0.0.1",
		"kind":       "hashedrekord",
		"spec": map[string]any{
			"data": map[string]any{"hash": map[string]string{"algorithm": "sha256", "value": hex.EncodeToString(h[:])}},
			"signature": map[string]any{
				"content":   b64sig,
				"publicKey": map[string]string{"content": base64.StdEncoding.EncodeToString(certPEM)},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	logID, err := cosign.GetTransparencyLogID(&logKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rp := bundle.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(body),
		IntegratedTime: integrated.Unix(),
		LogIndex:       42,
		LogID:          logID,
	}
	js, err := json.Marshal(rp)
	if err != nil {
		t.Fatal(err)
	}
	canon, err := jsoncanonicalizer.Transform(js)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(canon)
	set, err := ecdsa.SignASN1(rand.Reader, setKey, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(bundle.RekorBundle{SignedEntryTimestamp: set, Payload: rp})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func simpleSigningPayload(t *testing.T, repo name.Repository, d v1.Hash, annotations map[string]any) []byte {
	t.Helper()
	b, err := payload.Cosign{Image: repo.Digest(d.String()), Annotations: annotations}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signPayload(t *testing.T, key *ecdsa.PrivateKey, p []byte) string {
	t.Helper()
	sum := sha256.Sum256(p)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func pemPublicKey(t *testing.T, k *ecdsa.PrivateKey) string {
	t.Helper()
	b, err := cryptoutils.MarshalPublicKeyToPEM(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// keylessWorld is one Fulcio root, one Rekor key, one CT log key and a
// policy trusting them.
type keylessWorld struct {
	dir      string
	ca       *testCA
	rekorKey *ecdsa.PrivateKey
	ctKey    *ecdsa.PrivateKey
	rootPath string
	rekorPub string
	ctPub    string
}

func newKeylessWorld(t *testing.T) *keylessWorld {
	t.Helper()
	w := &keylessWorld{dir: t.TempDir(), ca: newTestCA(t, "test-fulcio")}
	var err error
	if w.rekorKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if w.ctKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	w.rootPath = writeFile(t, filepath.Join(w.dir, "fulcio.pem"), string(w.ca.pem))
	w.rekorPub = writeFile(t, filepath.Join(w.dir, "rekor.pub"), pemPublicKey(t, w.rekorKey))
	w.ctPub = writeFile(t, filepath.Join(w.dir, "ctfe.pub"), pemPublicKey(t, w.ctKey))
	return w
}

// policy trusts the world's root, Rekor key and CT log key; fulcio fields
// override or add to that, and a nil value removes a field.
func (w *keylessWorld) policy(t *testing.T, fulcio map[string]any) *Policy {
	t.Helper()
	f := map[string]any{"caPath": w.rootPath, "oidcIssuer": testIssuer, "ctLogPublicKeyPath": w.ctPub}
	for k, v := range fulcio {
		if v == nil {
			delete(f, k)
			continue
		}
		f[k] = v
	}
	if f["subjectEmail"] == nil && f["subject"] == nil && f["subjectRegExp"] == nil {
		f["subjectEmail"] = testEmail
	}
	return loadPolicy(t, t.TempDir(), mustJSON(t, map[string]any{"default": []any{map[string]any{
		"type": "sigstoreSigned", "fulcio": f, "rekorPublicKeyPath": w.rekorPub,
	}}}))
}

// keylessSig describes one signature to build; zero values mean "valid".
type keylessSig struct {
	ca          *testCA // issuing CA (default: the trusted one)
	email       string
	issuer      string
	notAfter    time.Duration // leaf lifetime from now (default 10m)
	integrated  time.Duration // log time relative to now (default 0)
	setKey      *ecdsa.PrivateKey
	logKey      *ecdsa.PrivateKey
	noBundle    bool
	bundleOfSig bool // log another (valid) signature than the one attached
	payloadFor  *v1.Hash
	signWith    *ecdsa.PrivateKey // sign with a key other than the cert's
	noSCT       bool              // the certificate embeds no SCT
	sctKey      *ecdsa.PrivateKey // SCT signed by this key instead of the CT log's
	sctLogKey   *ecdsa.PrivateKey // SCT names this key's log instead of the CT log
}

func (w *keylessWorld) signature(t *testing.T, repo name.Repository, d v1.Hash, s keylessSig) Signature {
	t.Helper()
	ca := s.ca
	if ca == nil {
		ca = w.ca
	}
	email, issuer := s.email, s.issuer
	if email == "" {
		email = testEmail
	}
	if issuer == "" {
		issuer = testIssuer
	}
	life := s.notAfter
	if life == 0 {
		life = 10 * time.Minute
	}
	now := time.Now()
	var sct *sctSpec
	if !s.noSCT {
		sct = &sctSpec{signKey: w.ctKey, logKey: w.ctKey}
		if s.sctKey != nil {
			sct.signKey = s.sctKey
		}
		if s.sctLogKey != nil {
			sct.logKey = s.sctLogKey
		}
	}
	leafKey, leafPEM := ca.leaf(t, email, issuer, now.Add(-time.Minute), now.Add(life), sct)
	pd := d
	if s.payloadFor != nil {
		pd = *s.payloadFor
	}
	p := simpleSigningPayload(t, repo, pd, nil)
	signer := leafKey
	if s.signWith != nil {
		signer = s.signWith
	}
	b64 := signPayload(t, signer, p)
	sig := Signature{Payload: p, Base64Signature: b64, Cert: leafPEM, Chain: ca.pem}
	if !s.noBundle {
		setKey, logKey := w.rekorKey, w.rekorKey
		if s.setKey != nil {
			setKey = s.setKey
		}
		if s.logKey != nil {
			logKey = s.logKey
		}
		logged := b64
		if s.bundleOfSig {
			logged = signPayload(t, signer, p) // ECDSA is randomized: a different signature
		}
		sig.Bundle = rekorBundle(t, setKey, logKey, p, logged, leafPEM, now.Add(s.integrated))
	}
	return sig
}

func TestKeylessOffline(t *testing.T) {
	w := newKeylessWorld(t)
	ctx := context.Background()
	repo, err := name.NewRepository("registry.local:5000/apps/web")
	if err != nil {
		t.Fatal(err)
	}
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	otherDigest := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	otherCA := newTestCA(t, "not-fulcio")
	otherRekor, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	defaultPolicy := w.policy(t, nil)

	// An acceptance says what was checked: the root, the SCT, the Rekor entry.
	root := fmt.Sprintf(`certificate chains to Fulcio root "CN=test-fulcio,O=sigstore.dev" (caPath %s)`, w.rootPath)
	rekor := "Rekor entry 42: signed entry timestamp verified offline with rekorPublicKeyPath " + w.rekorPub +
		", certificate valid at its integrated time "
	cases := []struct {
		name       string
		sig        keylessSig
		policy     *Policy
		want       string   // "" = allowed, else a substring of the rejection
		wantReason []string // when allowed
	}{
		{name: "identity and issuer match, SCT and bundle verify", want: "",
			wantReason: []string{"signature 1 of 1 verified with a Fulcio certificate (" + w.rootPath + ") for subject " + testEmail + " from issuer " + testIssuer + ": " +
				root + "; SCT verified with ctLogPublicKeyPath " + w.ctPub + "; " + rekor, "(no inclusion proof checked)"}},
		{name: "wrong email", sig: keylessSig{email: "you@example.com"},
			want: "none of the expected identities matched what was in the certificate, got subjects [you@example.com] with issuer " + testIssuer},
		{name: "wrong issuer", sig: keylessSig{issuer: "https://evil.example"},
			want: "got subjects [me@example.com] with issuer https://evil.example"},
		{name: "certificate does not chain to the Fulcio root", sig: keylessSig{ca: otherCA},
			want: "cert verification failed: x509: certificate signed by unknown authority"},
		{name: "bundle from another Rekor log", sig: keylessSig{setKey: otherRekor, logKey: otherRekor},
			want: "rekor log public key not found for payload"},
		{name: "bundle claiming our log but signed by another key", sig: keylessSig{setKey: otherRekor},
			want: "unable to verify SET"},
		{name: "no bundle", sig: keylessSig{noBundle: true},
			want: "the signature has no Rekor bundle"},
		{name: "bundle logs another signature", sig: keylessSig{bundleOfSig: true},
			want: "signature in bundle does not match signature being verified"},
		{name: "logged after the certificate expired", sig: keylessSig{notAfter: 5 * time.Minute, integrated: 6 * time.Minute},
			want: "certificate expired before signatures were entered in log"},
		{name: "signature claims another digest", sig: keylessSig{payloadFor: &otherDigest},
			want: "invalid or missing digest in claim: " + otherDigest.String()},
		{name: "payload signed by a key other than the certificate's", sig: keylessSig{signWith: stranger},
			want: "invalid signature when validating ASN.1 encoded signature"},
		{name: "subjectRegExp matching the whole SAN", policy: w.policy(t, map[string]any{"subjectRegExp": `[a-z]+@example\.com`}), want: ""},
		{name: "subjectRegExp is anchored", sig: keylessSig{email: "me@example.com.evil.test"},
			policy: w.policy(t, map[string]any{"subjectRegExp": `me@example\.com`}),
			want:   "none of the expected identities matched"},
		// The SCT, as cosign verify checks it by default.
		{name: "no CT log key and no opt-out: refused, as cosign refuses by default",
			policy: w.policy(t, map[string]any{"ctLogPublicKeyPath": nil}),
			want:   "rule sigstoreSigned[0]: " + noCTLogKey},
		{name: "insecureIgnoreSCT accepts a certificate without an SCT", sig: keylessSig{noSCT: true},
			policy: w.policy(t, map[string]any{"ctLogPublicKeyPath": nil, "insecureIgnoreSCT": true}), want: "",
			wantReason: []string{root + "; SCT not checked (fulcio.insecureIgnoreSCT); " + rekor}},
		{name: "certificate without an embedded SCT", sig: keylessSig{noSCT: true},
			want: "certificate does not include required embedded SCT"},
		{name: "SCT from another CT log", sig: keylessSig{sctKey: otherRekor, sctLogKey: otherRekor},
			want: "ctfe public key not found for payload"},
		{name: "SCT naming our CT log but signed by another key", sig: keylessSig{sctKey: otherRekor},
			want: "error verifying embedded SCT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.policy
			if p == nil {
				p = defaultPolicy
			}
			set := roundTrip(t, &SignatureSet{Digest: d.String(), Signatures: []Signature{w.signature(t, repo, d, tc.sig)}})
			j := p.Evaluate(ctx, repo, d, set)
			if tc.want == "" {
				wantAllowed(t, j)
				for _, want := range append(tc.wantReason, "verified with a Fulcio certificate") {
					if !strings.Contains(j.Reason, want) {
						t.Fatalf("reason\n  %s\nlacks\n  %s", j.Reason, want)
					}
				}
				return
			}
			if strings.Contains(tc.want, noCTLogKey) {
				wantRejected(t, j, tc.want)
				return
			}
			wantRejected(t, j, "rule sigstoreSigned[0]: no signature verifies with a Fulcio certificate", tc.want)
		})
	}
}

// TestKeylessAttachedWithCosign puts the generated keyless material into a
// real registry with `cosign attach signature` (certificate, chain and Rekor
// bundle) and verifies what FetchSignatures reads back.
func TestKeylessAttachedWithCosign(t *testing.T) {
	cos := requireCosign(t)
	reg := startRegistry(t)
	w := newKeylessWorld(t)
	ctx := context.Background()
	repo, d := reg.push(t, "keyless/app:v1")

	sig := w.signature(t, repo, d, keylessSig{})
	var rb bundle.RekorBundle
	if err := json.Unmarshal(sig.Bundle, &rb); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{"attach", "signature",
		"--payload", writeFile(t, filepath.Join(dir, "payload.json"), string(sig.Payload)),
		"--signature", writeFile(t, filepath.Join(dir, "sig.b64"), sig.Base64Signature),
		"--certificate", writeFile(t, filepath.Join(dir, "cert.pem"), string(sig.Cert)),
		"--certificate-chain", writeFile(t, filepath.Join(dir, "chain.pem"), string(sig.Chain)),
		"--rekor-response", writeFile(t, filepath.Join(dir, "bundle.json"), mustJSON(t, cosign.LocalSignedPayload{
			Base64Signature: sig.Base64Signature, Cert: string(sig.Cert), Bundle: &rb})),
		repo.Digest(d.String()).String(),
	}
	cos.run(t, dir, args...)

	set := fetch(t, repo, d)
	if len(set.Signatures) != 1 || len(set.Signatures[0].Cert) == 0 || len(set.Signatures[0].Bundle) == 0 {
		t.Fatalf("fetched %+v, want one signature with certificate and bundle", set)
	}
	wantAllowed(t, w.policy(t, nil).Evaluate(ctx, repo, d, roundTrip(t, set)))
	wantRejected(t, w.policy(t, map[string]any{"subjectEmail": "you@example.com"}).Evaluate(ctx, repo, d, set),
		"none of the expected identities matched")
}
