package unitgen

import (
	"fmt"
	"slices"
	"strings"

	"github.com/berth-dev/berth/unitgen/caps"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// effectiveSC is the container's security context merged over the pod's,
// field by field, as the kubelet's DetermineEffectiveSecurityContext does
// (pkg/securitycontext/util.go): container settings win; capabilities,
// privileged, readOnlyRootFilesystem, allowPrivilegeEscalation and procMount
// exist only on the container.
type effectiveSC struct {
	runAsUser, runAsGroup *int64
	runAsNonRoot          *bool
	runAsNonRootPath      *field.Path
	seccomp               *corev1.SeccompProfile
	seccompPath           *field.Path
	caps                  *corev1.Capabilities
	privileged            bool
	readOnlyRoot          bool
	allowPrivEsc          *bool
	procMount             *corev1.ProcMountType
}

func effectiveSecurityContext(pod *corev1.Pod, c *corev1.Container) effectiveSC {
	var e effectiveSC
	if ps := pod.Spec.SecurityContext; ps != nil {
		p := field.NewPath("spec", "securityContext")
		e.runAsUser, e.runAsGroup = ps.RunAsUser, ps.RunAsGroup
		e.runAsNonRoot, e.runAsNonRootPath = ps.RunAsNonRoot, p.Child("runAsNonRoot")
		e.seccomp, e.seccompPath = ps.SeccompProfile, p.Child("seccompProfile")
	}
	cs := c.SecurityContext
	if cs == nil {
		return e
	}
	// A nil *Path below means "from the container's securityContext"
	// (gen.scPath knows the container's index).
	if cs.RunAsUser != nil {
		e.runAsUser = cs.RunAsUser
	}
	if cs.RunAsGroup != nil {
		e.runAsGroup = cs.RunAsGroup
	}
	if cs.RunAsNonRoot != nil {
		e.runAsNonRoot, e.runAsNonRootPath = cs.RunAsNonRoot, nil
	}
	if cs.SeccompProfile != nil {
		e.seccomp, e.seccompPath = cs.SeccompProfile, nil
	}
	e.caps = cs.Capabilities
	e.privileged = cs.Privileged != nil && *cs.Privileged
	e.readOnlyRoot = cs.ReadOnlyRootFilesystem != nil && *cs.ReadOnlyRootFilesystem
	e.allowPrivEsc = cs.AllowPrivilegeEscalation
	e.procMount = cs.ProcMount
	return e
}

// scPath is the path of a field of the container's securityContext.
func (g *gen) scPath(names ...string) *field.Path {
	return g.fp.Child("securityContext", names...)
}

// defaultCaps is Docker's (and containerd's oci.WithDefaultSpec) default
// capability set for unprivileged containers.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// normalizeCap accepts "NET_ADMIN", "CAP_NET_ADMIN" and any case.
func normalizeCap(s string) (string, bool) {
	n := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	_, ok := caps.Numbers[n]
	return n, ok
}

// capSet is a set of capability names kept in capability-number order, so the
// spec (and the golden files) do not depend on how the pod lists them.
type capSet map[string]bool

func (s capSet) list() []string {
	out := make([]string, 0, len(s))
	for c := range s {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b string) int { return caps.Numbers[a] - caps.Numbers[b] })
	return out
}

// allCaps is every capability berth knows. A kernel older than 5.9 lacks the
// newest (CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE); stage-1 skips
// capabilities above /proc/sys/kernel/cap_last_cap, as runc does.
func allCaps() capSet {
	s := capSet{}
	for c := range caps.Numbers {
		s[c] = true
	}
	return s
}

// capabilitySet applies securityContext.capabilities to Docker's default set
// in containerd CRI's order (WithCapabilities): add ALL, drop ALL, then the
// individual adds, then the individual drops — so drop wins over add, and
// `add: [ALL], drop: [CHOWN]` means everything but CAP_CHOWN.
// Privileged containers get every capability (add/drop ignored, as in CRI).
func (g *gen) capabilitySet() (capSet, error) {
	if g.sc.privileged {
		return allCaps(), nil
	}
	set := capSet{}
	for _, c := range defaultCaps {
		set[c] = true
	}
	caps := g.sc.caps
	if caps == nil {
		return set, nil
	}
	isAll := func(c corev1.Capability) bool { return strings.EqualFold(string(c), "ALL") }
	if slices.ContainsFunc(caps.Add, isAll) {
		set = allCaps()
	}
	if slices.ContainsFunc(caps.Drop, isAll) {
		set = capSet{}
	}
	for _, op := range []struct {
		name string
		list []corev1.Capability
		on   bool
	}{{"add", caps.Add, true}, {"drop", caps.Drop, false}} {
		for i, c := range op.list {
			if isAll(c) {
				continue
			}
			n, ok := normalizeCap(string(c))
			if !ok {
				return nil, invalid(g.scPath("capabilities", op.name).Index(i), "unsupported capability %q", string(c))
			}
			if op.on {
				set[n] = true
			} else {
				delete(set, n)
			}
		}
	}
	return set, nil
}

