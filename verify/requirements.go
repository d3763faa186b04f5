package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
	"github.com/sigstore/sigstore/pkg/tuf"
)

// requirement is one entry of a scope's list (containers-policy.json(5)
// "policy requirement"). check returns what it verified, or why it does not
// accept the image.
type requirement interface {
	kind() string
	check(ctx context.Context, img imageID, sigs *SignatureSet) (string, error)
}

type rejectRule struct{ why string }

func (rejectRule) kind() string { return "reject" }
func (r rejectRule) check(context.Context, imageID, *SignatureSet) (string, error) {
	return "", errors.New(r.why)
}

type acceptRule struct{}

func (acceptRule) kind() string { return "insecureAcceptAnything" }
func (acceptRule) check(context.Context, imageID, *SignatureSet) (string, error) {
	return "accepted without verification (insecureAcceptAnything)", nil
}

// sigstoreRule is "sigstoreSigned": at least one signature of the image must
// verify with one of the keys (or as a Fulcio certificate of the expected
// identity), claim the image's digest and repository, and carry the required
// annotations.
type sigstoreRule struct {
	keys   []namedVerifier // keyPath/keyPaths/keyData/keyDatas
	fulcio *fulcioTrust    // or keyless

	rekor      *cosign.TrustedTransparencyLogPubKeys // nil: no tlog required
	rekorNames map[string]string                     // Rekor log ID → the key's field and path, for reasons
	identity   identityRule
	// requiredAnnotations is a berth extension: each key=value must be in the
	// signature payload's "optional" map (cosign sign -a key=value).
	requiredAnnotations map[string]string
}

type namedVerifier struct {
	name string // the key's path, or keyData / keyDatas[i]
	v    signature.Verifier
}

type fulcioTrust struct {
	roots, intermediates *x509.CertPool
	identity             cosign.Identity
	caName               string // "caPath /etc/berth/fulcio.pem" or "caData"
	// ctLog verifies the certificate's SCT; nil with ignoreSCT false means
	// the rule cannot accept (see noCTLogKey).
	ctLog     *cosign.TrustedTransparencyLogPubKeys
	ctLogName string // "ctLogPublicKeyPath /etc/berth/ctfe.pub" or "ctLogPublicKeyData"
	ignoreSCT bool   // insecureIgnoreSCT
	desc      string
}

// noCTLogKey is the refusal of a keyless rule that names no CT log key and
// does not opt out. A Fulcio certificate's SCT is the CT log's promise that
// the certificate was published, so that its owner can see it was issued;
// `cosign verify` refuses a certificate whose SCT it cannot verify unless
// given --insecure-ignore-sct (it fetches the CT keys from Sigstore's TUF
// root, which berth, verifying offline from the policy alone, does not). So
// berth refuses too, instead of accepting with less checked than cosign would.
const noCTLogKey = "no CT log public key configured: the certificate's SCT cannot be verified (cosign refuses this by default); " +
	"set fulcio.ctLogPublicKeyPath or fulcio.ctLogPublicKeyData, or fulcio.insecureIgnoreSCT: true to accept certificates without a verified SCT"

func (*sigstoreRule) kind() string { return "sigstoreSigned" }

type rawSigstore struct {
	Type                string            `json:"type"`
	KeyPath             *string           `json:"keyPath"`
	KeyPaths            []string          `json:"keyPaths"`
	KeyData             *string           `json:"keyData"`
	KeyDatas            []string          `json:"keyDatas"`
	Fulcio              *rawFulcio        `json:"fulcio"`
	PKI                 json.RawMessage   `json:"pki"`
	RekorPublicKeyPath  *string           `json:"rekorPublicKeyPath"`
	RekorPublicKeyPaths []string          `json:"rekorPublicKeyPaths"`
	RekorPublicKeyData  *string           `json:"rekorPublicKeyData"`
	RekorPublicKeyDatas []string          `json:"rekorPublicKeyDatas"`
	SignedIdentity      json.RawMessage   `json:"signedIdentity"`
	RequiredAnnotations map[string]string `json:"requiredAnnotations"`
}

