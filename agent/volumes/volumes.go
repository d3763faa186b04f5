// Package volumes materialises a pod's volumes on the host as the kubelet's
// volume plugins do (pkg/volume/{emptydir,configmap,secret,downwardapi,
// projected,hostpath}, and persistentVolumeClaim volumes over the
// volume the claim is bound to) and turns each container's volumeMounts into the bind
// mounts berth-init makes (the kubelet's makeMounts, with subPath and
// subPathExpr).
//
// Layout, all under the directory the caller gives (the pod's
// <state>/pods/<ns>_<pod>/volumes, 0700 root):
//
//	empty-dir/<name>     emptyDir (a tmpfs mount point for medium Memory)
//	configmap/<name>     AtomicWriter directory on disk
//	secret/<name>        AtomicWriter directory on a tmpfs (never on disk)
//	downward-api/<name>  AtomicWriter directory on a tmpfs (as the kubelet)
//	projected/<name>     AtomicWriter directory on a tmpfs
//	host-path/<name>     a bind mount pinning the checked hostPath inode
//	pvc/<name>           a bind mount pinning the claim's volume's directory
//	subpath/<ctr>/<i>    a bind mount pinning a checked subPath inode
//
// Nothing here depends on berthd's memory: Teardown works from the mount
// table, so it also cleans up after a crash.
package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Config is the operator's volume policy: berthd.yaml
//
//	volumes:
//	  hostPathPrefixes: [/srv/berth, /var/log]
type Config struct {
	// HostPathPrefixes are the host directories hostPath volumes may name
	// (the directory itself or anything below it, after resolving
	// symlinks). Empty: every hostPath volume is refused.
	HostPathPrefixes []string
	// NodeAllocatableMemory bounds memory-backed volumes (bytes; 0: no
	// bound), as node allocatable does on the kubelet.
	NodeAllocatableMemory int64
	// Claims resolves persistentVolumeClaim volumes; nil: they wait
	// (unavailable).
	Claims ClaimSource
	// LocalPathRoot is where berth's provisioner keeps volumes
	// (agent/storage.Dir): a claim's hostPath volume may lie there as well
	// as under HostPathPrefixes.
	LocalPathRoot string
}

// ClaimSource reads the claims that pods' persistentVolumeClaim volumes
// name and the volumes they are bound to, as the kubelet's volume manager
// reads them from the API (agent/storage.ClaimSource reads the store).
type ClaimSource interface {
	PersistentVolumeClaim(ns, name string) (*corev1.PersistentVolumeClaim, error)
	PersistentVolume(name string) (*corev1.PersistentVolume, error)
}

// Manager sets up and tears down pods' volumes. Its methods may run for
// different pods at once; for one pod the caller serialises them (the pod
// lock of agent/pods), as AtomicWriter requires.
type Manager struct {
	cfg Config
	src Source
}

// New returns a Manager; src may be nil if no pod uses configMap or secret
// volumes.
func New(cfg Config, src Source) *Manager { return &Manager{cfg: cfg, src: src} }

// Kind is a volume's source type, as its field in the pod spec is named.
type Kind string

const (
	EmptyDir    Kind = "emptyDir"
	ConfigMap   Kind = "configMap"
	Secret      Kind = "secret"
	DownwardAPI Kind = "downwardAPI"
	Projected   Kind = "projected"
	HostPath    Kind = "hostPath"
	// PersistentVolumeClaim is a claim's bound volume: berth mounts volumes
	// with a hostPath (or local) source.
	PersistentVolumeClaim Kind = "persistentVolumeClaim"
)

// Volume is one materialised volume.
type Volume struct {
	Name string
	Kind Kind
	// Path is the host path to bind-mount: a directory, or for a hostPath
	// of a file, socket or device, that file (a pinned mount point).
	Path string
	// ReadOnly is forced by the plugin: configMap, secret, downwardAPI and
	// projected are always mounted read-only (the kubelet's fix for
	// CVE-2017-1002102); a persistentVolumeClaim volume by its readOnly.
	ReadOnly bool
	// claimed is the host directory of a persistentVolumeClaim volume's
	// bound volume, resolved before its set-up.
	claimed *corev1.HostPathVolumeSource
}

