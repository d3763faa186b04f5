package volumes

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountPoints lists the mount points at or below dir, in the mount
// namespace of the calling thread (/proc/thread-self: a test may run on a
// thread with a namespace of its own; in berthd it is the host's).
func mountPoints(dir string) ([]string, error) {
	all, err := MountTable()
	if err != nil {
		return nil, err
	}
	// mountinfo holds resolved paths: a state directory reached through a
	// symlink must still find its mounts (or Teardown would remove through
	// a pin).
	dir = resolved(dir)
	var out []string
	for _, m := range all {
		if m.Path == dir || strings.HasPrefix(m.Path, dir+"/") {
			out = append(out, m.Path)
		}
	}
	return out, nil
}

// MountInfo is one line of the mount table.
type MountInfo struct {
	Path, FSType string
	Source       string // the mount source (a device, or the file system's name)
	SuperOptions string // the file system's own options (prjquota, ...)
}

// MountTable reads this thread's /proc/thread-self/mountinfo. berth's one
// mountinfo parser (agent/pods lists and removes pods' mounts with it;
// agent/storage looks for project quotas).
func MountTable() ([]MountInfo, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountTable(f)
}

// ParseMountTable parses a mountinfo table (proc(5)): field 5 is the mount
// point (space, tab, newline and backslash escaped as octal); after the
// " - " separator come the file system type, the source and the super
// options.
func ParseMountTable(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := MountInfo{Path: unescapeMountinfo(fields[4])}
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				m.FSType = fields[i+1]
				if i+3 < len(fields) {
					m.Source, m.SuperOptions = unescapeMountinfo(fields[i+2]), fields[i+3]
				}
				break
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// resolved is p with its symlinks resolved, as far as it exists.
func resolved(p string) string {
	if r, err := resolveExisting(filepath.Clean(p)); err == nil {
		return r
	}
	return filepath.Clean(p)
}

func isMountPoint(p string) (bool, error) {
	mps, err := mountPoints(p)
	if err != nil {
		return false, err
	}
	for _, mp := range mps {
		if mp == resolved(p) {
			return true, nil
		}
	}
	return false, nil
}

// unmountAll detaches every mount at or below dir, deepest first (stacked
// mounts on one point each take a round).
func unmountAll(dir string) error {
	for range 64 {
		mps, err := mountPoints(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
		}
	}
	return fmt.Errorf("mounts below %s keep reappearing", dir)
}

// RemoveTree is removeTree for other packages: agent/storage removes a
// provisioned volume's directory with it.
func RemoveTree(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%q: not absolute", p)
	}
	return removeTree(filepath.Clean(p))
}

// removeTree unmounts everything below p and removes it. It refuses to
// remove while any mount remains below p: RemoveAll through a hostPath pin
// would delete the host's files.
func removeTree(p string) error {
	if err := unmountAll(p); err != nil {
		return err
	}
	if mps, err := mountPoints(p); err != nil {
		return err
	} else if len(mps) > 0 {
		return fmt.Errorf("not removing %s: still mounted at %s", p, mps[0])
	}
	if err := os.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// mountTmpfs mounts a tmpfs on dir. size 0 leaves the kernel's default
// (half of RAM). noswap (Linux 6.4) keeps secret pages off swap as the
// kubelet asks when swap is on; older kernels refuse the option with EINVAL
// and get the mount without it.
func mountTmpfs(dir string, size int64) error {
	opts := []string{"mode=1777"}
	if size > 0 {
		opts = append(opts, fmt.Sprintf("size=%d", size))
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	err := unix.Mount("tmpfs", dir, "tmpfs", flags, strings.Join(append(opts, "noswap"), ","))
	if errors.Is(err, unix.EINVAL) {
		err = unix.Mount("tmpfs", dir, "tmpfs", flags, strings.Join(opts, ","))
	}
	if err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// pin bind-mounts the inode behind the descriptor f onto target (created
// as a directory or an empty file to match it). From then on target shows
// that inode and nothing else: a path swapped afterwards cannot redirect
// it, and berth-init mounts target, a mount point in berth's own 0700
// directory that no workload can write.
func pin(f *os.File, target string) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if ok, err := isMountPoint(target); err != nil {
		return err
	} else if ok {
		if err := unmountAll(target); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return err
	}
	// A target left from an earlier pin (an empty directory or file of
	// ours, of either type) is made afresh to match this one.
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", target, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := os.Mkdir(target, 0o700); err != nil {
			return err
		}
	} else {
		fd, err := unix.Open(target, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("create %s: %w", target, err)
		}
		unix.Close(fd)
	}
	src := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", target, err)
	}
	return nil
}
