package unitgen

import (
	"errors"
	"fmt"
	"path"

	corev1 "k8s.io/api/core/v1"
)

// A pod with spec.shareProcessNamespace: true gets a pause, as the kubelet
// gives it a sandbox ("pause") container: a process that is PID 1 of the
// PID namespace all the pod's containers join, ignores what it should and
// reaps the zombies the pod's processes leave, forever. It is a transient
// service of its own, `<Init> pause <Dir>` (agent/berthinit pause.go),
// started before the pod's containers: it clones the pause into a new PID
// namespace, pins the namespace at <Dir>/ns/pid (as the pod's other
// namespaces are pinned), writes <Dir>/pause.pid and exits (Type=forking).
// The containers' specs name the pin (Paths.PIDNS), so berth-init start
// joins it; their units are bound to the pause's (After=, BindsTo=).
//
// If the pause dies, the kernel kills every process of its namespace, as
// for a dead pause container of the kubelet, and systemd stops the
// containers' units (BindsTo=); they cannot start again in that namespace
// (no process can be forked into a PID namespace whose init is gone), so
// the pod has to be started anew.

// PauseContainer is the container part of the pause's unit name,
// berth-<ns>_<pod>_POD.service: container names are DNS labels (lower
// case), so no container can take it. It is the name dockershim gave the
// kubelet's sandbox containers (k8s_POD_<pod>_...).
const PauseContainer = "POD"

// Files of the pause in the pod's run directory (PauseInput.Dir), written
// by `berth-init pause <Dir>`.
const (
	PausePIDFile = "pause.pid" // the pause's PID (the unit's PIDFile=)
	PIDNSPin     = "ns/pid"    // the pinned PID namespace (Paths.PIDNS)
)

// PauseUnitName is the unit of a pod's pause.
func PauseUnitName(namespace, pod string) string {
	return UnitName(namespace, pod, PauseContainer)
}

// SharesProcessNamespace reports whether pod's containers share one PID
// namespace (spec.shareProcessNamespace: true), and so the pod has a pause.
func SharesProcessNamespace(pod *corev1.Pod) bool {
	return pod != nil && pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace
}

// PauseInput is what PauseUnit needs.
type PauseInput struct {
	Pod *corev1.Pod
	// Init is berth-init; Dir the pod's run directory (where the pod's
	// namespaces are pinned, <Dir>/ns); StateDir berth's state
	// directory, named by Documentation= as in container units.
	Init, Dir, StateDir string
}