// atomic reports whether berth writes the volume's content through the
// AtomicWriter, so that its symlinks are berth's own.
func (v *Volume) atomic() bool {
	switch v.Kind {
	case ConfigMap, Secret, DownwardAPI, Projected:
		return true
	}
	return false
}

// Set is a pod's materialised volumes.
type Set struct {
	Dir     string
	Volumes map[string]*Volume
}

// kindDir is the folder of each kind under the pod's volume directory.
var kindDir = map[Kind]string{
	EmptyDir: "empty-dir", ConfigMap: "configmap", Secret: "secret",
	DownwardAPI: "downward-api", Projected: "projected", HostPath: "host-path",
	PersistentVolumeClaim: "pvc",
}

func kindOf(v *corev1.Volume) (Kind, error) {
	s := v.VolumeSource
	switch {
	case s.EmptyDir != nil:
		return EmptyDir, nil
	case s.ConfigMap != nil:
		return ConfigMap, nil
	case s.Secret != nil:
		return Secret, nil
	case s.DownwardAPI != nil:
		return DownwardAPI, nil
	case s.Projected != nil:
		return Projected, nil
	case s.HostPath != nil:
		return HostPath, nil
	case s.PersistentVolumeClaim != nil:
		return PersistentVolumeClaim, nil
	}
	return "", fmt.Errorf("volume %q: this volume source is not supported by berth (emptyDir, configMap, secret, downwardAPI, projected, hostPath, persistentVolumeClaim are): %w", v.Name, errdefs.ErrNotImplemented)
}

func (s *Set) volDir(k Kind, name string) string { return filepath.Join(s.Dir, kindDir[k], name) }

// Setup materialises every volume of pod under dir (absolute; created 0700
// if missing). It may be called again for a pod whose volumes exist (after
// a berthd restart): emptyDirs keep their content and mounts, atomic
// volumes are brought up to date. On failure, what this call created is
// removed again and what existed before is left as it was.
func (m *Manager) Setup(pod *corev1.Pod, dir string, res ResourceResolver) (_ *Set, err error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("volume directory %q: not absolute: %w", dir, errdefs.ErrInvalidArgument)
	}
	set := &Set{Dir: filepath.Clean(dir), Volumes: map[string]*Volume{}}
	var undo []string
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				if rerr := removeTree(undo[i]); rerr != nil {
					err = errors.Join(err, fmt.Errorf("undo: %w", rerr))
				}
			}
		}
	}()
	if _, serr := os.Lstat(set.Dir); errors.Is(serr, fs.ErrNotExist) {
		if err := os.MkdirAll(set.Dir, 0o700); err != nil {
			return nil, err
		}
		undo = append(undo, set.Dir)
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		// Volume names name directories: DNS labels, as the apiserver
		// requires; checked again here because they reach the filesystem.
		if errs := validation.IsDNS1123Label(v.Name); len(errs) > 0 {
			return nil, fmt.Errorf("volume %q: %s: %w", v.Name, errs[0], errdefs.ErrInvalidArgument)
		}
		if set.Volumes[v.Name] != nil {
			return nil, fmt.Errorf("volume %q: duplicate name: %w", v.Name, errdefs.ErrInvalidArgument)
		}
		k, err := kindOf(v)
		if err != nil {
			return nil, err
		}
		vol := &Volume{Name: v.Name, Kind: k, Path: set.volDir(k, v.Name)}
		vol.ReadOnly = vol.atomic()
		if _, serr := os.Lstat(filepath.Dir(vol.Path)); errors.Is(serr, fs.ErrNotExist) {
			if err := os.Mkdir(filepath.Dir(vol.Path), 0o700); err != nil {
				return nil, err
			}
			undo = append(undo, filepath.Dir(vol.Path))
		}
		_, serr := os.Lstat(vol.Path)
		fresh := errors.Is(serr, fs.ErrNotExist)
		if fresh {
			undo = append(undo, vol.Path)
		}
		if k == PersistentVolumeClaim {
			// The kubelet's desired-state populator: a claim that is not
			// bound yet (or is going) makes the pod wait, with its words.
			if vol.claimed, err = m.claimedVolume(pod, v.PersistentVolumeClaim, fresh); err != nil {
				return nil, err
			}
			vol.ReadOnly = v.PersistentVolumeClaim.ReadOnly
		}
		if err := m.setupOne(pod, v, vol, fresh, res); err != nil {
			return nil, fmt.Errorf("MountVolume.SetUp failed for volume %q : %w", v.Name, err)
		}
		set.Volumes[v.Name] = vol
	}
	return set, nil
}

