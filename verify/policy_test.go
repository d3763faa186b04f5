package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// Pure tests: parsing, scope precedence and requirement semantics, with
// signatures made in Go. No registry, no cosign CLI.

var (
	digestAB = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	digestCD = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
)

func mustRepo(t *testing.T, s string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestScopePrecedence(t *testing.T) {
	accept := []any{map[string]any{"type": "insecureAcceptAnything"}}
	reject := []any{map[string]any{"type": "reject"}}
	scopes := map[string]any{
		"registry.local:5000":                               reject,
		"registry.local:5000/apps":                          accept,
		"registry.local:5000/apps/web":                      accept,
		"registry.local:5000/apps/web@" + digestAB.String(): accept,
		"*.example.com":                                     accept,
		"*.b.example.com":                                   accept,
		"docker.io":                                         reject,
		"docker.io/library":                                 accept,
		"127.0.0.1:5000/demo":                               accept,
		"[::1]:5000":                                        accept,
	}
	p, err := Parse("test", []byte(mustJSON(t, map[string]any{
		"default":    []any{map[string]any{"type": "insecureAcceptAnything"}},
		"transports": map[string]any{"docker": scopes},
	})))
	if err != nil {
		t.Fatal(err)
	}
	withDockerDefault, err := Parse("test", []byte(mustJSON(t, map[string]any{
		"default":    reject,
		"transports": map[string]any{"docker": map[string]any{"": accept, "quay.io/team": reject}},
	})))
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		policy *Policy
		repo   string
		digest v1.Hash
		scope  string
	}{
		{"exact image (repo@digest) beats the repository", p, "registry.local:5000/apps/web", digestAB, "registry.local:5000/apps/web@" + digestAB.String()},
		{"repository when the digest differs", p, "registry.local:5000/apps/web", digestCD, "registry.local:5000/apps/web"},
		{"a repository is also the namespace of deeper ones", p, "registry.local:5000/apps/web/frontend", digestAB, "registry.local:5000/apps/web"},
		{"prefix only on a path boundary: apps/webx is under apps, not apps/web", p, "registry.local:5000/apps/webx", digestAB, "registry.local:5000/apps"},
		{"namespace beats registry", p, "registry.local:5000/apps/api", digestAB, "registry.local:5000/apps"},
		{"registry beats default", p, "registry.local:5000/other/x", digestAB, "registry.local:5000"},
		{"another port is another registry", p, "registry.local:5001/apps/web", digestAB, ScopeDefault},
		{"no port is another registry", p, "registry.local/apps/web", digestAB, ScopeDefault},
		{"wildcard: most specific parent domain first", p, "a.b.example.com:443/x", digestAB, "*.b.example.com"},
		{"wildcard: parent domain", p, "c.example.com/x", digestAB, "*.example.com"},
		{"wildcard does not match the apex domain", p, "example.com/x", digestAB, ScopeDefault},
		{"short name expands to docker.io/library", p, "busybox", digestAB, "docker.io/library"},
		{"index.docker.io is docker.io", p, "index.docker.io/library/busybox", digestAB, "docker.io/library"},
		{"docker.io namespace falls back to the docker.io registry scope", p, "someone/app", digestAB, "docker.io"},
		{"IP registry namespace", p, "127.0.0.1:5000/demo/app", digestAB, "127.0.0.1:5000/demo"},
		{"IP hosts have no wildcard parents", p, "127.0.0.1:5001/x", digestAB, ScopeDefault},
		{"IPv6 registry", p, "[::1]:5000/x", digestAB, "[::1]:5000"},
		{"unmatched goes to the global default", p, "quay.io/x", digestAB, ScopeDefault},
		{"transport default beats the global default", withDockerDefault, "quay.io/x", digestAB, ScopeDockerDefault},
		{"a scope beats the transport default", withDockerDefault, "quay.io/team/x", digestAB, "quay.io/team"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := mustRepo(t, tc.repo)
			j := tc.policy.Evaluate(context.Background(), repo, tc.digest, nil)
			if j.Scope != tc.scope {
				t.Fatalf("%s@%s: scope %q, want %q (%+v)", tc.repo, tc.digest, j.Scope, tc.scope, j)
			}
			// Only the most specific scope applies: a rejecting registry
			// scope does not veto an accepting namespace under it.
			wantAllow := mustJSON(t, scopes[tc.scope]) != mustJSON(t, reject)
			if tc.policy == withDockerDefault {
				wantAllow = tc.scope == ScopeDockerDefault
			}
			if j.Allowed != wantAllow {
				t.Fatalf("allowed=%v, want %v: %+v", j.Allowed, wantAllow, j)
			}
		})
	}
}

