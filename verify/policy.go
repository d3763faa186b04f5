package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultPolicyPath is where berthd reads its trust policy unless configured
// otherwise.
const DefaultPolicyPath = "/etc/berth/policy.json"

// Scope names used in Judgement.Scope for the two defaults.
const (
	ScopeDefault       = "default"        // the policy's global "default"
	ScopeDockerDefault = "docker:default" // transports.docker[""]
	// ScopeArchiveDefault is transports["oci-archive"][""], which judges
	// archives loaded over the API (EvaluateArchive).
	ScopeArchiveDefault = "oci-archive:default"
)

// Policy is a parsed trust policy. It is immutable and safe for concurrent
// use; reload it (Load) to pick up a changed file.
type Policy struct {
	source string // the file it came from, for messages
	digest string
	sum    string // sha256 (hex) of the bytes the policy was parsed from, or "absent"
	files  []TrustFile

	global        scopeRules
	dockerDefault *scopeRules
	docker        map[string]scopeRules // scope key as written → rules
	ociDefault    *scopeRules
	oci           map[string]scopeRules // absolute layout directory → rules
	// archiveDefault is transports["oci-archive"][""]: the rules for an
	// archive sent to berthd (berth image load), which has no path on the
	// host berthd could vouch for.
	archiveDefault *scopeRules

	now func() time.Time
}

type scopeRules struct {
	scope string
	reqs  []requirement
}

// Load reads and parses the policy at path. An absent file is not an error:
// it yields the built-in policy that rejects every image, because berth runs
// only what the operator has said to trust, and a node whose policy file was
// never installed must not run unsigned images by accident. Any other read or
// parse problem is an error naming the file, the scope and the field. The file
// is read once, at most maxPolicyBytes (4 MiB) of it.
func Load(path string) (*Policy, error) {
	data, err := readBounded(path, maxPolicyBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return absentPolicy(path), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read trust policy: %w", err)
	}
	return Parse(path, data)
}

// absentPolicy rejects everything; its digest is sha256 of zero bytes, which
// no loadable file can have (an empty file is not valid JSON).
func absentPolicy(path string) *Policy {
	sum := sha256.Sum256(nil)
	return &Policy{
		source: path,
		digest: "sha256:" + hex.EncodeToString(sum[:]),
		sum:    AbsentFile,
		global: scopeRules{scope: ScopeDefault, reqs: []requirement{rejectRule{
			why: fmt.Sprintf("there is no trust policy at %s, and without one berth rejects every image", path),
		}}},
		docker: map[string]scopeRules{},
		now:    time.Now,
	}
}

// Parse parses policy bytes; source names the file in messages. Key, CA,
// Rekor and CT log key files the policy names are read now, each once and at
// most maxTrustFileBytes (1 MiB), and the keys are parsed from those bytes:
// a missing key is an error at load time rather than a surprise at the next
// pull, and the loaded policy never reads them again, so Files() fingerprints
// exactly what its judgements use. Policies over maxPolicyBytes are refused,
// as Load refuses such files.
func Parse(source string, data []byte) (*Policy, error) {
	if len(data) > maxPolicyBytes {
		return nil, fmt.Errorf("trust policy %s: %d bytes, more than the %d berth reads", source, len(data), maxPolicyBytes)
	}
	p, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("trust policy %s: %w", source, err)
	}
	p.source = source
	s := sha256.Sum256(data)
	p.sum = hex.EncodeToString(s[:])
	return p, nil
}

// AbsentFile is the SHA256 of a file that did not exist when it was read.
const AbsentFile = "absent"

// SourceSHA256 is the sha256 (hex) of the exact bytes the policy was parsed
// from, or AbsentFile when there was no policy file: what a judgement read,
// not what the file holds now.
func (p *Policy) SourceSHA256() string { return p.sum }

// Digest identifies the policy for caching judgements keyed by
// (image digest, policy digest): "sha256:<hex>" of the policy file bytes, or,
// when the policy names key/CA/Rekor files, of the file bytes followed by each
// named file's path and sha256 — so replacing a key file in place also
// invalidates cached judgements.
func (p *Policy) Digest() string { return p.digest }

// TrustFile is a key, CA, Rekor or CT log key file the policy names, with
// the sha256 (hex) of the exact bytes read when the policy was loaded.
type TrustFile struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// Files lists the key, CA, Rekor and CT log key files the policy read
// (covered by Digest), each once, in the order first read, so a cache of
// judgements can notice when one is replaced without loading the policy
// again. The sums are of the bytes the policy's keys were parsed from.
func (p *Policy) Files() []TrustFile { return append([]TrustFile(nil), p.files...) }

