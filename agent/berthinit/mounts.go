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
	securejoin "github.com/cyphar/filepath-securejoin"
	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
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

// inRoot resolves dest inside the rootfs the way the kernel will see it
// after pivot_root (symlinks resolved within the root), returning the
// resolved path relative to the root.
func (r *rootfs) inRoot(dest string) (string, error) {
	full, err := securejoin.SecureJoin(r.path, dest)
	if err != nil {
		return "", fmt.Errorf("resolve %s in rootfs: %w", dest, err)
	}
	rel, err := filepath.Rel(r.path, full)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("resolve %s in rootfs: escapes to %s", dest, full)
	}
	return "/" + rel, nil
}

// mkdir creates dest (and parents) inside the rootfs and opens it.
func (r *rootfs) mkdir(dest string) (*os.File, error) {
	rel, err := r.inRoot(dest)
	if err != nil {
		return nil, err
	}
	f, err := pathrs.MkdirAllHandle(r.dir, rel, 0o755)
	if err != nil {
		return nil, fmt.Errorf("create mountpoint %s: %w", dest, err)
	}
	return f, nil
}

// mkfile creates an empty regular file at dest unless something is there,
// and opens it. A dangling symlink (say /etc/resolv.conf pointing into
// /run) gets its target created, inside the root.
func (r *rootfs) mkfile(dest string) (*os.File, error) {
	rel, err := r.inRoot(dest)
	if err != nil {
		return nil, err
	}
	if f, err := pathrs.OpenatInRoot(r.dir, rel); err == nil {
		return f, nil
	}
	parent, err := pathrs.MkdirAllHandle(r.dir, filepath.Dir(rel), 0o755)
	if err != nil {
		return nil, fmt.Errorf("create parent of mountpoint %s: %w", dest, err)
	}
	defer parent.Close()
	fd, err := unix.Openat(int(parent.Fd()), filepath.Base(rel), unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create mountpoint %s: %w", dest, err)
	}
	if err == nil {
		unix.Close(fd)
	}
	f, err := pathrs.OpenatInRoot(r.dir, rel)
	if err != nil {
		return nil, fmt.Errorf("open mountpoint %s: %w", dest, err)
	}
	return f, nil
}

// reopen opens dest again after something was mounted on it, so that a
// following remount reaches the new (top) mount, not the one underneath.
func (r *rootfs) reopen(dest string) (*os.File, error) {
	rel, err := r.inRoot(dest)
	if err != nil {
		return nil, err
	}
	f, err := pathrs.OpenatInRoot(r.dir, rel)
	if err != nil {
		return nil, fmt.Errorf("open %s after mounting: %w", dest, err)
	}
	return f, nil
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
	rel, err := r.inRoot(filepath.Dir(link))
	if err != nil {
		return err
	}
	dir, err := pathrs.OpenatInRoot(r.dir, rel)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(link), err)
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

// preservedFlags are the per-mount flags of path that a bind remount must
// repeat, or it would clear them (runc's getMountFlags via statfs).
func preservedFlags(path string) (uintptr, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	var f uintptr
	for st_, ms := range map[int64]uintptr{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME,
		unix.ST_RELATIME: unix.MS_RELATIME, unix.ST_RDONLY: unix.MS_RDONLY,
	} {
		if st.Flags&st_ != 0 {
			f |= ms
		}
	}
	return f, nil
}

// readonlyPath bind-mounts path on itself read-only (after pivot_root).
// A missing path is fine, as in runc.
func readonlyPath(path string) error {
	if err := unix.Mount(path, path, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("readonly path %s: bind: %w", path, err)
	}
	flags, err := preservedFlags(path)
	if err != nil {
		return fmt.Errorf("readonly path %s: %w", path, err)
	}
	if err := unix.Mount("", path, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""); err != nil {
		return fmt.Errorf("readonly path %s: remount: %w", path, err)
	}
	return nil
}

// maskPath hides path (after pivot_root): /dev/null over a file, an empty
// read-only tmpfs over a directory. A missing path is fine, as in runc.
func maskPath(path string) error {
	err := unix.Mount("/dev/null", path, "", unix.MS_BIND, "")
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ENOTDIR):
		if err := unix.Mount("tmpfs", path, "tmpfs", unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("mask directory %s: %w", path, err)
		}
		return nil
	}
	return fmt.Errorf("mask %s: %w", path, err)
}

// remountRootReadonly makes "/" read-only (Root.Readonly).
func remountRootReadonly() error {
	flags, err := preservedFlags("/")
	if err != nil {
		return fmt.Errorf("read-only root: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""); err != nil {
		return fmt.Errorf("read-only root: remount: %w", err)
	}
	return nil
}
