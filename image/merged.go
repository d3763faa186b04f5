package image

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxReadFileSize bounds ReadFile: it exists to read /etc/passwd and
// /etc/group, and an image must not make berthd load gigabytes.
const MaxReadFileSize = 16 << 20

// maxSymlinkHops matches the kernel's MAXSYMLINKS (40, include/linux/namei.h).
const maxSymlinkHops = 40

// ReadFile returns the content of the regular file name (an absolute path in
// the image) as a container would see it in the merged image: layers are
// consulted top-down, whiteouts delete, opaque directories hide lower layers,
// a non-directory hides lower directories. Symlinks are followed in the
// merged image's namespace, never on disk: targets are resolved against the
// image root (".." stops at it, as with RESOLVE_IN_ROOT), and every on-disk
// open uses openat2 with RESOLVE_NO_SYMLINKS beneath the layer directory. A
// missing file is reported with fs.ErrNotExist.
func (s *Store) ReadFile(img *Image, name string) ([]byte, error) {
	v, err := openMerged(s.LayerDirs(img))
	if err != nil {
		return nil, fmt.Errorf("read %s from image %s: %w", name, img.Digest, err)
	}
	defer v.close()
	b, err := v.readFile(name)
	if err != nil {
		return nil, fmt.Errorf("read %s from image %s: %w", name, img.Digest, err)
	}
	return b, nil
}

// mergedView looks files up across layer directories as overlayfs would
// (Documentation/filesystems/overlayfs.rst, "Directories").
type mergedView struct {
	roots []int // layer root fds, top-most first
}

func openMerged(dirs []string) (*mergedView, error) {
	v := &mergedView{}
	for _, d := range dirs {
		fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			v.close()
			return nil, fmt.Errorf("open layer %s: %w", d, err)
		}
		v.roots = append(v.roots, fd)
	}
	return v, nil
}

func (v *mergedView) close() {
	for _, fd := range v.roots {
		unix.Close(fd)
	}
}

// node is a looked-up merged entry: the top-most layer that has it, its
// file type, and for a directory the layers that contribute to it.
type node struct {
	rel    string // path beneath each layer root, "." for the root
	layer  int
	mode   uint32 // S_IFMT bits
	layers []int  // directories only, top-most first
}

func (n node) isDir() bool { return n.mode == unix.S_IFDIR }

func (v *mergedView) rootNode() node {
	all := make([]int, len(v.roots))
	for i := range all {
		all[i] = i
	}
	// overlayfs merges every lower root; an opaque marker on a layer root is
	// not consulted for the root dentry, so it is not here either.
	return node{rel: ".", mode: unix.S_IFDIR, layers: all}
}

// lookup finds child name in the merged directory dir.
func (v *mergedView) lookup(dir node, name string) (node, bool, error) {
	rel := path.Join(dir.rel, name)
	var found node
	for _, li := range dir.layers {
		st, err := v.lstat(li, dir.rel, name)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return node{}, false, err
		}
		mode := st.Mode & unix.S_IFMT
		if found.mode == 0 {
			if mode == unix.S_IFCHR && st.Rdev == 0 {
				return node{}, false, nil // whiteout
			}
			found = node{rel: rel, layer: li, mode: mode}
			if mode != unix.S_IFDIR {
				return found, true, nil
			}
			found.layers = []int{li}
		} else {
			// Below a directory, only directories merge; anything else (a file,
			// a whiteout) hides itself and every layer under it.
			if mode != unix.S_IFDIR {
				return found, true, nil
			}
			found.layers = append(found.layers, li)
		}
		if v.opaque(li, rel) {
			return found, true, nil
		}
	}
	return found, found.mode != 0, nil
}

func (v *mergedView) lstat(layer int, dirRel, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := openBeneath(v.roots[layer], dirRel, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

func (v *mergedView) opaque(layer int, rel string) bool {
	fd, err := openBeneath(v.roots[layer], rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var b [4]byte
	n, err := unix.Fgetxattr(fd, opaqueXattr, b[:])
	return err == nil && n == 1 && b[0] == 'y'
}

func (v *mergedView) readlink(n node) (string, error) {
	dir, base := path.Split(n.rel)
	fd, err := openBeneath(v.roots[n.layer], path.Clean(dir), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, unix.PathMax)
	k, err := unix.Readlinkat(fd, base, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:k]), nil
}

// resolve walks name component by component in the merged view, following
// symlinks (the last one too).
func (v *mergedView) resolve(name string) (node, error) {
	stack := []node{v.rootNode()}
	queue := splitPath(name)
	hops := 0
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		switch c {
		case ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		cur := stack[len(stack)-1]
		n, ok, err := v.lookup(cur, c)
		if err != nil {
			return node{}, err
		}
		if !ok {
			return node{}, fmt.Errorf("%s: %w", path.Join("/", cur.rel, c), fs.ErrNotExist)
		}
		switch {
		case n.mode == unix.S_IFLNK:
			if hops++; hops > maxSymlinkHops {
				return node{}, fmt.Errorf("%s: too many levels of symbolic links", name)
			}
			target, err := v.readlink(n)
			if err != nil {
				return node{}, err
			}
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			queue = append(splitPath(target), queue...)
		case n.isDir():
			stack = append(stack, n)
		default:
			if len(queue) > 0 {
				return node{}, fmt.Errorf("%s: %w", path.Join("/", n.rel), unix.ENOTDIR)
			}
			return n, nil
		}
	}
	return stack[len(stack)-1], nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

func (v *mergedView) readFile(name string) ([]byte, error) {
	n, err := v.resolve(name)
	if err != nil {
		return nil, err
	}
	if n.mode != unix.S_IFREG {
		return nil, fmt.Errorf("%s is not a regular file", path.Join("/", n.rel))
	}
	// O_NONBLOCK: should the entry have been swapped for a fifo, do not hang.
	fd, err := openBeneath(v.roots[n.layer], n.rel, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), n.rel)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path.Join("/", n.rel))
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxReadFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxReadFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path.Join("/", n.rel), MaxReadFileSize)
	}
	return b, nil
}
