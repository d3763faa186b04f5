package image

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
)

// ErrBadReference (errdefs.ErrInvalidArgument): an image reference that
// does not parse.
var ErrBadReference = errdefs.ErrInvalidArgument.WithMessage("malformed image reference")

// Ref is an image reference normalised the way Docker and Kubernetes do it
// (distribution/reference, the library both use): "nginx" is
// docker.io/library/nginx:latest, "user/app" is docker.io/user/app:latest,
// "host:5000/a/b" keeps its registry, and a reference without tag or digest
// gets the tag "latest". A reference may carry both a tag and a digest; the
// digest then decides what is pulled and the tag is informational, as in
// the kubelet and containerd.
type Ref struct {
	// Repository is the normalised repository, "docker.io/library/nginx".
	Repository string
	// Tag is the tag, or "" when the reference names only a digest.
	Tag string
	// Digest is "sha256:<hex>", or "".
	Digest string
}

// ParseRef normalises s. Errors wrap ErrBadReference. The registry host
// is lower-cased ("Registry.Example:5000/app" is
// registry.example:5000/app): host names are case-insensitive, and the
// registry configuration, the trust policy's scopes and the store must all
// see one spelling of the same registry.
func ParseRef(s string) (Ref, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Ref{}, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
	}
	if d := reference.Domain(named); d != strings.ToLower(d) {
		// Parse again with the host lower-cased, so that "Docker.IO/x"
		// gets the same normalisation (docker.io/library/x) as
		// "docker.io/x". distribution/reference takes a first component
		// for a host when it has a '.' or ':', is "localhost", or has an
		// upper-case letter; the last of these is lost by lower-casing,
		// and "MyHost/app" would quietly become a Docker Hub repository.
		lower := strings.ToLower(d)
		if !strings.HasPrefix(s, d) {
			return Ref{}, fmt.Errorf("%w %q: registry host %q is not lower case", ErrBadReference, s, d)
		}
		if !strings.ContainsAny(lower, ".:") && lower != "localhost" {
			return Ref{}, fmt.Errorf("%w %q: registry host %q is not lower case, and in lower case it would name a Docker Hub repository", ErrBadReference, s, d)
		}
		if named, err = reference.ParseNormalizedNamed(lower + s[len(d):]); err != nil {
			return Ref{}, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
		}
	}
	named = reference.TagNameOnly(named) // adds :latest unless a tag or digest is given
	r := Ref{Repository: named.Name()}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		// The store names everything by sha256 (as does every registry in
		// practice); a sha512 reference could never match a stored image.
		if d.Digest().Algorithm() != "sha256" {
			return Ref{}, fmt.Errorf("%w %q: digest algorithm %s is not supported (only sha256)", ErrBadReference, s, d.Digest().Algorithm())
		}
		r.Digest = d.Digest().String()
	}
	if _, err := r.Name(); err != nil {
		return Ref{}, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
	}
	return r, nil
}

// String is the full normalised form: "docker.io/library/nginx:latest",
// "repo@sha256:…" or "repo:tag@sha256:…".
func (r Ref) String() string {
	s := r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Pinned is what a pull fetches: "repo@digest" when there is a digest,
// else "repo:tag".
func (r Ref) Pinned() string {
	if r.Digest != "" {
		return r.Repository + "@" + r.Digest
	}
	return r.Repository + ":" + r.Tag
}

// Name returns the repository as a go-containerregistry name, on the origin
// registry (docker.io becomes index.docker.io there).
func (r Ref) Name(opts ...name.Option) (name.Repository, error) {
	return name.NewRepository(r.Repository, opts...)
}

// Reference returns what to resolve on a registry: the digest when the
// reference has one (the tag is then ignored), else the tag.
func (r Ref) Reference(repo name.Repository) name.Reference {
	if r.Digest != "" {
		return repo.Digest(r.Digest)
	}
	return repo.Tag(r.Tag)
}

// digestRef is "repo@digest", the form recorded for a pulled image.
func digestRef(repository, digest string) string { return repository + "@" + digest }