func (m *Manager) setupOne(pod *corev1.Pod, v *corev1.Volume, vol *Volume, fresh bool, res ResourceResolver) error {
	switch vol.Kind {
	case EmptyDir:
		if err := mkdirMode(vol.Path, 0o777); err != nil {
			return err
		}
		if v.EmptyDir.Medium == corev1.StorageMediumMemory {
			var limit int64
			if v.EmptyDir.SizeLimit != nil {
				limit = v.EmptyDir.SizeLimit.Value()
			}
			if err := m.ensureTmpfs(vol.Path, m.memoryVolumeSize(pod, limit)); err != nil {
				return err
			}
		}
		// medium "" (disk): a plain directory; sizeLimit on disk is the
		// kubelet's eviction, not a mount option.
		if fresh {
			return fsGroupOwnership(pod, vol.Path, false)
		}
		return nil
	case HostPath:
		f, err := m.openHostPath(v.HostPath, m.cfg.HostPathPrefixes)
		if err != nil {
			return err
		}
		defer f.Close()
		return pin(f, vol.Path)
	case PersistentVolumeClaim:
		// hostPath's checks and pinning, with the provisioner's directory
		// allowed besides the configured prefixes.
		prefixes := m.cfg.HostPathPrefixes
		if m.cfg.LocalPathRoot != "" {
			prefixes = append(append([]string(nil), prefixes...), m.cfg.LocalPathRoot)
		}
		f, err := m.openHostPath(vol.claimed, prefixes)
		if err != nil {
			return err
		}
		defer f.Close()
		return pin(f, vol.Path)
	case ConfigMap:
		if err := mkdirMode(vol.Path, 0o777); err != nil {
			return err
		}
	default:
		// secret, downwardAPI, projected: the kubelet wraps them in a
		// memory-medium emptyDir, so their content never reaches a disk.
		if err := mkdirMode(vol.Path, 0o777); err != nil {
			return err
		}
		if err := m.ensureTmpfs(vol.Path, m.memoryVolumeSize(pod, 0)); err != nil {
			return err
		}
	}
	return m.write(pod, v, vol, res)
}

