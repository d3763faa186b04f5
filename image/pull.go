package image

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Errors of a pull, beside errdefs.ErrNotFound (manifest, repository or
// platform unknown) and ErrBadReference. Each is a value of one errdefs
// class with the pull's own words: test with errors.Is against either.
var (
	// ErrUnauthorized (errdefs.ErrUnauthenticated): the registry refused the
	// credentials (or their absence): HTTP 401/403, UNAUTHORIZED, DENIED.
	ErrUnauthorized = errdefs.ErrUnauthenticated.WithMessage("unauthorized")
	// ErrUnavailable (errdefs.ErrUnavailable): the registry could not be
	// reached or kept failing (refused connections, timeouts, 5xx, 429)
	// after the configured retries.
	ErrUnavailable = errdefs.ErrUnavailable.WithMessage("registry unavailable")
)

// Resolved is what a reference resolved to, before any layer is fetched.
type Resolved struct {
	// Ref is the normalised reference asked for ("docker.io/library/nginx:latest").
	Ref string
	// Repo is the repository on its origin registry (index.docker.io/library/nginx).
	Repo name.Repository
	// Digest is the image manifest for the platform: what is pulled, what
	// the pod records and runs, and what a signature must cover (or
	// IndexDigest, for signatures made on the multi-platform index).
	Digest v1.Hash
	// IndexDigest is the multi-platform index the reference named, if any.
	IndexDigest *v1.Hash
	// Manifest is the raw image manifest; it hashes to Digest.
	Manifest []byte
	// Endpoint is where it was resolved (a mirror or the origin); reach
	// it with Registries.Rebase(Repo, Endpoint) and Endpoint.Options.
	Endpoint Endpoint
}

// PullOptions adjust one pull.
type PullOptions struct {
	// Platform to resolve a multi-platform index to; default HostPlatform().
	Platform *v1.Platform
	// Verify is called after the reference is resolved and before any
	// layer (or the config) is fetched; an error aborts the pull and is
	// returned wrapped. It runs for every pull, also when the image is
	// already stored.
	Verify func(ctx context.Context, r Resolved) error
	// Progress receives bytes per layer and in total as they stream.
	Progress func(Progress)
}

// Pull fetches ref (see ParseRef) through regs and stores it.
//
// The reference is resolved (tag or digest) on the first endpoint that
// answers: the configured mirrors in order, then the origin; a mirror that
// fails in any way (down, 5xx, 404, TLS) is skipped. A multi-platform index
// resolves to the manifest for opts.Platform. From then on everything is
// fetched by digest — the tag is never used again — and every blob is
// checked against its digest while it streams (Import). If fetching the
// layers from a mirror fails, the remaining endpoints are tried for the
// same digest.
//
// Concurrent pulls of one image fetch it once; layers shared with stored
// images are not fetched at all. A pull that fails or is killed leaves
// nothing listed, and the next pull completes it. The image is recorded
// under the references it was pulled as (Image.Refs, Store.Lookup).
func (s *Store) Pull(ctx context.Context, regs *Registries, ref string, opts PullOptions) (*Image, *Resolved, error) {
	if regs == nil {
		regs = DefaultRegistries()
	}
	r, err := ParseRef(ref)
	if err != nil {
		return nil, nil, fmt.Errorf("pull: %w", err)
	}
	repo, err := r.Name()
	if err != nil {
		return nil, nil, fmt.Errorf("pull %s: %w", r, err)
	}
	platform := HostPlatform()
	if opts.Platform != nil {
		platform = *opts.Platform
	}
	pe := &PullError{Ref: r.String(), retries: regs.retries}
	eps := regs.Endpoints(repo)

	var res *Resolved
	var src v1.Image
	first := 0
	for i, ep := range eps {
		res, src, err = resolve(ctx, regs, r, repo, ep, platform)
		if err == nil {
			first = i
			break
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("pull %s: %w", r, ctx.Err())
		}
		pe.add(ep, "resolve", err)
	}
	if res == nil {
		return nil, nil, pe
	}
	digest := res.Digest.String()

	// Sidecars written by Verify (PutMeta) belong to this digest before
	// its record exists; the lease keeps GC off them.
	lease := []string{res.Digest.Hex}
	s.acquire(lease)
	defer s.release(lease)
	if opts.Verify != nil {
		if err := opts.Verify(ctx, *res); err != nil {
			return nil, res, fmt.Errorf("pull %s: %s: verification failed: %w", r, digest, err)
		}
	}

	unlock, err := s.pullLocks.lock(ctx, digest)
	if err != nil {
		return nil, res, fmt.Errorf("pull %s: %w", r, err)
	}
	defer unlock()
	refs := pulledRefs(r, res)
	if _, err := s.Image(digest); err == nil {
		// Stored already (by an earlier or a concurrent pull): nothing to fetch.
		if m, err := v1.ParseManifest(bytes.NewReader(res.Manifest)); err == nil {
			newProgressState(opts.Progress, m.Layers).allCached()
		}
		im, err := s.updateRecord(digest, refs)
		if err != nil {
			return nil, res, fmt.Errorf("pull %s: %w", r, err)
		}
		return im, res, nil
	}

	for i := first; i < len(eps); i++ {
		ep := eps[i]
		img := src
		if i != first {
			if img, err = fetchByDigest(ctx, regs, repo, ep, res.Digest); err != nil {
				if ctx.Err() != nil {
					return nil, res, fmt.Errorf("pull %s: %w", r, ctx.Err())
				}
				pe.add(ep, "fetch "+digest, err)
				continue
			}
		}
		// Verify ran above, on the resolved digest; Import need not ask again.
		im, err := s.Import(ctx, img, ImportOptions{Refs: refs, Progress: opts.Progress})
		if err == nil {
			if im.Digest != digest {
				return nil, res, fmt.Errorf("pull %s: stored %s, resolved %s", r, im.Digest, digest)
			}
			return im, res, nil
		}
		if ctx.Err() != nil {
			return nil, res, fmt.Errorf("pull %s: %w", r, ctx.Err())
		}
		pe.add(ep, "fetch "+digest, err)
		// A refusal is about the content, which is the same everywhere.
		if !ep.Mirror || isRefused(err) {
			break
		}
	}
	return nil, res, pe
}

// pulledRefs are the references recorded for a pulled image.
func pulledRefs(r Ref, res *Resolved) []string {
	refs := []string{digestRef(r.Repository, res.Digest.String())}
	if res.IndexDigest != nil {
		refs = append(refs, digestRef(r.Repository, res.IndexDigest.String()))
	}
	if r.Digest == "" {
		refs = append(refs, r.Repository+":"+r.Tag)
	}
	return refs
}

// resolve finds the platform manifest for r on one endpoint and returns it
// with an image that reads its blobs from there.
func resolve(ctx context.Context, regs *Registries, r Ref, repo name.Repository, ep Endpoint, platform v1.Platform) (*Resolved, v1.Image, error) {
	erepo, err := regs.Rebase(repo, ep)
	if err != nil {
		return nil, nil, err
	}
	p, err := remote.NewPuller(ep.Options...)
	if err != nil {
		return nil, nil, err
	}
	// The descriptor comes with the manifest bytes, and its digest is
	// computed from them (and checked against the reference when that
	// names a digest), so what follows is pinned to that digest even when
	// r is a tag.
	desc, err := p.Get(ctx, r.Reference(erepo))
	if err != nil {
		return nil, nil, err
	}
	res := &Resolved{Ref: r.String(), Repo: repo, Endpoint: ep}
	for depth := 0; isIndex(desc.MediaType); depth++ {
		if depth >= maxIndexDepth {
			return nil, nil, fmt.Errorf("indexes nested deeper than %d at %s", maxIndexDepth, desc.Digest)
		}
		if res.IndexDigest == nil {
			d := desc.Digest
			res.IndexDigest = &d
		}
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, nil, fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		child, err := pickPlatform(im, platform)
		if err != nil {
			return nil, nil, fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		if desc, err = p.Get(ctx, erepo.Digest(child.Digest.String())); err != nil {
			return nil, nil, err
		}
	}
	if !isManifest(desc.MediaType) {
		return nil, nil, fmt.Errorf("%s has media type %q, not an image manifest or index berth can run", desc.Digest, desc.MediaType)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, nil, err
	}
	res.Digest, res.Manifest = desc.Digest, desc.Manifest
	return res, img, nil
}

// pickPlatform chooses the index entry for platform: the first manifest
// (or nested index) whose platform satisfies it (a variant only matters
// when one is asked for, as in containerd's default matcher), else the
// first nested index without a platform.
func pickPlatform(im *v1.IndexManifest, platform v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, m := range im.Manifests {
		if m.Platform == nil {
			continue
		}
		if m.Platform.Satisfies(platform) && (isManifest(m.MediaType) || isIndex(m.MediaType)) {
			return m, nil
		}
		have = append(have, m.Platform.String())
	}
	for _, m := range im.Manifests {
		if m.Platform == nil && isIndex(m.MediaType) {
			return m, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%w: no manifest for platform %s (has: %s)", errdefs.ErrNotFound, platform, listOrNone(have))
}

// fetchByDigest opens the image manifest digest on another endpoint.
func fetchByDigest(ctx context.Context, regs *Registries, repo name.Repository, ep Endpoint, digest v1.Hash) (v1.Image, error) {
	erepo, err := regs.Rebase(repo, ep)
	if err != nil {
		return nil, err
	}
	p, err := remote.NewPuller(ep.Options...)
	if err != nil {
		return nil, err
	}
	desc, err := p.Get(ctx, erepo.Digest(digest.String()))
	if err != nil {
		return nil, err
	}
	if !isManifest(desc.MediaType) {
		return nil, fmt.Errorf("%s has media type %q here, not an image manifest", digest, desc.MediaType)
	}
	return desc.Image()
}

// PullError reports a failed pull: what each endpoint answered, in the
// order tried. errors.Is and errors.As see the last endpoint's error (the
// origin's, normally), classified as errdefs.ErrNotFound, ErrUnauthorized or
// ErrUnavailable where that applies.
type PullError struct {
	Ref      string
	Attempts []EndpointError

	retries int
}

// EndpointError is one endpoint's failure.
type EndpointError struct {
	Host   string
	Mirror bool
	Op     string // "resolve" or "fetch sha256:…"
	Class  error  // errdefs.ErrNotFound, ErrUnauthorized, ErrUnavailable or nil
	Err    error
}

func (e *EndpointError) Error() string {
	role := "registry"
	if e.Mirror {
		role = "mirror"
	}
	// Registries put raw response bodies into errors; keep the message
	// on one line.
	detail := strings.Join(strings.Fields(e.Err.Error()), " ")
	if e.Class != nil {
		return fmt.Sprintf("%s %s: %s: %v: %s", role, e.Host, e.Op, e.Class, detail)
	}
	return fmt.Sprintf("%s %s: %s: %s", role, e.Host, e.Op, detail)
}

func (e *EndpointError) Unwrap() []error {
	if e.Class != nil {
		return []error{e.Class, e.Err}
	}
	return []error{e.Err}
}

func (e *PullError) add(ep Endpoint, op string, err error) {
	ee := EndpointError{Host: ep.Host, Mirror: ep.Mirror, Op: op, Class: classify(err), Err: err}
	e.Attempts = append(e.Attempts, ee)
}

func (e *PullError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pull %s: ", e.Ref)
	for i, a := range e.Attempts {
		if i > 0 {
			b.WriteString("; then ")
		}
		b.WriteString(a.Error())
		if errors.Is(a.Class, ErrUnavailable) && e.retries > 0 {
			fmt.Fprintf(&b, " (gave up after %d retries)", e.retries)
		}
	}
	return b.String()
}

func (e *PullError) Unwrap() error {
	if len(e.Attempts) == 0 {
		return nil
	}
	return &e.Attempts[len(e.Attempts)-1]
}

// classify maps a registry failure to an error class.
func classify(err error) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil // already classified (no platform match)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return errdefs.ErrNotFound
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return ErrUnauthorized
			}
		}
		switch {
		case te.StatusCode == http.StatusNotFound:
			return errdefs.ErrNotFound
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return ErrUnauthorized
		case te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests || te.StatusCode == http.StatusRequestTimeout:
			return ErrUnavailable
		}
		return nil
	}
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	var pe *PlainHTTPError
	if errors.As(err, &uae) || errors.As(err, &hne) || errors.As(err, &cie) || errors.As(err, &pe) {
		return nil // configuration, not availability
	}
	var to *TimeoutError
	var ne net.Error
	var dns *net.DNSError
	var op *net.OpError
	if errors.As(err, &to) || (errors.As(err, &ne) && ne.Timeout()) || errors.As(err, &dns) || errors.As(err, &op) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) {
		return ErrUnavailable
	}
	return nil
}
