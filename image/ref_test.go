package image

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := []struct {
		in                  string
		repo, tag, digest   string
		str, pinned, origin string // origin: the go-containerregistry repository (docker.io → index.docker.io)
	}{
		{in: "nginx", repo: "docker.io/library/nginx", tag: "latest",
			str: "docker.io/library/nginx:latest", pinned: "docker.io/library/nginx:latest", origin: "index.docker.io/library/nginx"},
		{in: "nginx:1.25", repo: "docker.io/library/nginx", tag: "1.25",
			str: "docker.io/library/nginx:1.25", pinned: "docker.io/library/nginx:1.25", origin: "index.docker.io/library/nginx"},
		{in: "user/app", repo: "docker.io/user/app", tag: "latest",
			str: "docker.io/user/app:latest", pinned: "docker.io/user/app:latest", origin: "index.docker.io/user/app"},
		{in: "docker.io/library/nginx:latest", repo: "docker.io/library/nginx", tag: "latest",
			str: "docker.io/library/nginx:latest", pinned: "docker.io/library/nginx:latest", origin: "index.docker.io/library/nginx"},
		{in: "host:5000/a/b", repo: "host:5000/a/b", tag: "latest",
			str: "host:5000/a/b:latest", pinned: "host:5000/a/b:latest", origin: "host:5000/a/b"},
		{in: "localhost/app:v1", repo: "localhost/app", tag: "v1",
			str: "localhost/app:v1", pinned: "localhost/app:v1", origin: "localhost/app"},
		{in: "127.0.0.1:5001/x/y/z:tag_1.0-rc", repo: "127.0.0.1:5001/x/y/z", tag: "tag_1.0-rc",
			str: "127.0.0.1:5001/x/y/z:tag_1.0-rc", pinned: "127.0.0.1:5001/x/y/z:tag_1.0-rc", origin: "127.0.0.1:5001/x/y/z"},
		// A digest alone: no tag is added (kubelet and containerd agree).
		{in: "nginx@" + d, repo: "docker.io/library/nginx", digest: d,
			str: "docker.io/library/nginx@" + d, pinned: "docker.io/library/nginx@" + d, origin: "index.docker.io/library/nginx"},
		// Registry hosts are lower-cased, with the normalisation of the
		// lower-case form (Docker Hub's library/ included).
		{in: "Registry.Example:5000/a/b:v1", repo: "registry.example:5000/a/b", tag: "v1",
			str: "registry.example:5000/a/b:v1", pinned: "registry.example:5000/a/b:v1", origin: "registry.example:5000/a/b"},
		{in: "Docker.IO/nginx", repo: "docker.io/library/nginx", tag: "latest",
			str: "docker.io/library/nginx:latest", pinned: "docker.io/library/nginx:latest", origin: "index.docker.io/library/nginx"},
		{in: "LocalHost/app", repo: "localhost/app", tag: "latest",
			str: "localhost/app:latest", pinned: "localhost/app:latest", origin: "localhost/app"},
		// Tag and digest: both kept, the digest decides.
		{in: "ghcr.io/o/app:v2@" + d, repo: "ghcr.io/o/app", tag: "v2", digest: d,
			str: "ghcr.io/o/app:v2@" + d, pinned: "ghcr.io/o/app@" + d, origin: "ghcr.io/o/app"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			r, err := ParseRef(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if r.Repository != c.repo || r.Tag != c.tag || r.Digest != c.digest {
				t.Errorf("ParseRef = %+v, want repo %q tag %q digest %q", r, c.repo, c.tag, c.digest)
			}
			if r.String() != c.str || r.Pinned() != c.pinned {
				t.Errorf("String %q Pinned %q, want %q %q", r.String(), r.Pinned(), c.str, c.pinned)
			}
			repo, err := r.Name()
			if err != nil || repo.Name() != c.origin {
				t.Errorf("Name() = %v, %v; want %s", repo, err, c.origin)
			}
			want := c.origin + ":" + c.tag
			if c.digest != "" {
				want = c.origin + "@" + c.digest
			}
			if got := r.Reference(repo).Name(); got != want {
				t.Errorf("Reference = %s, want %s", got, want)
			}
			// Normalising is idempotent.
			again, err := ParseRef(r.String())
			if err != nil || again != r {
				t.Errorf("ParseRef(%q) = %+v, %v; want %+v", r.String(), again, err, r)
			}
		})
	}
}

func TestParseRefErrors(t *testing.T) {
	cases := []struct{ in, why string }{
		{"", "empty"},
		{"Nginx", "upper case repository"},
		{"nginx:", "empty tag"},
		{"nginx:a:b", "two tags"},
		{"nginx@sha256:abc", "short digest"},
		{"nginx@md5:0123456789abcdef0123456789abcdef", "unknown digest algorithm"},
		{"nginx@sha512:" + strings.Repeat("ab", 64), "sha512 (the store is sha256 only)"},
		{"-nginx", "leading dash"},
		{"host:port/app", "non-numeric port"},
		{"nginx:" + strings.Repeat("t", 129), "tag longer than 128"},
		{"https://registry/app", "a URL"},
		{"a b", "space"},
		// An upper-case first component is a host to distribution/reference;
		// in lower case it would be a Docker Hub namespace.
		{"MyHost/app", "single-label upper-case host"},
	}
	for _, c := range cases {
		t.Run(c.why, func(t *testing.T) {
			r, err := ParseRef(c.in)
			if !errors.Is(err, ErrBadReference) {
				t.Fatalf("ParseRef(%q) = %+v, %v; want ErrBadReference", c.in, r, err)
			}
		})
	}
}
