package volumes

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The kubelet's AtomicWriter layout (pkg/volume/util/atomic_writer.go), which
// applications watch for (inotify on ..data) and which `kubectl exec ls -la`
// shows:
//
//	<dir>/..2026_12_02_13_04_05.123456789/  the content of one version
//	<dir>/..data -> ..2026_12_02_13_04_05.123456789
//	<dir>/<first path element> -> ..data/<first path element>
//
// A container bind-mounts <dir> itself, so an update (a new timestamped
// directory, then rename(2) of a fresh ..data_tmp link over ..data) is one
// atomic step that every running container sees through the mount it already
// has: no file is ever half written from its point of view.
const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"

	maxFileNameLength = 255
	maxPathLength     = 4096
)

// file is one projected file: the kubelet's FileProjection.
type file struct {
	data []byte
	mode os.FileMode
}

// validatePath is AtomicWriter's validatePath, with its messages: relative,
// no ".." element, no leading "..", bounded lengths. It is what keeps a key or
// an item path from naming anything outside the volume or one of the writer's
// own reserved names.
func validatePath(p string) error {
	if p == "" {
		return fmt.Errorf("invalid path: must not be empty: %q", p)
	}
	if path.IsAbs(p) {
		return fmt.Errorf("invalid path: must be relative path: %s", p)
	}
	if len(p) > maxPathLength {
		return fmt.Errorf("invalid path: must be less than or equal to %d characters", maxPathLength)
	}
	items := strings.Split(p, "/")
	for _, item := range items {
		if item == ".." {
			return fmt.Errorf("invalid path: must not contain '..': %s", p)
		}
		if len(item) > maxFileNameLength {
			return fmt.Errorf("invalid path: filenames must be less than or equal to %d characters", maxFileNameLength)
		}
		if strings.ContainsRune(item, 0) {
			return fmt.Errorf("invalid path: must not contain NUL: %q", p)
		}
	}
	if strings.HasPrefix(items[0], "..") && len(items[0]) > 2 {
		return fmt.Errorf("invalid path: must not start with '..': %s", p)
	}
	return nil
}

func cleanPayload(payload map[string]file) (map[string]file, error) {
	out := make(map[string]file, len(payload))
	for k, f := range payload {
		if err := validatePath(k); err != nil {
			return nil, err
		}
		c := path.Clean(k)
		if c == "." {
			return nil, fmt.Errorf("invalid path: must name a file: %q", k)
		}
		out[c] = f
	}
	return out, nil
}

// writeAtomic projects payload into dir as the kubelet's AtomicWriter.Write
// does. Every name it touches in dir is checked, never followed: dir belongs
// to berth, but it must stay correct even if something planted symlinks in
// it (the volume is mounted read-only into containers; this is the second
// line).
func writeAtomic(dir string, payload map[string]file) error {
	clean, err := cleanPayload(payload)
	if err != nil {
		return err
	}
	// (1) the current version, if any, and only a name of our own form:
	// a ..data link to anything else (planted, or corrupt) is replaced, and
	// what it named is never read or removed.
	oldTs := ""
	if l, err := os.Readlink(filepath.Join(dir, dataDirName)); err == nil {
		if isTsName(l) {
			oldTs = l
		}
	} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("read %s: %w", dataDirName, err)
	}
	newPaths := map[string]bool{}
	for p := range clean {
		for s := p; s != "." && s != "/"; s = path.Dir(s) {
			newPaths[s] = true
		}
	}
	var remove []string
	if oldTs != "" {
		old, err := listTree(filepath.Join(dir, oldTs))
		if err != nil {
			return err
		}
		for _, p := range old {
			if !newPaths[p] {
				remove = append(remove, p)
			}
		}
		same, err := sameContent(filepath.Join(dir, oldTs), clean)
		if err != nil {
			return err
		}
		if same && len(remove) == 0 && visibleLinksOK(dir, clean) {
			return nil
		}
	}
	// (2) the new version in a fresh timestamped directory (mkdtemp: a new
	// name, created by us, so nothing in it can be a planted link).
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	// 0755 so that any user in the container can walk the tree, whatever
	// berthd's umask (the kubelet chmods for the same reason).
	if err := os.Chmod(ts, 0o755); err != nil {
		os.RemoveAll(ts)
		return err
	}
	if err := writePayload(ts, clean); err != nil {
		os.RemoveAll(ts)
		return err
	}
	// (3) the swap: a new link, renamed over ..data (rename(2) is atomic).
	tmp := filepath.Join(dir, newDataDirName)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		os.RemoveAll(ts)
		return err
	}
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		os.RemoveAll(ts)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataDirName)); err != nil {
		os.Remove(tmp)
		os.RemoveAll(ts)
		return err
	}
	// (4) user-visible links for the first element of each path.
	if err := createVisible(dir, clean); err != nil {
		return err
	}
	// (5) links of paths that went away (only top-level names are links;
	// deeper ones vanished with the old version).
	for _, p := range remove {
		if strings.Contains(p, "/") {
			continue
		}
		if err := unix.Unlinkat(unix.AT_FDCWD, filepath.Join(dir, p), 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove old %s: %w", p, err)
		}
	}
	// (6) the previous version; RemoveAll never follows a symlink.
	if oldTs != "" {
		if err := os.RemoveAll(filepath.Join(dir, oldTs)); err != nil {
			return err
		}
	}
	return nil
}

