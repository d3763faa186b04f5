package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/berth-dev/berth/unitgen"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// afterCheck runs between a path's check and its use; only tests set it, to
// swap a symlink in exactly that window.
var afterCheck = func(string) {}

// ExpandSubPathExpr is the kubelet's ExpandContainerVolumeMounts: $(VAR)
// references expanded from the container's environment (env holds the
// container's resolved variables), $$ an escaped $; a variable that is
// unset or empty is an error naming every such variable.
func ExpandSubPathExpr(expr string, env map[string]string) (string, error) {
	missing := map[string]bool{}
	out := unitgen.Expand(expr, func(k string) (string, bool) {
		v, ok := env[k]
		if !ok || v == "" {
			missing[k] = true
		}
		return v, true
	})
	if len(missing) > 0 {
		keys := make([]string, 0, len(missing))
		for k := range missing {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return "", fmt.Errorf("missing value for %s: %w", strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
	}
	return out, nil
}

// checkSubPath is the kubelet's makeMounts check of a subPath, with its
// messages: relative, and no ".." element (ValidatePathNoBacksteps).
func checkSubPath(sub string) error {
	if filepath.IsAbs(sub) {
		return fmt.Errorf("error SubPath `%s` must not be an absolute path: %w", sub, errdefs.ErrInvalidArgument)
	}
	for _, el := range strings.Split(filepath.ToSlash(sub), "/") {
		if el == ".." {
			return fmt.Errorf("unable to provision SubPath `%s`: must not contain '..': %w", sub, errdefs.ErrInvalidArgument)
		}
	}
	if strings.ContainsRune(sub, 0) {
		return fmt.Errorf("unable to provision SubPath `%q`: NUL: %w", sub, errdefs.ErrInvalidArgument)
	}
	return nil
}

// OpenSubPath opens subPath beneath the volume directory root for a bind
// mount, the way that closes CVE-2017-1002101 and CVE-2021-25741: the
// result is an O_PATH descriptor of an inode that was reached from root
// through no symlink and no "..", and a bind mount made from
// /proc/self/fd/N mounts exactly that inode, whatever happens to the path
// afterwards.
//
// With followLinks false (volumes a container can write: emptyDir,
// hostPath) any symlink component is refused. With followLinks true
// (configMap, secret, downwardAPI, projected: berth wrote every link in
// them, and each key is a link into ..data) the links are resolved first, as
// the kubelet's doBindSubPath does with EvalSymlinks, the result must lie
// within root, and that resolved path is then opened with no symlink
// allowed: a link swapped in after the check fails the open.
//
// The errors never name host paths, only the subPath, since they reach the
// pod's events.
func OpenSubPath(root, subPath string, followLinks bool) (*os.File, error) {
	if err := checkSubPath(subPath); err != nil {
		return nil, err
	}
	rel := filepath.Clean(subPath)
	if followLinks && rel != "." {
		rr, err := filepath.EvalSymlinks(root)
		if err != nil {
			return nil, fmt.Errorf("subPath %q: volume: %w", subPath, err)
		}
		rp, err := filepath.EvalSymlinks(filepath.Join(rr, rel))
		if err != nil {
			return nil, fmt.Errorf("subPath %q: %w", subPath, unwrapPath(err))
		}
		r, err := filepath.Rel(rr, rp)
		if err != nil || r == ".." || strings.HasPrefix(r, "../") {
			return nil, fmt.Errorf("subPath %q: not within the volume: %w", subPath, errdefs.ErrPermissionDenied)
		}
		rel = r
		root = rr
	}
	rfd, err := unix.Openat2(unix.AT_FDCWD, root, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
	})
	if err != nil {
		return nil, fmt.Errorf("subPath %q: open volume: %w", subPath, err)
	}
	defer unix.Close(rfd)
	afterCheck(subPath)
	fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("subPath %q: a symlink on the way is refused: %w", subPath, errdefs.ErrPermissionDenied)
	case errors.Is(err, unix.EXDEV):
		return nil, fmt.Errorf("subPath %q: leaves the volume: %w", subPath, errdefs.ErrPermissionDenied)
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("subPath %q: %w", subPath, errdefs.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("subPath %q: %w", subPath, err)
	}
	// O_PATH|O_NOFOLLOW on a final symlink opens the link itself: the
	// kubelet's "unexpected symlink found" case.
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("subPath %q: %w", subPath, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		unix.Close(fd)
		return nil, fmt.Errorf("subPath %q: a symlink on the way is refused: %w", subPath, errdefs.ErrPermissionDenied)
	}
	return os.NewFile(uintptr(fd), subPath), nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, unix.ENOENT) {
			return errdefs.ErrNotFound
		}
		return pe.Err
	}
	return err
}

// makeSubPath is the kubelet's SafeMakeDir: a missing subPath is created as
// a directory beneath root, with root's mode, through no symlink.
func makeSubPath(root, subPath string) error {
	if err := checkSubPath(subPath); err != nil {
		return err
	}
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rfd)
	var st unix.Stat_t
	if err := unix.Fstat(rfd, &st); err != nil {
		return err
	}
	fd, err := openBeneath(rfd, filepath.Clean(subPath), unix.O_PATH)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return nil // OpenSubPath reports it
	}
	return mkdirBeneath(rfd, filepath.Clean(subPath), os.FileMode(st.Mode&0o777))
}
