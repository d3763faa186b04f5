package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Limits bound what one layer may make Unpack do. A zero field means the
// default; refusals name the rule (RuleMaxBytes, RuleMaxEntries, RuleMaxPathLen).
type Limits struct {
	// MaxBytes bounds the uncompressed tar stream of one layer, headers and
	// padding included (a decompression bomb stops here), and separately
	// the bytes the layer's files may write: a sparse entry (GNU or PAX
	// GNU.sparse.*) declares a logical size that archive/tar expands into
	// zeros without reading them from the stream, so the stream alone does
	// not bound what reaches the disk.
	MaxBytes int64
	// MaxCompressedBytes bounds a layer blob as the manifest declares it;
	// Store.Import refuses a larger layer before fetching any of it.
	// Unpack itself does not use it.
	MaxCompressedBytes int64
	// MaxEntries bounds the number of tar entries in one layer.
	MaxEntries int
	// MaxPathLen bounds an entry's name and a link's target, in bytes.
	MaxPathLen int
}

// Defaults: generous enough for large real images (CUDA/ML layers run to a
// few GiB and node_modules-heavy layers to a few hundred thousand entries),
// small enough to stop a hostile layer before it fills the disk or the inode
// table. MaxPathLen is PATH_MAX (linux/limits.h).
const (
	DefaultMaxBytes           int64 = 32 << 30
	DefaultMaxCompressedBytes int64 = 16 << 30
	DefaultMaxEntries               = 1 << 20
	DefaultMaxPathLen               = 4096
)

// DefaultLimits returns the limits used when none are configured.
func DefaultLimits() Limits {
	return Limits{MaxBytes: DefaultMaxBytes, MaxCompressedBytes: DefaultMaxCompressedBytes, MaxEntries: DefaultMaxEntries, MaxPathLen: DefaultMaxPathLen}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxCompressedBytes <= 0 {
		l.MaxCompressedBytes = d.MaxCompressedBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxPathLen <= 0 {
		l.MaxPathLen = d.MaxPathLen
	}
	return l
}

// OCI whiteouts (image-spec layer.md "Whiteouts") and their overlayfs form
// (kernel Documentation/filesystems/overlayfs.rst "whiteouts and opaque
// directories": a 0/0 character device, and trusted.overlay.opaque="y").
const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh."
	whiteoutOpaque     = ".wh..wh..opq"
	opaqueXattr        = "trusted.overlay.opaque"
	paxXattrPrefix     = "SCHILY.xattr."
)

// resolveFlags keep every lookup beneath the layer root and refuse any
// symlink (and /proc magic link) on the way, so that nothing an earlier entry
// created can redirect a later write (openat2(2), Linux ≥ 5.6).
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// Unpack extracts the tar stream r into dir, which must be an existing empty
// directory, producing an overlayfs lower layer: OCI whiteouts become 0/0
// character devices and opaque markers become trusted.overlay.opaque=y.
//
// Every path is resolved beneath dir with openat2(RESOLVE_BENEATH|
// RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) for its parent directory, and the
// entry is then created with *at syscalls relative to that parent, so nothing
// is ever written outside dir. Entries that break a rule are refused with a
// *RefusedError naming the entry and the rule; Unpack stops at the first one
// and leaves dir partly written (the caller unpacks into a temporary directory
// and removes it on error).
//
// Ownership, permission bits (setuid/setgid/sticky included), modification
// times and PAX SCHILY.xattr.* extended attributes (security.capability
// included: that is how images carry file capabilities) are kept. Keeping
// arbitrary ownership needs CAP_CHOWN; without it, entries must be owned by
// the caller.
func Unpack(ctx context.Context, r io.Reader, dir string, limits Limits) error {
	return unpack(ctx, r, dir, limits, nil)
}

