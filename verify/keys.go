package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"io"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// verifierFor returns the verifier matching how `cosign sign --key` signs
// with pub. cosign v2 loads signing keys with signature.LoadDefaultSignerVerifier
// (pkg/cosign/keys.go LoadPrivateKey), i.e. sigstore's default algorithm for
// the key: ECDSA P-256/SHA-256, P-384/SHA-384, P-521/SHA-512, RSA PKCS#1 v1.5
// with SHA-256, and Ed25519 *pre-hashed* (Ed25519ph, GetDefaultLoadOptions),
// while older cosign and other tools sign Ed25519 in pure mode. So an Ed25519
// key accepts either mode: they are domain-separated variants of one scheme
// (RFC 8032 §5.1), so a signature in one mode is never valid in the other.
func verifierFor(pub crypto.PublicKey) (signature.Verifier, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
		v, err := signature.LoadDefaultVerifier(pub)
		if err != nil {
			return nil, fmt.Errorf("unsupported key: %w", err)
		}
		return v, nil
	case ed25519.PublicKey:
		ph, err := signature.LoadDefaultVerifier(k, options.WithED25519ph())
		if err != nil {
			return nil, err
		}
		pure, err := signature.LoadED25519Verifier(k)
		if err != nil {
			return nil, err
		}
		return &ed25519Verifier{ph: ph, pure: pure}, nil
	default:
		return nil, fmt.Errorf("unsupported public key type %T (ECDSA, Ed25519 and RSA are supported)", pub)
	}
}

type ed25519Verifier struct {
	ph, pure signature.Verifier
}

func (v *ed25519Verifier) PublicKey(opts ...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return v.pure.PublicKey(opts...)
}

func (v *ed25519Verifier) VerifySignature(sig, message io.Reader, opts ...signature.VerifyOption) error {
	s, err := io.ReadAll(sig)
	if err != nil {
		return err
	}
	m, err := io.ReadAll(message)
	if err != nil {
		return err
	}
	errPH := v.ph.VerifySignature(bytes.NewReader(s), bytes.NewReader(m), opts...)
	if errPH == nil {
		return nil
	}
	if err := v.pure.VerifySignature(bytes.NewReader(s), bytes.NewReader(m), opts...); err == nil {
		return nil
	}
	return fmt.Errorf("invalid Ed25519 signature (neither Ed25519ph nor pure Ed25519): %w", errPH)
}
