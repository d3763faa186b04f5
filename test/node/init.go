package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// initMain runs as PID 1 of the node's new namespaces: it builds the root
// (docs/systemd.md, "The test node": private /etc, the host's /usr
// read-only, tmpfs /run and /tmp, the node's /var, fresh proc and sysfs,
// read-write cgroup controllers, a minimal /dev), pivots into it and execs
// systemd.
func initMain() {
	cfg, err := loadConfig()
	if err == nil {
		err = buildRoot(cfg)
	}
	if err == nil {
		env := []string{"container=other", "PATH=" + Path}
		err = unix.Exec("/lib/systemd/systemd", []string{"/lib/systemd/systemd", "--system"}, env)
	}
	fmt.Fprintln(os.Stderr, "berth node init:", err)
}

type mnt struct {
	src, dst, fstype string
	flags            uintptr
	data             string
	mkTarget         bool // create dst (as a file if src is one) right before mounting
}

func buildRoot(cfg *config) error {
	// Nothing mounted here may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	root := filepath.Join(cfg.Dir, "root")
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	for _, d := range []string{"usr", "etc", "var", "run", "tmp", "proc", "sys", "dev", "root", "mnt", "srv", "home", "opt/berth/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	// Debian 12 is merged-/usr: bin, sbin, lib* are symlinks into usr.
	for _, l := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		if t, err := os.Readlink("/" + l); err == nil {
			if err := os.Symlink(t, filepath.Join(root, l)); err != nil {
				return err
			}
		}
	}
	ro := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	usr := []mnt{
		{"/usr", "usr", "", unix.MS_BIND | unix.MS_REC, "", false},
		{"", "usr", "", ro, "", false},
	}
	if cfg.Packages {
		usr = []mnt{overlay(cfg.Dir, "usr")}
	}
	mounts := append(usr, []mnt{
		{"overlay", "etc", "overlay", 0, fmt.Sprintf("lowerdir=/etc,upperdir=%s/etc-upper,workdir=%s/etc-work", cfg.Dir, cfg.Dir), false},
		{filepath.Join(cfg.Dir, "var"), "var", "", unix.MS_BIND, "", false},
		{"tmpfs", "run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=755", false},
		{"tmpfs", "tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
		{"sysfs", "sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY, "", false},
		{"tmpfs", "sys/fs/cgroup", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=755", false},
		{"tmpfs", "dev", "tmpfs", unix.MS_NOSUID, "mode=755", false},
	}...)
	if cfg.Packages {
		for _, d := range pkgDirs {
			if _, err := os.Stat("/" + d); err == nil {
				m := overlay(cfg.Dir, d)
				m.mkTarget = true
				mounts = append(mounts, m)
			}
		}
	}
	if cfg.BinDir != "" {
		mounts = append(mounts,
			mnt{cfg.BinDir, "opt/berth/bin", "", unix.MS_BIND, "", false},
			mnt{"", "opt/berth/bin", "", ro &^ unix.MS_NOSUID, "", false})
	}
	for _, b := range cfg.Binds {
		dst := strings.TrimPrefix(filepath.Clean(b.Target), "/")
		mounts = append(mounts, mnt{b.Source, dst, "", unix.MS_BIND | unix.MS_REC, "", true})
	}
	if err := mountAll(root, mounts); err != nil {
		return err
	}
	if err := mountCgroups(root, cfg.Hier); err != nil {
		return err
	}
	if err := populateDev(filepath.Join(root, "dev")); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(cfg.Name)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	// pivot_root(".", ".") then detach the old root: runc's way, needs no
	// directory for the old root (pivot_root(2) NOTES).
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}

// overlay is the mount of the host's /<dir> as the lower layer of the
// node's, with the upper layer in the node's directory (Options.Packages).
func overlay(nodeDir, dir string) mnt {
	return mnt{"overlay", dir, "overlay", 0, fmt.Sprintf("lowerdir=/%s,upperdir=%s/pkg-upper/%s,workdir=%s/pkg-work/%s", dir, nodeDir, dir, nodeDir, dir), false}
}

func mountAll(root string, ms []mnt) error {
	for _, m := range ms {
		dst := filepath.Join(root, m.dst)
		if m.mkTarget {
			// Created now, not earlier: a tmpfs mounted on a parent (/tmp) would hide it.
			var err error
			if st, serr := os.Stat(m.src); serr == nil && !st.IsDir() {
				err = touch(dst)
			} else {
				err = os.MkdirAll(dst, 0o755)
			}
			if err != nil {
				return err
			}
		}
		if err := unix.Mount(m.src, dst, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s (%s %s): %w", m.src, dst, m.fstype, m.data, err)
		}
	}
	return nil
}

// mountCgroups mounts every host hierarchy again inside the node's cgroup
// namespace, read-write, so systemd's limits reach the kernel (nspawn mounts
// them read-only on v1 hosts, which is why the node does not use it).
func mountCgroups(root string, hs []hierarchy) error {
	base := filepath.Join(root, "sys/fs/cgroup")
	for _, h := range hs {
		if h.V2 {
			dst := base
			if len(hs) > 1 {
				dst = filepath.Join(base, "unified")
			}
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			if err := unix.Mount("cgroup2", dst, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return fmt.Errorf("mount cgroup2 on %s: %w", dst, err)
			}
			continue
		}
		dst := filepath.Join(base, filepath.Base(h.Mount))
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("cgroup", dst, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, h.Options); err != nil {
			return fmt.Errorf("mount cgroup %s on %s: %w", h.Options, dst, err)
		}
	}
	return nil
}

func touch(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// populateDev gives the node the standard pseudo devices, bound from the
// host's (mknod would need the devices cgroup to allow it), a private devpts
// and /dev/shm.
func populateDev(dev string) error {
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		p := filepath.Join(dev, d)
		if err := touch(p); err != nil {
			return err
		}
		if err := unix.Mount("/dev/"+d, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d, err)
		}
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		if err := os.MkdirAll(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620,gid=5"); err != nil {
		return fmt.Errorf("mount devpts: %w", err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	if err := unix.Mount("mqueue", filepath.Join(dev, "mqueue"), "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /dev/mqueue: %w", err)
	}
	links := map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "core": "/proc/kcore"}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return nil
}