// unpack is Unpack; beforeFinish, if set, sees the unpacker once every entry
// is written and before directory metadata is applied (tests measure what
// is retained until then).
func unpack(ctx context.Context, r io.Reader, dir string, limits Limits, beforeFinish func(*unpacker)) error {
	limits = limits.withDefaults()
	root, err := openEmptyDir(dir)
	if err != nil {
		return fmt.Errorf("unpack into %s: %w", dir, err)
	}
	defer unix.Close(root)

	u := &unpacker{ctx: ctx, root: root, limits: limits, nonDirs: map[string]bool{}, dirMeta: map[string]dirAttrs{}}
	tr := tar.NewReader(&boundedReader{ctx: ctx, r: r, max: limits.MaxBytes})
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("unpack into %s: read tar header after %d entries: %w", dir, n, err)
		}
		if n >= limits.MaxEntries {
			return fmt.Errorf("unpack into %s: %w", dir, refuse(hdr.Name, RuleMaxEntries, "layer has more than %d entries", limits.MaxEntries))
		}
		if err := u.entry(hdr, tr); err != nil {
			var re *RefusedError
			if errors.As(err, &re) && re.Entry == "" {
				re.Entry = hdr.Name
			}
			return fmt.Errorf("unpack into %s: %w", dir, err)
		}
	}
	if beforeFinish != nil {
		beforeFinish(u)
	}
	if err := u.finish(); err != nil {
		return fmt.Errorf("unpack into %s: %w", dir, err)
	}
	return nil
}

// openEmptyDir opens dir (not following a symlink at its last component) and
// checks that it is empty: Unpack's replacement rules assume that everything
// in the tree came from this layer.
func openEmptyDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open target directory: %w", err)
	}
	f := os.NewFile(uintptr(fd), dir)
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		f.Close()
		return -1, fmt.Errorf("read target directory: %w", err)
	}
	if len(names) > 0 {
		f.Close()
		return -1, fmt.Errorf("target directory is not empty (has %q)", names[0])
	}
	// Hand back a descriptor independent of f, whose finalizer would close fd.
	nfd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	if err != nil {
		return -1, fmt.Errorf("dup target directory: %w", err)
	}
	return nfd, nil
}

type unpacker struct {
	ctx    context.Context
	root   int
	limits Limits
	// written counts the bytes regular files received, holes of sparse
	// entries included, against Limits.MaxBytes.
	written int64
	// nonDirs: every non-directory created by this layer (files, symlinks,
	// fifos, hardlinks, not whiteouts) — the only legal hardlink targets
	// (image-spec layer.md: hardlinks to files outside the layer may fail).
	nonDirs map[string]bool
	// dirMeta: mode and times of directories, applied in finish(): creating
	// a child changes a directory's mtime, and a read-only mode would stop an
	// unprivileged unpack from creating the children. Only those fields are
	// kept (owner and xattrs are applied when the directory is made): a
	// whole *tar.Header would keep its PAX records, up to archive/tar's 1 MiB
	// per entry, for every directory of the layer until its end.
	dirMeta map[string]dirAttrs
}

// dirAttrs is what finish() needs of a directory entry.
type dirAttrs struct {
	mode         uint32
	atime, mtime unix.Timespec
}

