package berthinit

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/cgroup/own"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountOpts is a parsed OCI mount option list (mount(8) names).
type mountOpts struct {
	flags uintptr // MS_* for the mount itself
	prop  uintptr // MS_{PRIVATE,SLAVE,SHARED,UNBINDABLE}[|MS_REC], applied after
	data  []string
	bind  bool
	rec   bool
}

// Flag names as runc's libcontainer/specconv parseMountOptions knows them.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"async": {true, unix.MS_SYNCHRONOUS}, "atime": {true, unix.MS_NOATIME},
	"bind": {false, unix.MS_BIND}, "defaults": {false, 0}, "dev": {true, unix.MS_NODEV},
	"diratime": {true, unix.MS_NODIRATIME}, "dirsync": {false, unix.MS_DIRSYNC},
	"exec": {true, unix.MS_NOEXEC}, "mand": {false, unix.MS_MANDLOCK},
	"noatime": {false, unix.MS_NOATIME}, "nodev": {false, unix.MS_NODEV},
	"nodiratime": {false, unix.MS_NODIRATIME}, "noexec": {false, unix.MS_NOEXEC},
	"nomand": {true, unix.MS_MANDLOCK}, "norelatime": {true, unix.MS_RELATIME},
	"nostrictatime": {true, unix.MS_STRICTATIME}, "nosuid": {false, unix.MS_NOSUID},
	"nosymfollow": {false, unix.MS_NOSYMFOLLOW}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"relatime": {false, unix.MS_RELATIME}, "remount": {false, unix.MS_REMOUNT},
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"strictatime": {false, unix.MS_STRICTATIME}, "suid": {true, unix.MS_NOSUID},
	"symfollow": {true, unix.MS_NOSYMFOLLOW}, "sync": {false, unix.MS_SYNCHRONOUS},
}

var propFlags = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

func parseMountOptions(opts []string) (mountOpts, error) {
	var m mountOpts
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				m.flags &^= f.flag
			} else {
				m.flags |= f.flag
			}
			continue
		}
		if p, ok := propFlags[o]; ok {
			m.prop = p
			continue
		}
		switch o {
		case "tmpcopyup":
			continue // containerd's hint for copying image content into a tmpfs; not done here
		case "idmap", "ridmap":
			return m, fmt.Errorf("mount option %q (id-mapped mounts) is not supported", o)
		}
		m.data = append(m.data, o)
	}
	m.bind = m.flags&unix.MS_BIND != 0
	m.rec = m.flags&unix.MS_REC != 0
	return m, nil
}

