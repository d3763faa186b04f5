package worker

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/pods"
)

// Init containers and sidecars, as the kubelet runs them
// (pkg/kubelet/kuberuntime computeInitContainerActions, with
// SidecarContainers): the init containers start one at a time in order;
// a regular one must complete (exit 0) before the next starts, a sidecar
// (restartPolicy: Always) must have started (running, its startup probe
// passed); the app containers start together once every init container
// is through. systemd restarts a failed init container (Restart=always
// with RestartPreventExitStatus=0; none under restartPolicy Never) and a
// sidecar (Restart=always); the worker only starts each step, from the
// status it has just computed.

// firstStep is what RunPod starts with the sandbox: the first init
// container, or every app container of a pod without init containers.
func firstStep(pod *corev1.Pod) []string {
	if len(pod.Spec.InitContainers) > 0 {
		return []string{pod.Spec.InitContainers[0].Name}
	}
	var out []string
	for _, c := range pod.Spec.Containers {
		out = append(out, c.Name)
	}
	return out
}

func statusByName(list []corev1.ContainerStatus, name string) *corev1.ContainerStatus {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

// nextStep is what may start now in a pod whose sandbox runs, given its
// status as just computed and which containers have begun: the init
// container after the last one that began, once that one is through (a
// regular one completed, a sidecar started), else the app containers that
// have not begun once every init container is. As the kubelet's
// computeInitContainerActions, only the last begun init container gates:
// an earlier sidecar that crashes meanwhile is systemd's to restart and
// holds nothing up. Nothing while that container runs, restarts or has
// failed.
func nextStep(pod *corev1.Pod, begun map[string]bool) []string {
	inits := pod.Spec.InitContainers
	last := -1
	for i := range inits {
		if begun[inits[i].Name] {
			last = i
		}
	}
	if last < 0 && len(inits) > 0 {
		return []string{inits[0].Name}
	}
	if last >= 0 {
		c := &inits[last]
		cs := statusByName(pod.Status.InitContainerStatuses, c.Name)
		if cs == nil {
			return nil
		}
		if pods.IsSidecar(c) {
			if cs.State.Running == nil || cs.Started == nil || !*cs.Started {
				return nil
			}
		} else if t := cs.State.Terminated; t == nil || t.ExitCode != 0 {
			return nil
		}
		if last+1 < len(inits) {
			return []string{inits[last+1].Name}
		}
	}
	var out []string
	for _, c := range pod.Spec.Containers {
		if !begun[c.Name] {
			out = append(out, c.Name)
		}
	}
	return out
}

// appsDone tells whether the pod's app containers are done for good: each
// has terminated and the restart policy restarts none of them (Never; or
// OnFailure and every one succeeded). The kubelet then stops the sidecars.
func appsDone(pod *corev1.Pod) bool {
	if len(pod.Status.ContainerStatuses) != len(pod.Spec.Containers) {
		return false
	}
	for _, cs := range pod.Status.ContainerStatuses {
		t := cs.State.Terminated
		switch {
		case t == nil:
			return false
		case pod.Spec.RestartPolicy == corev1.RestartPolicyNever:
		case pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && t.ExitCode == 0:
		default:
			return false
		}
	}
	return true
}

// runningSidecars are the pod's sidecars that still run or wait to be
// restarted, in the order they stop: the reverse of their start.
func runningSidecars(pod *corev1.Pod) []string {
	var out []string
	for i := len(pod.Spec.InitContainers) - 1; i >= 0; i-- {
		c := &pod.Spec.InitContainers[i]
		if !pods.IsSidecar(c) {
			continue
		}
		cs := statusByName(pod.Status.InitContainerStatuses, c.Name)
		if cs != nil && cs.ContainerID != "" && cs.State.Terminated == nil {
			out = append(out, c.Name)
		}
	}
	return out
}