func dirAttrsOf(hdr *tar.Header) dirAttrs {
	a := dirAttrs{mode: tarMode(hdr)}
	a.atime, a.mtime = headerTimes(hdr)
	return a
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	name := hdr.Name
	rel, err := u.cleanName(name, name, RuleBadName)
	if err != nil {
		return err
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid > math.MaxUint32-1 || hdr.Gid > math.MaxUint32-1 {
		// -1 would mean "leave unchanged" to chown(2).
		return refuse(name, RuleBadOwner, "uid %d / gid %d out of range", hdr.Uid, hdr.Gid)
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // PAX global header: archive metadata, no file
	case tar.TypeChar, tar.TypeBlock:
		return refuse(name, RuleDevice, "device nodes are never created from a layer (only whiteouts become 0/0 character devices)")
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	case tar.TypeGNUSparse:
		// archive/tar expands the old GNU sparse form (as it does the PAX
		// GNU.sparse.* forms, which it reports as TypeReg) into the file's
		// logical content; file() bounds that like any other content.
	default:
		return refuse(name, RuleUnsupported, "unsupported tar entry type %q", string(hdr.Typeflag))
	}
	xattrs, err := paxXattrs(hdr)
	if err != nil {
		return err
	}

	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return refuse(name, RuleBadName, "only a directory may name the layer root")
		}
		if err := u.setOwnerAndXattrs(u.root, hdr, xattrs); err != nil {
			return fmt.Errorf("entry %q: %w", name, err)
		}
		u.dirMeta["."] = dirAttrsOf(hdr)
		return nil
	}

	parentRel, base := path.Split(rel)
	parentRel = path.Clean(parentRel) // "" → "."
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(hdr, parentRel, base)
	}

	parent, err := u.openDir(name, parentRel, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)

	switch hdr.Typeflag {
	case tar.TypeDir:
		return u.dir(hdr, parent, rel, base, xattrs)
	case tar.TypeReg, tar.TypeGNUSparse:
		return u.file(hdr, r, parent, rel, base, xattrs)
	case tar.TypeSymlink:
		return u.symlink(hdr, parent, rel, base, xattrs)
	case tar.TypeLink:
		return u.hardlink(hdr, parent, rel, base)
	default: // tar.TypeFifo
		return u.fifo(hdr, parent, rel, base, xattrs)
	}
}

// cleanName returns the lexically cleaned form of a tar name ("." for the
// root) or refuses it. Cleaning lexically is safe because the cleaned path is
// then resolved with openat2 beneath the root, refusing symlinks.
func (u *unpacker) cleanName(entry, name string, emptyRule Rule) (string, error) {
	if name == "" {
		return "", refuse(entry, emptyRule, "empty name")
	}
	if len(name) > u.limits.MaxPathLen {
		return "", refuse(entry, RuleMaxPathLen, "name is %d bytes, longer than %d", len(name), u.limits.MaxPathLen)
	}
	if strings.HasPrefix(name, "/") {
		return "", refuse(entry, RuleAbsolutePath, "absolute name %q (layer paths must be relative)", name)
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", refuse(entry, RuleEscapesRoot, "name %q climbs above the layer root", name)
	}
	return c, nil
}

// openDir opens the directory rel beneath the root. With create, missing
// components are made (0755, owned by the caller) as tar producers may omit
// parent entries; containerd's archive package does the same.
func (u *unpacker) openDir(entry, rel string, create bool) (int, error) {
	fd, err := openBeneath(u.root, rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOENT) || !create {
		return -1, u.resolveErr(entry, rel, err)
	}
	cur, err := unix.Dup(u.root)
	if err != nil {
		return -1, err
	}
	for _, comp := range strings.Split(rel, "/") {
		next, err := openBeneath(cur, comp, unix.O_RDONLY|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(cur, comp, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(cur)
				return -1, fmt.Errorf("entry %q: create parent %q: %w", entry, rel, err)
			}
			next, err = openBeneath(cur, comp, unix.O_RDONLY|unix.O_DIRECTORY)
		}
		unix.Close(cur)
		if err != nil {
			return -1, u.resolveErr(entry, rel, err)
		}
		cur = next
	}
	return cur, nil
}

func (u *unpacker) resolveErr(entry, rel string, err error) error {
	if errors.Is(err, unix.ENOTDIR) {
		// openat2 reports a symlink met with O_DIRECTORY|O_NOFOLLOW as ENOTDIR,
		// not ELOOP; find the offending component to name the right rule.
		if p, isLink := u.firstNonDir(rel); p != "" {
			if isLink {
				return refuse(entry, RuleSymlinkParent, "parent path %q goes through a symlink (%q)", rel, p)
			}
			return refuse(entry, RuleParentNotDir, "parent path %q is not a directory (%q)", rel, p)
		}
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return refuse(entry, RuleSymlinkParent, "parent path %q goes through a symlink", rel)
	case errors.Is(err, unix.EXDEV):
		return refuse(entry, RuleEscapesRoot, "parent path %q leaves the layer root", rel)
	case errors.Is(err, unix.ENOTDIR):
		return refuse(entry, RuleParentNotDir, "parent path %q is not a directory", rel)
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("entry %q: openat2 is not available (needs Linux ≥ 5.6): %w", entry, err)
	}
	return fmt.Errorf("entry %q: open parent %q: %w", entry, rel, err)
}