type rawFulcio struct {
	CAPath       *string `json:"caPath"`
	CAData       *string `json:"caData"`
	OIDCIssuer   string  `json:"oidcIssuer"`
	SubjectEmail string  `json:"subjectEmail"`
	// berth extensions: a non-email SAN (e.g. a CI workflow URI), or an
	// expression that must match a whole SAN.
	Subject       string `json:"subject"`
	SubjectRegExp string `json:"subjectRegExp"`
	// berth extensions: the CT log key that verifies the certificate's
	// embedded SCT, or the explicit opt-out mirroring cosign verify
	// --insecure-ignore-sct. Without either, keyless signatures are rejected
	// (noCTLogKey).
	CTLogPublicKeyPath *string `json:"ctLogPublicKeyPath"`
	CTLogPublicKeyData *string `json:"ctLogPublicKeyData"`
	InsecureIgnoreSCT  bool    `json:"insecureIgnoreSCT"`
}

func parseSigstore(item json.RawMessage, files *trustFiles) (requirement, error) {
	var raw rawSigstore
	if err := decodeStrict(item, &raw); err != nil {
		return nil, err
	}
	r := &sigstoreRule{requiredAnnotations: raw.RequiredAnnotations}

	var present []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"keyPath", raw.KeyPath != nil}, {"keyPaths", raw.KeyPaths != nil},
		{"keyData", raw.KeyData != nil}, {"keyDatas", raw.KeyDatas != nil},
		{"fulcio", raw.Fulcio != nil}, {"pki", raw.PKI != nil},
	} {
		if f.set {
			present = append(present, f.name)
		}
	}
	if len(present) != 1 {
		found := fmt.Sprintf("found %d", len(present))
		if len(present) > 0 {
			found += " (" + strings.Join(present, ", ") + ")"
		}
		return nil, fmt.Errorf("exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki must be present, %s", found)
	}

	switch present[0] {
	case "keyPath":
		nv, err := loadKey(files, "key", raw.KeyPath, nil)
		if err != nil {
			return nil, err
		}
		r.keys = []namedVerifier{nv}
	case "keyPaths":
		if len(raw.KeyPaths) == 0 {
			return nil, errors.New("keyPaths: empty list")
		}
		for i := range raw.KeyPaths {
			nv, err := loadKey(files, "key", &raw.KeyPaths[i], nil)
			if err != nil {
				return nil, fmt.Errorf("keyPaths[%d]: %w", i, err)
			}
			r.keys = append(r.keys, nv)
		}
	case "keyData":
		nv, err := loadKey(files, "key", nil, raw.KeyData)
		if err != nil {
			return nil, err
		}
		r.keys = []namedVerifier{nv}
	case "keyDatas":
		if len(raw.KeyDatas) == 0 {
			return nil, errors.New("keyDatas: empty list")
		}
		for i := range raw.KeyDatas {
			nv, err := loadKey(files, "key", nil, &raw.KeyDatas[i])
			if err != nil {
				return nil, fmt.Errorf("keyDatas[%d]: %w", i, err)
			}
			nv.name = fmt.Sprintf("keyDatas[%d]", i)
			r.keys = append(r.keys, nv)
		}
	case "fulcio":
		f, err := parseFulcio(raw.Fulcio, files)
		if err != nil {
			return nil, fmt.Errorf("fulcio: %w", err)
		}
		r.fulcio = f
	case "pki":
		return nil, errors.New("pki (certificates from a private CA) is not supported by berth yet; use keyPath(s) or fulcio")
	}

	rekor, names, err := parseRekor(&raw, files)
	if err != nil {
		return nil, err
	}
	r.rekor, r.rekorNames = rekor, names
	// containers-policy.json(5): a Rekor key "is mandatory if fulcio is
	// specified" — without the log's integrated time a Fulcio certificate
	// (valid for minutes) could only be checked against the current time.
	if r.fulcio != nil && r.rekor == nil {
		return nil, errors.New("fulcio requires one of rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData, rekorPublicKeyDatas (containers-policy.json(5))")
	}

	id, err := parseSignedIdentity(raw.SignedIdentity)
	if err != nil {
		return nil, fmt.Errorf("signedIdentity: %w", err)
	}
	r.identity = id

	for k := range raw.RequiredAnnotations {
		if k == "" {
			return nil, errors.New("requiredAnnotations: empty key")
		}
	}
	return r, nil
}

