package worker

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/pods"
)

// initPod has two init containers (a regular one, then a sidecar when
// sidecar is set) and one app container.
func initPod(policy corev1.RestartPolicy, sidecar bool) *corev1.Pod {
	pod := testPod(policy)
	pod.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "busybox"}, {Name: "side", Image: "busybox"}}
	if sidecar {
		always := corev1.ContainerRestartPolicyAlways
		pod.Spec.InitContainers[1].RestartPolicy = &always
	}
	return pod
}

func rt(name, active string, init bool, term, last *corev1.ContainerStateTerminated) *pods.ContainerStatus {
	s := &pods.ContainerStatus{Unit: "berth-default_web_" + name + ".service", ActiveState: active, Init: init, Begun: true}
	s.Name = name
	if active == "active" {
		s.State.Running = &corev1.ContainerStateRunning{}
		s.LastTerminationState.Terminated = last
	} else {
		s.State.Terminated = term
	}
	return s
}

func exit(code int32) *corev1.ContainerStateTerminated {
	return &corev1.ContainerStateTerminated{ExitCode: code, Reason: map[bool]string{true: "Completed", false: "Error"}[code == 0]}
}

// status computes the pod's status from runtime views by name (absent:
// not begun) and returns the pod carrying it, as the worker stores it.
func status(pod *corev1.Pod, rts map[string]*pods.ContainerStatus) *corev1.Pod {
	in := statusInput{Sandbox: true, Now: t0}
	n := len(pod.Spec.InitContainers)
	for i, c := range pods.AllContainers(pod) {
		in.Containers = append(in.Containers, containerInput{Spec: *c, Runtime: rts[c.Name], Init: i < n, Sidecar: i < n && pods.IsSidecar(c)})
	}
	out := pod.DeepCopy()
	out.Status = computeStatus(pod, in)
	return out
}

func begun(rts map[string]*pods.ContainerStatus) map[string]bool {
	b := map[string]bool{}
	for n := range rts {
		b[n] = true
	}
	return b
}

