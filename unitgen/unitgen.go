// Package unitgen translates one container of a Kubernetes Pod into a systemd
// transient service plus an OCI runtime spec, without any I/O (the way Podman's
// Quadlet turns a .container file into a .service file).
//
// How berth runs a container, and therefore what is generated here:
//
//   - systemd 252 cannot give a unit its own PID namespace, so the unit's
//     ExecStart is berth's stage-1, `<Paths.Init> start [--verify-image]
//     <Paths.Bundle>`. On a first start it waits until the agent releases
//     the bundle (which it writes while systemd makes the unit). It reads
//     <bundle>/config.json (Unit.Spec; the agent replaces its seccomp
//     profile by the compiled filter), joins the pod's namespaces, makes
//     the container's mount namespace, clones a child in a new PID
//     namespace and meanwhile mounts the overlay rootfs, /dev, /sys…; the
//     child mounts /proc, pivots, applies the process security settings
//     and execs the workload.
//     Stage-1 writes the child's PID to <bundle>/pid and exits: the unit is
//     Type=forking with PIDFile=, so MainPID is the workload and the unit's
//     cgroup holds only the workload.
//   - `<Paths.Init> poststop <bundle>` runs as ExecStopPost and records the exit
//     status (and an OOM kill) while the unit's cgroup still exists.
//   - Process-level security (capabilities, no_new_privs, seccomp, uid/gid)
//     lives in the spec, because stage-1 itself needs CAP_SYS_ADMIN to set up
//     and so cannot run under a restricted unit. Resource limits and the devices
//     cgroup are unit properties, because systemd owns the cgroup.
//
// Everything Generate refuses because of the pod or its image is an
// *InvalidError (errdefs.IsInvalidArgument) naming the field.
package unitgen

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/berth-dev/berth/cgroup"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Input is everything Generate needs; the caller has done all the I/O.
type Input struct {
	Pod       *corev1.Pod
	Container string // name of a container in Pod.Spec.Containers (or Pod.Spec.InitContainers)
	Image     ImageInfo
	Paths     Paths
	Limits    cgroup.Limits // computed by the caller with the cgroup package
	Options   Options
	// Volumes are the container's volume mounts, made by the caller from
	// its volumeMounts (agent/volumes): binds of paths the caller pinned,
	// in the order given after the pod's files (a volume on /etc/hosts,
	// /etc/hostname or /etc/resolv.conf replaces the pod's file, as on
	// the kubelet).
	Volumes []specs.Mount
}

// ImageInfo is what Generate needs to know about the container's image.
type ImageInfo struct {
	Ref, Digest   string              // for the Description; Digest "sha256:…"
	Config        ocispec.ImageConfig // Entrypoint, Cmd, Env, WorkingDir, User, StopSignal
	Passwd, Group []byte              // the image's /etc/passwd and /etc/group (nil if absent)
}

// Paths are the host paths of one container and of its pod.
type Paths struct {
	Init   string   // stage-1 binary (e.g. /usr/libexec/berth/berth-init)
	Bundle string   // per-container dir (agent/bundle names its files), passed to stage-1
	Lowers []string // image layer dirs, top-most first (overlay lowerdir order)

	Upper, Work, Rootfs string // overlay upper/work dirs and the merged mountpoint
	PIDFile             string // where stage-1 writes the workload's PID (the unit's PIDFile=)

	// Pod namespace files (bind-mounted nsfs). Empty means a new namespace for
	// this container. A hostNetwork pod's containers get no network or UTS
	// namespace entry at all (NetNS and UTSNS are ignored): they stay in
	// the node's.
	NetNS, IPCNS, UTSNS string
	// PIDNS is the pinned PID namespace of the pod's pause
	// (PauseInput.Dir/PIDNSPin), set exactly when the pod shares its
	// process namespace (spec.shareProcessNamespace: true); empty: the
	// container's own, with the workload as its PID 1.
	PIDNS string

	Hosts, Hostname, ResolvConf string // pod files bound to /etc/hosts, /etc/hostname, /etc/resolv.conf
	// Shm is the pod's /dev/shm (a tmpfs every container of the pod
	// binds); empty: a tmpfs of the container's own.
	Shm string
	// TerminationLog is bound at the container's terminationMessagePath
	// (agent/bundle TerminationLogFile); empty: none.
	TerminationLog string
}

// Options are host-wide settings.
type Options struct {
	AllowPrivileged bool          // host configuration; privileged pods are refused otherwise
	CgroupV2        bool          // unified hierarchy: CPUWeight and MemoryMin instead of CPUShares
	RestartDelay    time.Duration // default 10s (kubelet's initial back-off)
	VerifyImage     bool          // ExecStart=<Init> start --verify-image <Bundle>: re-judge the image before every start
	NodeHostname    string        // the node's host name: HOSTNAME of hostNetwork pods' containers
}

