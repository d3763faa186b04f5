package verify

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
)

// These tests sign with the real cosign CLI (v2.6.5) against a real registry
// (Debian's docker-registry) and verify with the policy, as berthd will.

func TestCosignSignedImages(t *testing.T) {
	cos := requireCosign(t)
	reg := startRegistry(t)
	dir := t.TempDir()
	trustedKey, trustedPub := cos.keyPair(t, dir, "trusted")
	otherKey, _ := cos.keyPair(t, dir, "other")
	thirdKey, _ := cos.keyPair(t, dir, "third")
	ctx := context.Background()

	ns := reg.host + "/demo"
	policy := loadPolicy(t, dir, mustJSON(t, map[string]any{
		"default": []any{map[string]any{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			ns: []any{map[string]any{"type": "sigstoreSigned", "keyPath": trustedPub}},
			ns + "/prod": []any{map[string]any{"type": "sigstoreSigned", "keyPath": trustedPub,
				"requiredAnnotations": map[string]string{"env": "prod"}}},
		}},
	}))

	t.Run("signed by the trusted key is allowed", func(t *testing.T) {
		repo, d := reg.push(t, "demo/app:v1")
		cos.sign(t, trustedKey, repo, d)
		set := fetch(t, repo, d)
		if len(set.Signatures) != 1 || set.Digest != d.String() {
			t.Fatalf("fetched %d signatures for %s, want 1 for %s", len(set.Signatures), set.Digest, d)
		}
		j := policy.Evaluate(ctx, repo, d, set)
		wantAllowed(t, j)
		if j.Scope != ns || j.Rule != "sigstoreSigned[0]" || j.Image != reg.host+"/demo/app" || j.Digest != d.String() ||
			j.PolicyDigest != policy.Digest() || j.Time.IsZero() {
			t.Fatalf("judgement fields: %+v", j)
		}
		if !strings.Contains(j.Reason, "signature 1 of 1 verified with key "+trustedPub) {
			t.Fatalf("reason %q does not say which key verified", j.Reason)
		}
	})

	t.Run("fetching uses the caller's transport", func(t *testing.T) {
		repo, d := reg.push(t, "demo/transport:v1")
		cos.sign(t, trustedKey, repo, d)
		ct := &countingTransport{next: http.DefaultTransport}
		set, err := FetchSignatures(ctx, repo, d, remote.WithTransport(ct))
		if err != nil {
			t.Fatal(err)
		}
		if ct.n.Load() == 0 || len(set.Signatures) != 1 {
			t.Fatalf("%d requests through the caller's transport, %d signatures", ct.n.Load(), len(set.Signatures))
		}
		_, err = FetchSignatures(ctx, repo, d, remote.WithTransport(failingTransport{}))
		if err == nil || !strings.Contains(err.Error(), "refused by test transport") || !strings.Contains(err.Error(), "fetch signatures "+repo.String()+":sha256-"+d.Hex+".sig") {
			t.Fatalf("error %v does not come from the caller's transport or name the signature tag", err)
		}
	})

	t.Run("an oversized signature layer is refused before it is read", func(t *testing.T) {
		repo, d := reg.push(t, "demo/huge:v1")
		layer, err := random.Layer(2<<20, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(empty.Image, layer)
		if err != nil {
			t.Fatal(err)
		}
		tag, err := ociremote.SignatureTag(repo.Digest(d.String()))
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(tag, img); err != nil {
			t.Fatal(err)
		}
		_, err = FetchSignatures(ctx, repo, d)
		if err == nil || !strings.Contains(err.Error(), "signature 1: payload of ") || !strings.Contains(err.Error(), "bytes, more than berth reads (1048576)") {
			t.Fatalf("error %v", err)
		}
	})

	t.Run("unsigned is rejected", func(t *testing.T) {
		repo, d := reg.push(t, "demo/unsigned:v1")
		set := fetch(t, repo, d)
		if len(set.Signatures) != 0 {
			t.Fatalf("unsigned image has %d signatures", len(set.Signatures))
		}
		j := policy.Evaluate(ctx, repo, d, set)
		wantRejected(t, j, "no signatures found", repo.String()+"@"+d.String(), fmt.Sprintf("scope %q rule sigstoreSigned[0]", ns))
		if !errors.Is(j.Error(), ErrRejected) {
			t.Fatalf("error %v is not ErrRejected", j.Error())
		}
		var re *RejectedError
		if !errors.As(j.Error(), &re) || re.Judgement.Digest != d.String() {
			t.Fatalf("error does not carry the judgement: %#v", j.Error())
		}
	})

	t.Run("signed by another key is rejected", func(t *testing.T) {
		repo, d := reg.push(t, "demo/other:v1")
		cos.sign(t, otherKey, repo, d)
		j := policy.Evaluate(ctx, repo, d, fetch(t, repo, d))
		// The example rejection in POLICY.md ("What berth records") and in
		// RejectedError.Error's doc, verbatim apart from the digest.
		want := fmt.Sprintf("image %s@%s rejected by policy scope %q rule sigstoreSigned[0]: no signature verifies with key %s: invalid signature when validating ASN.1 encoded signature",
			repo, d, ns, trustedPub)
		wantRejected(t, j)
		if got := j.Error().Error(); got != want {
			t.Fatalf("message\n got: %s\nwant: %s", got, want)
		}
	})

	t.Run("signature copied from another image is rejected", func(t *testing.T) {
		repoA, dA := reg.push(t, "demo/copy:a")
		repoB, dB := reg.push(t, "demo/copy:b")
		cos.sign(t, trustedKey, repoA, dA)
		copySignatures(t, repoA, dA, repoB, dB)
		set := fetch(t, repoB, dB)
		if len(set.Signatures) != 1 {
			t.Fatalf("copied signature not found at B: %d", len(set.Signatures))
		}
		// The signature itself is valid (it verifies with the trusted key);
		// only the digest it claims betrays it.
		wantRejected(t, policy.Evaluate(ctx, repoB, dB, set), "invalid or missing digest in claim: "+dA.String())
		wantAllowed(t, policy.Evaluate(ctx, repoA, dA, fetch(t, repoA, dA)))
	})

	t.Run("signature for the same digest in another repository is rejected unless remapped", func(t *testing.T) {
		// One image, pushed to two repositories; only upstream is signed, and
		// its signature is copied next to the mirror copy.
		upstream, d := reg.push(t, "demo/upstream:v1")
		img, err := remote.Image(upstream.Digest(d.String()))
		if err != nil {
			t.Fatal(err)
		}
		mirror, err := name.NewRepository(reg.host + "/demo/mirror")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(mirror.Tag("v1"), img); err != nil {
			t.Fatal(err)
		}
		cos.sign(t, trustedKey, upstream, d)
		copySignatures(t, upstream, d, mirror, d)
		set := fetch(t, mirror, d)
		wantRejected(t, policy.Evaluate(ctx, mirror, d, set),
			fmt.Sprintf("signature is for repository %s, not %s (signedIdentity matchRepoDigestOrExact)", identityOf(upstream), identityOf(mirror)))

		remapped := loadPolicy(t, t.TempDir(), mustJSON(t, map[string]any{
			"default": []any{map[string]any{"type": "reject"}},
			"transports": map[string]any{"docker": map[string]any{
				identityOf(mirror): []any{map[string]any{"type": "sigstoreSigned", "keyPath": trustedPub,
					"signedIdentity": map[string]string{"type": "exactRepository", "dockerRepository": identityOf(upstream)}}},
			}},
		}))
		wantAllowed(t, remapped.Evaluate(ctx, mirror, d, set))
	})

	t.Run("tag moved to an unsigned digest", func(t *testing.T) {
		repo, old := reg.push(t, "demo/moving:v1")
		cos.sign(t, trustedKey, repo, old)
		oldSet := fetch(t, repo, old)
		wantAllowed(t, policy.Evaluate(ctx, repo, old, oldSet))

		_, moved := reg.push(t, "demo/moving:v1") // same tag, new unsigned image
		desc, err := remote.Get(repo.Tag("v1"))
		if err != nil {
			t.Fatal(err)
		}
		if desc.Digest != moved || moved == old {
			t.Fatalf("tag resolves to %s, want the new digest %s (old %s)", desc.Digest, moved, old)
		}
		wantRejected(t, policy.Evaluate(ctx, repo, moved, fetch(t, repo, moved)), "no signatures found")
		// The running digest is judged by its own signatures, stored or fetched again.
		wantAllowed(t, policy.Evaluate(ctx, repo, old, oldSet))
		wantAllowed(t, policy.Evaluate(ctx, repo, old, fetch(t, repo, old)))
		// And the old set cannot vouch for the new digest.
		wantRejected(t, policy.Evaluate(ctx, repo, moved, oldSet), "fetched for "+old.String())
	})

	t.Run("required annotations", func(t *testing.T) {
		repo, good := reg.push(t, "demo/prod/api:good")
		cos.sign(t, trustedKey, repo, good, "env=prod", "team=core")
		j := policy.Evaluate(ctx, repo, good, fetch(t, repo, good))
		wantAllowed(t, j)
		if j.Scope != ns+"/prod" {
			t.Fatalf("scope %q, want %q", j.Scope, ns+"/prod")
		}

		_, dev := reg.push(t, "demo/prod/api:dev")
		cos.sign(t, trustedKey, repo, dev, "env=dev")
		wantRejected(t, policy.Evaluate(ctx, repo, dev, fetch(t, repo, dev)),
			"missing or incorrect annotation: required env=prod, signature has env=dev")

		_, none := reg.push(t, "demo/prod/api:none")
		cos.sign(t, trustedKey, repo, none)
		wantRejected(t, policy.Evaluate(ctx, repo, none, fetch(t, repo, none)),
			"missing or incorrect annotation: required env=prod is absent")
	})

	t.Run("policy changed to reject takes effect on the stored signatures", func(t *testing.T) {
		repo, d := reg.push(t, "demo/restart:v1")
		cos.sign(t, trustedKey, repo, d)
		stored := roundTrip(t, fetch(t, repo, d))
		before := policy.Evaluate(ctx, repo, d, stored)
		wantAllowed(t, before)

		changed := loadPolicy(t, t.TempDir(), mustJSON(t, map[string]any{
			"default": []any{map[string]any{"type": "reject"}},
			"transports": map[string]any{"docker": map[string]any{
				ns:                 []any{map[string]any{"type": "sigstoreSigned", "keyPath": trustedPub}},
				ns + "/restart":    []any{map[string]any{"type": "reject"}},
				ns + "/restartnot": []any{map[string]any{"type": "insecureAcceptAnything"}},
			}},
		}))
		after := changed.Evaluate(ctx, repo, d, stored)
		wantRejected(t, after, fmt.Sprintf("scope %q rule reject[0]: the policy rejects every image in this scope", ns+"/restart"))
		if after.PolicyDigest == before.PolicyDigest {
			t.Fatalf("policy digest unchanged across policies: %s", after.PolicyDigest)
		}
	})

	t.Run("several signatures: any one verifying is enough", func(t *testing.T) {
		repo, d := reg.push(t, "demo/multi:v1")
		cos.sign(t, otherKey, repo, d)
		cos.sign(t, trustedKey, repo, d)
		set := fetch(t, repo, d)
		if len(set.Signatures) != 2 {
			t.Fatalf("want 2 signatures, got %d", len(set.Signatures))
		}
		wantAllowed(t, policy.Evaluate(ctx, repo, d, set))

		// Two signatures, neither by the trusted key: the error lists each.
		_, d2 := reg.push(t, "demo/multi:v2")
		cos.sign(t, otherKey, repo, d2)
		cos.sign(t, thirdKey, repo, d2)
		j := policy.Evaluate(ctx, repo, d2, fetch(t, repo, d2))
		wantRejected(t, j, "signature 1 of 2: invalid signature", "signature 2 of 2: invalid signature")
	})
}

// TestCosignKeyTypes signs with ECDSA (P-256, P-384), Ed25519 and RSA keys imported into the
// real cosign CLI (`cosign import-key-pair` takes PKCS#8 PEM) and verifies
// with the PEM public keys, one rule with keyPaths accepting any of them.
func TestCosignKeyTypes(t *testing.T) {
	cos := requireCosign(t)
	reg := startRegistry(t)
	dir := t.TempDir()
	ctx := context.Background()

	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384Key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	keys := map[string]any{"ecdsa": ecKey, "ecdsa-p384": ec384Key, "ed25519": edKey, "rsa": rsaKey}
	kinds := []string{"ecdsa", "ecdsa-p384", "ed25519", "rsa"}

	pubs := map[string]string{}
	for _, kind := range kinds {
		der, err := x509.MarshalPKCS8PrivateKey(keys[kind])
		if err != nil {
			t.Fatal(err)
		}
		pemPath := writeFile(t, filepath.Join(dir, kind+".pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
		cos.run(t, dir, "import-key-pair", "--key", pemPath, "--output-key-prefix", kind)
		pubs[kind] = filepath.Join(dir, kind+".pub")
	}

	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			repo, d := reg.push(t, "keys/"+kind+":v1")
			cos.sign(t, filepath.Join(dir, kind+".key"), repo, d)
			set := fetch(t, repo, d)

			if kind == "ed25519" {
				// cosign v2.6.5 signs with Ed25519ph (pkg/cosign/keys.go
				// GetDefaultLoadOptions), which a pure Ed25519 verifier — what
				// signature.LoadVerifier returns — rejects; hence verifierFor.
				sig, err := base64.StdEncoding.DecodeString(set.Signatures[0].Base64Signature)
				if err != nil {
					t.Fatal(err)
				}
				if ed25519.Verify(edKey.Public().(ed25519.PublicKey), set.Signatures[0].Payload, sig) {
					t.Fatal("cosign made a pure Ed25519 signature; expected Ed25519ph")
				}
				h := sha512.Sum512(set.Signatures[0].Payload)
				if err := ed25519.VerifyWithOptions(edKey.Public().(ed25519.PublicKey), h[:], sig, &ed25519.Options{Hash: crypto.SHA512}); err != nil {
					t.Fatalf("cosign's Ed25519 signature is not Ed25519ph either: %v", err)
				}
			}

			// Its own key alone accepts.
			own := loadPolicy(t, t.TempDir(), mustJSON(t, map[string]any{"default": []any{
				map[string]any{"type": "sigstoreSigned", "keyPath": pubs[kind]}}}))
			j := own.Evaluate(ctx, repo, d, set)
			wantAllowed(t, j)
			if j.Scope != ScopeDefault {
				t.Fatalf("scope %q, want default", j.Scope)
			}

			// keyPaths: any key of the list accepts.
			var all []string
			for _, k := range kinds {
				all = append(all, pubs[k])
			}
			anyOf := loadPolicy(t, t.TempDir(), mustJSON(t, map[string]any{"default": []any{
				map[string]any{"type": "sigstoreSigned", "keyPaths": all}}}))
			j = anyOf.Evaluate(ctx, repo, d, set)
			wantAllowed(t, j)
			if !strings.Contains(j.Reason, pubs[kind]) {
				t.Fatalf("reason %q does not name %s", j.Reason, pubs[kind])
			}

			// The other keys reject, and the error names each.
			var others []string
			for _, k := range kinds {
				if k != kind {
					others = append(others, pubs[k])
				}
			}
			notMine := loadPolicy(t, t.TempDir(), mustJSON(t, map[string]any{"default": []any{
				map[string]any{"type": "sigstoreSigned", "keyPaths": others}}}))
			wantRejected(t, notMine.Evaluate(ctx, repo, d, set), append([]string{"no signature verifies with any of 3 keys"}, others...)...)
		})
	}
}

