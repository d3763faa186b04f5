package worker

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/pods"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testPod(policy corev1.RestartPolicy) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "u1", Generation: 1},
		Spec:       corev1.PodSpec{RestartPolicy: policy, Containers: []corev1.Container{{Name: "main", Image: "busybox"}}},
	}
}

func runtimeStatus(active, sub string, term *corev1.ContainerStateTerminated) *pods.ContainerStatus {
	rs := &pods.ContainerStatus{Unit: "berth-default_web_main.service", ActiveState: active, SubState: sub}
	rs.Name = "main"
	if active == "active" {
		rs.State.Running = &corev1.ContainerStateRunning{}
		if term != nil {
			rs.LastTerminationState.Terminated = term
		}
	} else if term != nil {
		rs.State.Terminated = term
	}
	return rs
}

func cond(st corev1.PodStatus, t corev1.PodConditionType) corev1.PodCondition {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.PodCondition{}
}

// Before the runtime has the pod: Pending, ContainerCreating, not ready,
// the conditions in the kubelet's order.
func TestPending(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways)
	st := computeStatus(pod, statusInput{Containers: []containerInput{{Spec: pod.Spec.Containers[0]}}, HostIP: "10.0.0.1", Now: t0})
	if st.Phase != corev1.PodPending || st.ContainerStatuses[0].State.Waiting.Reason != "ContainerCreating" {
		t.Fatalf("phase %s, state %+v", st.Phase, st.ContainerStatuses[0].State)
	}
	var order []corev1.PodConditionType
	for _, c := range st.Conditions {
		order = append(order, c.Type)
	}
	want := []corev1.PodConditionType{"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"}
	if len(order) != len(want) {
		t.Fatalf("conditions %v", order)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("conditions %v, want %v", order, want)
		}
	}
	if c := cond(st, corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotReady" || c.Message != "containers with unready status: [main]" {
		t.Errorf("Ready %+v", c)
	}
	if st.HostIP != "10.0.0.1" || st.StartTime == nil || !st.StartTime.Time.Equal(t0) || st.QOSClass != corev1.PodQOSBestEffort {
		t.Errorf("hostIP %s startTime %v qos %s", st.HostIP, st.StartTime, st.QOSClass)
	}
}

// Running: ready, startedAt from systemd, containerID and imageID; the
// lastTransitionTime of an unchanged condition is kept.
func TestRunningKeepsTransitionTimes(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways)
	in := statusInput{Sandbox: true, Now: t0, Containers: []containerInput{{Spec: pod.Spec.Containers[0],
		Runtime: runtimeStatus("active", "running", nil), ImageID: "sha256:abc", Unit: unitTimes{ExecMainStart: t0.Add(-time.Second)}}}}
	st := computeStatus(pod, in)
	cs := st.ContainerStatuses[0]
	if st.Phase != corev1.PodRunning || !cs.Ready || cs.State.Running == nil || !cs.State.Running.StartedAt.Time.Equal(t0.Add(-time.Second)) ||
		cs.ContainerID != "berth://berth-default_web_main.service" || cs.ImageID != "sha256:abc" {
		t.Fatalf("status %+v", st)
	}
	pod.Status = st
	in.Now = t0.Add(time.Minute)
	again := computeStatus(pod, in)
	if !statusEqual(st, again) {
		t.Errorf("an unchanged pod's status changed:\n%+v\n%+v", st, again)
	}
}

// restartPolicy decides the phase of stopped containers, as getPhase.
func TestPhaseByRestartPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy corev1.RestartPolicy
		code   int32
		want   corev1.PodPhase
	}{
		{corev1.RestartPolicyNever, 0, corev1.PodSucceeded},
		{corev1.RestartPolicyNever, 1, corev1.PodFailed},
		{corev1.RestartPolicyOnFailure, 0, corev1.PodSucceeded},
		{corev1.RestartPolicyOnFailure, 1, corev1.PodRunning},
		{corev1.RestartPolicyAlways, 0, corev1.PodRunning},
	} {
		pod := testPod(tc.policy)
		reason := "Completed"
		if tc.code != 0 {
			reason = "Error"
		}
		term := &corev1.ContainerStateTerminated{ExitCode: tc.code, Reason: reason, FinishedAt: metav1.NewTime(t0)}
		st := computeStatus(pod, statusInput{Sandbox: true, Now: t0, Containers: []containerInput{{Spec: pod.Spec.Containers[0],
			Runtime: runtimeStatus("inactive", "dead", term), Unit: unitTimes{ExecMainStart: t0.Add(-3 * time.Second)}}}})
		if st.Phase != tc.want {
			t.Errorf("%s exit %d: phase %s, want %s", tc.policy, tc.code, st.Phase, tc.want)
		}
		got := st.ContainerStatuses[0].State.Terminated
		if got == nil || got.ExitCode != tc.code || got.Reason != reason || !got.StartedAt.Time.Equal(t0.Add(-3*time.Second)) {
			t.Errorf("%s exit %d: terminated %+v", tc.policy, tc.code, got)
		}
		if tc.want == corev1.PodSucceeded {
			if c := cond(st, corev1.PodReady); c.Reason != "PodCompleted" {
				t.Errorf("Succeeded pod's Ready %+v", c)
			}
		}
	}
}