// loadKey reads a PEM public key (ECDSA, Ed25519 or RSA) and builds the
// verifier cosign would use for a signature made by `cosign sign` with it.
func loadKey(files *trustFiles, field string, path, data *string) (namedVerifier, error) {
	b, label, err := readKeyMaterial(files, field, path, data)
	if err != nil {
		return namedVerifier{}, err
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return namedVerifier{}, fmt.Errorf("%s: not a PEM public key: %w", label, err)
	}
	v, err := verifierFor(pub)
	if err != nil {
		return namedVerifier{}, fmt.Errorf("%s: %w", label, err)
	}
	name := field + "Data"
	if path != nil {
		name = *path
	}
	return namedVerifier{name: name, v: v}, nil
}

func parseRekor(raw *rawSigstore, files *trustFiles) (*cosign.TrustedTransparencyLogPubKeys, map[string]string, error) {
	type src struct {
		path, data *string
		name       string // rekorPublicKeyDatas[i]: the label, as data has no path
	}
	var srcs []src
	n := 0
	if raw.RekorPublicKeyPath != nil {
		n++
		srcs = append(srcs, src{path: raw.RekorPublicKeyPath})
	}
	if raw.RekorPublicKeyPaths != nil {
		n++
		if len(raw.RekorPublicKeyPaths) == 0 {
			return nil, nil, errors.New("rekorPublicKeyPaths: empty list")
		}
		for i := range raw.RekorPublicKeyPaths {
			srcs = append(srcs, src{path: &raw.RekorPublicKeyPaths[i]})
		}
	}
	if raw.RekorPublicKeyData != nil {
		n++
		srcs = append(srcs, src{data: raw.RekorPublicKeyData})
	}
	if raw.RekorPublicKeyDatas != nil {
		n++
		if len(raw.RekorPublicKeyDatas) == 0 {
			return nil, nil, errors.New("rekorPublicKeyDatas: empty list")
		}
		for i := range raw.RekorPublicKeyDatas {
			srcs = append(srcs, src{data: &raw.RekorPublicKeyDatas[i], name: fmt.Sprintf("rekorPublicKeyDatas[%d]", i)})
		}
	}
	if n == 0 {
		return nil, nil, nil
	}
	if n > 1 {
		return nil, nil, errors.New("at most one of rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData and rekorPublicKeyDatas can be present")
	}
	keys := cosign.NewTrustedTransparencyLogPubKeys()
	names := map[string]string{}
	for _, s := range srcs {
		id, label, err := addLogKey(&keys, files, "rekorPublicKey", s.path, s.data)
		if err != nil {
			return nil, nil, err
		}
		if s.name != "" {
			label = s.name
		}
		names[id] = label
	}
	return &keys, names, nil
}

// addLogKey adds a Rekor or CT log public key and returns its log ID (the
// hex sha256 of its DER form, which bundles and SCTs name their log by) and
// its label for messages. cosign verifies Rekor signed entry timestamps with
// ECDSA only (pkg/cosign/verify.go VerifyBundle; sigstore/cosign#2540), so
// other key types are refused here rather than at the first pull.
func addLogKey(keys *cosign.TrustedTransparencyLogPubKeys, files *trustFiles, field string, path, data *string) (string, string, error) {
	b, label, err := readKeyMaterial(files, field, path, data)
	if err != nil {
		return "", "", err
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return "", "", fmt.Errorf("%s: not a PEM public key: %w", label, err)
	}
	if _, ok := pub.(*ecdsa.PublicKey); !ok && field == "rekorPublicKey" {
		return "", "", fmt.Errorf("%s: a Rekor public key must be ECDSA, got %T", label, pub)
	}
	if err := keys.AddTransparencyLogPubKey(b, tuf.Active); err != nil {
		return "", "", fmt.Errorf("%s: %w", label, err)
	}
	id, err := cosign.GetTransparencyLogID(pub)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", label, err)
	}
	return id, label, nil
}