// firstNonDir returns the first component prefix of rel that exists and is
// not a directory, and whether it is a symlink. Only used to word an error:
// it stats each prefix in order, so every earlier component is a real
// directory when the next is looked at.
func (u *unpacker) firstNonDir(rel string) (string, bool) {
	comps := strings.Split(rel, "/")
	for i := range comps {
		p := strings.Join(comps[:i+1], "/")
		var st unix.Stat_t
		if err := unix.Fstatat(u.root, p, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return "", false
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			continue
		case unix.S_IFLNK:
			return p, true
		default:
			return p, false
		}
	}
	return "", false
}

// openBeneath is openat2 with resolveFlags. EAGAIN means a concurrent rename
// somewhere on the system raced the RESOLVE_BENEATH check (openat2(2)); retry.
func openBeneath(dirfd int, rel string, flags int) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Resolve: resolveFlags}
	for range 64 {
		fd, err := unix.Openat2(dirfd, rel, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// prepare makes room for a new entry base in parent: a directory entry
// repeating an existing directory keeps it (and reports keepDir), any other
// existing non-directory is replaced, and an existing directory can only be
// replaced by a non-directory if it is empty.
func (u *unpacker) prepare(entry string, parent int, rel, base string, isDir bool) (keepDir bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("entry %q: stat existing: %w", entry, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if isDir {
			return true, nil
		}
		if err := unix.Unlinkat(parent, base, unix.AT_REMOVEDIR); err != nil {
			if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
				return false, refuse(entry, RuleReplaceDir, "would replace the non-empty directory %q", rel)
			}
			return false, fmt.Errorf("entry %q: remove directory it replaces: %w", entry, err)
		}
		delete(u.dirMeta, rel)
		return false, nil
	}
	if err := unix.Unlinkat(parent, base, 0); err != nil {
		return false, fmt.Errorf("entry %q: remove entry it replaces: %w", entry, err)
	}
	delete(u.nonDirs, rel)
	return false, nil
}

func (u *unpacker) dir(hdr *tar.Header, parent int, rel, base string, xattrs []xattr) error {
	keep, err := u.prepare(hdr.Name, parent, rel, base, true)
	if err != nil {
		return err
	}
	if !keep {
		// 0700 until finish() applies the real mode (see unpacker.dirMeta).
		if err := unix.Mkdirat(parent, base, 0o700); err != nil {
			return fmt.Errorf("entry %q: mkdir: %w", hdr.Name, err)
		}
	}
	fd, err := openBeneath(parent, base, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return u.resolveErr(hdr.Name, rel, err)
	}
	defer unix.Close(fd)
	if err := u.setOwnerAndXattrs(fd, hdr, xattrs); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	u.dirMeta[rel] = dirAttrsOf(hdr)
	return nil
}

func (u *unpacker) file(hdr *tar.Header, r io.Reader, parent int, rel, base string, xattrs []xattr) error {
	// hdr.Size is the logical size, which for a sparse entry may be a
	// terabyte of holes behind a few bytes of stream: refuse it before
	// anything is created rather than write zeros until the disk is full.
	if left := u.limits.MaxBytes - u.written; hdr.Size > left {
		return refuse(hdr.Name, RuleMaxBytes, "file of %d bytes would take the layer's written content over %d bytes (%d written so far)", hdr.Size, u.limits.MaxBytes, u.written)
	}
	if _, err := u.prepare(hdr.Name, parent, rel, base, false); err != nil {
		return err
	}
	fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("entry %q: create: %w", hdr.Name, err)
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	buf := copyBufPool.Get().(*[]byte)
	_, err = io.CopyBuffer(&contentWriter{u: u, w: f}, r, *buf)
	copyBufPool.Put(buf)
	if err != nil {
		return fmt.Errorf("entry %q: write content: %w", hdr.Name, err)
	}
	// Order matters: chown(2) clears setuid/setgid and security.capability on
	// non-directories (fs/attr.c ATTR_KILL_SUID/ATTR_KILL_PRIV), and so does
	// writing; so content, then owner, then mode, then xattrs.
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("entry %q: chown %d:%d: %w", hdr.Name, hdr.Uid, hdr.Gid, err)
	}
	if err := unix.Fchmod(fd, tarMode(hdr)); err != nil {
		return fmt.Errorf("entry %q: chmod: %w", hdr.Name, err)
	}
	for _, x := range xattrs {
		if err := unix.Fsetxattr(fd, x.name, x.value, 0); err != nil {
			return fmt.Errorf("entry %q: set xattr %s: %w", hdr.Name, x.name, err)
		}
	}
	if err := setTimes(parent, base, hdr); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	u.nonDirs[rel] = true
	return nil
}