// Between restarts: CrashLoopBackOff with the kubelet's message, the
// last termination, and the restart count systemd keeps.
func TestCrashLoopBackOff(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways)
	term := &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", FinishedAt: metav1.NewTime(t0)}
	rs := runtimeStatus("activating", "start", term)
	rs.RestartCount = 2
	st := computeStatus(pod, statusInput{Sandbox: true, Now: t0, Containers: []containerInput{{Spec: pod.Spec.Containers[0],
		Runtime: rs, Unit: unitTimes{NRestarts: 2}}}})
	cs := st.ContainerStatuses[0]
	w := cs.State.Waiting
	if w == nil || w.Reason != "CrashLoopBackOff" || w.Message != "back-off 20s restarting failed container=main pod=web_default(u1)" {
		t.Fatalf("waiting %+v", w)
	}
	if cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 1 || cs.RestartCount != 2 || cs.Ready {
		t.Errorf("status %+v", cs)
	}
	if st.Phase != corev1.PodRunning {
		t.Errorf("phase %s, want Running (the kubelet's for a crash-looping Always pod)", st.Phase)
	}
}

// A unit still active whose workload has ended (pods reports the run's
// own exit record as terminated): the container has ended; the last
// termination written before (the crash before the restart) stays.
func TestEndedWhileUnitActive(t *testing.T) {
	pod := testPod(corev1.RestartPolicyOnFailure)
	crash := &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", FinishedAt: metav1.NewTime(t0.Add(-5 * time.Second))}
	prev := &corev1.ContainerStatus{Name: "main", RestartCount: 1, LastTerminationState: corev1.ContainerState{Terminated: crash}}
	rs := &pods.ContainerStatus{Unit: "berth-default_web_main.service", ActiveState: "active", SubState: "running"}
	rs.Name = "main"
	rs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", FinishedAt: metav1.NewTime(t0)}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{*prev}
	st := computeStatus(pod, statusInput{Sandbox: true, Now: t0, Containers: []containerInput{{Spec: pod.Spec.Containers[0],
		Runtime: rs, Unit: unitTimes{NRestarts: 1, ExecMainStart: t0.Add(-time.Second)}}}})
	cs := st.ContainerStatuses[0]
	if cs.State.Running != nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
		t.Fatalf("state %+v", cs.State)
	}
	if cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 1 || cs.RestartCount != 1 {
		t.Errorf("last state %+v, restarts %d", cs.LastTerminationState, cs.RestartCount)
	}
	if st.Phase != corev1.PodSucceeded {
		t.Errorf("phase %s", st.Phase)
	}
}

// A pull refused by the trust policy: CRI-O's reason, the pod Pending.
func TestWaitingOverride(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways)
	w := &corev1.ContainerStateWaiting{Reason: "SignatureValidationFailed", Message: "image pull failed for busybox because the signature validation failed: no signature"}
	st := computeStatus(pod, statusInput{Now: t0, Containers: []containerInput{{Spec: pod.Spec.Containers[0], Waiting: w}}})
	if st.Phase != corev1.PodPending || *st.ContainerStatuses[0].State.Waiting != *w {
		t.Fatalf("status %+v", st)
	}
}

// A terminal phase is never left.
func TestTerminalPhaseKept(t *testing.T) {
	pod := testPod(corev1.RestartPolicyNever)
	pod.Status.Phase = corev1.PodSucceeded
	st := computeStatus(pod, statusInput{Now: t0, Containers: []containerInput{{Spec: pod.Spec.Containers[0]}}})
	if st.Phase != corev1.PodSucceeded {
		t.Errorf("phase %s", st.Phase)
	}
}

func TestBackoff(t *testing.T) {
	var b backoff
	now := t0
	for i, want := range []time.Duration{10, 20, 40, 80, 160, 300, 300} {
		got := b.next(now)
		if got != want*time.Second {
			t.Errorf("failure %d: %s, want %ds", i+1, got, want)
		}
		if !b.inBackoff(now.Add(got-time.Millisecond)) || b.inBackoff(now.Add(got)) {
			t.Errorf("failure %d: in back-off wrong around %s", i+1, got)
		}
		now = now.Add(b.delay)
	}
	if got := b.next(now.Add(BackoffReset + time.Second)); got != InitialBackoff {
		t.Errorf("after a quiet %s: %s, want the initial back-off", BackoffReset, got)
	}
	for n, want := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 6: 300, 9: 300} {
		if got := restartDelay(n); got != want*time.Second {
			t.Errorf("restartDelay(%d) = %s", n, got)
		}
	}
}

func TestPullError(t *testing.T) {
	if r, _ := pullError("x", errString("connection refused")); r != "ErrImagePull" {
		t.Errorf("registry error reason %s", r)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