func parseFulcio(f *rawFulcio, files *trustFiles) (*fulcioTrust, error) {
	if (f.CAPath == nil) == (f.CAData == nil) {
		return nil, errors.New("exactly one of caPath and caData must be present")
	}
	b, caLabel, err := readKeyMaterial(files, "ca", f.CAPath, f.CAData)
	if err != nil {
		return nil, err
	}
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM(b)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificates: %w", caLabel, err)
	}
	ft := &fulcioTrust{roots: x509.NewCertPool()}
	nroots := 0
	for _, c := range certs {
		// A self-signed certificate is a root; anything else in the file is
		// an intermediate that may complete a chain to one.
		if c.CheckSignatureFrom(c) == nil && string(c.RawIssuer) == string(c.RawSubject) {
			ft.roots.AddCert(c)
			nroots++
		} else {
			// Left nil when the file has none: cosign then takes the
			// intermediates from the signature's chain annotation
			// (verifyInternal), while the root still comes only from here.
			if ft.intermediates == nil {
				ft.intermediates = x509.NewCertPool()
			}
			ft.intermediates.AddCert(c)
		}
	}
	if nroots == 0 {
		return nil, fmt.Errorf("%s: no self-signed root certificate among %d certificates", caLabel, len(certs))
	}
	if f.OIDCIssuer == "" {
		return nil, errors.New("oidcIssuer is mandatory")
	}
	n := 0
	for _, s := range []string{f.SubjectEmail, f.Subject, f.SubjectRegExp} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("exactly one of subjectEmail, subject and subjectRegExp must be present")
	}
	ft.identity = cosign.Identity{Issuer: f.OIDCIssuer}
	switch {
	case f.SubjectEmail != "":
		ft.identity.Subject = f.SubjectEmail
		ft.desc = "subject " + f.SubjectEmail
	case f.Subject != "":
		ft.identity.Subject = f.Subject
		ft.desc = "subject " + f.Subject
	default:
		// cosign matches SubjectRegExp unanchored (regexp.MatchString), so
		// "me@example.com" would also accept "me@example.com.evil"; berth
		// anchors it to the whole SAN.
		anchored := "^(?:" + f.SubjectRegExp + ")$"
		if _, err := regexp.Compile(anchored); err != nil {
			return nil, fmt.Errorf("subjectRegExp: %w", err)
		}
		ft.identity.SubjectRegExp = anchored
		ft.desc = "subject matching " + anchored
	}
	caName := "caData"
	if f.CAPath != nil {
		caName = *f.CAPath
	}
	ft.caName = caLabel
	ft.desc = fmt.Sprintf("a Fulcio certificate (%s) for %s from issuer %s", caName, ft.desc, f.OIDCIssuer)
	if f.CTLogPublicKeyPath != nil && f.CTLogPublicKeyData != nil {
		return nil, errors.New("at most one of ctLogPublicKeyPath and ctLogPublicKeyData can be present")
	}
	if f.CTLogPublicKeyPath != nil || f.CTLogPublicKeyData != nil {
		if f.InsecureIgnoreSCT {
			return nil, errors.New("insecureIgnoreSCT contradicts ctLogPublicKeyPath/ctLogPublicKeyData: name the CT log key to verify SCTs, or opt out, not both")
		}
		keys := cosign.NewTrustedTransparencyLogPubKeys()
		_, label, err := addLogKey(&keys, files, "ctLogPublicKey", f.CTLogPublicKeyPath, f.CTLogPublicKeyData)
		if err != nil {
			return nil, err
		}
		ft.ctLog, ft.ctLogName = &keys, label
	}
	ft.ignoreSCT = f.InsecureIgnoreSCT
	return ft, nil
}

// identityRule is containers-policy's signedIdentity, applied to the
// repository a cosign signature claims (critical.identity.docker-reference).
// berth always identifies images by digest, so matchRepoDigestOrExact (the
// default) means "same repository", as the man page says for digest
// references.
type identityRule struct {
	kind                 string
	repo                 string // exactRepository
	prefix, signedPrefix string // remapIdentity
}