// Unit is a generated transient service and the OCI spec for its stage-1.
type Unit struct {
	Name       string     // berth-<ns>_<pod>_<container>.service
	Slice      string     // the pod's slice (PodSliceName; slices.go)
	Properties []Property // in a stable order
	Spec       *specs.Spec
}

// Property is one StartTransientUnit property. Value has exactly the Go type
// whose D-Bus signature systemd 252 expects for Name (string=s, bool=b,
// uint64=t, int32=i, uint32=u, []string=as, []ExecCommand=a(sasb),
// []DeviceAllow=a(ss)); unitgen/systemd turns it into a dbus.Variant.
type Property struct {
	Name  string
	Value any
	Why   string // one line, rendered as a comment above the property
}

// ExecCommand is one entry of ExecStart=/ExecStopPost= (D-Bus a(sasb)).
// Args includes argv[0]. IgnoreFailure is systemd's "ignore failure" flag
// (the b in sasb, the '-' prefix of a unit file), despite go-systemd naming
// it uncleanIsFailure: systemd's src/core/dbus-execute.c sets
// EXEC_COMMAND_IGNORE_FAILURE when it is true. Observed with systemd 252: true
// and `exit 3` give Result=success; false gives Result=exit-code.
type ExecCommand struct {
	Path          string
	Args          []string
	IgnoreFailure bool
}

// DeviceAllow is one DeviceAllow= entry (D-Bus a(ss)).
type DeviceAllow struct{ Path, Perm string }

const (
	unitPrefix = "berth-"

	// systemd's UNIT_NAME_MAX is 256 including the terminating NUL
	// (src/basic/unit-name.h).
	unitNameMax = 255

	defaultRestartDelay = 10 * time.Second
	// restartTimeoutStart bounds a restart: the kubelet's longest crash-loop
	// back-off (5 min, less the RestartUSec already waited) plus systemd's
	// default 90 s for the start itself.
	restartTimeoutStart = 300*time.Second + 90*time.Second
)

// UnitName is the service name of one container: berth-<ContainerKey>.service,
// at most 255 characters (systemd's limit) for every valid name.
// Dashes in a service name (unlike a slice name) carry no meaning to systemd.
func UnitName(namespace, pod, container string) string {
	return unitPrefix + ContainerKey(namespace, pod, container) + ".service"
}

// NameErrors is the one check of a pod's namespace and name, as the
// apiserver makes it: namespaces are DNS labels, pods DNS subdomains (so
// `web.v1` is a valid pod name). Neither can then contain '/' or '_', nor be
// "." or "..", which keeps unit names unambiguous and paths inside their
// directories.
func NameErrors(namespace, name string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range apivalidation.ValidateNamespaceName(namespace, false) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "namespace"), namespace, msg))
	}
	if name == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), "name or generateName is required"))
	}
	for _, msg := range apivalidation.NameIsDNSSubdomain(name, false) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
	}
	return errs
}

// maxKey bounds ContainerKey so that the unit name fits systemd's limit; a
// directory named by a key then also fits NAME_MAX (255).
const maxKey = unitNameMax - len(unitPrefix) - len(".service")

// PodKey names a pod on this host: <namespace>_<pod>. Namespaces are DNS
// labels (63) and pod names DNS subdomains (253): neither contains '_', so
// '_' separates them unambiguously. It names the pod's directories.
func PodKey(namespace, pod string) string {
	if k := namespace + "_" + pod; len(k) <= maxKey {
		return k
	}
	return namespace + "_" + shorten(pod, namespace+"/"+pod, maxKey-len(namespace)-1)
}

// ContainerKey names a container on this host: <namespace>_<pod>_<container>,
// for its unit and its bundle directory. A key that would exceed what
// systemd (and NAME_MAX) allow keeps its namespace and container and the
// start of the pod name, followed by '_' and a hash of the full names: a
// plain key has exactly two '_' (none occurs in a DNS name), a shortened
// one three, so the two cannot be equal, and the hash keeps two long names
// that share a prefix apart. '_' is also safe where the key becomes a path
// in overlayfs options, which ':' and ',' are not.
func ContainerKey(namespace, pod, container string) string {
	if k := namespace + "_" + pod + "_" + container; len(k) <= maxKey {
		return k
	}
	return namespace + "_" + shorten(pod, namespace+"/"+pod+"/"+container, maxKey-len(namespace)-len(container)-2) + "_" + container
}

// shorten returns the first characters of s, '_' and 16 hex digits of
// sha256(id), max characters in all.
func shorten(s, id string, max int) string {
	sum := sha256.Sum256([]byte(id))
	h := "_" + hex.EncodeToString(sum[:8])
	return s[:max-len(h)] + h
}

