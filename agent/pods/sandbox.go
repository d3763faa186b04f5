package pods

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// podNamespaces are the namespaces a pod's containers share. Each is kept
// alive by a bind mount of its nsfs file, as `ip netns add` does, so no process
// has to stay resident for the pod.
var podNamespaces = []struct {
	name string
	flag int
}{
	{"net", unix.CLONE_NEWNET},
	{"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS},
}

// createNamespaces makes new network, IPC and UTS namespaces for a pod, sets
// the pod's hostname in the UTS one, brings loopback up in the network one
// (the only interface of a pod in this version), and pins each at
// dir/<name>. On error nothing stays mounted.
func createNamespaces(dir, hostname string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		// unshare(2) changes the calling thread only. The thread is never
		// unlocked: when this goroutine ends, Go retires the tainted thread
		// instead of handing it to other goroutines.
		goruntime.LockOSThread()
		errc <- func() error {
			flags := 0
			for _, ns := range podNamespaces {
				flags |= ns.flag
			}
			if err := unix.Unshare(flags); err != nil {
				return fmt.Errorf("unshare pod namespaces: %w", err)
			}
			if err := unix.Sethostname([]byte(hostname)); err != nil {
				return fmt.Errorf("set pod hostname: %w", err)
			}
			if err := loopbackUp(); err != nil {
				return err
			}
			tid := unix.Gettid()
			for _, ns := range podNamespaces {
				target := filepath.Join(dir, ns.name)
				f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
				if err != nil {
					return err
				}
				f.Close()
				src := fmt.Sprintf("/proc/self/task/%d/ns/%s", tid, ns.name)
				if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("pin %s namespace at %s: %w", ns.name, target, err)
				}
			}
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		if rerr := removeNamespaces(dir); rerr != nil {
			return errors.Join(err, fmt.Errorf("clean up pod namespaces: %w", rerr))
		}
		return err
	}
	return nil
}

// loopbackUp sets IFF_UP on lo of the calling thread's network namespace (a
// socket belongs to the namespace it was created in).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// removeNamespaces unpins and deletes the pod's namespace files; the
// namespaces themselves go when their last user (a container) exits.
func removeNamespaces(dir string) error {
	var errs []error
	for _, ns := range podNamespaces {
		p := filepath.Join(dir, ns.name)
		// EINVAL: not a mount point; ENOENT, ENOTDIR: nothing there (dir
		// may even be a stray file, which the caller removes with the rest).
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// namespacesPinned reports whether all of the pod's namespace files are
// nsfs bind mounts (a reboot or a crash between steps can leave plain files).
func namespacesPinned(dir string) bool {
	for _, ns := range podNamespaces {
		var st unix.Statfs_t
		if err := unix.Statfs(filepath.Join(dir, ns.name), &st); err != nil || st.Type != unix.NSFS_MAGIC {
			return false
		}
	}
	return true
}

// writePodFiles writes the files bound into every container of a pod:
// /etc/hosts as the kubelet writes it (managedHostsFileContent: the pod's
// own line names its FQDN first when it has one, then its hostname),
// /etc/hostname and /etc/resolv.conf.
func writePodFiles(dir, hostname, short, fqdn string) error {
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		// The kubelet's dnsPolicy "Default" copies the node's resolv.conf; a
		// node without one gives the pod an empty one.
		resolv = nil
	}
	files := map[string]string{
		"hosts": strings.Join([]string{
			"# Kubernetes-managed hosts file (berth).",
			"127.0.0.1\tlocalhost",
			"::1\tlocalhost ip6-localhost ip6-loopback",
			"127.0.1.1\t" + strings.TrimPrefix(fqdn+"\t"+short, "\t"),
			"",
		}, "\n"),
		"hostname":    hostname + "\n",
		"resolv.conf": string(resolv),
	}
	for name, content := range files {
		if err := bndl.WriteFileAtomic(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