// contentWriter writes a file's content, counting it against
// Limits.MaxBytes and checking the context on every buffer: the holes of a
// sparse entry come out of archive/tar without a read of the layer stream,
// whose reader would otherwise be the only place cancellation is seen.
// Being a plain Writer (no ReadFrom) also makes io.CopyBuffer use our buffer.
type contentWriter struct {
	u *unpacker
	w io.Writer
}

func (c *contentWriter) Write(p []byte) (int, error) {
	if err := c.u.ctx.Err(); err != nil {
		return 0, err
	}
	// file() checked the declared size; this holds even if a reader ever
	// yielded more than it.
	if int64(len(p)) > c.u.limits.MaxBytes-c.u.written {
		return 0, refuse("", RuleMaxBytes, "the layer's files would take more than %d bytes", c.u.limits.MaxBytes)
	}
	n, err := c.w.Write(p)
	c.u.written += int64(n)
	return n, err
}

func (u *unpacker) symlink(hdr *tar.Header, parent int, rel, base string, xattrs []xattr) error {
	if hdr.Linkname == "" {
		return refuse(hdr.Name, RuleBadName, "symlink with an empty target")
	}
	if len(hdr.Linkname) > u.limits.MaxPathLen {
		return refuse(hdr.Name, RuleMaxPathLen, "symlink target is %d bytes, longer than %d", len(hdr.Linkname), u.limits.MaxPathLen)
	}
	if _, err := u.prepare(hdr.Name, parent, rel, base, false); err != nil {
		return err
	}
	// The target is kept verbatim, absolute or not: it is only ever resolved
	// inside the container's root (or by ReadFile's merged-view resolver).
	if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
		return fmt.Errorf("entry %q: symlink: %w", hdr.Name, err)
	}
	if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("entry %q: lchown %d:%d: %w", hdr.Name, hdr.Uid, hdr.Gid, err)
	}
	return u.finishNonDir(hdr, parent, rel, base, xattrs)
}

// hardlink links rel to an earlier non-directory of this layer. The new name
// shares the target's inode, so the entry's own metadata is not applied (it
// would rewrite the target's).
func (u *unpacker) hardlink(hdr *tar.Header, parent int, rel, base string) error {
	name := hdr.Name
	if hdr.Linkname == "" {
		return refuse(name, RuleHardlinkTarget, "hardlink with an empty target")
	}
	if strings.HasPrefix(hdr.Linkname, "/") {
		return refuse(name, RuleHardlinkTarget, "hardlink target %q is absolute", hdr.Linkname)
	}
	target, err := u.cleanName(name, hdr.Linkname, RuleHardlinkTarget)
	if err != nil {
		var re *RefusedError
		if errors.As(err, &re) && re.Rule == RuleEscapesRoot {
			return refuse(name, RuleHardlinkTarget, "hardlink target %q climbs above the layer root", hdr.Linkname)
		}
		return err
	}
	tdir, tbase := path.Split(target)
	tparent, err := openBeneath(u.root, path.Clean(tdir), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		if _, isLink := u.firstNonDir(path.Clean(tdir)); isLink || errors.Is(err, unix.ELOOP) {
			return refuse(name, RuleHardlinkTarget, "hardlink target %q goes through a symlink", hdr.Linkname)
		}
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return refuse(name, RuleHardlinkTarget, "hardlink target %q does not exist earlier in this layer", hdr.Linkname)
		}
		return u.resolveErr(name, tdir, err)
	}
	defer unix.Close(tparent)
	if !u.nonDirs[target] {
		return refuse(name, RuleHardlinkTarget, "hardlink target %q does not exist earlier in this layer", hdr.Linkname)
	}
	if target == rel {
		return refuse(name, RuleHardlinkTarget, "hardlink to itself")
	}
	if _, err := u.prepare(name, parent, rel, base, false); err != nil {
		return err
	}
	// flags 0: if the target is a symlink, link the symlink itself (linkat(2)).
	if err := unix.Linkat(tparent, tbase, parent, base, 0); err != nil {
		return fmt.Errorf("entry %q: link to %q: %w", name, hdr.Linkname, err)
	}
	u.nonDirs[rel] = true
	return nil
}