// TestRequirementListAllMustAccept: containers-policy.json(5) "For an image
// to be accepted, all of the requirements must be satisfied simultaneously."
func TestRequirementListAllMustAccept(t *testing.T) {
	dir := t.TempDir()
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, k2, _ := ed25519.GenerateKey(rand.Reader)
	pub1 := writeFile(t, filepath.Join(dir, "k1.pub"), pemPublicKey(t, k1))
	pub2b, err := cryptoutils.MarshalPublicKeyToPEM(k2.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub2 := writeFile(t, filepath.Join(dir, "k2.pub"), string(pub2b))
	repo := mustRepo(t, "registry.local:5000/apps/web")
	p := simpleSigningPayload(t, repo, digestAB, nil)
	sig1 := Signature{Payload: p, Base64Signature: signPayload(t, k1, p)}
	// Pure Ed25519, as cosign before v2.5 and other tools sign.
	sig2 := Signature{Payload: p, Base64Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(k2, p))}

	both := loadPolicy(t, dir, mustJSON(t, map[string]any{"default": []any{
		map[string]any{"type": "insecureAcceptAnything"},
		map[string]any{"type": "sigstoreSigned", "keyPath": pub1},
		map[string]any{"type": "sigstoreSigned", "keyData": base64.StdEncoding.EncodeToString(pub2b)},
	}}))
	ctx := context.Background()

	j := both.Evaluate(ctx, repo, digestAB, &SignatureSet{Digest: digestAB.String(), Signatures: []Signature{sig1, sig2}})
	wantAllowed(t, j)
	if j.Rule != "insecureAcceptAnything[0]+sigstoreSigned[1]+sigstoreSigned[2]" {
		t.Fatalf("rule %q", j.Rule)
	}
	if !strings.Contains(j.Reason, "sigstoreSigned[1]: signature 1 of 2 verified with key "+pub1) ||
		!strings.Contains(j.Reason, "sigstoreSigned[2]: signature 2 of 2 verified with key keyData") {
		t.Fatalf("reason %q", j.Reason)
	}

	j = both.Evaluate(ctx, repo, digestAB, &SignatureSet{Digest: digestAB.String(), Signatures: []Signature{sig1}})
	wantRejected(t, j, `scope "default" rule sigstoreSigned[2]: no signature verifies with key keyData`)

	j = both.Evaluate(ctx, repo, digestAB, &SignatureSet{Digest: digestAB.String(), Signatures: []Signature{sig2}})
	wantRejected(t, j, "rule sigstoreSigned[1]: no signature verifies with key "+pub1)

	// insecureAcceptAnything does not override a reject in the same list.
	vetoed := loadPolicy(t, dir, `{"default":[{"type":"insecureAcceptAnything"},{"type":"reject"}]}`)
	wantRejected(t, vetoed.Evaluate(ctx, repo, digestAB, nil), "rule reject[1]")

	// keyDatas and keyPaths: any listed key is enough within one requirement.
	anyOf := loadPolicy(t, dir, mustJSON(t, map[string]any{"default": []any{map[string]any{
		"type": "sigstoreSigned", "keyPaths": []string{pub1, pub2}}}}))
	wantAllowed(t, anyOf.Evaluate(ctx, repo, digestAB, &SignatureSet{Digest: digestAB.String(), Signatures: []Signature{sig2}}))
}

func TestAbsentAndDefaultlessPolicies(t *testing.T) {
	ctx := context.Background()
	repo := mustRepo(t, "registry.local:5000/apps/web")
	missing := filepath.Join(t.TempDir(), "policy.json")
	p, err := Load(missing)
	if err != nil {
		t.Fatalf("absent policy file must load as reject-all: %v", err)
	}
	j := p.Evaluate(ctx, repo, digestAB, nil)
	wantRejected(t, j, `scope "default" rule reject[0]: there is no trust policy at `+missing)
	empty := sha256.Sum256(nil)
	if p.Digest() != "sha256:"+hex.EncodeToString(empty[:]) || j.PolicyDigest != p.Digest() {
		t.Fatalf("absent policy digest %q", p.Digest())
	}

	noDefault := loadPolicy(t, t.TempDir(), `{"transports":{"docker":{"registry.local:5000/apps":[{"type":"insecureAcceptAnything"}]}}}`)
	wantAllowed(t, noDefault.Evaluate(ctx, repo, digestAB, nil))
	wantRejected(t, noDefault.Evaluate(ctx, mustRepo(t, "quay.io/x"), digestAB, nil), `the policy has no "default"`)

	// A directory where the file should be is an error, not "absent".
	if _, err := Load(t.TempDir()); err == nil {
		t.Fatal("loading a directory succeeded")
	}
}

func TestPolicyDigest(t *testing.T) {
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyPath := writeFile(t, filepath.Join(dir, "k.pub"), pemPublicKey(t, k))

	plain := `{"default":[{"type":"reject"}]}`
	p := loadPolicy(t, dir, plain)
	sum := sha256.Sum256([]byte(plain))
	if p.Digest() != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("digest %s is not sha256 of the file", p.Digest())
	}

	withKey := mustJSON(t, map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath}}})
	a := loadPolicy(t, dir, withKey)
	b := loadPolicy(t, dir, withKey)
	if a.Digest() != b.Digest() {
		t.Fatal("same policy and key, different digests")
	}
	// Rotating the key file in place changes the digest, so judgements
	// cached under the old key are not reused.
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	writeFile(t, keyPath, pemPublicKey(t, k2))
	if c := loadPolicy(t, dir, withKey); c.Digest() == a.Digest() {
		t.Fatal("digest unchanged after the key file changed")
	}
}

