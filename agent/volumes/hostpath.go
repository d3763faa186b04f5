package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// resolveExisting resolves the symlinks of the longest existing ancestor of
// p (absolute, clean) and appends the part that does not exist yet.
func resolveExisting(p string) (string, error) {
	var tail []string
	cur := p
	for {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(append([]string{r}, tail...)...), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return "", err
		}
		tail = append([]string{filepath.Base(cur)}, tail...)
		cur = parent
	}
}

// allowedPrefix is the longest of prefixes (its symlinks resolved) that
// holds resolved; "" if none does.
func allowedPrefix(prefixes []string, resolved string) string {
	best := ""
	for _, p := range prefixes {
		if !filepath.IsAbs(p) {
			continue
		}
		rp, err := filepath.EvalSymlinks(filepath.Clean(p))
		if err != nil {
			continue
		}
		if (resolved == rp || strings.HasPrefix(resolved, strings.TrimSuffix(rp, "/")+"/")) && len(rp) > len(best) {
			best = rp
		}
	}
	return best
}

// fileType is hostutil's GetFileType vocabulary, which the kubelet's
// messages print.
func fileType(mode uint32) (string, error) {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return string(corev1.HostPathDirectory), nil
	case unix.S_IFREG:
		return string(corev1.HostPathFile), nil
	case unix.S_IFSOCK:
		return string(corev1.HostPathSocket), nil
	case unix.S_IFCHR:
		return string(corev1.HostPathCharDev), nil
	case unix.S_IFBLK:
		return string(corev1.HostPathBlockDev), nil
	}
	return "", errors.New("only recognise file, directory, socket, block device and character device")
}

// openHostPath checks a hostPath volume and returns an O_PATH descriptor
// of what it names:
//
//  1. the path (no ".." element, as the apiserver and the kubelet's SetUp
//     require) is resolved with its symlinks, and the result must lie under
//     one of prefixes (Config.HostPathPrefixes, berthd.yaml
//     volumes.hostPathPrefixes; for a claim's volume also
//     Config.LocalPathRoot), itself resolved;
//  2. the resolved path is then opened from the prefix with openat2
//     RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS: if anything was swapped for a
//     symlink since step 1, the open fails instead of following it;
//  3. `type` is checked on the descriptor (fstat), creating what the
//     *OrCreate types create (directories 0755, files 0644), with the
//     kubelet's messages naming the path as the pod wrote it.
//
// The caller pins the descriptor with a bind mount; the path is not used
// again.
func (m *Manager) openHostPath(hp *corev1.HostPathVolumeSource, prefixes []string) (*os.File, error) {
	p := hp.Path
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return nil, fmt.Errorf("invalid HostPath `%s`: must not contain '..': %w", p, errdefs.ErrInvalidArgument)
		}
	}
	if !filepath.IsAbs(p) {
		return nil, fmt.Errorf("invalid HostPath `%s`: must be an absolute path: %w", p, errdefs.ErrInvalidArgument)
	}
	typ := corev1.HostPathUnset
	if hp.Type != nil {
		typ = *hp.Type
	}
	switch typ {
	case corev1.HostPathUnset, corev1.HostPathDirectoryOrCreate, corev1.HostPathDirectory, corev1.HostPathFileOrCreate,
		corev1.HostPathFile, corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev:
	default:
		return nil, fmt.Errorf("%s is an invalid volume type: %w", typ, errdefs.ErrInvalidArgument)
	}
	resolved, err := resolveExisting(filepath.Clean(p))
	if err != nil {
		return nil, fmt.Errorf("hostPath %s: %w", p, err)
	}
	prefix := allowedPrefix(prefixes, resolved)
	if prefix == "" {
		return nil, fmt.Errorf("hostPath %s is not under a prefix berthd.yaml allows (volumes.hostPathPrefixes: %v): %w",
			p, m.cfg.HostPathPrefixes, errdefs.ErrPermissionDenied)
	}
	rel, err := filepath.Rel(prefix, resolved)
	if err != nil {
		return nil, err
	}
	afterCheck(p)
	// A prefix may name a single file or device (/dev/fuse): then it is
	// the whole volume, opened as it is.
	pfd, err := unix.Openat2(unix.AT_FDCWD, prefix, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, swapped(p, err)
	}
	var fd int
	if rel == "." {
		fd, pfd = pfd, -1
	} else {
		defer unix.Close(pfd)
		fd, err = openBeneath(pfd, rel, unix.O_PATH)
	}
	if errors.Is(err, unix.ENOENT) {
		switch typ {
		case corev1.HostPathDirectoryOrCreate, corev1.HostPathUnset:
			// Unset: the kubelet checks nothing and the runtime
			// (containerd, CRI-O) creates a missing source as a
			// directory; berth does the same, beneath the prefix.
			err = mkdirBeneath(pfd, rel, 0o755)
		case corev1.HostPathFileOrCreate:
			// Like the kubelet, FileOrCreate does not create the
			// parent directory.
			err = createFileBeneath(pfd, rel, 0o644)
		default:
			return nil, fmt.Errorf("hostPath %s doesn't exist: %w", p, errdefs.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("hostPath %s: create: %w", p, swapped(p, err))
		}
		fd, err = openBeneath(pfd, rel, unix.O_PATH)
	}
	if err != nil {
		return nil, swapped(p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	if err := checkType(p, typ, st.Mode); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func swapped(p string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("hostPath %s changed while it was checked (a symlink on the way): %w", p, errdefs.ErrPermissionDenied)
	}
	return fmt.Errorf("hostPath %s: %w", p, err)
}

// checkType is the hostPath plugin's checkType on a descriptor's mode.
func checkType(p string, typ corev1.HostPathType, mode uint32) error {
	var want corev1.HostPathType
	var desc string
	switch typ {
	case corev1.HostPathUnset:
		return nil
	case corev1.HostPathDirectoryOrCreate, corev1.HostPathDirectory:
		want, desc = corev1.HostPathDirectory, "directory"
	case corev1.HostPathFileOrCreate, corev1.HostPathFile:
		want, desc = corev1.HostPathFile, "file"
	case corev1.HostPathSocket:
		want, desc = corev1.HostPathSocket, "socket file"
	case corev1.HostPathCharDev:
		want, desc = corev1.HostPathCharDev, "character device"
	case corev1.HostPathBlockDev:
		want, desc = corev1.HostPathBlockDev, "block device"
	}
	got, err := fileType(mode)
	if err != nil {
		return fmt.Errorf("hostPath type check failed, %s is not a %s, unable to determine its type: %w: %w", p, desc, err, errdefs.ErrInvalidArgument)
	}
	if got != string(want) {
		return fmt.Errorf("hostPath type check failed: %s is not a %s, it's a %s: %w", p, desc, got, errdefs.ErrInvalidArgument)
	}
	return nil
}

// createFileBeneath creates an empty file rel beneath root (its parent must
// exist), reaching it through no symlink; an existing one is kept.
func createFileBeneath(root int, rel string, perm os.FileMode) error {
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Mode:    uint64(perm),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fchmod(fd, uint32(perm))
}
