package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// ArchiveOptions bound one ReceiveArchive.
type ArchiveOptions struct {
	// MaxBytes bounds the archive's file contents in total (0: no bound
	// but the filesystem's free space).
	MaxBytes int64
	// Progress, if set, receives the bytes of file contents copied so far.
	Progress func(copied int64)
}

// ReceiveArchive copies an oci-archive (the tar of an OCI image layout, as
// `podman save --format oci-archive`, `skopeo copy … oci-archive:`, or
// `tar -C layout -c .` write it) from r into a new staging directory under
// the store's tmp/ (the same filesystem as the store, emptied by New after
// a crash) and returns it; the caller removes it with os.RemoveAll when
// done. Nothing is unpacked: layer blobs stay the compressed files they
// are, to be judged (by the manifest digest the layout names) and only then
// unpacked by Import.
//
// The tar may hold only what a layout holds: oci-layout, index.json and
// blobs/<algorithm>/<encoded>, as regular files, and the directories above
// them. Anything else (a link, a device, a path with "..", an absolute
// path, a file of another name, the same file twice) fails the receive,
// naming the entry, and leaves nothing behind.
func (s *Store) ReceiveArchive(ctx context.Context, r io.Reader, o ArchiveOptions) (string, error) {
	staging, err := os.MkdirTemp(s.tmpDir(), "archive-")
	if err != nil {
		return "", fmt.Errorf("oci-archive: %w", err)
	}
	if err := receive(ctx, r, staging, o); err != nil {
		os.RemoveAll(staging)
		return "", err
	}
	return staging, nil
}

func receive(ctx context.Context, r io.Reader, dir string, o ArchiveOptions) error {
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	var copied int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("oci-archive: not a tar archive: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		name, ok := archiveName(h.Name)
		if !ok {
			return fmt.Errorf("oci-archive: entry %q: an OCI layout holds only oci-layout, index.json and blobs/<algorithm>/<digest>: %w", h.Name, errdefs.ErrInvalidArgument)
		}
		if h.Typeflag == tar.TypeReg && dockerExtras[name] {
			// docker save (25+) and containerd's export add their own
			// index beside the OCI layout; it is not read (the tar reader
			// skips its body).
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if parts := strings.Split(name, "/"); name != "" && name != "blobs" && (len(parts) != 2 || parts[0] != "blobs" || !validComponent(parts[1])) {
				return fmt.Errorf("oci-archive: directory %q is not part of an OCI layout: %w", h.Name, errdefs.ErrInvalidArgument)
			}
			if name != "" {
				if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
					return fmt.Errorf("oci-archive: %w", err)
				}
			}
			continue
		case tar.TypeReg:
		default:
			return fmt.Errorf("oci-archive: entry %q is not a regular file or directory (type %q): %w", h.Name, h.Typeflag, errdefs.ErrInvalidArgument)
		}
		if !layoutFile(name) {
			return fmt.Errorf("oci-archive: entry %q: an OCI layout holds only oci-layout, index.json and blobs/<algorithm>/<digest>: %w", h.Name, errdefs.ErrInvalidArgument)
		}
		if seen[name] {
			return fmt.Errorf("oci-archive: entry %q appears twice: %w", h.Name, errdefs.ErrInvalidArgument)
		}
		seen[name] = true
		if (name == "index.json" || name == "oci-layout") && h.Size > maxManifestBytes {
			return fmt.Errorf("oci-archive: %s is larger than %d bytes: %w", name, maxManifestBytes, errdefs.ErrInvalidArgument)
		}
		if o.MaxBytes > 0 && copied+h.Size > o.MaxBytes {
			return &TooLargeError{Limit: o.MaxBytes}
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("oci-archive: %w", err)
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("oci-archive: %w", err)
		}
		n, err := io.Copy(f, &ctxReader{ctx: ctx, r: io.LimitReader(tr, h.Size)})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && n != h.Size {
			err = fmt.Errorf("%w: %w", io.ErrUnexpectedEOF, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			// ENOSPC and friends keep their errno; a short archive is
			// the client's error.
			return fmt.Errorf("oci-archive: %s: %w", h.Name, err)
		}
		copied += n
		if o.Progress != nil {
			o.Progress(copied)
		}
	}
	if !seen["index.json"] {
		return fmt.Errorf("oci-archive: no index.json: not an OCI image layout: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// dockerExtras are the files docker save and containerd's export write
// beside an OCI layout (Docker's own manifest and repositories index).
var dockerExtras = map[string]bool{"manifest.json": true, "repositories": true}

// TooLargeError is an archive past ArchiveOptions.MaxBytes (invalid
// argument; the API answers it as the apiserver answers an oversized
// body, 413).
type TooLargeError struct{ Limit int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("oci-archive: larger than %d bytes", e.Limit)
}

// InvalidParameter marks the class (errdefs.ErrInvalidArgument).
func (e *TooLargeError) InvalidParameter() {}

// archiveName cleans a tar entry's name ("./blobs/sha256/…", "blobs/") to
// its path in the layout; ok is false for absolute names and any "..".
func archiveName(n string) (string, bool) {
	if strings.HasPrefix(n, "/") {
		return "", false
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", false
		}
	}
	c := path.Clean(n)
	if c == "." {
		return "", true
	}
	return c, true
}

// layoutFile: name is a file an OCI image layout holds
// (image-spec's image-layout.md).
func layoutFile(name string) bool {
	if name == "oci-layout" || name == "index.json" {
		return true
	}
	parts := strings.Split(name, "/")
	return len(parts) == 3 && parts[0] == "blobs" && validComponent(parts[1]) && validComponent(parts[2])
}

func validComponent(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '+' || r == '=') {
			return false
		}
	}
	return s != "." && s != ".."
}

// ctxReader stops a copy when ctx ends (the client hung up).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// NamedRefs are the references to record for an image whose layout names it
// name (its org.opencontainers.image.ref.name): "repo@<digest>" and
// "repo:tag", as a pull of that reference records them, so that a pod
// naming the image finds it in the store. A bare tag ("1.0", "latest"),
// which image-spec allows there, names no repository, and a digest
// reference names nothing a pull would record as a tag: neither gives
// references. digest is the image's manifest digest.
func NamedRefs(name, digest string) []string {
	if digest == "" || !strings.ContainsAny(name, "/:") || strings.Contains(name, "@") {
		return nil
	}
	r, err := ParseRef(name)
	if err != nil {
		return nil
	}
	return []string{digestRef(r.Repository, digest), r.Repository + ":" + r.Tag}
}