// linuxCapabilities builds the five OCI capability sets. The bounding set is
// the container's set. For uid 0 the effective and permitted sets equal it;
// for any other uid they are empty, as containerd does (a non-root process
// starts without capabilities and can only regain bounding ones through
// file capabilities or setuid binaries, which no_new_privs then blocks).
// Inheritable and ambient stay empty: Kubernetes has no way to ask for them,
// and a non-empty inheritable set was CVE-2022-24769.
func linuxCapabilities(set capSet, uid uint32) *specs.LinuxCapabilities {
	l := set.list()
	lc := &specs.LinuxCapabilities{Bounding: l}
	if uid == 0 {
		lc.Effective = slices.Clone(l)
		lc.Permitted = slices.Clone(l)
	}
	return lc
}

// noNewPrivileges decides PR_SET_NO_NEW_PRIVS. berth is stricter than
// Kubernetes here: Kubernetes only sets it for allowPrivilegeEscalation:false,
// berth sets it unless allowPrivilegeEscalation is explicitly true (Docker's
// hardened "no-new-privileges" default). Like Kubernetes, privilege escalation
// is always allowed for privileged containers and for containers with
// CAP_SYS_ADMIN when the field is unset (API docs of allowPrivilegeEscalation).
func (g *gen) noNewPrivileges(set capSet) bool {
	switch {
	case g.sc.privileged:
		return false
	case g.sc.allowPrivEsc != nil:
		return !*g.sc.allowPrivEsc
	default:
		return !set["CAP_SYS_ADMIN"]
	}
}

// checkSecurity refuses what the apiserver refuses (ValidateSecurityContext)
// and what this host does not allow.
func (g *gen) checkSecurity(set capSet) error {
	ape := g.sc.allowPrivEsc
	if g.sc.privileged {
		if !g.in.Options.AllowPrivileged {
			return invalid(g.scPath("privileged"),
				"privileged containers are disabled on this node; the node's administrator can allow them with berthd's allowPrivileged setting")
		}
		if ape != nil && !*ape {
			return invalid(g.fp.Child("securityContext"), "cannot set `allowPrivilegeEscalation` to false and `privileged` to true")
		}
	}
	if ape != nil && !*ape && g.sc.caps != nil {
		for _, c := range g.sc.caps.Add {
			if n, _ := normalizeCap(string(c)); n == "CAP_SYS_ADMIN" {
				return invalid(g.fp.Child("securityContext"), "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN")
			}
		}
	}
	return nil
}

// seccompProfile returns the seccomp filter for spec (whose capabilities must
// already be set: Docker's profile allows some syscalls only with the
// matching capability, e.g. mount with CAP_SYS_ADMIN).
//
// berth applies Docker's default profile (github.com/moby/profiles/seccomp)
// unless the pod asks for Unconfined — stricter than Kubernetes, whose default
// without the kubelet's SeccompDefault setting is Unconfined. Privileged
// containers run without seccomp, as with containerd.
func (g *gen) seccompProfile(spec *specs.Spec) (*specs.LinuxSeccomp, error) {
	if g.sc.privileged {
		return nil, nil
	}
	if p := g.sc.seccomp; p != nil {
		fp := g.sc.seccompPath
		if fp == nil {
			fp = g.scPath("seccompProfile")
		}
		switch p.Type {
		case corev1.SeccompProfileTypeUnconfined:
			return nil, nil
		case corev1.SeccompProfileTypeRuntimeDefault:
		case corev1.SeccompProfileTypeLocalhost:
			return nil, invalid(fp.Child("type"), "Localhost seccomp profiles are not supported by berth yet")
		default:
			return nil, invalid(fp.Child("type"), "unsupported seccomp profile type %q", p.Type)
		}
	}
	sc, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("docker default seccomp profile: %w", err)
	}
	return sc, nil
}