// procFd names an open file for mount(2) without resolving a path again
// inside the (untrusted) rootfs: the magic link jumps to exactly that file.
func procFd(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// rootfs is the container's root directory while stage-1 and stage-2
// assemble it.
type rootfs struct {
	path   string   // host path (Root.Path)
	dir    *os.File // O_PATH handle
	bundle string
}

// mkdir opens the directory dest inside the rootfs, creating it and its
// parents if missing (see openInRoot).
func (r *rootfs) mkdir(dest string) (*os.File, error) {
	f, err := openInRoot(r.dir, dest, wantDir)
	if err != nil {
		return nil, fmt.Errorf("mount destination %s: %w", dest, err)
	}
	return f, nil
}

// mkfile opens dest inside the rootfs, creating an empty regular file (and
// its parents) if nothing is there.
func (r *rootfs) mkfile(dest string) (*os.File, error) {
	f, err := openInRoot(r.dir, dest, wantFile)
	if err != nil {
		return nil, fmt.Errorf("mount destination %s: %w", dest, err)
	}
	return f, nil
}

// reopen opens dest again after something was mounted on it, so that a
// following remount reaches the new (top) mount, not the one underneath.
func (r *rootfs) reopen(dest string) (*os.File, error) {
	f, err := openInRoot(r.dir, dest, wantExisting)
	if err != nil {
		return nil, fmt.Errorf("open %s after mounting: %w", dest, err)
	}
	return f, nil
}

// want is what openInRoot expects at the end of a path.
type want int

const (
	wantExisting want = iota // whatever is there; nothing is created
	wantDir                  // a directory, made (with its parents) if missing
	wantFile                 // anything but a directory is fine; an empty regular file is made if missing
)

// openInRoot opens path, absolute as the container will see it, below root
// with O_PATH, one component at a time with openat(2)
// O_PATH|O_NOFOLLOW and fstat(2), and never through a symlink.
//
// Why: the image decides what every path of its root is and may make any
// of them a symlink (/dev -> /proc, /dev/null -> /proc/kcore, /etc ->
// /sys/...). A mount that follows one lands elsewhere than the spec says,
// under procfs or sysfs, where it hides or is hidden by the kernel's files,
// and masking that binds "/dev/null" binds whatever the image pointed it at,
// or finds nothing and skips the mask: runc's CVE-2025-31133
// (GHSA-9493-h29p-rfm2, fixed in runc 1.2.8) is this class. Resolving
// symlinks "inside the root" (securejoin, openat2 RESOLVE_IN_ROOT) keeps
// the mount in the root but still lets the image move it. openat2(2)
// RESOLVE_NO_SYMLINKS would refuse them in the kernel, but answers only
// ELOOP without naming the component, and creates nothing.
//
// A symlink as a parent fails with its name and target. A symlink as the
// last component, when wantDir or wantFile and its directory lies on the
// root's own mount (the container's overlay, whose upper layer is fresh for
// every start), is replaced by an empty directory or file: an image whose
// /etc/resolv.conf points into /run (systemd-resolved's stub) still gets
// the pod's file at /etc/resolv.conf, and /dev -> /proc gets a real /dev.
// Anywhere else (a bind from the host, a tmpfs) it fails: replacing it
// would write outside the container's layer.
//
// A missing component is reported as an error wrapping fs.ErrNotExist only
// when it is really absent: reached without a symlink, a real directory
// has no such entry.
func openInRoot(root *os.File, path string, w want) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%q is not an absolute path", path)
	}
	rootFd := int(root.Fd())
	clean := filepath.Clean(path)
	if clean == "/" {
		fd, err := unix.FcntlInt(uintptr(rootFd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("dup %s: %w", root.Name(), err)
		}
		return os.NewFile(uintptr(fd), clean), nil
	}
	parts := strings.Split(clean[1:], "/")
	cur := rootFd // the caller's until the first step
	for i, name := range parts {
		last := i == len(parts)-1
		next, err := step(rootFd, cur, name, "/"+strings.Join(parts[:i+1], "/"), !last || w == wantDir, w != wantExisting, last && w != wantExisting)
		if cur != rootFd {
			unix.Close(cur)
		}
		if err != nil {
			return nil, err
		}
		cur = next
	}
	return os.NewFile(uintptr(cur), clean), nil
}

