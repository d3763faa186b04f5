package verify

import (
	"fmt"
	"net"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// dockerHub is how containers-policy spells Docker Hub; go-containerregistry
// spells it index.docker.io (name.DefaultRegistry). Policies are written in
// the containers form ("docker.io/library/busybox"), so identities are too.
const dockerHub = "docker.io"

// identityOf renders repo in the fully expanded form containers-policy scopes
// use: host[:port]/path, with Docker Hub as docker.io and its official images
// under library/ (go-containerregistry already adds library/). The host is
// lower-cased: DNS names are case-insensitive (RFC 4343), so
// Registry.Example:5000 is the registry registry.example:5000 and must meet
// the same scopes and signature identities, or a scope would silently not
// apply to an image spelled differently; the path is case-sensitive, and a
// registry path is lower-case anyway (go-containerregistry refuses upper case
// there).
func identityOf(repo name.Repository) string {
	host := strings.ToLower(repo.RegistryStr())
	if host == name.DefaultRegistry {
		host = dockerHub
	}
	return host + "/" + repo.RepositoryStr()
}

// lowerScopeHost lower-cases the registry part of a docker scope or of a
// repository value written in the policy (host[:port], host[:port]/path…,
// *.domain), the form identityOf gives images, so that matching compares
// like with like. Only the part before the first "/" is the host.
func lowerScopeHost(scope string) string {
	host, rest, hasPath := strings.Cut(scope, "/")
	if !hasPath {
		return strings.ToLower(scope)
	}
	return strings.ToLower(host) + "/" + rest
}

// candidateScopes lists the docker scopes that could match img, most specific
// first, as containers/image's DockerReferenceIdentity +
// DockerReferenceNamespaces do: repo@digest, repo, every parent namespace, the
// host[:port], then "*.<parent domain>" for each parent domain of the host
// name (port dropped). IP literals have no parent domains.
func candidateScopes(img imageID) []string {
	out := []string{img.repo + "@" + img.digest.String()}
	s := img.repo
	for {
		out = append(out, s)
		i := strings.LastIndex(s, "/")
		if i < 0 {
			break
		}
		s = s[:i]
	}
	host := hostName(s)
	if net.ParseIP(host) != nil {
		return out
	}
	for {
		i := strings.Index(host, ".")
		if i < 0 {
			break
		}
		host = host[i+1:]
		out = append(out, "*."+host)
	}
	return out
}

// hostName strips the port from host[:port] (IPv6 literals are bracketed).
func hostName(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// checkDockerScope validates a scope key of transports.docker. The accepted
// forms are containers-policy's, restricted to what can match an image that
// berth always identifies by digest:
//
//	""                               transport default
//	host[:port]                      a registry
//	host[:port]/ns[/…]/repo          a namespace or a repository
//	host[:port]/…/repo@sha256:<hex>  one image
//	*.example.com                    every registry under a domain
//
// A tag scope ("…/repo:tag") could never match a digest and is refused rather
// than silently ignored; so is a short name ("busybox"), which containers
// would never match either because identities are fully expanded.
func checkDockerScope(scope string) error {
	switch {
	case scope == "":
		return nil
	case strings.HasPrefix(scope, "*."):
		domain := scope[2:]
		if strings.ContainsAny(domain, "*:/@") || domain == "" || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
			return fmt.Errorf("wildcard scope %q must be *.<domain> with a plain DNS domain (containers-policy.json(5))", scope)
		}
		if _, err := name.NewRegistry(domain, name.StrictValidation); err != nil {
			return fmt.Errorf("wildcard scope %q: %w", scope, err)
		}
		return nil
	case strings.Contains(scope, "*"):
		return fmt.Errorf("scope %q: only a leading \"*.\" wildcard is supported", scope)
	case !strings.Contains(scope, "/"):
		return checkHost(scope)
	}
	return checkRepoScope(scope, true)
}

// checkHost validates a registry host[:port] as written in a policy.
func checkHost(scope string) error {
	if _, err := name.NewRegistry(scope, name.StrictValidation); err != nil {
		return fmt.Errorf("scope %q: %w", scope, err)
	}
	if strings.EqualFold(scope, name.DefaultRegistry) {
		return fmt.Errorf("scope %q: write Docker Hub as %q, the fully expanded form containers-policy uses", scope, dockerHub)
	}
	return nil
}

// checkRepoScope validates host[:port]/path[@digest] as written in a policy:
// the host must be explicit (containers-policy scopes are fully expanded; a
// first component without "." or ":" that is not localhost is a Docker Hub
// short name, which never matches), the path must be a valid repository path.
// The path is not rewritten: "docker.io/myorg" is a namespace, not the
// repository docker.io/library/myorg.
func checkRepoScope(scope string, allowDigest bool) error {
	repoPart, digestPart, hasDigest := strings.Cut(scope, "@")
	if hasDigest && !allowDigest {
		return fmt.Errorf("%q must not carry a digest", scope)
	}
	host, _, _ := strings.Cut(repoPart, "/")
	if host != "localhost" && !strings.ContainsAny(host, ".:") {
		return fmt.Errorf("scope %q is not in fully expanded form: it must start with a registry host (e.g. docker.io/library/busybox, not busybox)", scope)
	}
	if err := checkHost(host); err != nil {
		return err
	}
	if last := repoPart[strings.LastIndex(repoPart, "/")+1:]; strings.Contains(last, ":") {
		return fmt.Errorf("scope %q names a tag; berth judges images by digest, so a tag scope could never match: use the repository %q or repo@sha256:… instead",
			scope, repoPart[:strings.LastIndex(repoPart, ":")])
	}
	if _, err := name.NewRepository(repoPart); err != nil {
		return fmt.Errorf("scope %q: %w", scope, err)
	}
	if hasDigest {
		if _, err := name.NewDigest(repoPart + "@" + digestPart); err != nil {
			return fmt.Errorf("scope %q: %w", scope, err)
		}
	}
	return nil
}

// checkRepoValue validates a repository or namespace written as a policy
// value (signedIdentity fields): like a scope, but never with tag or digest.
func checkRepoValue(v string) error {
	if strings.Contains(v, "@") {
		return fmt.Errorf("%q must be a repository or namespace, without a digest", v)
	}
	if last := v[strings.LastIndex(v, "/")+1:]; strings.Contains(v, "/") && strings.Contains(last, ":") {
		return fmt.Errorf("%q must be a repository or namespace, without a tag", v)
	}
	return checkRepoScope(v, false)
}

// normalizeRepoValue parses a repository written in a policy value
// (exactRepository.dockerRepository) into identity form.
func normalizeRepoValue(v string) (string, error) {
	if err := checkRepoValue(v); err != nil {
		return "", err
	}
	repo, err := name.NewRepository(v)
	if err != nil {
		return "", fmt.Errorf("%q: %w", v, err)
	}
	return identityOf(repo), nil
}

// claimedRepository turns the docker-reference a cosign signature claims
// (a repository, sometimes with a tag or digest) into identity form.
func claimedRepository(ref string) (string, error) {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return "", err
	}
	return identityOf(r.Context()), nil
}

// hasPathPrefix reports whether s is prefix or lies under it, on a path
// component boundary (so registry.local:5000/app does not cover
// registry.local:5000/apps).
func hasPathPrefix(s, prefix string) bool {
	return s == prefix || strings.HasPrefix(s, prefix+"/")
}