// SliceName is the slice of a namespace. In a slice name a dash means nesting
// (berth-team-a.slice would live in berth-team.slice), so dashes of the
// namespace become '_' exactly as the kubelet's cgroup driver ToSystemd() does;
// '_' never occurs in a namespace name, so the mapping stays reversible.
// The result lives in berth.slice; the namespace's QoS and pod slices live
// in it (slices.go).
func SliceName(namespace string) string {
	return unitPrefix + sliceComponent(namespace) + sliceSuffix
}

// Property returns the named property of u.
func (u *Unit) Property(name string) (Property, bool) {
	for _, p := range u.Properties {
		if p.Name == name {
			return p, true
		}
	}
	return Property{}, false
}

// Generate translates in.Container of in.Pod into a transient unit and the
// OCI spec its stage-1 runs. It does no I/O (seccomp's default profile reads
// the kernel version through uname(2), as Docker does, to pick syscalls).
func Generate(in Input) (*Unit, error) {
	if in.Pod == nil {
		return nil, errors.New("unitgen: no pod")
	}
	if err := in.Paths.check(); err != nil {
		return nil, err
	}
	if err := checkPIDNS(in); err != nil {
		return nil, err
	}
	g, err := newGen(in)
	if err != nil {
		return nil, err
	}
	spec, err := g.spec()
	if err != nil {
		return nil, err
	}
	props, err := g.properties()
	if err != nil {
		return nil, err
	}
	props = append(props, g.pauseDependencies()...)
	return &Unit{Name: g.unitName, Slice: g.slice, Properties: props, Spec: spec}, nil
}

// gen holds what every part of the translation needs.
type gen struct {
	in       Input
	pod      *corev1.Pod
	ctr      *corev1.Container
	fp       *field.Path // spec.containers[i] or spec.initContainers[i]
	isInit   bool
	sc       effectiveSC
	unitName string
	slice    string // the pod's slice (unitSlice)
}

func newGen(in Input) (*gen, error) {
	pod := in.Pod
	g := &gen{in: in, pod: pod}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == in.Container {
			g.ctr, g.fp = &pod.Spec.Containers[i], field.NewPath("spec", "containers").Index(i)
		}
	}
	if g.ctr == nil {
		for i := range pod.Spec.InitContainers {
			if pod.Spec.InitContainers[i].Name == in.Container {
				g.ctr, g.fp = &pod.Spec.InitContainers[i], field.NewPath("spec", "initContainers").Index(i)
				g.isInit = true
			}
		}
	}
	if g.ctr == nil {
		return nil, invalid(field.NewPath("spec", "containers"), "pod %s/%s has no container named %q", pod.Namespace, pod.Name, in.Container)
	}

	// The names end up in unit names, so check them here even though the
	// caller validated them: a '_' or '/' would make the name ambiguous.
	if errs := NameErrors(pod.Namespace, pod.Name); len(errs) > 0 {
		return nil, &InvalidError{Field: errs[0].Field, Detail: fmt.Sprintf("%q: %s", errs[0].BadValue, errs[0].Detail)}
	}
	if errs := validation.IsDNS1123Label(g.ctr.Name); len(errs) > 0 {
		return nil, invalid(g.fp.Child("name"), "%q: %s", g.ctr.Name, strings.Join(errs, "; "))
	}
	g.unitName = UnitName(pod.Namespace, pod.Name, g.ctr.Name)
	slice, err := unitSlice(pod)
	if err != nil {
		return nil, err
	}
	g.slice = slice

	g.sc = effectiveSecurityContext(pod, g.ctr)
	if err := g.checkUnsupported(); err != nil {
		return nil, err
	}
	return g, nil
}

