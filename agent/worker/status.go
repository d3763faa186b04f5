package worker

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/cgroup"
)

// Container state reasons, as the kubelet and CRI-O write them
// (pkg/kubelet/kuberuntime, pkg/kubelet/images, cri-api's crierrors).
const (
	ReasonContainerCreating  = "ContainerCreating"
	ReasonCompleted          = "Completed"
	ReasonError              = "Error"
	ReasonOOMKilled          = "OOMKilled"
	ReasonCrashLoopBackOff   = "CrashLoopBackOff"
	ReasonStartError         = "StartError"
	ReasonCreateContainerErr = "CreateContainerError"
	// The kubelet's CreateContainerConfigError: the container's env names
	// a ConfigMap or Secret (key) that does not exist.
	ReasonCreateContainerConfigErr = "CreateContainerConfigError"
	ReasonFailedMount              = "FailedMount" // event
	ReasonErrImagePull             = "ErrImagePull"
	ReasonImagePullBackOff         = "ImagePullBackOff"
	ReasonSignatureFailed          = "SignatureValidationFailed"
	ReasonPodCompleted             = "PodCompleted"
	ReasonContainersNotReady       = "ContainersNotReady"
	// An init sequence: containers not started yet wait with
	// PodInitializing; the Initialized condition's reason while it lasts.
	ReasonPodInitializing          = "PodInitializing"
	ReasonContainersNotInitialized = "ContainersNotInitialized"
	ReasonPodFailed                = "PodFailed"
)

// ContainerIDPrefix is the runtime part of containerID: berth://<unit>.
const ContainerIDPrefix = "berth://"

// unitTimes is what systemd knows of a container unit's last run.
type unitTimes struct {
	ExecMainStart, ExecMainExit time.Time
	ActiveEnter                 time.Time
	ExecMainStatus              int32
	NRestarts                   uint32
}

// containerInput is everything known of one container when its status is
// computed.
type containerInput struct {
	Spec corev1.Container
	// Runtime is the runtime's view; nil when the pod has not been started
	// (pulling, refused, or waiting for its first start).
	Runtime *pods.ContainerStatus
	// Waiting overrides the state while the container has not been started:
	// ErrImagePull, ImagePullBackOff, SignatureValidationFailed,
	// CreateContainerError. Nil: ContainerCreating.
	Waiting *corev1.ContainerStateWaiting
	Unit    unitTimes
	ImageID string
	// Backoff is the restart delay the container waits out in
	// CrashLoopBackOff (for the message).
	Backoff time.Duration
	// Probes, for a container with probes, is told the instance that runs
	// (by its start time, exact: it names the instance) and answers
	// whether it has started and is ready (the kubelet's prober
	// UpdatePodStatus). Nil: started and ready once it runs.
	Probes func(startedAt time.Time) (started, ready bool)
	// Init: an init container; Sidecar: one with restartPolicy Always.
	Init, Sidecar bool
}