func parseSignedIdentity(raw json.RawMessage) (identityRule, error) {
	if raw == nil {
		return identityRule{kind: "matchRepoDigestOrExact"}, nil
	}
	var v struct {
		Type             string  `json:"type"`
		DockerReference  *string `json:"dockerReference"`
		DockerRepository *string `json:"dockerRepository"`
		Prefix           *string `json:"prefix"`
		SignedPrefix     *string `json:"signedPrefix"`
	}
	if err := decodeStrict(raw, &v); err != nil {
		return identityRule{}, err
	}
	extra := func(allowed ...string) error {
		set := map[string]bool{
			"dockerReference": v.DockerReference != nil, "dockerRepository": v.DockerRepository != nil,
			"prefix": v.Prefix != nil, "signedPrefix": v.SignedPrefix != nil,
		}
		for _, a := range allowed {
			if !set[a] {
				return fmt.Errorf("%s requires %q", v.Type, a)
			}
			delete(set, a)
		}
		var bad []string
		for k, on := range set {
			if on {
				bad = append(bad, k)
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			return fmt.Errorf("field %q is not valid for %s", bad[0], v.Type)
		}
		return nil
	}
	switch v.Type {
	case "matchRepoDigestOrExact", "matchRepository":
		return identityRule{kind: v.Type}, extra()
	case "exactRepository":
		if err := extra("dockerRepository"); err != nil {
			return identityRule{}, err
		}
		repo, err := normalizeRepoValue(*v.DockerRepository)
		if err != nil {
			return identityRule{}, fmt.Errorf("dockerRepository: %w", err)
		}
		return identityRule{kind: v.Type, repo: repo}, nil
	case "remapIdentity":
		if err := extra("prefix", "signedPrefix"); err != nil {
			return identityRule{}, err
		}
		for f, val := range map[string]string{"prefix": *v.Prefix, "signedPrefix": *v.SignedPrefix} {
			var err error
			if strings.Contains(val, "/") {
				err = checkRepoValue(val)
			} else {
				err = checkHost(val)
			}
			if err != nil {
				return identityRule{}, fmt.Errorf("%s: %w", f, err)
			}
		}
		// Compared with image identities, whose hosts are lower-cased.
		return identityRule{kind: v.Type, prefix: lowerScopeHost(*v.Prefix), signedPrefix: lowerScopeHost(*v.SignedPrefix)}, nil
	case "matchExact", "exactReference":
		// cosign signatures claim only a repository (containers-policy.json(5):
		// "only matchRepository and exactRepository can be used to accept
		// them"), so these could never accept; refuse them up front.
		return identityRule{}, fmt.Errorf("%s can never match a cosign signature, which names only a repository; use matchRepository or exactRepository", v.Type)
	case "":
		return identityRule{}, errors.New(`missing "type"`)
	default:
		return identityRule{}, fmt.Errorf("unknown signedIdentity type %q", v.Type)
	}
}

// expected returns the repository a signature must claim for imageRepo.
func (r identityRule) expected(imageRepo string) string {
	switch r.kind {
	case "exactRepository":
		return r.repo
	case "remapIdentity":
		if hasPathPrefix(imageRepo, r.prefix) {
			return r.signedPrefix + imageRepo[len(r.prefix):]
		}
	}
	return imageRepo
}

// check runs the requirement over every stored signature. The first signature
// that verifies with any key accepts; otherwise the error lists, per key and
// signature, what cosign found wrong.
func (r *sigstoreRule) check(ctx context.Context, img imageID, set *SignatureSet) (string, error) {
	if set != nil && set.Digest != "" && set.Digest != img.digest.String() {
		return "", fmt.Errorf("the signatures given were fetched for %s, not for this image", set.Digest)
	}
	if set == nil || len(set.Signatures) == 0 {
		return "", fmt.Errorf("no signatures found (cosign stores them at %s:%s-%s.sig)", img.repo, img.digest.Algorithm, img.digest.Hex)
	}
	if r.fulcio != nil && r.fulcio.ctLog == nil && !r.fulcio.ignoreSCT {
		return "", errors.New(noCTLogKey)
	}
	sigs := make([]oci.Signature, len(set.Signatures))
	convErr := make([]error, len(set.Signatures))
	for i, s := range set.Signatures {
		sigs[i], convErr[i] = s.ociSignature()
	}

	type attempt struct {
		desc string
		co   *cosign.CheckOpts
	}
	var attempts []attempt
	if r.fulcio != nil {
		attempts = append(attempts, attempt{desc: r.fulcio.desc, co: r.checkOpts(img, nil)})
	}
	for _, k := range r.keys {
		attempts = append(attempts, attempt{desc: "key " + k.name, co: r.checkOpts(img, k.v)})
	}

	var failures []string
	for _, a := range attempts {
		var errs []string
		for i, sig := range sigs {
			err := convErr[i]
			if err == nil {
				err = r.verifyOne(ctx, sig, img, a.co)
			}
			if err == nil {
				return fmt.Sprintf("signature %d of %d verified with %s%s", i+1, len(sigs), a.desc, r.checked(sig, a.co)), nil
			}
			if len(sigs) > 1 {
				errs = append(errs, fmt.Sprintf("signature %d of %d: %v", i+1, len(sigs), err))
			} else {
				errs = append(errs, err.Error())
			}
		}
		failures = append(failures, a.desc+": "+strings.Join(errs, "; "))
	}
	if len(attempts) == 1 {
		return "", fmt.Errorf("no signature verifies with %s", failures[0])
	}
	return "", fmt.Errorf("no signature verifies with any of %d keys: %s", len(attempts), strings.Join(failures, "; "))
}

// checkOpts builds cosign's options for one key (v) or for the Fulcio roots
// (v == nil). Everything is offline: no Rekor client, no TUF.
func (r *sigstoreRule) checkOpts(img imageID, v signature.Verifier) *cosign.CheckOpts {
	co := &cosign.CheckOpts{
		SigVerifier: v,
		// MUST be set: cosign's verifyInternal (pkg/cosign/verify.go) calls
		// ClaimVerifier only when it is non-nil, and nothing else there
		// compares the payload's critical.image.docker-manifest-digest with
		// the image, so without it a signature copied next to another image
		// verifies (TestCosignSignedImages copies one and expects
		// "invalid or missing digest in claim").
		ClaimVerifier: r.claimVerifier(img),
		IgnoreTlog:    r.rekor == nil,
		RekorPubKeys:  r.rekor,
		// Offline forbids online Rekor lookups: a signature without a bundle
		// fails instead of reaching for rekor.sigstore.dev.
		Offline: true,
		// An SCT belongs to a certificate; a key has none (cosign verify
		// --key does not check SCTs either). Keyless sets it below.
		IgnoreSCT: true,
	}
	if len(r.requiredAnnotations) > 0 {
		co.Annotations = make(map[string]interface{}, len(r.requiredAnnotations))
		for k, val := range r.requiredAnnotations {
			co.Annotations[k] = val
		}
	}
	if v == nil && r.fulcio != nil {
		co.RootCerts = r.fulcio.roots
		co.IntermediateCerts = r.fulcio.intermediates
		co.Identities = []cosign.Identity{r.fulcio.identity}
		// check has refused a rule with neither a CT log key nor the
		// opt-out, so CTLogPubKeys is set whenever SCTs are checked: cosign
		// never falls back to the environment or TUF for them here.
		co.IgnoreSCT = r.fulcio.ignoreSCT
		co.CTLogPubKeys = r.fulcio.ctLog
	}
	return co
}

// checked says, after cosign accepted sig, what beyond the signature itself
// was verified and what was not, so the judgement's reason is the whole
// account: the Fulcio root the certificate chains to, the SCT, and the Rekor
// entry (cosign's offline bundle check verifies the log's signed entry
// timestamp over an entry matching this signature and certificate; it is the
// log's promise of inclusion, not an inclusion proof).
func (r *sigstoreRule) checked(sig oci.Signature, co *cosign.CheckOpts) string {
	var out []string
	keyless := co.SigVerifier == nil && r.fulcio != nil
	if keyless {
		out = append(out, "certificate chains to "+r.fulcio.rootOf(sig))
		if co.IgnoreSCT {
			out = append(out, "SCT not checked (fulcio.insecureIgnoreSCT)")
		} else {
			out = append(out, "SCT verified with "+r.fulcio.ctLogName)
		}
	}
	if r.rekor != nil {
		if b, err := sig.Bundle(); err == nil && b != nil {
			name := r.rekorNames[b.Payload.LogID]
			if name == "" {
				name = "the configured Rekor key"
			}
			entry := fmt.Sprintf("Rekor entry %d: signed entry timestamp verified offline with %s", b.Payload.LogIndex, name)
			if keyless {
				entry += fmt.Sprintf(", certificate valid at its integrated time %s", time.Unix(b.Payload.IntegratedTime, 0).UTC().Format(time.RFC3339))
			}
			out = append(out, entry+" (no inclusion proof checked)")
		}
	}
	if len(out) == 0 {
		return ""
	}
	return ": " + strings.Join(out, "; ")
}

// rootOf names the configured Fulcio root the signature's certificate chains
// to, building the chain as cosign did (intermediates from the CA file, else
// from the signature's chain annotation, never a root from there).
func (ft *fulcioTrust) rootOf(sig oci.Signature) string {
	fallback := "a Fulcio root in " + ft.caName
	cert, err := sig.Cert()
	if err != nil || cert == nil {
		return fallback
	}
	pool := ft.intermediates
	if pool == nil {
		if chain, err := sig.Chain(); err == nil && len(chain) > 1 {
			pool = x509.NewCertPool()
			for _, c := range chain[:len(chain)-1] {
				pool.AddCert(c)
			}
		}
	}
	// Fulcio may mark an OtherName SAN critical, which crypto/x509 does not
	// handle; cosign drops that one extension before verifying, so do the
	// same on a copy.
	c := *cert
	c.UnhandledCriticalExtensions = nil
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(cryptoutils.SANOID) {
			c.UnhandledCriticalExtensions = append(c.UnhandledCriticalExtensions, oid)
		}
	}
	chains, err := cosign.TrustedCert(&c, ft.roots, pool)
	if err != nil || len(chains) == 0 || len(chains[0]) == 0 {
		return fallback
	}
	root := chains[0][len(chains[0])-1]
	return fmt.Sprintf("Fulcio root %q (%s)", root.Subject.String(), ft.caName)
}