// step is one component of openInRoot: name in dir, known as sofar; isDir
// if it must be a directory; create if missing; replace if a symlink may be
// replaced. A directory is opened with O_DIRECTORY, which fails with
// ENOTDIR on a symlink, and needs no fstat.
func step(root, dir int, name, sofar string, isDir, create, replace bool) (int, error) {
	flags := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if isDir {
		flags |= unix.O_DIRECTORY
	}
	fd, err := unix.Openat(dir, name, flags, 0)
	if errors.Is(err, unix.ENOENT) && create {
		if err = makeEntry(dir, name, isDir); err == nil {
			fd, err = unix.Openat(dir, name, flags, 0)
		}
	}
	switch {
	case err == nil && isDir:
		return fd, nil
	case errors.Is(err, unix.ENOTDIR) && isDir:
		// What is it? Open it as it is to tell a symlink from a file.
		if fd, err = unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			return -1, &fs.PathError{Op: "open", Path: sofar, Err: err}
		}
	case err != nil:
		return -1, &fs.PathError{Op: "open", Path: sofar, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, &fs.PathError{Op: "stat", Path: sofar, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return replaceSymlink(root, dir, fd, name, sofar, isDir, replace)
	case isDir:
		unix.Close(fd)
		return -1, &fs.PathError{Op: "open", Path: sofar, Err: unix.ENOTDIR}
	}
	return fd, nil
}

// symlinkError is a symlink of the image where berth-init follows none.
type symlinkError struct {
	path, target, why string
}

func (e *symlinkError) Error() string {
	return fmt.Sprintf("%s is a symlink (to %q) in the container's root%s; berth-init follows no symlink there", e.path, e.target, e.why)
}

// replaceSymlink handles the symlink link, name in dir, known as sofar: it
// is replaced by an empty directory (isDir) or file when allowed and dir
// lies on root's mount (see openInRoot), else a *symlinkError. link is
// closed.
func replaceSymlink(root, dir, link int, name, sofar string, isDir, allowed bool) (int, error) {
	target := readlinkFd(link)
	unix.Close(link)
	if !allowed {
		return -1, &symlinkError{path: sofar, target: target}
	}
	same, err := sameMount(root, dir)
	if err != nil {
		return -1, &fs.PathError{Op: "statx", Path: filepath.Dir(sofar), Err: err}
	}
	if !same {
		return -1, &symlinkError{path: sofar, target: target, why: ", not on the container's own layer"}
	}
	if err := unix.Unlinkat(dir, name, 0); err != nil {
		return -1, &fs.PathError{Op: "remove symlink", Path: sofar, Err: err}
	}
	if err := makeEntry(dir, name, isDir); err != nil {
		return -1, &fs.PathError{Op: "create", Path: sofar, Err: err}
	}
	fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: sofar, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT == unix.S_IFLNK || isDir != (st.Mode&unix.S_IFMT == unix.S_IFDIR) {
		// Nothing else runs in the root yet: not expected.
		unix.Close(fd)
		return -1, &symlinkError{path: sofar, target: target, why: ", and not replaced by an empty one"}
	}
	return fd, nil
}

// makeEntry makes an empty directory or regular file name in dir; one that
// appeared meanwhile is left to the caller's next open to judge.
func makeEntry(dir int, name string, isDir bool) error {
	if isDir {
		if err := unix.Mkdirat(dir, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		return nil
	}
	fd, err := unix.Openat(dir, name, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	}
	return unix.Close(fd)
}

// sameMount reports whether the files a and b are on the same mount
// (statx(2) STATX_MNT_ID, Linux 5.8). A kernel that cannot tell gets false.
func sameMount(a, b int) (bool, error) {
	id := func(fd int) (uint64, bool, error) {
		var sx unix.Statx_t
		if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &sx); err != nil {
			return 0, false, err
		}
		return sx.Mnt_id, sx.Mask&unix.STATX_MNT_ID != 0, nil
	}
	ia, oka, err := id(a)
	if err != nil {
		return false, err
	}
	ib, okb, err := id(b)
	if err != nil {
		return false, err
	}
	return oka && okb && ia == ib, nil
}

// readlinkFd reads the symlink an O_PATH|O_NOFOLLOW descriptor refers to
// (readlinkat(2) with an empty path, Linux 2.6.39), for error messages.
func readlinkFd(fd int) string {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "?"
	}
	return string(buf[:n])
}

// mount performs one spec mount (not the rootfs overlay).
func (r *rootfs) mount(m specs.Mount, cgroupNS bool) error {
	if !filepath.IsAbs(m.Destination) {
		return fmt.Errorf("mount destination %q is not absolute", m.Destination)
	}
	o, err := parseMountOptions(m.Options)
	if err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	switch {
	case m.Type == "cgroup" || m.Type == "cgroup2":
		return r.mountCgroup(m, o, cgroupNS)
	case o.bind || m.Type == "bind":
		return r.bind(m, o)
	}
	target, err := r.mkdir(m.Destination)
	if err != nil {
		return err
	}
	defer target.Close()
	data := strings.Join(o.data, ",")
	if err := unix.Mount(m.Source, procFd(target), m.Type, o.flags, data); err != nil {
		return fmt.Errorf("mount %s (%s, %q) on %s: %w", m.Source, m.Type, data, m.Destination, err)
	}
	return r.propagate(m.Destination, o)
}