// checkUnsupported refuses pod features berth cannot honour yet, rather than
// running the container with silently different semantics.
func (g *gen) checkUnsupported() error {
	c, spec := g.ctr, &g.pod.Spec
	notYet := "not supported by berth yet"
	switch {
	case spec.HostnameOverride != nil:
		return invalid(field.NewPath("spec", "hostnameOverride"), "%s", notYet)
	case spec.Resources != nil && (len(spec.Resources.Limits) > 0 || len(spec.Resources.Requests) > 0):
		return invalid(field.NewPath("spec", "resources"), "pod-level resources are %s (set them per container)", notYet)
	case spec.ActiveDeadlineSeconds != nil:
		return invalid(field.NewPath("spec", "activeDeadlineSeconds"), "%s", notYet)
	case len(spec.SchedulingGates) > 0:
		return invalid(field.NewPath("spec", "schedulingGates"), "%s (berth does not schedule: a pod runs when created)", notYet)
	case spec.SecurityContext != nil && spec.SecurityContext.SELinuxOptions != nil:
		return invalid(field.NewPath("spec", "securityContext", "seLinuxOptions"), "%s (no SELinux on berth's hosts)", notYet)
	case spec.SecurityContext != nil && spec.SecurityContext.AppArmorProfile != nil && spec.SecurityContext.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined:
		return invalid(field.NewPath("spec", "securityContext", "appArmorProfile"), "%s (only Unconfined)", notYet)
	case c.SecurityContext != nil && c.SecurityContext.SELinuxOptions != nil:
		return invalid(g.fp.Child("securityContext", "seLinuxOptions"), "%s (no SELinux on berth's hosts)", notYet)
	case c.SecurityContext != nil && c.SecurityContext.AppArmorProfile != nil && c.SecurityContext.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined:
		return invalid(g.fp.Child("securityContext", "appArmorProfile"), "%s (only Unconfined)", notYet)
	case c.TTY:
		return invalid(g.fp.Child("tty"), "%s", notYet)
	case c.Stdin || c.StdinOnce:
		return invalid(g.fp.Child("stdin"), "%s", notYet)
	case len(c.RestartPolicyRules) > 0:
		return invalid(g.fp.Child("restartPolicyRules"), "%s", notYet)
	case spec.HostIPC:
		return invalid(field.NewPath("spec", "hostIPC"), "%s (every pod gets its own IPC namespace)", notYet)
	case spec.HostUsers != nil && !*spec.HostUsers:
		return invalid(field.NewPath("spec", "hostUsers"), "false is %s (needs user namespaces)", notYet)
	case len(spec.EphemeralContainers) > 0:
		return invalid(field.NewPath("spec", "ephemeralContainers"), "%s", notYet)
	case len(spec.ReadinessGates) > 0:
		return invalid(field.NewPath("spec", "readinessGates"), "%s", notYet)
	case spec.RuntimeClassName != nil:
		return invalid(field.NewPath("spec", "runtimeClassName"), "%s (berth has one runtime)", notYet)
	case spec.OS != nil && spec.OS.Name != corev1.Linux:
		return invalid(field.NewPath("spec", "os", "name"), "%q: berth runs Linux containers", spec.OS.Name)
	case len(spec.ResourceClaims) > 0:
		return invalid(field.NewPath("spec", "resourceClaims"), "%s", notYet)
	case len(c.ResizePolicy) > 0:
		return invalid(g.fp.Child("resizePolicy"), "%s", notYet)
	case spec.HostPID:
		return invalid(field.NewPath("spec", "hostPID"), "%s (every container gets its own PID namespace)", notYet)
	case spec.SecurityContext != nil && len(spec.SecurityContext.Sysctls) > 0:
		// Stage-1 would write them with full privileges, and the kubelet's
		// safe/unsafe allow-listing is not implemented.
		return invalid(field.NewPath("spec", "securityContext", "sysctls"), "%s", notYet)
	case len(c.EnvFrom) > 0:
		return invalid(g.fp.Child("envFrom"), "%s", notYet)
	case len(c.VolumeDevices) > 0:
		return invalid(g.fp.Child("volumeDevices"), "%s", notYet)
	case g.sc.procMount != nil && *g.sc.procMount != corev1.DefaultProcMount:
		return invalid(g.fp.Child("securityContext", "procMount"), "%q %s (needs user namespaces)", *g.sc.procMount, notYet)
	}
	return nil
}

// check refuses caller mistakes; these are programming errors, not invalid arguments.
func (p *Paths) check() error {
	for _, f := range []struct{ name, v string }{
		{"Init", p.Init}, {"Bundle", p.Bundle}, {"Upper", p.Upper}, {"Work", p.Work}, {"Rootfs", p.Rootfs}, {"PIDFile", p.PIDFile},
	} {
		if !path.IsAbs(f.v) {
			return fmt.Errorf("unitgen: Paths.%s %q is not an absolute path", f.name, f.v)
		}
	}
	if p.PIDNS != "" && !path.IsAbs(p.PIDNS) {
		return fmt.Errorf("unitgen: Paths.PIDNS %q is not an absolute path", p.PIDNS)
	}
	if len(p.Lowers) == 0 {
		return errors.New("unitgen: Paths.Lowers is empty (overlayfs needs at least one lower layer)")
	}
	// overlayfs separates lower dirs with ':' and mount options with ','
	// (Documentation/filesystems/overlayfs.rst); such paths cannot be passed.
	dirs := append([]string{p.Upper, p.Work}, p.Lowers...)
	for _, d := range dirs {
		if !path.IsAbs(d) || strings.ContainsAny(d, ":,") {
			return fmt.Errorf("unitgen: overlay dir %q must be absolute and free of ':' and ','", d)
		}
	}
	return nil
}