func (u *unpacker) fifo(hdr *tar.Header, parent int, rel, base string, xattrs []xattr) error {
	if _, err := u.prepare(hdr.Name, parent, rel, base, false); err != nil {
		return err
	}
	if err := unix.Mknodat(parent, base, unix.S_IFIFO|0o600, 0); err != nil {
		return fmt.Errorf("entry %q: mkfifo: %w", hdr.Name, err)
	}
	if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("entry %q: chown %d:%d: %w", hdr.Name, hdr.Uid, hdr.Gid, err)
	}
	// A fifo cannot be opened without blocking for a peer, so chmod by name:
	// fchmodat2 with AT_SYMLINK_NOFOLLOW (Linux ≥ 6.6), else fchmodat, which is
	// still safe here: parent is pinned beneath the root and base was just
	// created as a fifo by us.
	err := unix.Fchmodat(parent, base, tarMode(hdr), unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = unix.Fchmodat(parent, base, tarMode(hdr), 0)
	}
	if err != nil {
		return fmt.Errorf("entry %q: chmod: %w", hdr.Name, err)
	}
	return u.finishNonDir(hdr, parent, rel, base, xattrs)
}

// finishNonDir applies the last of a symlink's or FIFO's metadata (xattrs
// without following it, then times) and records it as this layer's.
func (u *unpacker) finishNonDir(hdr *tar.Header, parent int, rel, base string, xattrs []xattr) error {
	if err := lsetxattrs(parent, base, xattrs); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if err := setTimes(parent, base, hdr); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	u.nonDirs[rel] = true
	return nil
}

// whiteout converts an OCI whiteout into its overlayfs form.
func (u *unpacker) whiteout(hdr *tar.Header, parentRel, base string) error {
	name := hdr.Name
	if hdr.Typeflag == tar.TypeDir {
		return refuse(name, RuleBadName, "whiteout %q is a directory", base)
	}
	if base == whiteoutOpaque {
		fd, err := u.openDir(name, parentRel, true)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Fsetxattr(fd, opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("entry %q: mark %q opaque (needs CAP_SYS_ADMIN for trusted.* xattrs): %w", name, parentRel, err)
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutMetaPrefix) {
		// Other .wh..wh.* names are AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs)
		// with no meaning for overlayfs; containerd's overlay applier skips them too.
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return refuse(name, RuleBadName, "whiteout %q names no file", base)
	}
	parent, err := u.openDir(name, parentRel, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	var st unix.Stat_t
	err = unix.Fstatat(parent, target, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		// image-spec layer.md: whiteouts only apply to lower layers; an entry of
		// the same name in this layer already hides the lower one, and wins.
		return nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("entry %q: stat %q: %w", name, target, err)
	}
	// The only device node Unpack ever makes. Unprivileged whiteout creation is
	// allowed since Linux 5.8 (vfs_mknod: "whiteout" 0/0 exemption).
	if err := unix.Mknodat(parent, target, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("entry %q: create whiteout %q: %w", name, path.Join(parentRel, target), err)
	}
	return nil
}

// finish applies directory modes and times, deepest first, so that setting
// a parent's mode cannot stop us from reaching its children.
func (u *unpacker) finish() error {
	dirs := make([]string, 0, len(u.dirMeta))
	for d := range u.dirMeta {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(i, j int) bool {
		di, dj := depth(dirs[i]), depth(dirs[j])
		if di != dj {
			return di > dj
		}
		return dirs[i] < dirs[j]
	})
	for _, d := range dirs {
		a := u.dirMeta[d]
		fd, err := openBeneath(u.root, d, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return u.resolveErr(d, d, err)
		}
		err = unix.Fchmod(fd, a.mode)
		if err == nil {
			err = utimes(fd, ".", a.atime, a.mtime)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("directory %q: set mode/times: %w", d, err)
		}
	}
	return nil
}

func depth(rel string) int {
	if rel == "." {
		return 0
	}
	return strings.Count(rel, "/") + 1
}

func (u *unpacker) setOwnerAndXattrs(fd int, hdr *tar.Header, xattrs []xattr) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown %d:%d: %w", hdr.Uid, hdr.Gid, err)
	}
	for _, x := range xattrs {
		if err := unix.Fsetxattr(fd, x.name, x.value, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", x.name, err)
		}
	}
	return nil
}

