package unitgen

import (
	"io/fs"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Annotation keys of the spec, the names CRI-O and dockershim used, so tools
// that know Kubernetes containers recognise them.
const (
	annotationNamespace = "io.kubernetes.pod.namespace"
	annotationPod       = "io.kubernetes.pod.name"
	annotationPodUID    = "io.kubernetes.pod.uid"
	annotationContainer = "io.kubernetes.container.name"
)

// spec builds the OCI runtime spec stage-1 runs, shaped like the spec
// containerd's CRI plugin would give runc for the same container.
func (g *gen) spec() (*specs.Spec, error) {
	caps, err := g.capabilitySet()
	if err != nil {
		return nil, err
	}
	if err := g.checkSecurity(caps); err != nil {
		return nil, err
	}
	pu, err := g.resolveUser()
	if err != nil {
		return nil, err
	}
	ctrEnv, err := g.containerEnv()
	if err != nil {
		return nil, err
	}
	args, err := g.processArgs(ctrEnv)
	if err != nil {
		return nil, err
	}
	cwd, err := g.workingDir()
	if err != nil {
		return nil, err
	}
	pod, paths := g.pod, g.in.Paths
	hostname, _, err := PodHostname(pod)
	if err != nil {
		return nil, err
	}
	// A host-network pod shares the node's network and UTS namespaces, as
	// on the kubelet's runtimes: its hostname is the node's, which the
	// container must not set (there is no UTS namespace of its own).
	specHostname := hostname
	if pod.Spec.HostNetwork {
		hostname, specHostname = g.in.Options.NodeHostname, ""
	}
	oomScoreAdj := g.in.Limits.OOMScoreAdjust

	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User:            specs.User{UID: pu.uid, GID: pu.gid, AdditionalGids: pu.additional},
			Args:            args,
			Env:             processEnv(hostname, g.in.Image.Config.Env, ctrEnv, pu.home),
			Cwd:             cwd,
			Capabilities:    linuxCapabilities(caps, pu.uid),
			NoNewPrivileges: g.noNewPrivileges(caps),
			// Rlimits stay unset: the workload inherits the unit's
			// (systemd's default LimitNOFILE=1024:524288).
			OOMScoreAdj: &oomScoreAdj,
		},
		// Root.Path is where stage-1 mounts the overlay (the first mount
		// below); Readonly remounts it read-only afterwards.
		Root:     &specs.Root{Path: paths.Rootfs, Readonly: g.sc.readOnlyRoot},
		Hostname: specHostname,
		Mounts:   g.mounts(),
		Annotations: map[string]string{
			annotationNamespace: pod.Namespace,
			annotationPod:       pod.Name,
			annotationPodUID:    string(pod.UID),
			annotationContainer: g.ctr.Name,
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				// The pod's pause's when it shares its process
				// namespace, else a new one (no path).
				{Type: specs.PIDNamespace, Path: paths.PIDNS},
				{Type: specs.IPCNamespace, Path: paths.IPCNS},
				{Type: specs.UTSNamespace, Path: paths.UTSNS},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: paths.NetNS},
			},
			Devices: standardDevices(),
		},
	}
	if pod.Spec.HostNetwork {
		// No entry: berth-init stays in the namespaces systemd started
		// it in, the node's.
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
			return ns.Type == specs.NetworkNamespace || ns.Type == specs.UTSNamespace
		})
	}
	if !g.sc.privileged {
		// containerd's / Docker's defaults (oci.WithDefaultSpec); Kubernetes
		// drops them only for privileged containers or procMount: Unmasked.
		s.Linux.MaskedPaths = []string{
			"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
			"/sys/firmware", "/sys/devices/virtual/powercap",
		}
		s.Linux.ReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	}
	// The seccomp profile depends on the capabilities chosen above.
	if s.Linux.Seccomp, err = g.seccompProfile(s); err != nil {
		return nil, err
	}
	return s, nil
}

