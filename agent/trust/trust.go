// Package trust applies the trust policy to images berth is about to run:
// at pull time (signatures just fetched), when a pod starts, and again before
// every (re)start of a container, from the local store only. The unit's
// `berth-init start --verify-image` answers from the bundle's fingerprinted
// record (bundle.Record) and falls back to `berth-verify` (this package, with
// the cosign verifier) whenever the policy, a key it names or the stored
// signatures changed since the record was written.
package trust

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	bndl "github.com/berth-dev/berth/agent/bundle"
	"github.com/berth-dev/berth/verify"
)

// Store is what trust needs of the image store (*image.Store): sidecar
// files kept with an image. GetMeta of a missing one is errdefs.ErrNotFound.
type Store interface {
	PutMeta(digest, name string, data []byte) error
	GetMeta(digest, name string) ([]byte, error)
	MetaPath(digest, name string) string
}

// Signatures and judgements are stored per repository and digest: the same
// manifest pulled from another repository comes with that repository's
// signatures, which must not change what a trusted repository's next start
// judges (the policy's rules and the signatures' claims are per repository).
// Meta names allow no '/', so the repository is named by its sha256.
func signaturesMeta(repo string) string { return "signatures-" + repoKey(repo) + ".json" }
func judgementMeta(repo string) string  { return "judgement-" + repoKey(repo) + ".json" }

// layoutJudgementMeta is the judgement of an image imported from a local
// OCI layout (which has no signatures).
const layoutJudgementMeta = "judgement-layout.json"

func repoKey(repo string) string {
	s := sha256.Sum256([]byte(repo))
	return hex.EncodeToString(s[:16])
}

// Judged is a judgement with what it read: the policy, and the
// fingerprints of the exact bytes of every file it depended on.
type Judged struct {
	Judgement verify.Judgement
	Policy    *verify.Policy
	Depends   []bndl.Fingerprint
}

// Judge evaluates src against the policy at src.Policy using only local
// data: the signatures stored with the image for src.Repo (registry images)
// or the layout's directory scope (local layouts). It records the judgement
// with the image in the store.
func Judge(ctx context.Context, st Store, src bndl.Source) (*Judged, error) {
	p, err := verify.Load(src.Policy)
	if err != nil {
		return nil, err
	}
	digest, err := v1.NewHash(src.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: image digest %q: %w", errdefs.ErrInvalidArgument, src.Digest, err)
	}
	jd := &Judged{Policy: p, Depends: []bndl.Fingerprint{{Path: src.Policy, SHA256: p.SourceSHA256()}}}
	for _, f := range p.Files() {
		jd.Depends = append(jd.Depends, bndl.Fingerprint{Path: f.Path, SHA256: f.SHA256})
	}
	meta := layoutJudgementMeta
	switch {
	case src.Layout != "":
		jd.Judgement = p.EvaluateLayout(ctx, src.Layout, digest)
	case src.Repo != "":
		repo, err := name.NewRepository(src.Repo, name.StrictValidation)
		if err != nil {
			return nil, fmt.Errorf("%w: image repository %q: %w", errdefs.ErrInvalidArgument, src.Repo, err)
		}
		sigsMeta := signaturesMeta(src.Repo)
		var sigs *verify.SignatureSet
		b, err := st.GetMeta(src.Digest, sigsMeta)
		switch {
		case err == nil:
			sigs = &verify.SignatureSet{}
			if err := json.Unmarshal(b, sigs); err != nil {
				return nil, fmt.Errorf("stored signatures of %s@%s: %w", src.Repo, src.Digest, err)
			}
		case errdefs.IsNotFound(err):
			b = nil // judged without signatures: the record depends on their absence
		default:
			return nil, err
		}
		jd.Depends = append(jd.Depends, bndl.Fingerprint{Path: st.MetaPath(src.Digest, sigsMeta), SHA256: bndl.Sum(b)})
		jd.Judgement = p.Evaluate(ctx, repo, digest, sigs)
		meta = judgementMeta(src.Repo)
	default:
		return nil, fmt.Errorf("%w: image source has neither a repository nor a layout", errdefs.ErrInvalidArgument)
	}
	if err := recordJudgement(st, src.Digest, meta, jd.Judgement); err != nil {
		return jd, err
	}
	return jd, nil
}

// recordJudgement stores j with the image, unless the stored one says the
// same but for its time: every start of a container judges its image
// again, and the store fsyncs each write (about 1 ms here, make bench).
// The stored time is then that of the first judgement of the run of equal
// ones.
func recordJudgement(st Store, digest, meta string, j verify.Judgement) error {
	if old, err := st.GetMeta(digest, meta); err == nil {
		var prev verify.Judgement
		if json.Unmarshal(old, &prev) == nil {
			prev.Time = j.Time
			if prev == j {
				return nil
			}
		}
	}
	b, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode judgement: %w", err)
	}
	if err := st.PutMeta(digest, meta, b); err != nil {
		return fmt.Errorf("record judgement: %w", err)
	}
	return nil
}

// WriteRecord stores the judgement in the bundle's trust record with the
// fingerprints of everything it read: the policy file, every key/CA/Rekor
// file it names, and the stored signatures.
func WriteRecord(bundle string, jd *Judged) error {
	j := jd.Judgement
	r := bndl.Record{Allowed: j.Allowed, Depends: jd.Depends}
	if err := j.Error(); err != nil {
		r.Message = err.Error()
	}
	b, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode judgement: %w", err)
	}
	r.Judgement = b
	return bndl.WriteRecord(bundle, r)
}

// Verify is berth-verify: judge the bundle's image again from the local
// store, write the record, and return the rejection as an error.
func Verify(ctx context.Context, bundle string, open func(root string) (Store, error)) error {
	src, err := bndl.ReadSource(bundle)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", bundle, err)
	}
	st, err := open(src.Store)
	if err != nil {
		return err
	}
	jd, err := Judge(ctx, st, src)
	if err != nil {
		return err
	}
	if err := WriteRecord(bundle, jd); err != nil {
		return err
	}
	return jd.Judgement.Error()
}
