package worker

import (
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/unitgen/systemd"
)

// With probes, the prober decides Started and Ready of a running container
// (the kubelet's prober UpdatePodStatus) and through them ContainersReady
// and Ready; it is told the instance by its exact start time, and is not
// asked about a container that does not run.
func TestProbesDecideReadiness(t *testing.T) {
	pod := testPod(corev1.RestartPolicyAlways)
	start := t0.Add(-1500 * time.Millisecond)
	for _, tc := range []struct {
		started, ready bool
		wantReady      bool
	}{
		{false, false, false}, // startup probe pending
		{true, false, false},  // readiness not yet succeeded
		{true, true, true},
		{false, true, false}, // not started is never ready
	} {
		var asked []time.Time
		probes := func(at time.Time) (bool, bool) {
			asked = append(asked, at)
			return tc.started, tc.ready
		}
		in := statusInput{Sandbox: true, Now: t0, Containers: []containerInput{{Spec: pod.Spec.Containers[0],
			Runtime: runtimeStatus("active", "running", nil), Unit: unitTimes{ExecMainStart: start}, Probes: probes}}}
		st := computeStatus(pod, in)
		cs := st.ContainerStatuses[0]
		if len(asked) != 1 || !asked[0].Equal(start) {
			t.Errorf("prober asked about %v, want once about %v", asked, start)
		}
		if *cs.Started != tc.started || cs.Ready != tc.wantReady || st.Phase != corev1.PodRunning {
			t.Errorf("started %v ready %v: status started %v ready %v phase %s", tc.started, tc.ready, *cs.Started, cs.Ready, st.Phase)
		}
		for _, ct := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
			c := cond(st, ct)
			want := corev1.ConditionFalse
			if tc.wantReady {
				want = corev1.ConditionTrue
			}
			if c.Status != want || (!tc.wantReady && (c.Reason != ReasonContainersNotReady || c.Message != "containers with unready status: [main]")) {
				t.Errorf("started %v ready %v: %s %+v", tc.started, tc.ready, ct, c)
			}
		}
	}

	// Waiting out a crash-loop back-off: the prober is not asked.
	called := false
	in := statusInput{Sandbox: true, Now: t0, Containers: []containerInput{{Spec: pod.Spec.Containers[0],
		Runtime: runtimeStatus("activating", "auto-restart", &corev1.ContainerStateTerminated{ExitCode: 137}),
		Probes:  func(time.Time) (bool, bool) { called = true; return true, true }}}}
	st := computeStatus(pod, in)
	if cs := st.ContainerStatuses[0]; called || cs.Ready || *cs.Started {
		t.Errorf("a container in back-off: prober asked %v, status %+v", called, cs)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "TERM": syscall.SIGTERM, "sigquit": syscall.SIGQUIT, "9": syscall.SIGKILL, "SIGUSR1": syscall.SIGUSR1} {
		if got, ok := parseSignal(in); !ok || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "SIGNOPE", "0", "99"} {
		if _, ok := parseSignal(in); ok {
			t.Errorf("parseSignal(%q) accepted", in)
		}
	}
}

// A liveness kill ends when the instance it was asked about no longer
// runs: stopped, restarted (a new ExecMainStart), or waiting to restart.
func TestSameInstance(t *testing.T) {
	run := systemd.UnitStatus{LoadState: "loaded", ActiveState: "active", SubState: "running", MainPID: 42, ExecMainStart: t0}
	if !sameInstance(&run, t0) {
		t.Error("the running instance is not itself")
	}
	restarted := run
	restarted.ExecMainStart = t0.Add(11 * time.Second)
	backoff := run
	backoff.ActiveState, backoff.SubState, backoff.MainPID = "activating", "auto-restart", 0
	gone := run
	gone.LoadState, gone.ActiveState, gone.MainPID = "not-found", "inactive", 0
	for name, st := range map[string]systemd.UnitStatus{"restarted": restarted, "back-off": backoff, "gone": gone} {
		if sameInstance(&st, t0) {
			t.Errorf("%s: still the instance of %v", name, t0)
		}
	}
}