// Update brings the content of pod's configMap, secret, downwardAPI and
// projected volumes up to date (the kubelet's periodic remount): each
// changed volume is swapped atomically; an unchanged one is not touched.
// Errors of all volumes are joined; a volume that fails keeps its content.
func (m *Manager) Update(pod *corev1.Pod, dir string, res ResourceResolver) error {
	set := &Set{Dir: filepath.Clean(dir)}
	var errs []error
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		k, err := kindOf(v)
		if err != nil || validation.IsDNS1123Label(v.Name) != nil {
			continue
		}
		vol := &Volume{Name: v.Name, Kind: k, Path: set.volDir(k, v.Name)}
		if !vol.atomic() {
			continue
		}
		if _, err := os.Lstat(filepath.Join(vol.Path, dataDirName)); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: not set up: %w", v.Name, errdefs.ErrNotFound))
			continue
		}
		if err := m.write(pod, v, vol, res); err != nil {
			errs = append(errs, fmt.Errorf("MountVolume.SetUp failed for volume %q : %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

// write computes an atomic volume's payload and projects it.
func (m *Manager) write(pod *corev1.Pod, v *corev1.Volume, vol *Volume, res ResourceResolver) error {
	var payload map[string]file
	var err error
	switch vol.Kind {
	case ConfigMap:
		if m.src == nil {
			return fmt.Errorf("no configmap source: %w", errdefs.ErrUnavailable)
		}
		payload, err = configMapPayload(m.src, pod.Namespace, v.ConfigMap, v.ConfigMap.DefaultMode)
	case Secret:
		if m.src == nil {
			return fmt.Errorf("no secret source: %w", errdefs.ErrUnavailable)
		}
		s := v.Secret
		payload, err = secretPayload(m.src, pod.Namespace, s.SecretName, s.Items, s.Optional != nil && *s.Optional, s.DefaultMode)
	case DownwardAPI:
		payload, err = downwardPayload(pod, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode, res)
	case Projected:
		if m.src == nil && projectsObjects(v.Projected) {
			return fmt.Errorf("no configmap/secret source: %w", errdefs.ErrUnavailable)
		}
		payload, err = projectedPayload(m.src, pod, v.Projected, res)
	}
	if err != nil {
		return err
	}
	if g := fsGroup(pod); g != nil {
		// Group-readable, as SetVolumeOwnership leaves a read-only
		// volume; in the payload, so that an unchanged volume compares
		// equal and is not rewritten.
		for k, f := range payload {
			f.mode |= 0o440
			payload[k] = f
		}
	}
	if err := writeAtomic(vol.Path, payload); err != nil {
		return err
	}
	return fsGroupOwnership(pod, vol.Path, true)
}

func fsGroup(pod *corev1.Pod) *int64 {
	if sc := pod.Spec.SecurityContext; sc != nil {
		return sc.FSGroup
	}
	return nil
}

// fsGroupOwnership is the kubelet's SetVolumeOwnership for a pod with
// fsGroup: every file and directory of the volume (links excepted) gets the
// group, group read (and write, unless the volume is read-only) added to
// its mode, and directories also setgid and group search, so that a
// non-root container in that group can read its secrets and write its
// emptyDirs.
func fsGroupOwnership(pod *corev1.Pod, root string, readOnly bool) error {
	g := fsGroup(pod)
	if g == nil {
		return nil
	}
	mask := fs.FileMode(0o660)
	if readOnly {
		mask = 0o440
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if err := os.Lchown(p, -1, int(*g)); err != nil {
			return fmt.Errorf("fsGroup %d on %s: %w", *g, p, err)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		m := mask
		if d.IsDir() {
			m |= fs.ModeSetgid | 0o110
		}
		return os.Chmod(p, info.Mode()&(fs.ModePerm|fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky)|m)
	})
}

func projectsObjects(p *corev1.ProjectedVolumeSource) bool {
	for _, s := range p.Sources {
		if s.ConfigMap != nil || s.Secret != nil {
			return true
		}
	}
	return false
}

// mkdirMode makes dir (its parent exists) with exactly mode, keeping an
// existing directory as it is.
func mkdirMode(dir string, mode os.FileMode) error {
	err := os.Mkdir(dir, mode)
	if errors.Is(err, fs.ErrExist) {
		st, serr := os.Lstat(dir)
		if serr != nil {
			return serr
		}
		if !st.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	if err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

func (m *Manager) ensureTmpfs(dir string, size int64) error {
	ok, err := isMountPoint(dir)
	if err != nil || ok {
		return err
	}
	return mountTmpfs(dir, size)
}

// memoryVolumeSize is the kubelet's calculateEmptyDirMemorySize: node
// allocatable memory, lowered to the pod's memory limit when it has one,
// lowered to the volume's sizeLimit when that is smaller still (0: no
// bound, the kernel's default of half the RAM).
//
// What the kernel charges: tmpfs pages are charged to the memory cgroup of
// the task that first touches them (the write or page fault that allocates
// the page), not to whoever mounted the tmpfs. berthd mounts an empty
// tmpfs, so nothing is charged to berthd except the few pages of a secret
// or configMap payload it writes itself; everything a container writes into
// an emptyDir of medium Memory is charged to that container's cgroup, inside
// the pod's, and counts against its memory limit exactly like anonymous
// memory (the kernel reclaims or OOM-kills within that cgroup; pages are
// not uncharged when the writer exits, only when the file is removed or the
// tmpfs unmounted, and move to the parent cgroup if the container's cgroup
// is removed first). The size= bound is the other limit: past it, writes
// fail with ENOSPC instead.
func (m *Manager) memoryVolumeSize(pod *corev1.Pod, sizeLimit int64) int64 {
	size := m.cfg.NodeAllocatableMemory
	if pl := podMemoryLimit(pod); pl > 0 && (size == 0 || pl <= size) {
		size = pl
	}
	if sizeLimit > 0 && (size == 0 || sizeLimit <= size) {
		size = sizeLimit
	}
	return size
}

// podMemoryLimit is the memory limit of the pod's cgroup as the kubelet's
// ResourceConfigForPod computes it: pod-level resources if set; else the
// sum of the app containers' and restartable (sidecar) init containers'
// limits, at least the largest limit of a plain init container; 0 if any
// container has no limit (then the pod is unbounded).
func podMemoryLimit(pod *corev1.Pod) int64 {
	if pod.Spec.Resources != nil {
		if q, ok := pod.Spec.Resources.Limits[corev1.ResourceMemory]; ok {
			return q.Value()
		}
	}
	var sum, initMax int64
	for _, c := range pod.Spec.Containers {
		q, ok := c.Resources.Limits[corev1.ResourceMemory]
		if !ok || q.Value() <= 0 {
			return 0
		}
		sum += q.Value()
	}
	for _, c := range pod.Spec.InitContainers {
		q, ok := c.Resources.Limits[corev1.ResourceMemory]
		if !ok || q.Value() <= 0 {
			return 0
		}
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sum += q.Value()
		} else if q.Value() > initMax {
			initMax = q.Value()
		}
	}
	return max(sum, initMax)
}

// Teardown unmounts and removes every volume under dir: tmpfs mounts,
// hostPath and subPath pins, then the files. Idempotent; it needs no state
// but the mount table, so it also cleans up after a crash or a Setup that
// failed half way. It never removes through a mount it could not detach.
func Teardown(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("volume directory %q: not absolute: %w", dir, errdefs.ErrInvalidArgument)
	}
	return removeTree(filepath.Clean(dir))
}

// Propagation values of a Mount, as OCI mount options.
const (
	PropagationPrivate = "rprivate" // mountPropagation None (default)
	PropagationSlave   = "rslave"   // HostToContainer
	PropagationShared  = "rshared"  // Bidirectional (privileged only)
)

// Mount is one entry of a container's mount list: an OCI bind mount
//
//	{Destination, Type: "bind", Source,
//	 Options: m.Options() = ["rbind", Propagation, "ro" or "rw"]}
//
// that berth-init makes in the container's mount namespace, then, when
// RecursiveReadOnly, turns read-only for every submount too
// (mount_setattr AT_RECURSIVE MOUNT_ATTR_RDONLY). Source is always a path
// inside the pod's volume directory (root-owned, 0700): a volume directory,
// a tmpfs, or a pin mount for hostPath and subPath, so no workload can swap
// what it names.
type Mount struct {
	Name              string // the volumeMount's name (its volume)
	Destination       string // mountPath, absolute in the container
	Source            string
	ReadOnly          bool
	RecursiveReadOnly bool
	Propagation       string
}

// ContainerMounts is the kubelet's makeMounts for container c: its
// volumeMounts in order, each on its volume, with subPath (or subPathExpr
// expanded from env, the container's resolved environment) opened safely
// beneath the volume and pinned under subpath/<container>/<index>. Missing
// subPath directories are created (with the volume root's mode), as the
// kubelet does. privileged allows Bidirectional propagation.
func (s *Set) ContainerMounts(c *corev1.Container, env map[string]string, privileged bool) (_ []Mount, err error) {
	if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
		return nil, fmt.Errorf("container %q: %s: %w", c.Name, errs[0], errdefs.ErrInvalidArgument)
	}
	// Pins made by this call go again if it fails.
	var pinned []string
	defer func() {
		if err != nil {
			for _, p := range pinned {
				if rerr := removeTree(p); rerr != nil {
					err = errors.Join(err, fmt.Errorf("undo: %w", rerr))
				}
			}
		}
	}()
	var out []Mount
	for i, vm := range c.VolumeMounts {
		vol := s.Volumes[vm.Name]
		if vol == nil {
			return nil, fmt.Errorf("cannot find volume %q to mount into container %q: %w", vm.Name, c.Name, errdefs.ErrInvalidArgument)
		}
		m := Mount{Name: vm.Name, Destination: vm.MountPath, Source: vol.Path, ReadOnly: vm.ReadOnly || vol.ReadOnly, Propagation: PropagationPrivate}
		if !path.IsAbs(m.Destination) {
			m.Destination = "/" + m.Destination
		}
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case corev1.MountPropagationNone:
			case corev1.MountPropagationHostToContainer:
				m.Propagation = PropagationSlave
			case corev1.MountPropagationBidirectional:
				if !privileged {
					return nil, fmt.Errorf("Bidirectional mount propagation is available only to privileged containers: %w", errdefs.ErrInvalidArgument)
				}
				m.Propagation = PropagationShared
			default:
				return nil, fmt.Errorf("invalid propagation mode: %s: %w", *vm.MountPropagation, errdefs.ErrInvalidArgument)
			}
		}
		if vm.RecursiveReadOnly != nil && *vm.RecursiveReadOnly != corev1.RecursiveReadOnlyDisabled {
			if !vm.ReadOnly {
				return nil, fmt.Errorf("volumeMount %q: recursiveReadOnly requires readOnly: %w", vm.Name, errdefs.ErrInvalidArgument)
			}
			m.RecursiveReadOnly = true
		}
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			e, err := ExpandSubPathExpr(vm.SubPathExpr, env)
			if err != nil {
				return nil, err
			}
			sub = e
		}
		if sub != "" {
			if err := checkSubPath(sub); err != nil {
				return nil, err
			}
			target := filepath.Join(s.Dir, "subpath", c.Name, strconv.Itoa(i))
			pinned = append(pinned, target)
			if err := s.pinSubPath(vol, sub, target); err != nil {
				return nil, fmt.Errorf("failed to prepare subPath for volumeMount %q of container %q: %w", vm.Name, c.Name, err)
			}
			m.Source = target
		}
		out = append(out, m)
	}
	return out, nil
}

