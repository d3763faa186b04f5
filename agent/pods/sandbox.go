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
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/network"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// podNamespaces are the namespaces a pod's containers share. Each is kept
// alive by a bind mount of its nsfs file, as `ip netns add` does, so no process
// has to stay resident for the pod. A host-network pod has only the IPC one:
// it shares the node's network and UTS namespaces, as on the kubelet's
// runtimes.
var podNamespaces = []struct {
	name string
	flag int
	host bool // also made for a host-network pod
}{
	{"net", unix.CLONE_NEWNET, false},
	{"ipc", unix.CLONE_NEWIPC, true},
	{"uts", unix.CLONE_NEWUTS, false},
}

// hostNetworkMark, in a pod's namespace directory, says the pod has no
// network or UTS namespace of its own; it is written before anything is
// pinned, so a start cut short never passes for a pinned host-network pod.
const hostNetworkMark = "hostnetwork"

// createNamespaces makes new network, IPC and UTS namespaces for a pod (IPC
// only for a host-network pod), sets the pod's hostname in the UTS one,
// brings loopback up in the network one (CNI attaches the rest), and pins
// each at dir/<name>. On error nothing stays mounted.
func createNamespaces(dir, hostname string, hostNetwork bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if hostNetwork {
		if err := os.WriteFile(filepath.Join(dir, hostNetworkMark), nil, 0o600); err != nil {
			return err
		}
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
				if ns.host || !hostNetwork {
					flags |= ns.flag
				}
			}
			if err := unix.Unshare(flags); err != nil {
				return fmt.Errorf("unshare pod namespaces: %w", err)
			}
			if !hostNetwork {
				if err := unix.Sethostname([]byte(hostname)); err != nil {
					return fmt.Errorf("set pod hostname: %w", err)
				}
				if err := loopbackUp(); err != nil {
					return err
				}
			}
			tid := unix.Gettid()
			for _, ns := range podNamespaces {
				if hostNetwork && !ns.host {
					continue
				}
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
	if len(errs) == 0 {
		// Last: while a namespace file may still be pinned, the mark says
		// which ones the pod has.
		if err := os.Remove(filepath.Join(dir, hostNetworkMark)); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// namespacesPinned reports whether all of the pod's namespace files are
// nsfs bind mounts (a reboot or a crash between steps can leave plain files).
func namespacesPinned(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, hostNetworkMark))
	hostNetwork := err == nil
	for _, ns := range podNamespaces {
		if hostNetwork && !ns.host {
			continue
		}
		var st unix.Statfs_t
		if err := unix.Statfs(filepath.Join(dir, ns.name), &st); err != nil || st.Type != unix.NSFS_MAGIC {
			return false
		}
	}
	return true
}

// writePodFiles writes the files bound into every container of a pod but
// /etc/hosts (which names the pod's addresses, known once it is attached):
// /etc/hostname and /etc/resolv.conf as the kubelet composes it
// (network.DNS), recording the kubelet's warnings as events.
func (r *Runtime) writePodFiles(dir string, pod *corev1.Pod, hostname string) error {
	resolv, warns, err := r.cfg.DNS.PodResolvConf(pod)
	if err != nil {
		return err
	}
	for _, w := range warns {
		if w.Node {
			// The kubelet records it against the Node at every pod; once
			// per process in berthd's log says the same.
			r.nodeWarned.Do(func() { r.log.Warn(w.Message, "reason", w.Reason) })
			continue
		}
		r.event(pod, corev1.EventTypeWarning, w.Reason, w.Message)
	}
	files := map[string][]byte{"hostname": []byte(hostname + "\n"), "resolv.conf": resolv}
	for name, content := range files {
		if err := bndl.WriteFileAtomic(filepath.Join(dir, name), content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeHosts writes the pod's /etc/hosts (network.HostsFile). A pod
// without a pod network (the runtime alone, in tests) names itself on
// 127.0.1.1, as Debian does for a host without a fixed address.
func (r *Runtime) writeHosts(dir string, pod *corev1.Pod, ips []string, hostname, fqdn string) error {
	if len(ips) == 0 && !pod.Spec.HostNetwork {
		ips = []string{"127.0.1.1"}
	}
	short, _, _ := strings.Cut(hostname, ".") // with setHostnameAsFQDN, hostname is the FQDN
	b, err := network.HostsFile(pod, ips, short, fqdn, r.cfg.NodeHosts)
	if err != nil {
		return err
	}
	return bndl.WriteFileAtomic(filepath.Join(dir, "hosts"), b, 0o644)
}