func (r *rootfs) bind(m specs.Mount, o mountOpts) error {
	src := m.Source
	if !filepath.IsAbs(src) {
		src = filepath.Join(r.bundle, src)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind mount source for %s: %w", m.Destination, err)
	}
	var target *os.File
	if fi.IsDir() {
		target, err = r.mkdir(m.Destination)
	} else {
		target, err = r.mkfile(m.Destination)
	}
	if err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND)
	if o.rec {
		flags |= unix.MS_REC
	}
	err = unix.Mount(src, procFd(target), "", flags, "")
	target.Close()
	if err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, m.Destination, err)
	}
	// MS_BIND ignores every other flag: ro, nosuid, ... need a remount of
	// the new mount (mount(2), "Creating a bind mount").
	if extra := o.flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); extra != 0 {
		if err := r.remount(m.Destination, extra); err != nil {
			return err
		}
	}
	return r.propagate(m.Destination, o)
}

func (r *rootfs) remount(dest string, flags uintptr) error {
	f, err := r.reopen(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Mount("", procFd(f), "", unix.MS_REMOUNT|unix.MS_BIND|flags, ""); err != nil {
		return fmt.Errorf("remount %s with flags %#x: %w", dest, flags, err)
	}
	return nil
}

func (r *rootfs) propagate(dest string, o mountOpts) error {
	if o.prop == 0 {
		return nil
	}
	f, err := r.reopen(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Mount("", procFd(f), "", o.prop, ""); err != nil {
		return fmt.Errorf("set propagation %#x on %s: %w", o.prop, dest, err)
	}
	return nil
}

// cgroupMount is one cgroup hierarchy visible to stage-1 (and so to the
// container, which shares its cgroups).
type cgroupMount struct {
	mountpoint string // host path, e.g. /sys/fs/cgroup/memory
	root       string // mountinfo field 4: the hierarchy path mounted there
	fstype     string // cgroup or cgroup2
	super      string // super options, e.g. rw,memory
}

// mountCgroup gives the container its own cgroups under Destination
// (normally /sys/fs/cgroup), like runc's mountCgroupV1/V2:
//   - pure v2 host: the unified tree at Destination;
//   - v1 or hybrid host: a tmpfs at Destination with one directory per
//     hierarchy (memory, cpu, ..., systemd, and unified for hybrid).
//
// In a new cgroup namespace each hierarchy is mounted afresh (the kernel
// roots it at the namespace's cgroup); otherwise the container's own cgroup
// directory is bind-mounted, so it never sees its parents or siblings.
func (r *rootfs) mountCgroup(m specs.Mount, o mountOpts, cgroupNS bool) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	groups, unified, err := own.Groups("/proc/thread-self/cgroup")
	if err != nil {
		return fmt.Errorf("read /proc/thread-self/cgroup: %w", err)
	}
	ro := o.flags & unix.MS_RDONLY
	base := o.flags &^ (unix.MS_RDONLY | unix.MS_BIND | unix.MS_REC)

	// On v1, the binds are made as they are and then made read-only (and
	// nosuid, ...) together with their tmpfs by one recursive
	// mount_setattr(2), instead of a remount each (10 on this host's
	// hierarchies: ~0.4 ms of each start, make bench).
	var lateBinds []string
	attr, attrOK := mountAttr(base | ro)
	one := func(cm cgroupMount, dest string) error {
		if cgroupNS {
			t, err := r.mkdir(dest)
			if err != nil {
				return err
			}
			defer t.Close()
			data := ""
			if cm.fstype == "cgroup" {
				data = cgroupSubsystems(cm.super)
			}
			if err := unix.Mount(cm.fstype, procFd(t), cm.fstype, base|ro, data); err != nil {
				return fmt.Errorf("mount %s (%s) on %s: %w", cm.fstype, data, dest, err)
			}
			return nil
		}
		path := unified
		if cm.fstype == "cgroup" {
			path = ""
			for ctrls, p := range groups {
				if matchesSubsystems(cm.super, ctrls) {
					path = p
				}
			}
		}
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(cm.root, "/"))
		if path == "" || !ok {
			return nil // not a member, or not visible from this mount
		}
		src := filepath.Join(cm.mountpoint, rel)
		if attrOK && dest != m.Destination {
			lateBinds = append(lateBinds, dest)
			return r.bind(specs.Mount{Destination: dest, Source: src}, mountOpts{flags: unix.MS_BIND, bind: true})
		}
		return r.bind(specs.Mount{Destination: dest, Source: src, Options: nil}, mountOpts{flags: unix.MS_BIND | base | ro, bind: true})
	}

	if len(mounts) == 1 && mounts[0].fstype == "cgroup2" {
		return one(mounts[0], m.Destination)
	}
	// v1 or hybrid: a tmpfs holding one directory per hierarchy, read-only
	// once populated.
	t, err := r.mkdir(m.Destination)
	if err != nil {
		return err
	}
	err = unix.Mount("tmpfs", procFd(t), "tmpfs", base, "mode=755")
	t.Close()
	if err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", m.Destination, err)
	}
	for _, cm := range mounts {
		name := filepath.Base(cm.mountpoint)
		if err := one(cm, filepath.Join(m.Destination, name)); err != nil {
			return err
		}
		// Co-mounted controllers (cpu,cpuacct) are also reachable by each name.
		if strings.Contains(name, ",") {
			for _, alias := range strings.Split(name, ",") {
				if err := r.symlink(name, filepath.Join(m.Destination, alias)); err != nil {
					return err
				}
			}
		}
	}
	if err := r.finishCgroupTmpfs(m.Destination, base|ro, attr, attrOK, lateBinds); err != nil {
		return err
	}
	return r.propagate(m.Destination, o)
}