// The sequence as the kubelet runs it, step by step, with the status
// kubectl reads at each: Init:0/2 with everything PodInitializing, the
// next init container only once the one before completed, the sidecar
// counted once started, the app container last; then Initialized.
func TestInitSequence(t *testing.T) {
	pod := initPod(corev1.RestartPolicyAlways, true)
	if got := firstStep(pod); !reflect.DeepEqual(got, []string{"setup"}) {
		t.Fatalf("first step %v", got)
	}
	rts := map[string]*pods.ContainerStatus{"setup": rt("setup", "active", true, nil, nil)}
	st := status(pod, rts)
	if st.Status.Phase != corev1.PodPending {
		t.Errorf("phase %s", st.Status.Phase)
	}
	if c := cond(st.Status, corev1.PodInitialized); c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotInitialized" ||
		c.Message != "containers with incomplete status: [setup side]" {
		t.Errorf("Initialized %+v", c)
	}
	if w := st.Status.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "PodInitializing" {
		t.Errorf("app container %+v", st.Status.ContainerStatuses[0].State)
	}
	if w := st.Status.InitContainerStatuses[1].State.Waiting; w == nil || w.Reason != "PodInitializing" {
		t.Errorf("sidecar %+v", st.Status.InitContainerStatuses[1].State)
	}
	if s := st.Status.InitContainerStatuses[0]; s.Ready || s.Started == nil || !*s.Started {
		t.Errorf("running init container: ready %v started %v", s.Ready, s.Started)
	}
	if got := nextStep(st, begun(rts)); got != nil {
		t.Fatalf("next step while setup runs: %v", got)
	}

	// setup failed once and systemd restarts it: still nothing next.
	rts["setup"] = rt("setup", "activating", true, exit(1), nil)
	if got := nextStep(status(pod, rts), begun(rts)); got != nil {
		t.Fatalf("next step while setup crash-loops: %v", got)
	}

	rts["setup"] = rt("setup", "", true, exit(0), nil)
	st = status(pod, rts)
	if s := st.Status.InitContainerStatuses[0]; !s.Ready || *s.Started {
		t.Errorf("completed init container: ready %v started %v", s.Ready, *s.Started)
	}
	if got := nextStep(st, begun(rts)); !reflect.DeepEqual(got, []string{"side"}) {
		t.Fatalf("after setup: %v", got)
	}

	// The sidecar runs but its startup probe has not passed: wait.
	rts["side"] = rt("side", "active", true, nil, nil)
	pod.Spec.InitContainers[1].StartupProbe = &corev1.Probe{}
	in := statusInput{Sandbox: true, Now: t0}
	for i, c := range pods.AllContainers(pod) {
		ci := containerInput{Spec: *c, Runtime: rts[c.Name], Init: i < 2, Sidecar: i == 1}
		if i == 1 {
			ci.Probes = func(_ time.Time) (bool, bool) { return false, false }
		}
		in.Containers = append(in.Containers, ci)
	}
	st = pod.DeepCopy()
	st.Status = computeStatus(pod, in)
	if got := nextStep(st, begun(rts)); got != nil {
		t.Fatalf("next step before the sidecar started: %v", got)
	}
	if st.Status.Phase != corev1.PodPending {
		t.Errorf("phase before the sidecar started: %s", st.Status.Phase)
	}
	pod.Spec.InitContainers[1].StartupProbe = nil

	st = status(pod, rts)
	if got := nextStep(st, begun(rts)); !reflect.DeepEqual(got, []string{"main"}) {
		t.Fatalf("after the sidecar started: %v", got)
	}
	if c := cond(st.Status, corev1.PodInitialized); c.Status != corev1.ConditionTrue {
		t.Errorf("Initialized %+v", c)
	}

	rts["main"] = rt("main", "active", false, nil, nil)
	st = status(pod, rts)
	if got := nextStep(st, begun(rts)); len(got) != 0 {
		t.Fatalf("next step with everything begun: %v", got)
	}
	if st.Status.Phase != corev1.PodRunning || cond(st.Status, corev1.PodReady).Status != corev1.ConditionTrue {
		t.Errorf("phase %s Ready %+v", st.Status.Phase, cond(st.Status, corev1.PodReady))
	}

	// The sidecar crashes while the app runs: the pod stays initialized
	// and Running, not Ready, and the sidecar is named unready first.
	rts["side"] = rt("side", "activating", true, exit(2), nil)
	st = status(pod, rts)
	if st.Status.Phase != corev1.PodRunning || cond(st.Status, corev1.PodInitialized).Status != corev1.ConditionTrue {
		t.Errorf("sidecar crash: phase %s Initialized %+v", st.Status.Phase, cond(st.Status, corev1.PodInitialized))
	}
	if c := cond(st.Status, corev1.ContainersReady); c.Message != "containers with unready status: [side]" {
		t.Errorf("ContainersReady %+v", c)
	}
}

// A failing init container of a restartPolicy: Never pod fails the pod at
// once; under OnFailure it is retried and the pod stays Pending.
func TestInitFailure(t *testing.T) {
	pod := initPod(corev1.RestartPolicyNever, false)
	rts := map[string]*pods.ContainerStatus{"setup": rt("setup", "", true, exit(3), nil)}
	st := status(pod, rts)
	if st.Status.Phase != corev1.PodFailed {
		t.Fatalf("phase %s", st.Status.Phase)
	}
	if c := cond(st.Status, corev1.PodReady); c.Reason != "PodFailed" {
		t.Errorf("Ready %+v", c)
	}
	if got := nextStep(st, begun(rts)); got != nil {
		t.Errorf("next step after a failed init container: %v", got)
	}

	pod = initPod(corev1.RestartPolicyOnFailure, false)
	st = status(pod, rts)
	if st.Status.Phase != corev1.PodPending {
		t.Fatalf("OnFailure phase %s", st.Status.Phase)
	}
}