// containerStatus computes one container's status as the kubelet reports
// it (kuberuntime's toKubeContainerStatus and kubelet_pods.go
// convertToAPIContainerStatuses), from prev (the status last written) and
// what is known now.
func containerStatus(pod *corev1.Pod, in containerInput, prev *corev1.ContainerStatus) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: in.Spec.Name, Image: in.Spec.Image, ImageID: in.ImageID, Started: ptr(false)}
	if cs.ImageID == "" && prev != nil {
		cs.ImageID = prev.ImageID
	}
	if prev != nil {
		cs.RestartCount = prev.RestartCount
		cs.LastTerminationState = prev.LastTerminationState
	}
	rt := in.Runtime
	if rt == nil {
		w := in.Waiting
		if w == nil {
			// The kubelet's default state: PodInitializing for every
			// container of a pod with init containers.
			w = &corev1.ContainerStateWaiting{Reason: ReasonContainerCreating}
			if len(pod.Spec.InitContainers) > 0 {
				w.Reason = ReasonPodInitializing
			}
		}
		cs.State.Waiting = w.DeepCopy()
		cs.ImageID = ""
		return cs
	}
	cs.ContainerID = ContainerIDPrefix + rt.Unit
	if n := int32(max(rt.RestartCount, int32(in.Unit.NRestarts))); n > cs.RestartCount {
		cs.RestartCount = n
	}
	if t := rt.LastTerminationState.Terminated; t != nil {
		cs.LastTerminationState = corev1.ContainerState{Terminated: withStart(t, in.Unit, prev, true)}
	}
	switch {
	case (rt.ActiveState == "active" && rt.State.Terminated == nil) || rt.ActiveState == "reloading" || (rt.ActiveState == "deactivating" && rt.MainPID != 0):
		// An active unit whose workload has ended (its exit record written,
		// stage-1 not yet gone: pods' ranBefore) is terminated below.
		started := in.Unit.ExecMainStart
		if started.IsZero() {
			started = in.Unit.ActiveEnter
		}
		if started.IsZero() && prev != nil && prev.State.Running != nil {
			started = prev.State.Running.StartedAt.Time
		}
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started.Truncate(time.Second))}
		cs.Ready, cs.Started = true, ptr(true)
		if in.Probes != nil {
			s, r := in.Probes(started)
			cs.Started, cs.Ready = ptr(s), s && r
		}
	case rt.ActiveState == "activating" && rt.State.Terminated != nil:
		// It ran and ended, and is being started again: systemd waits out
		// RestartUSec (auto-restart), then berth-init start the rest of the
		// back-off (start): the kubelet's CrashLoopBackOff.
		if t := rt.State.Terminated; t != nil {
			cs.LastTerminationState = corev1.ContainerState{Terminated: withStart(t, in.Unit, prev, false)}
		}
		d := in.Backoff
		if d == 0 {
			crashes := int(in.Unit.NRestarts)
			if rt.SubState == "auto-restart" {
				crashes++ // systemd counts the restart when it begins it
			}
			d = restartDelay(crashes)
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: ReasonCrashLoopBackOff,
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", d, in.Spec.Name, podDesc(pod))}
	case rt.State.Terminated != nil:
		cs.State.Terminated = withStart(rt.State.Terminated, in.Unit, prev, false)
		if prev != nil && prev.State.Terminated != nil && prev.State.Terminated.ExitCode == cs.State.Terminated.ExitCode &&
			prev.State.Terminated.FinishedAt.Equal(&cs.State.Terminated.FinishedAt) {
			cs.State.Terminated.StartedAt = prev.State.Terminated.StartedAt
		}
	case rt.State.Waiting != nil && rt.State.Waiting.Reason == ReasonStartError:
		code := in.Unit.ExecMainStatus
		if code == 0 {
			code = 128 // what containerd reports for a task that never started
		}
		cs.State.Terminated = &corev1.ContainerStateTerminated{Reason: ReasonStartError, ExitCode: code,
			Message:    fmt.Sprintf("systemd failed to start unit %s", rt.Unit),
			FinishedAt: metav1.NewTime(in.Unit.ExecMainExit.Truncate(time.Second))}
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: ReasonContainerCreating}
	}
	if in.Init && !in.Sidecar {
		// The prober's UpdatePodStatus for a regular init container:
		// started while it runs, ready once it has completed.
		cs.Started = ptr(cs.State.Running != nil)
		cs.Ready = cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
	}
	return cs
}

// withStart completes a terminated state with when that run started: from
// systemd's ExecMainStart of the run that ended, else from the running
// state last written.
func withStart(t *corev1.ContainerStateTerminated, u unitTimes, prev *corev1.ContainerStatus, last bool) *corev1.ContainerStateTerminated {
	t = t.DeepCopy()
	t.FinishedAt = metav1.NewTime(t.FinishedAt.Truncate(time.Second))
	if !t.StartedAt.IsZero() {
		return t
	}
	if prev != nil {
		if r := prev.State.Running; r != nil && !r.StartedAt.After(t.FinishedAt.Time) {
			t.StartedAt = r.StartedAt
			return t
		}
		if last {
			if pt := prev.LastTerminationState.Terminated; pt != nil && pt.FinishedAt.Equal(&t.FinishedAt) {
				t.StartedAt = pt.StartedAt
				return t
			}
		} else if pt := prev.State.Terminated; pt != nil && pt.FinishedAt.Equal(&t.FinishedAt) {
			t.StartedAt = pt.StartedAt
			return t
		}
	}
	if !last && !u.ExecMainStart.IsZero() && !u.ExecMainStart.After(t.FinishedAt.Time.Add(time.Second)) {
		t.StartedAt = metav1.NewTime(u.ExecMainStart.Truncate(time.Second))
	}
	return t
}