// finishCgroupTmpfs applies flags to the cgroup tmpfs at dest and to the
// binds in it made without them (late): recursively in one call where
// the kernel has mount_setattr(2) (5.12) and lets us call it, else by a
// remount each.
func (r *rootfs) finishCgroupTmpfs(dest string, flags uintptr, attr unix.MountAttr, attrOK bool, late []string) error {
	if attrOK {
		f, err := r.reopen(dest)
		if err != nil {
			return err
		}
		err = unix.MountSetattr(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr)
		f.Close()
		if err == nil {
			return nil
		}
		// ENOSYS: before Linux 5.12; EPERM: also what seccomp profiles
		// that predate the call (or a SystemCallFilter=) answer.
		if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("mount_setattr %s recursively (%#x): %w", dest, attr.Attr_set, err)
		}
	}
	for _, b := range late {
		if err := r.remount(b, flags); err != nil {
			return err
		}
	}
	if flags&unix.MS_RDONLY != 0 {
		return r.remount(dest, flags)
	}
	return nil
}

// mountAttr translates mount(2) flags for mount_setattr(2); ok is false
// for a flag it cannot express.
func mountAttr(flags uintptr) (a unix.MountAttr, ok bool) {
	simple := []struct {
		ms   uintptr
		attr uint64
	}{
		{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY}, {unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
		{unix.MS_NODEV, unix.MOUNT_ATTR_NODEV}, {unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
		{unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME},
	}
	for _, f := range simple {
		if flags&f.ms != 0 {
			a.Attr_set |= f.attr
			flags &^= f.ms
		}
	}
	// One access-time mode at most, as a field (MOUNT_ATTR__ATIME).
	atime := []struct {
		ms   uintptr
		attr uint64
	}{{unix.MS_RELATIME, unix.MOUNT_ATTR_RELATIME}, {unix.MS_NOATIME, unix.MOUNT_ATTR_NOATIME}, {unix.MS_STRICTATIME, unix.MOUNT_ATTR_STRICTATIME}}
	n := 0
	for _, f := range atime {
		if flags&f.ms != 0 {
			a.Attr_clr |= unix.MOUNT_ATTR__ATIME
			a.Attr_set |= f.attr
			flags &^= f.ms
			n++
		}
	}
	return a, flags == 0 && n <= 1
}

// cgroupMounts lists the cgroup hierarchies in the calling thread's mountinfo
// (proc(5)): "id parent major:minor root mountpoint opts [tags] - fstype source super".
func cgroupMounts() ([]cgroupMount, error) {
	// thread-self: stage-1 calls this on its locked thread, which alone is
	// in the container's mount namespace; /proc/self is the main thread's.
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var out []cgroupMount
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || (b[0] != "cgroup" && b[0] != "cgroup2") {
			continue
		}
		mp := unescapeMountinfo(a[4])
		if seen[mp] {
			continue
		}
		seen[mp] = true
		out = append(out, cgroupMount{mountpoint: mp, root: unescapeMountinfo(a[3]), fstype: b[0], super: b[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy is mounted")
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space, ...) of
// mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// cgroupSubsystems keeps the controller and name= options of a v1 super
// option string, for mounting the same hierarchy again.
func cgroupSubsystems(super string) string {
	var keep []string
	for _, o := range strings.Split(super, ",") {
		switch {
		case o == "rw" || o == "ro":
		case strings.HasPrefix(o, "name="), !strings.Contains(o, "="):
			keep = append(keep, o)
		}
	}
	return strings.Join(keep, ",")
}

// matchesSubsystems reports whether a v1 mount's super options carry every
// controller of a /proc/self/cgroup entry ("memory", "cpu,cpuacct",
// "name=systemd").
func matchesSubsystems(super, ctrls string) bool {
	have := map[string]bool{}
	for _, o := range strings.Split(super, ",") {
		have[o] = true
	}
	for _, c := range strings.Split(ctrls, ",") {
		if !have[c] {
			return false
		}
	}
	return ctrls != ""
}

// symlink creates link -> target inside the rootfs (link's parent must exist).
func (r *rootfs) symlink(target, link string) error {
	dir, err := openInRoot(r.dir, filepath.Dir(link), wantExisting)
	if err != nil {
		return fmt.Errorf("symlink %s: %w", link, err)
	}
	defer dir.Close()
	if err := unix.Symlinkat(target, int(dir.Fd()), filepath.Base(link)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("symlink %s -> %s: %w", link, target, err)
	}
	return nil
}

// defaultDevices are created in every container whether the spec lists
// them or not, as runc does (libcontainer/specconv AllowedDevices); the
// devices cgroup allows them too (set by unitgen as DeviceAllow=).
var defaultDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}

// setupDev binds the spec's devices (and the defaults) from the host's /dev
// onto empty files in the container's /dev, and adds the usual symlinks.
// Bind mounts, not mknod: the node then is the host's own (owner, mode and
// all), and nothing in the container can create device nodes with it.
// Device.FileMode/UID/GID therefore do not apply.
func (r *rootfs) setupDev(devs []specs.LinuxDevice) error {
	paths := append([]string(nil), defaultDevices...)
	for _, d := range devs {
		if d.Type == "p" {
			return fmt.Errorf("device %s: FIFOs cannot be bound from the host", d.Path)
		}
		if !filepath.IsAbs(d.Path) || !strings.HasPrefix(filepath.Clean(d.Path), "/dev/") {
			return fmt.Errorf("device path %q must be below /dev", d.Path)
		}
		paths = append(paths, filepath.Clean(d.Path))
	}
	done := map[string]bool{}
	for _, p := range paths {
		if done[p] {
			continue
		}
		done[p] = true
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("device %s on the host: %w", p, err)
		}
		if fi.Mode()&fs.ModeDevice == 0 {
			return fmt.Errorf("device %s on the host is not a device node", p)
		}
		if err := r.bind(specs.Mount{Destination: p, Source: p}, mountOpts{flags: unix.MS_BIND, bind: true}); err != nil {
			return fmt.Errorf("device %s: %w", p, err)
		}
	}
	for link, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2", "/dev/ptmx": "pts/ptmx",
	} {
		if err := r.symlink(target, link); err != nil {
			return err
		}
	}
	return nil
}

// pivot makes the rootfs "/" with runc's pivot_root(".", ".") trick
// (libcontainer/rootfs_linux.go pivotRoot): no put_old directory is needed
// in the image; the old root ends up stacked on the new one and is detached.
func pivot(newRoot string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open old root: %w", err)
	}
	defer unix.Close(oldroot)
	newroot, err := unix.Open(newRoot, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open new root %s: %w", newRoot, err)
	}
	defer unix.Close(newroot)
	if err := unix.Fchdir(newroot); err != nil {
		return fmt.Errorf("chdir to new root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", newRoot, err)
	}
	if err := unix.Fchdir(oldroot); err != nil {
		return fmt.Errorf("chdir to old root: %w", err)
	}
	// Make sure the unmount below cannot propagate anywhere.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root rslave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}

// preservedFlags are the per-mount flags of f's mount that a bind remount
// must repeat, or it would clear them (runc's getMountFlags via statfs).
func preservedFlags(f *os.File) (uintptr, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	var fl uintptr
	for st_, ms := range map[int64]uintptr{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME,
		unix.ST_RELATIME: unix.MS_RELATIME, unix.ST_RDONLY: unix.MS_RDONLY,
	} {
		if st.Flags&st_ != 0 {
			fl |= ms
		}
	}
	return fl, nil
}

// protectPaths applies linux.readonlyPaths, then linux.maskedPaths, after
// pivot_root. Each is opened from "/" without following a symlink
// (openInRoot): procfs and sysfs are the kernel's, but every other path and
// every parent is the image's to make a symlink, and a mask or read-only
// bind that followed one would protect something else. A path is skipped
// only when it is really missing, as runc skips it (a kernel without
// /proc/scsi); any other failure fails the start rather than leaving the
// path unprotected.
func protectPaths(readonly, masked []string) error {
	root, err := os.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /: %w", err)
	}
	defer root.Close()
	for _, p := range readonly {
		if err := readonlyPath(root, p); err != nil {
			return err
		}
	}
	if len(masked) == 0 {
		return nil
	}
	null, err := openDevNull(root)
	if err != nil {
		return fmt.Errorf("masked paths: %w", err)
	}
	defer null.Close()
	for _, p := range masked {
		if err := maskPath(root, null, p); err != nil {
			return err
		}
	}
	return nil
}

// openDevNull opens the container's /dev/null, the source of every file
// mask, and checks that it is the null device (character device 1:3,
// Documentation/admin-guide/devices.txt): a mask with anything else would
// show the file the image (or a wrong /dev) put there instead of nothing,
// which is how runc's CVE-2025-31133 turned masking into exposing.
func openDevNull(root *os.File) (*os.File, error) {
	f, err := openInRoot(root, "/dev/null", wantExisting)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat /dev/null: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		f.Close()
		return nil, fmt.Errorf("/dev/null is %s, not the null device (character device 1:3)", describeMode(st))
	}
	return f, nil
}