// isTsName is true for a name AtomicWriter itself makes: one plain element
// starting with ".." that is not one of the reserved links.
func isTsName(s string) bool {
	return strings.HasPrefix(s, "..") && len(s) > 2 && !strings.Contains(s, "/") &&
		s != dataDirName && s != newDataDirName
}

// listTree lists every path (files and directories) under root, relative,
// without following symlinks.
func listTree(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		out = append(out, rel)
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return out, err
}

// sameContent reports whether the version in ts already holds exactly the
// payload's data and modes; reading with O_NOFOLLOW so a planted link reads
// as "different", never as its target.
func sameContent(ts string, payload map[string]file) (bool, error) {
	root, err := unix.Open(ts, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, nil
	}
	defer unix.Close(root)
	for p, f := range payload {
		fd, err := openBeneath(root, p, unix.O_RDONLY)
		if err != nil {
			return false, nil
		}
		fh := os.NewFile(uintptr(fd), p)
		st, err := fh.Stat()
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != f.mode.Perm() {
			fh.Close()
			return false, nil
		}
		b := make([]byte, len(f.data)+1)
		n, _ := readFull(fh, b)
		fh.Close()
		if n != len(f.data) || !bytes.Equal(b[:n], f.data) {
			return false, nil
		}
	}
	return true, nil
}

func readFull(f *os.File, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := f.Read(b[n:])
		n += m
		if err != nil || m == 0 {
			return n, err
		}
	}
	return n, nil
}

// writePayload writes each file under ts. Directories are created with
// mkdirat and files with O_CREAT|O_EXCL|O_NOFOLLOW, all resolved beneath ts
// with no symlink allowed, so nothing here can write outside ts.
func writePayload(ts string, payload map[string]file) error {
	root, err := unix.Open(ts, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", ts, err)
	}
	defer unix.Close(root)
	keys := make([]string, 0, len(payload))
	for k := range payload {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, p := range keys {
		f := payload[p]
		if d := path.Dir(p); d != "." {
			if err := mkdirBeneath(root, d, 0o755); err != nil {
				return fmt.Errorf("create directory for %s: %w", p, err)
			}
		}
		fd, err := unix.Openat2(root, p, &unix.OpenHow{
			Flags:   unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Mode:    0o600,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		fh := os.NewFile(uintptr(fd), p)
		_, werr := fh.Write(f.data)
		// Explicit chmod: the mode must be what the pod asked, not what the
		// umask leaves of it.
		cerr := fh.Chmod(f.mode.Perm())
		if err := errors.Join(werr, cerr, fh.Close()); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// mkdirBeneath creates rel (and its parents) beneath the directory fd root,
// never through a symlink, giving each directory it creates the mode perm
// exactly. Existing directories are kept as they are.
func mkdirBeneath(root int, rel string, perm os.FileMode) error {
	cur := ""
	for _, el := range strings.Split(path.Clean(rel), "/") {
		if el == "" || el == "." {
			continue
		}
		if el == ".." {
			return fmt.Errorf("%q: must not contain '..'", rel)
		}
		cur = path.Join(cur, el)
		parent := path.Dir(cur)
		pfd, err := openBeneath(root, parent, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(pfd, el, uint32(perm.Perm()))
		created := err == nil
		if err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(pfd)
			return fmt.Errorf("mkdir %s: %w", cur, err)
		}
		unix.Close(pfd)
		fd, err := openBeneath(root, cur, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err // an existing non-directory or symlink: refused
		}
		if created {
			err = unix.Fchmod(fd, uint32(perm.Perm()))
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("chmod %s: %w", cur, err)
		}
	}
	return nil
}

// openBeneath opens rel beneath root with no symlink, magic link or ".."
// escape possible (openat2, Linux 5.6).
func openBeneath(root int, rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, &os.PathError{Op: "openat2", Path: rel, Err: err}
	}
	return fd, nil
}

// visibleLinksOK reports whether each first path element in dir is the
// link AtomicWriter makes (..data/<name>).
func visibleLinksOK(dir string, payload map[string]file) bool {
	for p := range payload {
		first, _, _ := strings.Cut(p, "/")
		if l, err := os.Readlink(filepath.Join(dir, first)); err != nil || l != path.Join(dataDirName, first) {
			return false
		}
	}
	return true
}

// createVisible makes <dir>/<first> -> ..data/<first> for each payload path.
// Anything else found under that name (a planted link to elsewhere, a file)
// is replaced rather than trusted, as the volume must name only its payload.
func createVisible(dir string, payload map[string]file) error {
	done := map[string]bool{}
	for p := range payload {
		first, _, _ := strings.Cut(p, "/")
		if done[first] {
			continue
		}
		done[first] = true
		want := path.Join(dataDirName, first)
		vis := filepath.Join(dir, first)
		l, err := os.Readlink(vis)
		if err == nil && l == want {
			continue
		}
		if err == nil || errors.Is(err, unix.EINVAL) {
			// A link elsewhere, or not a link: remove it (RemoveAll does
			// not follow a link; a planted directory goes with its content).
			if err := os.RemoveAll(vis); err != nil {
				return err
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.Symlink(want, vis); err != nil {
			return err
		}
	}
	return nil
}