// podDesc is the kubelet's format.Pod: name_namespace(uid).
func podDesc(pod *corev1.Pod) string {
	return fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID)
}

// podPhase is the kubelet's getPhase (kubelet_pods.go) for a pod that is
// not terminal yet: init is the statuses of the init containers, cs those
// of the app containers.
func podPhase(pod *corev1.Pod, init, cs []corev1.ContainerStatus) corev1.PodPhase {
	// Pending regular init containers keep the pod Pending; pending
	// sidecars only until a regular container has started (a sidecar
	// restarting later does not put the pod back).
	pendingInit, pendingSidecars, failedInit := 0, 0, 0
	var unknown, running, waiting, stopped, succeeded int
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		st := statusByName(init, c.Name)
		if pods.IsSidecar(c) {
			switch {
			case st == nil:
				unknown++
			case st.State.Running != nil:
				if st.Started == nil || !*st.Started {
					pendingSidecars++
				}
				running++
			case st.State.Terminated != nil:
				// A sidecar that ended does not count for the phase.
			case st.State.Waiting != nil && st.LastTerminationState.Terminated == nil:
				pendingSidecars++
				waiting++
			case st.State.Waiting != nil:
			default:
				pendingSidecars++
				unknown++
			}
			continue
		}
		switch {
		case st == nil, st.State.Running != nil:
			pendingInit++
		case st.State.Terminated != nil:
			if st.State.Terminated.ExitCode != 0 {
				failedInit++
			}
		case st.State.Waiting != nil && st.LastTerminationState.Terminated != nil:
			if st.LastTerminationState.Terminated.ExitCode != 0 {
				failedInit++
			}
		default:
			pendingInit++
		}
	}
	// The kubelet's HasAnyRegularContainerStarted: running or terminated.
	anyStarted := false
	for _, c := range cs {
		switch {
		case c.State.Running != nil:
			running++
			anyStarted = true
		case c.State.Terminated != nil:
			stopped++
			anyStarted = true
			if c.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case c.State.Waiting != nil:
			if c.LastTerminationState.Terminated != nil {
				stopped++
			} else {
				waiting++
			}
		default:
			unknown++
		}
	}
	unknown += len(pod.Spec.Containers) - len(cs)
	if failedInit > 0 && pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
		return corev1.PodFailed
	}
	switch {
	case pendingInit > 0, pendingSidecars > 0 && !anyStarted, waiting > 0:
		return corev1.PodPending
	case running > 0 && unknown == 0:
		return corev1.PodRunning
	case running == 0 && stopped > 0 && unknown == 0:
		switch {
		case pod.Spec.RestartPolicy == corev1.RestartPolicyAlways, pod.Spec.RestartPolicy == "":
			return corev1.PodRunning
		case stopped == succeeded:
			return corev1.PodSucceeded
		case pod.Spec.RestartPolicy == corev1.RestartPolicyNever:
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

// statusInput is the pod-wide part of a status computation.
type statusInput struct {
	Containers []containerInput
	Sandbox    bool // the pod's namespaces exist (PodReadyToStartContainers)
	HostIP     string
	PodIPs     []string // the sandbox's addresses, once it has them
	Now        time.Time
}

// computeStatus is the pod's status as the kubelet writes it
// (kubelet_pods.go generateAPIPodStatus, status/generate.go), keeping
// from prev what the kubelet keeps: startTime, lastTransitionTime of
// conditions that did not change, the scheduler's PodScheduled.
func computeStatus(pod *corev1.Pod, in statusInput) corev1.PodStatus {
	prev := pod.Status
	now := metav1.NewTime(in.Now.Truncate(time.Second))
	st := corev1.PodStatus{
		HostIP:    prev.HostIP,
		HostIPs:   prev.HostIPs,
		PodIP:     prev.PodIP,
		PodIPs:    prev.PodIPs,
		StartTime: prev.StartTime,
		QOSClass:  cgroup.PodQOS(pod),
	}
	if in.HostIP != "" {
		st.HostIP, st.HostIPs = in.HostIP, []corev1.HostIP{{IP: in.HostIP}}
	}
	if len(in.PodIPs) > 0 {
		st.PodIP, st.PodIPs = in.PodIPs[0], nil
		for _, ip := range in.PodIPs {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
		}
	}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	prevCS := map[string]*corev1.ContainerStatus{}
	for i := range prev.ContainerStatuses {
		prevCS[prev.ContainerStatuses[i].Name] = &prev.ContainerStatuses[i]
	}
	prevInit := map[string]*corev1.ContainerStatus{}
	for i := range prev.InitContainerStatuses {
		prevInit[prev.InitContainerStatuses[i].Name] = &prev.InitContainerStatuses[i]
	}
	for _, c := range in.Containers {
		if c.Init {
			st.InitContainerStatuses = append(st.InitContainerStatuses, containerStatus(pod, c, prevInit[c.Spec.Name]))
		} else {
			st.ContainerStatuses = append(st.ContainerStatuses, containerStatus(pod, c, prevCS[c.Spec.Name]))
		}
	}
	st.Phase = podPhase(pod, st.InitContainerStatuses, st.ContainerStatuses)
	// A terminal phase is final, as the kubelet never leaves one.
	if prev.Phase == corev1.PodSucceeded || prev.Phase == corev1.PodFailed {
		st.Phase = prev.Phase
	}
	if pod.Generation > 0 {
		st.ObservedGeneration = pod.Generation
	}

	// status/generate.go: sidecars count for readiness, before the app
	// containers; a regular init container counts for Initialized.
	var unready, incomplete []string
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := statusByName(st.InitContainerStatuses, c.Name)
		if pods.IsSidecar(c) {
			if cs != nil && !cs.Ready {
				unready = append(unready, c.Name)
			}
			if cs == nil || cs.Started == nil || !*cs.Started {
				incomplete = append(incomplete, c.Name)
			}
			continue
		}
		if cs == nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			incomplete = append(incomplete, c.Name)
		}
	}
	anyStarted := false
	for _, c := range st.ContainerStatuses {
		if !c.Ready {
			unready = append(unready, c.Name)
		}
		if c.State.Running != nil || c.State.Terminated != nil {
			anyStarted = true // HasAnyRegularContainerStarted
		}
	}
	ready := func(t corev1.PodConditionType) corev1.PodCondition {
		switch {
		case st.Phase == corev1.PodSucceeded:
			return corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: ReasonPodCompleted}
		case st.Phase == corev1.PodFailed:
			return corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: ReasonPodFailed}
		case len(unready) > 0:
			return corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: ReasonContainersNotReady,
				Message: fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))}
		}
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue}
	}
	initialized := corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionTrue}
	switch {
	case st.Phase == corev1.PodSucceeded:
		initialized.Reason = ReasonPodCompleted
	case anyStarted, len(incomplete) == 0:
		// A regular container that ever started: initialized before.
	default:
		initialized = corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionFalse, Reason: ReasonContainersNotInitialized,
			Message: fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(incomplete, " "))}
	}
	sandbox := corev1.ConditionFalse
	if in.Sandbox {
		sandbox = corev1.ConditionTrue
	}
	conds := []corev1.PodCondition{
		{Type: corev1.PodReadyToStartContainers, Status: sandbox},
		initialized,
		ready(corev1.PodReady),
		ready(corev1.ContainersReady),
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
	}
	for i := range conds {
		c := &conds[i]
		c.ObservedGeneration = st.ObservedGeneration
		c.LastTransitionTime = now
		for _, p := range prev.Conditions {
			if p.Type == c.Type && p.Status == c.Status {
				c.LastTransitionTime = p.LastTransitionTime
			}
		}
	}
	// Conditions the kubelet does not own (readiness gates, the
	// scheduler's, DisruptionTarget) are kept after the kubelet's.
	for _, p := range prev.Conditions {
		owned := false
		for _, c := range conds {
			owned = owned || c.Type == p.Type
		}
		if !owned {
			conds = append(conds, p)
		}
	}
	st.Conditions = conds
	return st
}

// statusEqual tells whether writing next over prev would change anything.
func statusEqual(prev, next corev1.PodStatus) bool {
	return equality.Semantic.DeepEqual(prev, next)
}

func ptr[T any](v T) *T { return &v }