// describeMode names the kind of file st is, for errors.
func describeMode(st unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFCHR:
		return fmt.Sprintf("character device %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFBLK:
		return fmt.Sprintf("block device %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return fmt.Sprintf("of mode %#o", st.Mode)
}

// readonlyPath bind-mounts path on itself read-only (after pivot_root).
func readonlyPath(root *os.File, path string) error {
	f, err := openInRoot(root, path, wantExisting)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // really missing (see protectPaths)
	}
	if err != nil {
		return fmt.Errorf("readonly path %s: %w", path, err)
	}
	err = unix.Mount(procFd(f), procFd(f), "", unix.MS_BIND|unix.MS_REC, "")
	f.Close()
	if err != nil {
		return fmt.Errorf("readonly path %s: bind: %w", path, err)
	}
	// The descriptor names the mount underneath; the remount is for the
	// new one on top.
	if f, err = openInRoot(root, path, wantExisting); err != nil {
		return fmt.Errorf("readonly path %s after binding: %w", path, err)
	}
	defer f.Close()
	flags, err := preservedFlags(f)
	if err != nil {
		return fmt.Errorf("readonly path %s: %w", path, err)
	}
	if err := unix.Mount("", procFd(f), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""); err != nil {
		return fmt.Errorf("readonly path %s: remount: %w", path, err)
	}
	return nil
}

// maskPath hides path (after pivot_root): null (the checked /dev/null)
// bound over a file, an empty read-only tmpfs over a directory.
func maskPath(root, null *os.File, path string) error {
	f, err := openInRoot(root, path, wantExisting)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // really missing (see protectPaths)
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", path, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("mask %s: stat: %w", path, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := unix.Mount("tmpfs", procFd(f), "tmpfs", unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("mask directory %s: %w", path, err)
		}
		return nil
	}
	if err := unix.Mount(procFd(null), procFd(f), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("mask %s: %w", path, err)
	}
	return nil
}

// remountRootReadonly makes "/" read-only (Root.Readonly).
func remountRootReadonly() error {
	root, err := os.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("read-only root: open /: %w", err)
	}
	defer root.Close()
	flags, err := preservedFlags(root)
	if err != nil {
		return fmt.Errorf("read-only root: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""); err != nil {
		return fmt.Errorf("read-only root: remount: %w", err)
	}
	return nil
}