func (r *sigstoreRule) verifyOne(ctx context.Context, sig oci.Signature, img imageID, co *cosign.CheckOpts) error {
	if r.rekor != nil {
		// cosign would say only "offline verification failed"; say what is missing.
		b, err := sig.Bundle()
		if err != nil {
			return err
		}
		if b == nil {
			return errors.New("the signature has no Rekor bundle, and this rule requires a transparency-log entry verified offline with the configured Rekor key")
		}
	}
	_, err := cosign.VerifyImageSignature(ctx, sig, img.digest, co)
	return err
}

// claimVerifier checks the signed payload's claims: cosign's
// SimpleClaimVerifier (digest, then required annotations), then the
// containers-policy signedIdentity against the claimed repository.
func (r *sigstoreRule) claimVerifier(img imageID) func(oci.Signature, v1.Hash, map[string]interface{}) error {
	return func(sig oci.Signature, h v1.Hash, annotations map[string]interface{}) error {
		if err := cosign.SimpleClaimVerifier(sig, h, nil); err != nil {
			return err
		}
		p, err := sig.Payload()
		if err != nil {
			return err
		}
		var ss payload.SimpleContainerImage
		if err := json.Unmarshal(p, &ss); err != nil {
			return fmt.Errorf("signature payload: %w", err)
		}
		if ss.Critical.Type != payload.CosignSignatureType {
			return fmt.Errorf("signature payload type is %q, not %q", ss.Critical.Type, payload.CosignSignatureType)
		}
		if annotations != nil {
			if err := cosign.SimpleClaimVerifier(sig, h, annotations); err != nil {
				return fmt.Errorf("%w: %s", err, annotationDiff(r.requiredAnnotations, ss.Optional))
			}
		}
		claimed, err := claimedRepository(ss.Critical.Identity.DockerReference)
		if err != nil {
			return fmt.Errorf("signature claims an unparseable identity %q: %w", ss.Critical.Identity.DockerReference, err)
		}
		if want := r.identity.expected(img.repo); claimed != want {
			return fmt.Errorf("signature is for repository %s, not %s (signedIdentity %s)", claimed, want, r.identity.kind)
		}
		return nil
	}
}

// annotationDiff names each required annotation the payload lacks or has
// with another value.
func annotationDiff(want map[string]string, have map[string]interface{}) string {
	var out []string
	for _, k := range sortedKeys(want) {
		got, ok := have[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("required %s=%s is absent", k, want[k]))
		case got != want[k]:
			out = append(out, fmt.Sprintf("required %s=%s, signature has %s=%v", k, want[k], k, got))
		}
	}
	return strings.Join(out, ", ")
}
