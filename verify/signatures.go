package verify

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
)

// Limits against a hostile registry: a cosign simple-signing payload is a few
// hundred bytes and images carry a handful of signatures, but the .sig
// manifest is registry-controlled and cosign itself allows 1000 layers of up
// to 128 MiB each (pkg/oci/remote maxLayers, payloadsize).
const (
	maxSignatures   = 256
	maxPayloadBytes = 1 << 20
)

// Signature is one cosign signature as stored in the registry (one layer of
// the <repo>:sha256-<hex>.sig manifest), kept verbatim so that verification
// can run again offline.
type Signature struct {
	// Payload is the signed simple-signing JSON (the layer blob).
	Payload []byte `json:"payload"`
	// Base64Signature is the dev.cosignproject.cosign/signature annotation.
	Base64Signature string `json:"base64Signature"`
	// Cert and Chain are the PEM dev.sigstore.cosign/certificate and
	// dev.sigstore.cosign/chain annotations of a keyless signature.
	Cert  []byte `json:"cert,omitempty"`
	Chain []byte `json:"chain,omitempty"`
	// Bundle is the JSON of cosign's bundle.RekorBundle
	// (dev.sigstore.cosign/bundle), the offline proof of a Rekor entry.
	Bundle []byte `json:"bundle,omitempty"`
	// Annotations are the layer's other annotations.
	Annotations map[string]string `json:"annotations,omitempty"`
}

// SignatureSet is every signature found for one image digest.
type SignatureSet struct {
	Digest     string      `json:"digest"`
	Signatures []Signature `json:"signatures"`
}

// FetchSignatures reads the cosign signatures of repo@digest from the
// registry: the manifest tagged <repo>:sha256-<hex>.sig (ociremote.SignatureTag),
// one signature per layer. opts carry the caller's transport and auth (the
// same as for the image pull); ctx bounds the requests. No signature tag
// means an empty set, not an error — the policy decides what that means.
// Layer blobs are digest-checked by go-containerregistry while read.
func FetchSignatures(ctx context.Context, repo name.Repository, digest v1.Hash, opts ...remote.Option) (*SignatureSet, error) {
	ref := repo.Digest(digest.String())
	tag, err := ociremote.SignatureTag(ref)
	if err != nil {
		return nil, fmt.Errorf("signature tag of %s: %w", ref, err)
	}
	// The caller's options first, our context last so that it wins; passing
	// WithRemoteOptions also keeps cosign from defaulting to
	// authn.DefaultKeychain (~/.docker/config.json of whoever runs berthd).
	ropts := append(append([]remote.Option{}, opts...), remote.WithContext(ctx))
	sigs, err := ociremote.Signatures(tag, ociremote.WithRemoteOptions(ropts...))
	if err != nil {
		return nil, fmt.Errorf("fetch signatures %s: %w", tag, err)
	}
	list, err := sigs.Get()
	if err != nil {
		return nil, fmt.Errorf("fetch signatures %s: %w", tag, err)
	}
	if len(list) > maxSignatures {
		return nil, fmt.Errorf("fetch signatures %s: %d signatures, more than berth reads (%d)", tag, len(list), maxSignatures)
	}
	set := &SignatureSet{Digest: digest.String(), Signatures: make([]Signature, 0, len(list))}
	for i, s := range list {
		sig, err := fromOCI(s)
		if err != nil {
			return nil, fmt.Errorf("fetch signatures %s: signature %d: %w", tag, i+1, err)
		}
		set.Signatures = append(set.Signatures, sig)
	}
	return set, nil
}

func fromOCI(s oci.Signature) (Signature, error) {
	size, err := s.Size()
	if err != nil {
		return Signature{}, err
	}
	if size > maxPayloadBytes {
		return Signature{}, fmt.Errorf("payload of %d bytes, more than berth reads (%d)", size, maxPayloadBytes)
	}
	payload, err := s.Payload()
	if err != nil {
		return Signature{}, fmt.Errorf("payload: %w", err)
	}
	ann, err := s.Annotations()
	if err != nil {
		return Signature{}, err
	}
	out := Signature{Payload: payload}
	for k, v := range ann {
		switch k {
		case static.SignatureAnnotationKey:
			out.Base64Signature = v
		case static.CertificateAnnotationKey:
			out.Cert = nonEmpty(v)
		case static.ChainAnnotationKey:
			out.Chain = nonEmpty(v)
		case static.BundleAnnotationKey:
			out.Bundle = nonEmpty(v)
		default:
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out, nil
}

func nonEmpty(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// ociSignature rebuilds the stored signature as cosign's static signature,
// the same object cosign verifies when it reads one from a registry.
func (s Signature) ociSignature() (oci.Signature, error) {
	ann := make(map[string]string, len(s.Annotations))
	for k, v := range s.Annotations {
		ann[k] = v
	}
	// WithAnnotations replaces the map, so it goes first; the cert and bundle
	// options add their annotations to it afterwards (static.makeOptions).
	opts := []static.Option{static.WithAnnotations(ann)}
	if len(s.Cert) > 0 {
		opts = append(opts, static.WithCertChain(s.Cert, s.Chain))
	}
	if len(s.Bundle) > 0 {
		var b bundle.RekorBundle
		if err := json.Unmarshal(s.Bundle, &b); err != nil {
			return nil, fmt.Errorf("signature bundle: %w", err)
		}
		if _, ok := b.Payload.Body.(string); !ok {
			return nil, fmt.Errorf("signature bundle: body is not a base64 string")
		}
		opts = append(opts, static.WithBundle(&b))
	}
	return static.NewSignature(s.Payload, s.Base64Signature, opts...)
}