func TestMalformedPolicies(t *testing.T) {
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key := writeFile(t, filepath.Join(dir, "k.pub"), pemPublicKey(t, k))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaPEM, _ := cryptoutils.MarshalPublicKeyToPEM(&rsaKey.PublicKey)
	rsaPub := writeFile(t, filepath.Join(dir, "rsa.pub"), string(rsaPEM))
	weakRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	weakPEM, _ := cryptoutils.MarshalPublicKeyToPEM(&weakRSA.PublicKey)
	weakPub := writeFile(t, filepath.Join(dir, "weak.pub"), string(weakPEM))
	notAKey := writeFile(t, filepath.Join(dir, "notakey.pub"), "hello\n")
	ca := writeFile(t, filepath.Join(dir, "ca.pem"), string(newTestCA(t, "ca").pem))
	missing := filepath.Join(dir, "missing.pub")

	docker := func(scope string, req string) string {
		return `{"default":[{"type":"reject"}],"transports":{"docker":{` + mustJSON(t, scope) + `:[` + req + `]}}}`
	}
	sig := func(fields string) string { return `{"type":"sigstoreSigned",` + fields + `}` }
	kp := `"keyPath":` + mustJSON(t, key)
	fulcio := func(f string) string {
		return sig(`"fulcio":{"caPath":` + mustJSON(t, ca) + f + `},"rekorPublicKeyPath":` + mustJSON(t, key))
	}
	at := `transports.docker["registry.local:5000"][0] (sigstoreSigned): `

	cases := []struct {
		name, policy, want string
	}{
		{"not JSON", `{"default":[`, "invalid JSON"},
		{"trailing garbage", `{"default":[{"type":"reject"}]} x`, "unexpected data after the JSON value"},
		{"unknown top-level field", `{"default":[{"type":"reject"}],"defaults":[]}`, `unknown field "defaults"`},
		{"default not a list", `{"default":{"type":"reject"}}`, "default: must be a list of requirements"},
		{"empty default", `{"default":[]}`, "default: empty requirement list"},
		{"duplicate field", `{"default":[{"type":"reject"}],"default":[{"type":"insecureAcceptAnything"}]}`, `top level: duplicate field "default"`},
		{"duplicate keyPath", docker("registry.local:5000", `{"type":"sigstoreSigned","keyPath":"/a","keyPath":"/b"}`),
			`transports.docker["registry.local:5000"][0]: duplicate field "keyPath"`},
		{"unknown transport", `{"default":[{"type":"reject"}],"transports":{"dockr":{}}}`, `unknown transport "dockr"`},
		{"missing type", docker("registry.local:5000", `{"keyPath":"/a"}`), `transports.docker["registry.local:5000"][0]: missing "type"`},
		{"unknown type", docker("registry.local:5000", `{"type":"cosignSigned"}`), `unknown requirement type "cosignSigned"`},
		{"unknown field on reject", docker("registry.local:5000", `{"type":"reject","why":"x"}`), `transports.docker["registry.local:5000"][0] (reject): unknown field "why"`},
		{"unknown field on sigstoreSigned", docker("registry.local:5000", sig(kp+`,"keyPat":"/x"`)), at + `unknown field "keyPat"`},
		{"unknown field in fulcio", docker("registry.local:5000", fulcio(`,"oidcIssuer":"i","subjectEmail":"e","email":"x"`)), at + `unknown field "email"`},
		{"wrong JSON type", docker("registry.local:5000", sig(`"keyPaths":"/a.pub"`)), at + `field "keyPaths": expected a list, got a JSON string`},
		{"no key", docker("registry.local:5000", sig(`"requiredAnnotations":{"a":"b"}`)), at + "exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki must be present, found 0"},
		{"two key kinds", docker("registry.local:5000", sig(kp+`,"keyPaths":[`+mustJSON(t, key)+`]`)), "found 2 (keyPath, keyPaths)"},
		{"empty keyPaths", docker("registry.local:5000", sig(`"keyPaths":[]`)), at + "keyPaths: empty list"},
		{"relative keyPath", docker("registry.local:5000", sig(`"keyPath":"keys/team.pub"`)), at + `keyPath: "keys/team.pub" is not an absolute path`},
		{"missing key file", docker("registry.local:5000", sig(`"keyPath":`+mustJSON(t, missing))), at + "keyPath: open " + missing + ": no such file or directory"},
		{"not a key", docker("registry.local:5000", sig(`"keyPath":`+mustJSON(t, notAKey))), at + "keyPath " + notAKey + ": not a PEM public key"},
		{"second of keyPaths missing", docker("registry.local:5000", sig(`"keyPaths":[`+mustJSON(t, key)+`,`+mustJSON(t, missing)+`]`)), at + "keyPaths[1]: keyPath: open"},
		{"RSA-1024 key", docker("registry.local:5000", sig(`"keyPath":`+mustJSON(t, weakPub))), at + "keyPath " + weakPub + ": unsupported key"},
		{"keyData not base64", docker("registry.local:5000", sig(`"keyData":"-----BEGIN PUBLIC KEY-----"`)), at + "keyData: not base64"},
		{"pki", docker("registry.local:5000", sig(`"pki":{}`)), at + "pki (certificates from a private CA) is not supported"},
		{"fulcio without rekor", docker("registry.local:5000", sig(`"fulcio":{"caPath":`+mustJSON(t, ca)+`,"oidcIssuer":"i","subjectEmail":"e"}`)), at + "fulcio requires one of rekorPublicKeyPath"},
		{"fulcio without issuer", docker("registry.local:5000", fulcio(`,"subjectEmail":"e"`)), at + "fulcio: oidcIssuer is mandatory"},
		{"fulcio without subject", docker("registry.local:5000", fulcio(`,"oidcIssuer":"i"`)), at + "fulcio: exactly one of subjectEmail, subject and subjectRegExp"},
		{"fulcio two subjects", docker("registry.local:5000", fulcio(`,"oidcIssuer":"i","subjectEmail":"e","subject":"s"`)), at + "fulcio: exactly one of subjectEmail, subject and subjectRegExp"},
		{"fulcio bad regexp", docker("registry.local:5000", fulcio(`,"oidcIssuer":"i","subjectRegExp":"(("`)), at + "fulcio: subjectRegExp: error parsing regexp"},
		{"fulcio caPath and caData", docker("registry.local:5000", sig(`"fulcio":{"caPath":"/a","caData":"eA==","oidcIssuer":"i","subjectEmail":"e"},"rekorPublicKeyPath":`+mustJSON(t, key))), at + "fulcio: exactly one of caPath and caData"},
		{"fulcio CA is a key", docker("registry.local:5000", sig(`"fulcio":{"caPath":`+mustJSON(t, key)+`,"oidcIssuer":"i","subjectEmail":"e"},"rekorPublicKeyPath":`+mustJSON(t, key))), at + "fulcio: caPath " + key + ": no PEM certificates"},
		{"CT log key and insecureIgnoreSCT", docker("registry.local:5000", fulcio(`,"oidcIssuer":"i","subjectEmail":"e","ctLogPublicKeyPath":`+mustJSON(t, key)+`,"insecureIgnoreSCT":true`)),
			at + "fulcio: insecureIgnoreSCT contradicts ctLogPublicKeyPath/ctLogPublicKeyData"},
		{"insecureIgnoreSCT not a boolean", docker("registry.local:5000", fulcio(`,"oidcIssuer":"i","subjectEmail":"e","insecureIgnoreSCT":"yes"`)),
			at + `field "fulcio.insecureIgnoreSCT": expected a boolean, got a JSON string`},
		{"two rekor key fields", docker("registry.local:5000", sig(kp+`,"rekorPublicKeyPath":`+mustJSON(t, key)+`,"rekorPublicKeyPaths":[`+mustJSON(t, key)+`]`)), at + "at most one of rekorPublicKeyPath"},
		{"RSA Rekor key", docker("registry.local:5000", sig(kp+`,"rekorPublicKeyPath":`+mustJSON(t, rsaPub))), at + "rekorPublicKeyPath " + rsaPub + ": a Rekor public key must be ECDSA"},
		{"signedIdentity matchExact", docker("registry.local:5000", sig(kp+`,"signedIdentity":{"type":"matchExact"}`)), at + "signedIdentity: matchExact can never match a cosign signature"},
		{"signedIdentity missing field", docker("registry.local:5000", sig(kp+`,"signedIdentity":{"type":"exactRepository"}`)), at + `signedIdentity: exactRepository requires "dockerRepository"`},
		{"signedIdentity stray field", docker("registry.local:5000", sig(kp+`,"signedIdentity":{"type":"matchRepository","prefix":"x.io"}`)), at + `signedIdentity: field "prefix" is not valid for matchRepository`},
		{"signedIdentity with a tag", docker("registry.local:5000", sig(kp+`,"signedIdentity":{"type":"exactRepository","dockerRepository":"quay.io/a/b:v1"}`)), at + `signedIdentity: dockerRepository: "quay.io/a/b:v1" must be a repository or namespace, without a tag`},
		{"empty annotation key", docker("registry.local:5000", sig(kp+`,"requiredAnnotations":{"":"x"}`)), at + "requiredAnnotations: empty key"},
		{"signedBy in docker", docker("registry.local:5000", `{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k.gpg"}`), `(signedBy): GPG "simple signing" is not supported by berth`},
		{"signedBy with unknown field in another transport", `{"default":[{"type":"reject"}],"transports":{"atomic":{"":[{"type":"signedBy","keyPathz":"/k"}]}}}`, `transports.atomic[""][0] (signedBy): unknown field "keyPathz"`},
		{"tag scope", docker("registry.local:5000/apps/web:v1", `{"type":"reject"}`), `scope "registry.local:5000/apps/web:v1" names a tag`},
		{"short-name scope", docker("busybox/x", `{"type":"reject"}`), `scope "busybox/x" is not in fully expanded form`},
		{"index.docker.io scope", docker("index.docker.io/library", `{"type":"reject"}`), `write Docker Hub as "docker.io"`},
		{"bad wildcard", docker("*.example.com:5000", `{"type":"reject"}`), "wildcard scope"},
		{"inner wildcard", docker("registry.*.com", `{"type":"reject"}`), `only a leading "*." wildcard`},
		{"bad digest scope", docker("registry.local:5000/a@sha256:123", `{"type":"reject"}`), `scope "registry.local:5000/a@sha256:123"`},
		{"uppercase repository", docker("registry.local:5000/Apps", `{"type":"reject"}`), `scope "registry.local:5000/Apps"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "policy.json"), tc.policy)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("loaded:\n%s", tc.policy)
			}
			if !strings.HasPrefix(err.Error(), "trust policy "+path+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n  %v\nwant it to name the file and contain\n  %s", err, tc.want)
			}
		})
	}
}

// TestPodmanPolicyLoads: a typical Podman /etc/containers/policy.json, with
// transports berth does not use, loads; only docker scopes take effect.
func TestPodmanPolicyLoads(t *testing.T) {
	p := loadPolicy(t, t.TempDir(), `{
	  "default": [{"type": "insecureAcceptAnything"}],
	  "transports": {
	    "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
	    "atomic": {"hostname:5000/myns/official": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/path/to/official-pubkey.gpg"}]},
	    "docker": {"docker.io/openshift": [{"type": "reject"}]}
	  }
	}`)
	ctx := context.Background()
	wantRejected(t, p.Evaluate(ctx, mustRepo(t, "openshift/origin"), digestAB, nil), `scope "docker.io/openshift"`)
	wantAllowed(t, p.Evaluate(ctx, mustRepo(t, "hostname:5000/myns/official"), digestAB, nil))
}

// TestExamplePolicy loads testdata/policy.example.json with its trust files
// generated under a temp dir, and checks the scopes it documents.
func TestExamplePolicy(t *testing.T) {
	raw, err := os.ReadFile("testdata/policy.example.json")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"keys/team.pub", "keys/a.pub", "keys/b.pub", "rekor.pub", "ctfe.pub"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		writeFile(t, filepath.Join(root, name), pemPublicKey(t, k))
	}
	writeFile(t, filepath.Join(root, "fulcio.pem"), string(newTestCA(t, "fulcio").pem))
	text := strings.ReplaceAll(string(raw), "/etc/berth/", root+"/")
	if !strings.Contains(string(raw), "/etc/berth/keys/team.pub") {
		t.Fatal("example no longer uses /etc/berth paths; update this test")
	}
	p := loadPolicy(t, t.TempDir(), text)
	ctx := context.Background()
	for repo, scope := range map[string]string{
		"registry.local:5000/tools/jq":  "registry.local:5000",
		"registry.local:5000/apps/api":  "registry.local:5000/apps",
		"registry.local:5000/apps/web":  "registry.local:5000/apps/web",
		"nginx":                         "docker.io/library",
		"ghcr.io/someone/something":     ScopeDefault,
		"ghcr.io/example-org/tool":      "ghcr.io/example-org",
		"mirror.local:5000/vendor/tool": "mirror.local:5000/vendor",
	} {
		j := p.Evaluate(ctx, mustRepo(t, repo), digestAB, nil)
		if j.Scope != scope {
			t.Errorf("%s: scope %q, want %q", repo, j.Scope, scope)
		}
		if j.Allowed != (scope == "registry.local:5000/apps/web") {
			t.Errorf("%s unsigned: allowed=%v (%s)", repo, j.Allowed, j.Reason)
		}
	}
}

// TestSignedIdentity: the repository a signature claims must be the image's
// own (matchRepoDigestOrExact, the default), or the one signedIdentity names.
func TestSignedIdentity(t *testing.T) {
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key := writeFile(t, filepath.Join(dir, "k.pub"), pemPublicKey(t, k))
	ctx := context.Background()
	signedAs := func(claimed string) *SignatureSet {
		p := simpleSigningPayload(t, mustRepo(t, claimed), digestAB, nil)
		return &SignatureSet{Digest: digestAB.String(), Signatures: []Signature{{Payload: p, Base64Signature: signPayload(t, k, p)}}}
	}
	rule := func(identity any) *Policy {
		r := map[string]any{"type": "sigstoreSigned", "keyPath": key}
		if identity != nil {
			r["signedIdentity"] = identity
		}
		return loadPolicy(t, t.TempDir(), mustJSON(t, map[string]any{"default": []any{r}}))
	}
	remap := map[string]string{"type": "remapIdentity", "prefix": "mirror.local:5000/vendor", "signedPrefix": "registry.local:5000/vendor"}

	cases := []struct {
		name, image, claimed string
		identity             any
		want                 string // "" = allowed
	}{
		{"own repository", "registry.local:5000/vendor/tool", "registry.local:5000/vendor/tool", nil, ""},
		{"Docker Hub as cosign writes it (index.docker.io)", "busybox", "index.docker.io/library/busybox", nil, ""},
		{"another repository", "registry.local:5000/vendor/tool", "registry.local:5000/vendor/other", nil,
			"signature is for repository registry.local:5000/vendor/other, not registry.local:5000/vendor/tool (signedIdentity matchRepoDigestOrExact)"},
		{"matchRepository is the same for digests", "registry.local:5000/vendor/tool", "registry.local:5000/vendor/other",
			map[string]string{"type": "matchRepository"}, "signedIdentity matchRepository"},
		{"exactRepository", "mirror.local:5000/tool", "registry.local:5000/vendor/tool",
			map[string]string{"type": "exactRepository", "dockerRepository": "registry.local:5000/vendor/tool"}, ""},
		{"remapIdentity maps the mirror name back", "mirror.local:5000/vendor/tool", "registry.local:5000/vendor/tool", remap, ""},
		{"remapIdentity still requires the mapped name", "mirror.local:5000/vendor/tool", "mirror.local:5000/vendor/tool", remap,
			"signature is for repository mirror.local:5000/vendor/tool, not registry.local:5000/vendor/tool"},
		{"remapIdentity prefix on a path boundary", "mirror.local:5000/vendorx/tool", "mirror.local:5000/vendorx/tool", remap, ""},
		// Registry hosts are case-insensitive wherever a repository is compared.
		{"claimed host in another case", "registry.local:5000/vendor/tool", "Registry.Local:5000/vendor/tool", nil, ""},
		{"exactRepository host in another case", "mirror.local:5000/tool", "registry.local:5000/vendor/tool",
			map[string]string{"type": "exactRepository", "dockerRepository": "REGISTRY.local:5000/vendor/tool"}, ""},
		{"remapIdentity prefixes in another case", "mirror.local:5000/vendor/tool", "registry.local:5000/vendor/tool",
			map[string]string{"type": "remapIdentity", "prefix": "Mirror.Local:5000/vendor", "signedPrefix": "Registry.Local:5000/vendor"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j := rule(tc.identity).Evaluate(ctx, mustRepo(t, tc.image), digestAB, signedAs(tc.claimed))
			if tc.want == "" {
				wantAllowed(t, j)
				return
			}
			wantRejected(t, j, tc.want)
		})
	}
}

func TestEvaluateLayout(t *testing.T) {
	digest := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	p, err := Parse("test", []byte(`{
	  "default": [{"type": "reject"}],
	  "transports": {"oci": {
	    "/var/tmp/images": [{"type": "insecureAcceptAnything"}],
	    "/var/tmp/images/locked": [{"type": "reject"}],
	    "/srv/signed": [{"type": "sigstoreSigned", "keyData": "`+base64.StdEncoding.EncodeToString(testPublicKeyPEM(t))+`"}]
	  }}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dir, scope string
		allowed    bool
		reason     string
	}{
		{"/var/tmp/images", "oci:/var/tmp/images", true, ""},
		{"/var/tmp/images/sub/", "oci:/var/tmp/images", true, ""},           // parent directory scope
		{"/var/tmp/images/locked", "oci:/var/tmp/images/locked", false, ""}, // most specific wins
		{"/var/tmp/imagesX", ScopeDefault, false, ""},                       // path components, not string prefix
		{"/srv/signed", "oci:/srv/signed", false, "no signatures found"},
	} {
		j := p.EvaluateLayout(context.Background(), c.dir, digest)
		if j.Allowed != c.allowed || j.Scope != c.scope || !strings.Contains(j.Reason, c.reason) {
			t.Errorf("EvaluateLayout(%s) = allowed %v scope %q reason %q; want %v %q %q", c.dir, j.Allowed, j.Scope, j.Reason, c.allowed, c.scope, c.reason)
		}
	}
	withDefault, err := Parse("test", []byte(`{"default": [{"type": "reject"}], "transports": {"oci": {"": [{"type": "insecureAcceptAnything"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if j := withDefault.EvaluateLayout(context.Background(), "/anywhere", digest); !j.Allowed || j.Scope != "oci:default" {
		t.Errorf("oci \"\" scope: %+v", j)
	}
	if _, err := Parse("test", []byte(`{"default": [{"type": "reject"}], "transports": {"oci": {"relative/dir": [{"type": "reject"}]}}}`)); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative oci scope: err = %v", err)
	}
	absent, _ := Load(filepath.Join(t.TempDir(), "none.json"))
	if j := absent.EvaluateLayout(context.Background(), "/var/tmp/images", digest); j.Allowed {
		t.Errorf("absent policy allowed a layout image")
	}
}

func testPublicKeyPEM(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cryptoutils.MarshalPublicKeyToPEM(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeysAreCaseSensitive: encoding/json matches object keys to fields
// case-insensitively, so without a check {"type":"reject","Type":"insecureAcceptAnything"}
// reads as accept and {"KeyPath": …} as keyPath. Every object the parser
// decodes refuses a key that is not in its exact canonical case, and
// duplicate keys, naming the JSON path.
func TestKeysAreCaseSensitive(t *testing.T) {
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key := mustJSON(t, writeFile(t, filepath.Join(dir, "k.pub"), pemPublicKey(t, k)))
	ca := mustJSON(t, writeFile(t, filepath.Join(dir, "ca.pem"), string(newTestCA(t, "ca").pem)))
	docker := func(req string) string {
		return `{"default":[{"type":"reject"}],"transports":{"docker":{"registry.local:5000":[` + req + `]}}}`
	}
	sig := func(fields string) string { return `{"type":"sigstoreSigned",` + fields + `}` }
	kp := `"keyPath":` + key
	fulcio := func(fields string) string {
		return sig(`"fulcio":{` + fields + `},"rekorPublicKeyPath":` + key)
	}
	okFulcio := `"caPath":` + ca + `,"oidcIssuer":"https://i.example","subjectEmail":"me@example.com","ctLogPublicKeyPath":` + key
	at := `transports.docker["registry.local:5000"][0] (sigstoreSigned): `
	caseErr := func(got, want string) string {
		return `key "` + got + `": keys are case-sensitive; did you mean "` + want + `"?`
	}

	cases := []struct {
		name, policy string
		want         string // the whole error after "trust policy <file>: "; "" = loads
	}{
		{"Type beside type would read as accept", `{"default":[{"type":"reject","Type":"insecureAcceptAnything"}]}`,
			`default[0]: ` + caseErr("Type", "type")},
		{"Type alone", `{"default":[{"Type":"reject"}]}`, `default[0]: ` + caseErr("Type", "type")},
		{"TYPE in a scope", docker(`{"TYPE":"insecureAcceptAnything"}`), `transports.docker["registry.local:5000"][0]: ` + caseErr("TYPE", "type")},
		{"top level Default", `{"Default":[{"type":"insecureAcceptAnything"}]}`, caseErr("Default", "default")},
		{"top level Transports", `{"default":[{"type":"reject"}],"Transports":{"docker":{}}}`, caseErr("Transports", "transports")},
		{"transport name", `{"default":[{"type":"reject"}],"transports":{"Docker":{}}}`,
			`transports: unknown transport "Docker": transport names are case-sensitive; did you mean "docker"?`},
		{"KeyPath", docker(sig(`"KeyPath":` + key)), at + caseErr("KeyPath", "keyPath")},
		{"keyPATHs", docker(sig(`"keyPATHs":[` + key + `]`)), at + caseErr("keyPATHs", "keyPaths")},
		{"KeyData", docker(sig(`"KeyData":"eA=="`)), at + caseErr("KeyData", "keyData")},
		{"KeyDatas", docker(sig(`"KeyDatas":["eA=="]`)), at + caseErr("KeyDatas", "keyDatas")},
		{"Fulcio block", docker(sig(`"Fulcio":{` + okFulcio + `},"rekorPublicKeyPath":` + key)), at + caseErr("Fulcio", "fulcio")},
		{"fulcio CAPath", docker(fulcio(`"CAPath":` + ca + `,"oidcIssuer":"i","subjectEmail":"e"`)), at + "fulcio: " + caseErr("CAPath", "caPath")},
		{"fulcio OIDCIssuer", docker(fulcio(`"caPath":` + ca + `,"OIDCIssuer":"i","subjectEmail":"e"`)), at + "fulcio: " + caseErr("OIDCIssuer", "oidcIssuer")},
		{"fulcio SubjectEmail", docker(fulcio(`"caPath":` + ca + `,"oidcIssuer":"i","SubjectEmail":"e"`)), at + "fulcio: " + caseErr("SubjectEmail", "subjectEmail")},
		{"fulcio CTLogPublicKeyPath", docker(fulcio(`"caPath":` + ca + `,"oidcIssuer":"i","subjectEmail":"e","CTLogPublicKeyPath":` + key)),
			at + "fulcio: " + caseErr("CTLogPublicKeyPath", "ctLogPublicKeyPath")},
		{"fulcio InsecureIgnoreSCT", docker(fulcio(`"caPath":` + ca + `,"oidcIssuer":"i","subjectEmail":"e","InsecureIgnoreSCT":true`)),
			at + "fulcio: " + caseErr("InsecureIgnoreSCT", "insecureIgnoreSCT")},
		{"RekorPublicKeyPath", docker(sig(kp + `,"RekorPublicKeyPath":` + key)), at + caseErr("RekorPublicKeyPath", "rekorPublicKeyPath")},
		{"RequiredAnnotations", docker(sig(kp + `,"RequiredAnnotations":{"env":"prod"}`)), at + caseErr("RequiredAnnotations", "requiredAnnotations")},
		{"signedIdentity Type", docker(sig(kp + `,"signedIdentity":{"Type":"matchRepository"}`)), at + "signedIdentity: " + caseErr("Type", "type")},
		{"signedIdentity DockerRepository", docker(sig(kp + `,"signedIdentity":{"type":"exactRepository","DockerRepository":"quay.io/a/b"}`)),
			at + "signedIdentity: " + caseErr("DockerRepository", "dockerRepository")},
		{"signedBy in another transport", `{"default":[{"type":"reject"}],"transports":{"atomic":{"":[{"type":"signedBy","keyType":"GPGKeys","KeyPath":"/k.gpg"}]}}}`,
			`transports.atomic[""][0] (signedBy): ` + caseErr("KeyPath", "keyPath")},
		{"reject with a stray Type", `{"default":[{"type":"reject"},{"type":"insecureAcceptAnything","TYPE":"x"}]}`, `default[1]: ` + caseErr("TYPE", "type")},
		// encoding/json folds Unicode too: the Kelvin sign K is k, the long s ſ is s.
		{"Kelvin sign", docker(sig("\"\u212AeyPath\":" + key)), at + caseErr("\u212AeyPath", "keyPath")},
		{"long s", docker(fulcio(`"caPath":` + ca + `,"oidcIssuer":"i","` + "\u017F" + `ubjectEmail":"e"`)), at + "fulcio: " + caseErr("\u017FubjectEmail", "subjectEmail")},

		{"duplicate type", `{"default":[{"type":"insecureAcceptAnything","type":"reject"}]}`, `default[0]: duplicate field "type"`},
		{"duplicate scope", `{"default":[{"type":"reject"}],"transports":{"docker":{"quay.io":[{"type":"reject"}],"quay.io":[{"type":"insecureAcceptAnything"}]}}}`,
			`transports.docker: duplicate field "quay.io"`},
		{"duplicate in fulcio", docker(fulcio(okFulcio + `,"subjectEmail":"evil@example.com"`)),
			`transports.docker["registry.local:5000"][0].fulcio: duplicate field "subjectEmail"`},
		{"duplicate in signedIdentity", docker(sig(kp + `,"signedIdentity":{"type":"exactRepository","dockerRepository":"quay.io/a/b","dockerRepository":"quay.io/c/d"}`)),
			`transports.docker["registry.local:5000"][0].signedIdentity: duplicate field "dockerRepository"`},
		{"duplicate annotation", docker(sig(kp + `,"requiredAnnotations":{"env":"prod","env":"dev"}`)),
			`transports.docker["registry.local:5000"][0].requiredAnnotations: duplicate field "env"`},

		// Boundaries: what is data, not a field name, keeps its case.
		{"annotation keys are data: env and Env are two keys", docker(sig(kp + `,"requiredAnnotations":{"env":"prod","Env":"dev"}`)), ""},
		{"canonical keys load", docker(fulcio(okFulcio)), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "policy.json"), tc.policy)
			_, err := Load(path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v\n%s", err, tc.policy)
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded:\n%s", tc.policy)
			}
			if want := "trust policy " + path + ": " + tc.want; err.Error() != want {
				t.Fatalf("error\n  %v\nwant\n  %s", err, want)
			}
		})
	}
}

// TestRegistryHostCase: registry host names are case-insensitive, repository
// paths are not. A scope written
// with an upper-case host matches the lower-case image and the other way
// round; the path is compared exactly.
func TestRegistryHostCase(t *testing.T) {
	accept := []any{map[string]any{"type": "insecureAcceptAnything"}}
	p, err := Parse("test", []byte(mustJSON(t, map[string]any{
		"default": []any{map[string]any{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			"Registry.Example:5000/team":              accept,
			"registry.lower:5000/team":                accept,
			"*.Wild.Example":                          accept,
			"Docker.IO/library":                       accept,
			"Pinned.Example/app@" + digestAB.String(): accept,
			"[::ABCD]:5000":                           accept,
		}},
	})))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, repo string
		digest     v1.Hash
		scope      string // as written in the policy; ScopeDefault = no scope matched
	}{
		{"upper-case scope host, lower-case image", "registry.example:5000/team/app", digestAB, "Registry.Example:5000/team"},
		{"upper-case scope host, mixed-case image", "REGISTRY.example:5000/team/app", digestAB, "Registry.Example:5000/team"},
		{"lower-case scope host, upper-case image", "Registry.Lower:5000/team/app", digestAB, "registry.lower:5000/team"},
		{"the path is not folded: team is not teams", "registry.example:5000/teams/app", digestAB, ScopeDefault},
		{"the port is part of the registry", "registry.example:5001/team/app", digestAB, ScopeDefault},
		{"wildcard domain in another case", "a.WILD.example/x", digestAB, "*.Wild.Example"},
		{"Docker Hub spelled in capitals", "busybox", digestAB, "Docker.IO/library"},
		{"Docker Hub image with a capitalised host", "Index.Docker.IO/library/busybox", digestAB, "Docker.IO/library"},
		{"digest scope with an upper-case host", "pinned.example/app", digestAB, "Pinned.Example/app@" + digestAB.String()},
		{"digest scope needs the digest", "pinned.example/app", digestCD, ScopeDefault},
		{"IPv6 hex digits", "[::abcd]:5000/x", digestAB, "[::ABCD]:5000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j := p.Evaluate(context.Background(), mustRepo(t, tc.repo), tc.digest, nil)
			if j.Scope != tc.scope || j.Allowed != (tc.scope != ScopeDefault) {
				t.Fatalf("%s@%s: scope %q allowed=%v, want %q (%s)", tc.repo, tc.digest, j.Scope, j.Allowed, tc.scope, j.Reason)
			}
		})
	}

	// Two scopes that differ only in the host's case are one scope twice.
	dup := `{"default":[{"type":"reject"}],"transports":{"docker":{"Registry.Example/team":[{"type":"reject"}],"registry.example/team":[{"type":"insecureAcceptAnything"}]}}}`
	if _, err := Parse("test", []byte(dup)); err == nil || !strings.Contains(err.Error(),
		`transports.docker["registry.example/team"]: the same scope as "Registry.Example/team" (registry host names are case-insensitive)`) {
		t.Fatalf("scopes differing in host case: err = %v", err)
	}
	for scope, want := range map[string]string{
		"Index.Docker.IO/library": `write Docker Hub as "docker.io"`,
		"registry.example/Team":   `scope "registry.example/Team"`, // paths are lower-case in registries
	} {
		doc := `{"default":[{"type":"reject"}],"transports":{"docker":{` + mustJSON(t, scope) + `:[{"type":"reject"}]}}}`
		if _, err := Parse("test", []byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("scope %q: err = %v, want %q", scope, err, want)
		}
	}
}

// TestEvaluateArchive: a loaded archive is judged by transports
// ["oci-archive"][""] alone (then the default); a path scope of oci-archive,
// which a client could name to borrow, never applies.
func TestEvaluateArchive(t *testing.T) {
	digest := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	for _, c := range []struct {
		name, policy string
		allowed      bool
		scope        string
	}{
		{"default rejects", `{"default": [{"type": "reject"}]}`, false, ScopeDefault},
		{"default accepts", `{"default": [{"type": "insecureAcceptAnything"}]}`, true, ScopeDefault},
		{"archive default accepts", `{"default": [{"type": "reject"}], "transports": {"oci-archive": {"": [{"type": "insecureAcceptAnything"}]}}}`, true, ScopeArchiveDefault},
		{"archive default rejects", `{"default": [{"type": "insecureAcceptAnything"}], "transports": {"oci-archive": {"": [{"type": "reject"}]}}}`, false, ScopeArchiveDefault},
		{"path scope never applies", `{"default": [{"type": "reject"}], "transports": {"oci-archive": {"/srv/trusted.tar": [{"type": "insecureAcceptAnything"}]}}}`, false, ScopeDefault},
		{"oci layout scope never applies", `{"default": [{"type": "reject"}], "transports": {"oci": {"": [{"type": "insecureAcceptAnything"}]}}}`, false, ScopeDefault},
		{"signed archive default has nothing to check", `{"default": [{"type": "insecureAcceptAnything"}], "transports": {"oci-archive": {"": [{"type": "sigstoreSigned", "keyData": "` + base64.StdEncoding.EncodeToString(testPublicKeyPEM(t)) + `"}]}}}`, false, ScopeArchiveDefault},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse("test", []byte(c.policy))
			if err != nil {
				t.Fatal(err)
			}
			j := p.EvaluateArchive(context.Background(), digest)
			if j.Allowed != c.allowed || j.Scope != c.scope {
				t.Errorf("EvaluateArchive = allowed %v scope %q reason %q; want %v %q", j.Allowed, j.Scope, j.Reason, c.allowed, c.scope)
			}
		})
	}
	// signedBy (GPG) is refused where berth judges, so also in the
	// archive default, and still accepted (validated only) in path scopes.
	if _, err := Parse("test", []byte(`{"default": [{"type": "reject"}], "transports": {"oci-archive": {"": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "eA=="}]}}}`)); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("signedBy in the archive default: err = %v", err)
	}
	if _, err := Parse("test", []byte(`{"default": [{"type": "reject"}], "transports": {"oci-archive": {"/srv/a.tar": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "eA=="}]}}}`)); err != nil {
		t.Errorf("signedBy in an oci-archive path scope: %v", err)
	}
}
