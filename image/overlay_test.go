package image

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/test/testenv"
)

// mountOverlay mounts the image's layers read-write (with an upper and work
// dir under a temp dir) and unmounts in Cleanup.
func mountOverlay(t *testing.T, lower []string) string {
	t.Helper()
	base := t.TempDir()
	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay %s: %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount %s: %v", merged, err)
			unix.Unmount(merged, unix.MNT_DETACH)
		}
	})
	return merged
}

// TestImportOverlayMount imports a three-layer image (whiteout, opaque dir,
// hardlink, setuid and foreign-owned files) and lets the kernel's overlayfs
// judge the unpacked layers.
func TestImportOverlayMount(t *testing.T) {
	testenv.RequireRoot(t)
	img, _ := openTestImage(t, true, true)
	s := newStore(t)
	im, err := s.Import(context.Background(), img, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	merged := mountOverlay(t, s.LayerDirs(im))

	if _, err := os.Lstat(filepath.Join(merged, "etc/secret")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("etc/secret deleted by a whiteout: Lstat = %v, want not-exist", err)
	}
	if got := dirNames(t, filepath.Join(merged, "data")); !slices.Equal(got, []string{"new.txt"}) {
		t.Errorf("opaque data/ shows %v, want only the upper layer's [new.txt]", got)
	}
	if b, err := os.ReadFile(filepath.Join(merged, "etc/passwd")); err != nil || string(b) != passwdV3 {
		t.Errorf("etc/passwd = %q, %v; want the top layer's", b, err)
	}
	var f, l unix.Stat_t
	if err := unix.Lstat(filepath.Join(merged, "usr/share/f"), &f); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(merged, "usr/share/link"), &l); err != nil {
		t.Fatal(err)
	}
	if f.Ino != l.Ino || f.Nlink != 2 {
		t.Errorf("hardlink: inodes %d/%d nlink %d, want one inode with 2 links", f.Ino, l.Ino, f.Nlink)
	}
	modes := []struct {
		rel      string
		uid, gid uint32
		mode     uint32
	}{
		{"usr/share/f", 1000, 1000, unix.S_IFREG | 0o640},
		{"bin/tool", 0, 0, unix.S_IFREG | 0o4755},
		{"tmp", 0, 0, unix.S_IFDIR | 0o1777},
		{"etc/abs", 0, 0, unix.S_IFLNK | 0o777},
	}
	for _, m := range modes {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(merged, m.rel), &st); err != nil {
			t.Errorf("%s: %v", m.rel, err)
			continue
		}
		if st.Uid != m.uid || st.Gid != m.gid || st.Mode != m.mode {
			t.Errorf("%s: %d:%d %o, want %d:%d %o", m.rel, st.Uid, st.Gid, st.Mode, m.uid, m.gid, m.mode)
		}
	}
	if target, err := os.Readlink(filepath.Join(merged, "etc/abs")); err != nil || target != "/etc/group" {
		t.Errorf("etc/abs -> %q, %v; want the absolute target kept", target, err)
	}

	// ReadFile must agree with the kernel on every path that does not follow
	// an absolute or escaping symlink (those the kernel would resolve on the
	// host here, outside a container's root).
	for _, p := range []string{"etc/passwd", "etc/group", "etc/secret", "etc/alt", "data/old.txt",
		"data/new.txt", "data/keep/x", "usr/share/link", "usr/share/f", "etc/nothere", "bin/tool"} {
		kb, kerr := os.ReadFile(filepath.Join(merged, p))
		ob, oerr := s.ReadFile(im, "/"+p)
		switch {
		case errors.Is(kerr, fs.ErrNotExist):
			if !errors.Is(oerr, fs.ErrNotExist) {
				t.Errorf("/%s: kernel says not-exist, ReadFile = %q, %v", p, ob, oerr)
			}
		case kerr != nil:
			t.Errorf("/%s: kernel read: %v", p, kerr)
		case oerr != nil || string(ob) != string(kb):
			t.Errorf("/%s: kernel %q, ReadFile %q, %v", p, kb, ob, oerr)
		}
	}
	if b, err := s.ReadFile(im, "/etc/abs"); err != nil || string(b) != groupV1 {
		t.Errorf("ReadFile(/etc/abs) = %q, %v; want the image's /etc/group", b, err)
	}
	if _, err := s.ReadFile(im, "/etc/escape"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile(/etc/escape) = %v, want not-exist (resolved inside the image, not the host)", err)
	}

	// The store stays usable as an overlayfs lower while mounted: a second
	// image with a repeated layer gets one lowerdir per distinct layer
	// (overlayfs refuses a repeated lowerdir).
	layers := testLayers(t, true, true)
	rep := mkImage(t, HostPlatform(), layers[1], layers[2], layers[1])
	im2, err := s.Import(context.Background(), rep, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	merged2 := mountOverlay(t, s.LayerDirs(im2))
	if _, err := os.Lstat(filepath.Join(merged2, "data/new.txt")); err != nil {
		t.Errorf("repeated-layer image: data/new.txt: %v", err)
	}
}

// TestImportReadFileOpaque covers ReadFile through an opaque directory,
// which needs root (trusted.overlay.opaque).
func TestImportReadFileOpaque(t *testing.T) {
	testenv.RequireRoot(t)
	img, _ := openTestImage(t, true, true)
	s := newStore(t)
	im, err := s.Import(context.Background(), img, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadFile(im, "/data/old.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile(/data/old.txt) under an opaque dir = %v, want not-exist", err)
	}
	if _, err := s.ReadFile(im, "/data/keep/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile(/data/keep/x) under an opaque dir = %v, want not-exist", err)
	}
	if b, err := s.ReadFile(im, "/data/new.txt"); err != nil || string(b) != "new" {
		t.Errorf("ReadFile(/data/new.txt) = %q, %v", b, err)
	}
}