// Source is the file the policy was read from.
func (p *Policy) Source() string { return p.source }

// Evaluate judges one image digest of repo against the policy, using only the
// given signatures (nil means none): no network, so the same call serves the
// pull (signatures just fetched) and every restart (signatures read back from
// the store). The requirements of the most specific matching scope must all
// accept the image (containers-policy.json(5)); the first that does not
// decides the rejection.
func (p *Policy) Evaluate(ctx context.Context, repo name.Repository, digest v1.Hash, sigs *SignatureSet) Judgement {
	img := imageID{repo: identityOf(repo), digest: digest}
	return p.judge(ctx, img, p.lookup(img), sigs)
}

// judge runs the requirements of the chosen scope.
func (p *Policy) judge(ctx context.Context, img imageID, sr scopeRules, sigs *SignatureSet) Judgement {
	digest := img.digest
	j := Judgement{
		Image:        img.repo,
		Digest:       digest.String(),
		Scope:        sr.scope,
		PolicyDigest: p.digest,
		Time:         p.now(),
	}
	var names, details []string
	for i, r := range sr.reqs {
		rule := fmt.Sprintf("%s[%d]", r.kind(), i)
		detail, err := r.check(ctx, img, sigs)
		if err != nil {
			j.Rule, j.Reason = rule, err.Error()
			return j
		}
		names = append(names, rule)
		details = append(details, rule+": "+detail)
	}
	j.Allowed = true
	j.Rule = strings.Join(names, "+")
	if len(details) == 1 {
		j.Reason = strings.TrimPrefix(details[0], names[0]+": ")
	} else {
		j.Reason = strings.Join(details, "; ")
	}
	return j
}

// EvaluateLayout judges an image imported from an OCI image layout on disk
// (berthd pod run --layout) under the policy's "oci" transport, whose scopes
// are absolute directory paths (containers-policy.json(5)): the layout
// directory, then each parent directory, then transports.oci[""], then the
// global default. Layouts carry no cosign signatures in this version, so only
// insecureAcceptAnything (or reject) is meaningful there; sigstoreSigned
// rejects with "no signatures found".
func (p *Policy) EvaluateLayout(ctx context.Context, dir string, digest v1.Hash) Judgement {
	dir = filepath.Clean(dir)
	sr := p.global
	if p.ociDefault != nil {
		sr = *p.ociDefault
	}
	for d := dir; ; d = filepath.Dir(d) {
		if r, ok := p.oci[d]; ok {
			sr = r
			break
		}
		if d == "/" || d == "." {
			break
		}
	}
	img := imageID{repo: "oci:" + dir, digest: digest}
	return p.judge(ctx, img, sr, nil)
}

// EvaluateArchive judges an image loaded from an OCI archive or layout that a
// client sent to berthd (berth image load). containers-policy.json(5) scopes
// oci-archive rules by the archive's path on the host, but bytes that came
// over a socket have no path berthd read them from, and a path the client
// names could be any path the policy trusts. So only the transport's own
// default, transports["oci-archive"][""], applies, then the global default:
// a policy that says nothing about archives judges loads as it judges
// everything else (the shipped one rejects them). Archives carry no cosign
// signatures berth reads in this version, so insecureAcceptAnything (or
// reject) is what is meaningful there.
func (p *Policy) EvaluateArchive(ctx context.Context, digest v1.Hash) Judgement {
	sr := p.global
	if p.archiveDefault != nil {
		sr = *p.archiveDefault
	}
	return p.judge(ctx, imageID{repo: "oci-archive", digest: digest}, sr, nil)
}

// imageID is an image as the policy sees it: the repository in the fully
// expanded containers form and the manifest digest.
type imageID struct {
	repo   string
	digest v1.Hash
}

// lookup returns the rules of the most specific scope that matches img, in
// containers/image's order (docker/policyconfiguration): the exact image
// (repo@digest), the repository, each parent namespace, the registry host,
// wildcard parent domains of the host, then transports.docker[""], then the
// global default.
func (p *Policy) lookup(img imageID) scopeRules {
	for _, s := range candidateScopes(img) {
		if sr, ok := p.docker[s]; ok {
			return sr
		}
	}
	if p.dockerDefault != nil {
		return *p.dockerDefault
	}
	return p.global
}