func (s *Set) pinSubPath(vol *Volume, sub, target string) error {
	if err := makeSubPath(vol.Path, sub); err != nil {
		return err
	}
	f, err := OpenSubPath(vol.Path, sub, vol.atomic())
	if err != nil {
		return err
	}
	defer f.Close()
	return pin(f, target)
}

// ReleaseContainer removes a container's subPath pins (when the container
// is gone for good; Teardown removes them all with the pod).
func (s *Set) ReleaseContainer(container string) error {
	if errs := validation.IsDNS1123Label(container); len(errs) > 0 {
		return fmt.Errorf("container %q: %s: %w", container, errs[0], errdefs.ErrInvalidArgument)
	}
	return removeTree(filepath.Join(s.Dir, "subpath", container))
}

// Options are the OCI mount options for m, a mount of type "bind".
func (m Mount) Options() []string {
	o := []string{"rbind", m.Propagation}
	if m.ReadOnly {
		o = append(o, "ro")
	} else {
		o = append(o, "rw")
	}
	return o
}

// DefaultShmSize is containerd's and CRI-O's size of a pod's /dev/shm.
const DefaultShmSize = 64 << 20

// SetupShm makes the pod's shared /dev/shm: one tmpfs under dir (shm;
// nosuid, nodev, noexec, 1777, size bytes or DefaultShmSize), which every
// container of the pod bind-mounts at /dev/shm, as the sandbox's shm is on
// containerd. Its pages are charged like a memory emptyDir's: to the
// container that writes them. Idempotent; Teardown removes it.
func SetupShm(dir string, size int64) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("volume directory %q: not absolute: %w", dir, errdefs.ErrInvalidArgument)
	}
	if size <= 0 {
		size = DefaultShmSize
	}
	p := filepath.Join(filepath.Clean(dir), "shm")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	if err := mkdirMode(p, 0o1777); err != nil {
		return "", err
	}
	if ok, err := isMountPoint(p); err != nil || ok {
		return p, err
	}
	opts := fmt.Sprintf("mode=1777,size=%d", size)
	if err := unix.Mount("shm", p, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return "", fmt.Errorf("mount shm on %s: %w", p, err)
	}
	return p, nil
}