// A pod whose app container finished for good stops its sidecars, in
// reverse order; only then is it Succeeded.
func TestSidecarsEndWithThePod(t *testing.T) {
	pod := initPod(corev1.RestartPolicyNever, true)
	always := corev1.ContainerRestartPolicyAlways
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: "side2", Image: "busybox", RestartPolicy: &always})
	rts := map[string]*pods.ContainerStatus{
		"setup": rt("setup", "", true, exit(0), nil),
		"side":  rt("side", "active", true, nil, nil),
		"side2": rt("side2", "active", true, nil, nil),
		"main":  rt("main", "", false, exit(0), nil),
	}
	st := status(pod, rts)
	if st.Status.Phase != corev1.PodRunning || !appsDone(st) {
		t.Fatalf("phase %s appsDone %v", st.Status.Phase, appsDone(st))
	}
	if got := runningSidecars(st); !reflect.DeepEqual(got, []string{"side2", "side"}) {
		t.Fatalf("sidecars to stop: %v", got)
	}
	rts["side"] = rt("side", "", true, &corev1.ContainerStateTerminated{ExitCode: 143, Reason: "Error"}, nil)
	rts["side2"] = rt("side2", "", true, &corev1.ContainerStateTerminated{ExitCode: 143, Reason: "Error"}, nil)
	st = status(pod, rts)
	if st.Status.Phase != corev1.PodSucceeded || len(runningSidecars(st)) != 0 {
		t.Fatalf("after the sidecars stopped: phase %s", st.Status.Phase)
	}
	if c := cond(st.Status, corev1.PodInitialized); c.Status != corev1.ConditionTrue || c.Reason != "PodCompleted" {
		t.Errorf("Initialized %+v", c)
	}

	// Under Always the app container is restarted: not done.
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	if appsDone(status(pod, rts)) {
		t.Error("appsDone under restartPolicy Always")
	}
}

// Only the last init container that began gates the next step: a sidecar
// before it that crashes meanwhile is restarted by systemd and holds up
// neither the next init container nor the app containers.
func TestEarlierSidecarDoesNotGate(t *testing.T) {
	pod := initPod(corev1.RestartPolicyAlways, false)
	always := corev1.ContainerRestartPolicyAlways
	pod.Spec.InitContainers = []corev1.Container{{Name: "side", Image: "busybox", RestartPolicy: &always}, {Name: "setup", Image: "busybox"}}
	rts := map[string]*pods.ContainerStatus{
		"side":  rt("side", "activating", true, exit(2), nil), // crash-looping
		"setup": rt("setup", "", true, exit(0), nil),
	}
	if got := nextStep(status(pod, rts), begun(rts)); !reflect.DeepEqual(got, []string{"main"}) {
		t.Fatalf("apps after setup completed, the earlier sidecar crash-looping: %v", got)
	}
	delete(rts, "setup")
	rts["side"] = rt("side", "active", true, nil, exit(2))
	if got := nextStep(status(pod, rts), begun(rts)); !reflect.DeepEqual(got, []string{"setup"}) {
		t.Fatalf("setup after the sidecar started: %v", got)
	}
}

// A regular init container that runs again (a new sandbox after its pause
// died) keeps the pod Pending although its app container ran before; a
// sidecar that restarts after the app started does not.
func TestPhaseWhileInitRunsAgain(t *testing.T) {
	pod := initPod(corev1.RestartPolicyAlways, true)
	rts := map[string]*pods.ContainerStatus{
		"setup": rt("setup", "active", true, nil, nil),
		"main":  rt("main", "", false, exit(137), nil),
	}
	if st := status(pod, rts); st.Status.Phase != corev1.PodPending {
		t.Errorf("regular init container running again: phase %s, want Pending", st.Status.Phase)
	}
	rts = map[string]*pods.ContainerStatus{
		"setup": rt("setup", "", true, exit(0), nil),
		"side":  rt("side", "activating", true, exit(1), nil),
		"main":  rt("main", "active", false, nil, nil),
	}
	if st := status(pod, rts); st.Status.Phase != corev1.PodRunning || cond(st.Status, corev1.PodInitialized).Status != corev1.ConditionTrue {
		t.Errorf("sidecar restarting after the app started: phase %s, Initialized %v", st.Status.Phase, cond(st.Status, corev1.PodInitialized).Status)
	}
}
