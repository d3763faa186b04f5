// Package trust applies the trust policy to images berth is about to run:
// at pull time (signatures just fetched), when a pod starts, and again before
// every (re)start of a container, from the local store only — the unit's
// `berth-init start --verify-image` answers from a
// fingerprinted record (Record) and falls back to `berth-verify` (this
// package, with the cosign verifier) whenever the policy, a key it names or
// the stored signatures changed since the record was written.
package trust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/agent/runtime/stage1"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/verify"
)

// Files in a container's bundle.
const (
	SourceFile = "image.json" // Source: what image the container runs, and from where
	RecordFile = "trust.json" // Record: the last judgement and what it depended on
)

// Meta names in the image store.
const (
	SignaturesMeta = "signatures.json" // verify.SignatureSet fetched at pull time
	JudgementMeta  = "judgement.json"  // the judgement recorded with the image
)

// Source says where a container's image came from.
type Source struct {
	Ref    string `json:"ref"`              // as the pod wrote it
	Repo   string `json:"repo,omitempty"`   // registry images: the normalised repository
	Layout string `json:"layout,omitempty"` // local OCI layouts: the directory
	Digest string `json:"digest"`           // manifest digest the container runs
	Store  string `json:"store"`            // image store root
	Policy string `json:"policy"`           // trust policy file
}

// Store is what trust needs of the image store.
type Store interface {
	PutMeta(digest, name string, data []byte) error
	GetMeta(digest, name string) ([]byte, error)
	MetaPath(digest, name string) string
}

// Judge evaluates src against the policy at src.Policy using only local
// data: the signatures stored with the image (registry images) or the
// layout's directory scope (local layouts). It records the judgement with the
// image in the store.
func Judge(ctx context.Context, st Store, src Source) (verify.Judgement, *verify.Policy, error) {
	p, err := verify.Load(src.Policy)
	if err != nil {
		return verify.Judgement{}, nil, err
	}
	digest, err := v1.NewHash(src.Digest)
	if err != nil {
		return verify.Judgement{}, nil, fmt.Errorf("image digest %q: %w", src.Digest, err)
	}
	var j verify.Judgement
	switch {
	case src.Layout != "":
		j = p.EvaluateLayout(ctx, src.Layout, digest)
	case src.Repo != "":
		repo, err := name.NewRepository(src.Repo, name.StrictValidation)
		if err != nil {
			return verify.Judgement{}, nil, fmt.Errorf("image repository %q: %w", src.Repo, err)
		}
		var sigs *verify.SignatureSet
		if b, err := st.GetMeta(src.Digest, SignaturesMeta); err == nil {
			sigs = &verify.SignatureSet{}
			if err := json.Unmarshal(b, sigs); err != nil {
				return verify.Judgement{}, nil, fmt.Errorf("stored signatures of %s: %w", src.Digest, err)
			}
		} else if !errors.Is(err, image.ErrNotFound) {
			return verify.Judgement{}, nil, err
		}
		j = p.Evaluate(ctx, repo, digest, sigs)
	default:
		return verify.Judgement{}, nil, errors.New("image source has neither a repository nor a layout")
	}
	if err := recordJudgement(st, src.Digest, j); err != nil {
		return j, p, err
	}
	return j, p, nil
}

// recordJudgement stores j with the image, unless the stored one says the
// same but for its time: every start of a container judges its image
// again, and the store fsyncs each write (about 1 ms here, make bench).
// The stored time is then that of the first judgement of the run of equal
// ones.
func recordJudgement(st Store, digest string, j verify.Judgement) error {
	if old, err := st.GetMeta(digest, JudgementMeta); err == nil {
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
		return nil
	}
	if err := st.PutMeta(digest, JudgementMeta, b); err != nil {
		return fmt.Errorf("record judgement: %w", err)
	}
	return nil
}

// Fingerprint is a file a judgement depended on and the sha256 of its
// content ("absent" if it did not exist).
type Fingerprint struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// Record is what the unit's berth-init start --verify-image checks before
// each (re)start.
type Record struct {
	Allowed   bool             `json:"allowed"`
	Message   string           `json:"message"` // the rejection, word for word
	Depends   []Fingerprint    `json:"depends"`
	Judgement verify.Judgement `json:"judgement"`
}

// WriteRecord stores the judgement in bundle/trust.json with the fingerprints
// of everything it depended on: the policy file, every key/CA/Rekor file it
// names, and the stored signatures.
func WriteRecord(bundle string, st Store, src Source, p *verify.Policy, j verify.Judgement) error {
	deps := []string{src.Policy}
	for _, f := range p.Files() {
		deps = append(deps, f.Path)
	}
	if src.Repo != "" {
		deps = append(deps, st.MetaPath(src.Digest, SignaturesMeta))
	}
	r := Record{Allowed: j.Allowed, Judgement: j}
	if err := j.Error(); err != nil {
		r.Message = err.Error()
	}
	for _, d := range deps {
		r.Depends = append(r.Depends, Fingerprint{Path: d, SHA256: stage1.HashFile(d)})
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return stage1.WriteFileAtomic(filepath.Join(bundle, RecordFile), b, 0o600)
}

// WriteSource stores src in bundle/image.json.
func WriteSource(bundle string, src Source) error {
	b, err := json.MarshalIndent(src, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, SourceFile), b, 0o600)
}

// ReadSource reads bundle/image.json.
func ReadSource(bundle string) (Source, error) {
	var s Source
	b, err := os.ReadFile(filepath.Join(bundle, SourceFile))
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// Verify is berth-verify: judge the bundle's image again from the local
// store, write the record, and return the rejection as an error.
func Verify(ctx context.Context, bundle string, open func(root string) (Store, error)) error {
	src, err := ReadSource(bundle)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", bundle, err)
	}
	st, err := open(src.Store)
	if err != nil {
		return err
	}
	j, p, err := Judge(ctx, st, src)
	if err != nil {
		return err
	}
	if err := WriteRecord(bundle, st, src, p, j); err != nil {
		return err
	}
	return j.Error()
}