// TestOfflineReverification: signatures fetched once and stored as JSON
// verify again with the registry gone, as before a container restart.
func TestOfflineReverification(t *testing.T) {
	cos := requireCosign(t)
	reg := startRegistry(t)
	dir := t.TempDir()
	key, pub := cos.keyPair(t, dir, "team")
	ctx := context.Background()

	repo, d := reg.push(t, "offline/app:v1")
	cos.sign(t, key, repo, d)
	policy := loadPolicy(t, dir, mustJSON(t, map[string]any{
		"default": []any{map[string]any{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			reg.host: []any{map[string]any{"type": "sigstoreSigned", "keyPath": pub}},
		}},
	}))
	stored, err := json.Marshal(fetch(t, repo, d))
	if err != nil {
		t.Fatal(err)
	}
	reg.stop()

	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := FetchSignatures(fctx, repo, d); err == nil {
		t.Fatal("FetchSignatures succeeded with the registry stopped")
	}
	var set SignatureSet
	if err := json.Unmarshal(stored, &set); err != nil {
		t.Fatal(err)
	}
	j := policy.Evaluate(ctx, repo, d, &set)
	wantAllowed(t, j)
	if j.Scope != reg.host {
		t.Fatalf("scope %q, want the registry scope %q", j.Scope, reg.host)
	}

	// Tampering with the stored payload is caught offline too.
	set.Signatures[0].Payload = []byte(strings.Replace(string(set.Signatures[0].Payload), d.Hex[:8], "00000000", 1))
	wantRejected(t, policy.Evaluate(ctx, repo, d, &set), "invalid signature")
}

type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("refused by test transport")
}

func roundTrip(t *testing.T, set *SignatureSet) *SignatureSet {
	t.Helper()
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var out SignatureSet
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}