type xattr struct {
	name  string
	value []byte
}

// paxXattrs returns the entry's SCHILY.xattr.* records (the form GNU tar,
// bsdtar, Docker and BuildKit write), sorted by name. overlayfs' own
// namespaces are refused: trusted.overlay.* (or user.overlay.* under the
// userxattr mount option) in a lower layer would steer overlayfs itself
// (redirect, metacopy, origin), so only whiteout conversion sets them.
func paxXattrs(hdr *tar.Header) ([]xattr, error) {
	var xs []xattr
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok {
			continue
		}
		if strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			return nil, refuse(hdr.Name, RuleReservedXattr, "xattr %s belongs to overlayfs", name)
		}
		xs = append(xs, xattr{name: name, value: []byte(v)})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].name < xs[j].name })
	return xs, nil
}

// lsetxattrs sets xattrs on a symlink or fifo by name through the parent's
// /proc/self/fd entry (there is no fd-relative lsetxattr before setxattrat in
// Linux 6.13). The kernel allows user.* only on regular files and
// directories (xattr_permission), so those are skipped here, as GNU tar does.
func lsetxattrs(parent int, base string, xattrs []xattr) error {
	for _, x := range xattrs {
		if strings.HasPrefix(x.name, "user.") {
			continue
		}
		p := fmt.Sprintf("/proc/self/fd/%d/%s", parent, base)
		if err := unix.Lsetxattr(p, x.name, x.value, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", x.name, err)
		}
	}
	return nil
}

// tarMode returns permission bits plus setuid, setgid and sticky; archive/tar
// keeps them in Header.Mode as the c_ISUID/c_ISGID/c_ISVTX octal bits.
func tarMode(hdr *tar.Header) uint32 { return uint32(hdr.Mode) & 0o7777 }

func setTimes(dirfd int, name string, hdr *tar.Header) error {
	atime, mtime := headerTimes(hdr)
	return utimes(dirfd, name, atime, mtime)
}

// headerTimes returns the entry's access and modification times; an entry
// without an access time gets its modification time for both.
func headerTimes(hdr *tar.Header) (atime, mtime unix.Timespec) {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return timespec(at), timespec(hdr.ModTime)
}

func utimes(dirfd int, name string, atime, mtime unix.Timespec) error {
	if err := unix.UtimesNanoAt(dirfd, name, []unix.Timespec{atime, mtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// boundedReader enforces Limits.MaxBytes and ctx on the uncompressed stream.
type boundedReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
	max int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.n >= b.max {
		// One byte more proves the stream is over the limit (and not exactly at it).
		var one [1]byte
		for {
			n, err := b.r.Read(one[:])
			if n > 0 {
				return 0, refuse("", RuleMaxBytes, "layer is larger than %d bytes uncompressed", b.max)
			}
			if err != nil {
				return 0, err
			}
		}
	}
	if rem := b.max - b.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}