// PauseUnit is the transient service of pod's pause. Its Spec is nil:
// berth-init pause reads no bundle.
func PauseUnit(in PauseInput) (*Unit, error) {
	pod := in.Pod
	if pod == nil {
		return nil, errors.New("unitgen: no pod")
	}
	if !SharesProcessNamespace(pod) {
		return nil, fmt.Errorf("unitgen: pod %s/%s does not share its process namespace: it has no pause", pod.Namespace, pod.Name)
	}
	for _, f := range []struct{ name, v string }{{"Init", in.Init}, {"Dir", in.Dir}, {"StateDir", in.StateDir}} {
		if !path.IsAbs(f.v) {
			return nil, fmt.Errorf("unitgen: PauseInput.%s %q is not an absolute path", f.name, f.v)
		}
	}
	if errs := NameErrors(pod.Namespace, pod.Name); len(errs) > 0 {
		return nil, &InvalidError{Field: errs[0].Field, Detail: fmt.Sprintf("%q: %s", errs[0].BadValue, errs[0].Detail)}
	}
	slice, err := unitSlice(pod)
	if err != nil {
		return nil, err
	}
	var ps []Property
	add := func(name string, v any, why string, args ...any) {
		ps = append(ps, Property{Name: name, Value: v, Why: fmt.Sprintf(why, args...)})
	}
	dir := path.Clean(in.Dir)
	add("Description", fmt.Sprintf("berth pause of pod %s/%s (PID 1 of its shared process namespace)", pod.Namespace, pod.Name),
		"shown by systemctl status: the pod whose process namespace this holds")
	add("Documentation", []string{InstanceDoc(in.StateDir)}, "the state directory of the berth that made this unit (%s), as on container units: berthd's reconcile removes only units of its own state directory", path.Clean(in.StateDir))
	add("Slice", slice, "%s", sliceWhy(pod, slice))
	add("Type", "forking", "berth-init pause clones the pause into a new PID namespace, pins the namespace, writes its PID and exits; systemd 252 cannot create a PID namespace itself")
	add("PIDFile", path.Join(dir, PausePIDFile), "berth-init pause writes the pause's PID here, so MainPID is the namespace's PID 1")
	add("ExecStart", []ExecCommand{{
		Path: in.Init, Args: []string{in.Init, "pause", dir},
	}}, "berth-init pause pins the PID namespace at %s; a failing start fails the unit (IgnoreFailure=false)", path.Join(dir, PIDNSPin))
	add("Restart", "no", "a new pause would be a new PID namespace, which the running containers are not in: when the pause dies the kernel kills the pod's processes and the pod is started anew, as the kubelet recreates a sandbox")
	add("CollectMode", "inactive-or-failed", "unload the unit once it is dead, failed or not, so the same name can be started again")
	add("NoNewPrivileges", true, "neither berth-init pause nor the pause ever gains privileges through execve")
	add("CapabilityBoundingSet", pauseCapabilities,
		"CAP_SYS_ADMIN to clone the PID namespace and bind-mount its pin, CAP_SETUID and CAP_SETGID for the pause to become uid/gid %d (the pause image's user) with no capabilities at all", PauseUID)
	add("OOMScoreAdjust", int32(pauseOOMScoreAdj), "the kubelet's oom_score_adj for the sandbox (PodInfraOOMAdj): the OOM killer takes the pause, and with it the whole pod, last")
	add("SyslogIdentifier", pod.Name+"/"+PauseContainer, "journal lines of the pause carry pod/%s", PauseContainer)
	if pod.UID != "" {
		add("LogExtraFields", JournalFields{PodUIDField + "=" + string(pod.UID)}, "every journal entry of the pause carries its pod's UID, as the containers' do")
	}
	return &Unit{Name: PauseUnitName(pod.Namespace, pod.Name), Slice: slice, Properties: ps}, nil
}

// PauseUID is the uid and gid the pause runs as: the kubelet's pause image
// runs as 65535:65535.
const PauseUID = 65535

// pauseOOMScoreAdj is the kubelet's qos.PodInfraOOMAdj.
const pauseOOMScoreAdj = -998

// pauseCapabilities is the bounding set of berth-init pause: CAP_SETGID
// (6), CAP_SETUID (7), CAP_SYS_ADMIN (21).
const pauseCapabilities = uint64(1)<<6 | uint64(1)<<7 | uint64(1)<<21

// pauseDependencies bind a container of a pod that shares its process
// namespace to the pod's pause.
func (g *gen) pauseDependencies() []Property {
	if !SharesProcessNamespace(g.pod) {
		return nil
	}
	pause := PauseUnitName(g.pod.Namespace, g.pod.Name)
	return []Property{
		{Name: "After", Value: []string{pause}, Why: "started after the pause, whose PID namespace the container joins, and stopped before it: stopping the pause stops the pod's containers first, each with its grace period"},
		{Name: "BindsTo", Value: []string{pause}, Why: "when the pause dies the kernel has killed every process of its PID namespace; systemd stops the container's unit too rather than restart it into a namespace no process can be forked into"},
	}
}

// checkPIDNS refuses a caller mistake: a pod that shares its process
// namespace without the pause's (its containers would each get their own,
// silently), or a PID namespace path for one that does not.
func checkPIDNS(in Input) error {
	switch shares := SharesProcessNamespace(in.Pod); {
	case shares && in.Paths.PIDNS == "":
		return fmt.Errorf("unitgen: pod %s/%s shares its process namespace but Paths.PIDNS is empty", in.Pod.Namespace, in.Pod.Name)
	case !shares && in.Paths.PIDNS != "":
		return fmt.Errorf("unitgen: Paths.PIDNS %q given for pod %s/%s, which does not share its process namespace", in.Paths.PIDNS, in.Pod.Namespace, in.Pod.Name)
	}
	return nil
}