// mounts are the mounts containerd's CRI plugin gives a container (the
// default spec's, plus the read-only cgroup mount that "inherits docker's
// behavior"), preceded by the root filesystem and followed by the pod's
// /etc files.
//
// berth convention: the FIRST mount is the overlay root filesystem with
// Destination "/". The runtime spec has no such mount (runc expects
// Root.Path to be mounted already); stage-1 mounts it on Root.Path before
// anything else, and then the others inside it.
//
// /sys/fs/cgroup is type "cgroup" as for runc: there is no cgroup namespace
// yet, so stage-1 binds only the container's own cgroup directory of each
// hierarchy (the unit's cgroup) under a tmpfs, never the host's tree; tools
// like the JVM find their limits there.
//
// /dev/shm is the pod's (Paths.Shm), shared by its containers as they
// share the IPC namespace (System V IPC, POSIX message queues).
func (g *gen) mounts() []specs.Mount {
	p := g.in.Paths
	sysfs := "ro"
	if g.sc.privileged {
		sysfs = "rw" // containerd's WithWriteableSysfs and WithWriteableCgroupfs
	}
	ms := []specs.Mount{
		{Destination: "/", Type: "overlay", Source: "overlay", Options: []string{
			"lowerdir=" + strings.Join(p.Lowers, ":"), "upperdir=" + p.Upper, "workdir=" + p.Work}},
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", sysfs}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", sysfs}},
	}
	// The pod's files are read-only when the root filesystem is, as
	// containerd's CRI plugin mounts /etc/hostname and /etc/resolv.conf.
	rw := "rw"
	if g.sc.readOnlyRoot {
		rw = "ro"
	}
	volumeOn := map[string]bool{}
	for _, v := range g.in.Volumes {
		volumeOn[path.Clean(v.Destination)] = true
	}
	for _, f := range []struct{ dst, src string }{
		{"/etc/hosts", p.Hosts}, {"/etc/hostname", p.Hostname}, {"/etc/resolv.conf", p.ResolvConf},
	} {
		if f.src != "" && !volumeOn[f.dst] {
			ms = append(ms, specs.Mount{Destination: f.dst, Type: "bind", Source: f.src, Options: []string{"rbind", "rprivate", rw}})
		}
	}
	if p.Shm != "" {
		for i := range ms {
			if ms[i].Destination == "/dev/shm" {
				ms[i] = specs.Mount{Destination: "/dev/shm", Type: "bind", Source: p.Shm, Options: []string{"rbind", "rprivate", "nosuid", "noexec", "nodev", "rw"}}
			}
		}
	}
	// The termination log, as the kubelet binds it (writable, also with a
	// read-only root filesystem).
	if tp := g.ctr.TerminationMessagePath; tp != "" && p.TerminationLog != "" && !volumeOn[path.Clean(tp)] {
		ms = append(ms, specs.Mount{Destination: tp, Type: "bind", Source: p.TerminationLog, Options: []string{"rbind", "rprivate", "rw"}})
	}
	// Volumes last, parents before children (containerd orders the
	// kubelet's mounts by path depth, so /data is mounted before
	// /data/cache), otherwise in the pod's order.
	vols := slices.Clone(g.in.Volumes)
	slices.SortStableFunc(vols, func(a, b specs.Mount) int {
		return strings.Count(path.Clean(a.Destination), "/") - strings.Count(path.Clean(b.Destination), "/")
	})
	return append(ms, vols...)
}

// standardDevices are the device nodes stage-1 binds from the host into the
// container's /dev (the OCI runtime spec's default devices, config-linux.md);
// stage-1 also links /dev/ptmx to pts/ptmx, /dev/fd and /dev/std*. Privileged
// containers get the same set: the host's other devices are not exposed.
func standardDevices() []specs.LinuxDevice {
	mode := fs.FileMode(0o666)
	var root uint32
	dev := func(p string, major, minor int64) specs.LinuxDevice {
		return specs.LinuxDevice{Path: p, Type: "c", Major: major, Minor: minor, FileMode: &mode, UID: &root, GID: &root}
	}
	return []specs.LinuxDevice{
		dev("/dev/null", 1, 3), dev("/dev/zero", 1, 5), dev("/dev/full", 1, 7),
		dev("/dev/random", 1, 8), dev("/dev/urandom", 1, 9), dev("/dev/tty", 5, 0),
	}
}
