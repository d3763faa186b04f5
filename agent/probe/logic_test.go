package probe

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fakeExec is the exec interface's fake: it answers from a script, one
// answer per call (the last one repeats).
type fakeExec struct {
	mu      sync.Mutex
	answers []execAnswer
	calls   [][]string
}

type execAnswer struct {
	out  string
	code int
	err  error
}

func (f *fakeExec) Exec(_ context.Context, _ *corev1.Pod, _ string, cmd []string, _ time.Duration) ([]byte, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, cmd)
	a := f.answers[0]
	if len(f.answers) > 1 {
		f.answers = f.answers[1:]
	}
	return []byte(a.out), a.code, a.err
}

func (f *fakeExec) set(a ...execAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers = a
}

func (f *fakeExec) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

type event struct{ ref, typ, reason, msg string }

type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) Event(ref *corev1.ObjectReference, eventtype, reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{ref.Kind + "/" + ref.Namespace + "/" + ref.Name + "/" + ref.FieldPath, eventtype, reason, message})
}

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.reason+": "+e.msg)
	}
	return out
}

type kills struct {
	mu   sync.Mutex
	reqs []KillRequest
}

func (k *kills) kill(r KillRequest) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reqs = append(k.reqs, r)
}

func (k *kills) all() []KillRequest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.reqs)
}

// logicRig is a Manager whose workers do not run: the test calls doProbe
// and sets the clock.
type logicRig struct {
	m      *Manager
	exec   *fakeExec
	events *recorder
	kills  *kills
	now    time.Time
}

func newLogicRig(t *testing.T) *logicRig {
	r := &logicRig{exec: &fakeExec{answers: []execAnswer{{}}}, events: &recorder{}, kills: &kills{}}
	r.m = New(Config{Exec: r.exec, Events: r.events, Kill: r.kills.kill})
	r.m.spawn = func(*worker) {}
	r.now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.m.now = func() time.Time { return r.now }
	t.Cleanup(r.m.Stop)
	return r
}

func (r *logicRig) worker(t *testing.T, pod *corev1.Pod, name string, kind Kind) *worker {
	t.Helper()
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	c := r.m.containers[ckey{pod.UID, name}]
	if c == nil || c.workers[kind] == nil {
		t.Fatalf("no %s worker for %s", kind, name)
	}
	return c.workers[kind]
}

func execProbe(cmd ...string) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: cmd}}}
}

func testPod(c corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: types.UID("uid-1")},
		Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways, Containers: []corev1.Container{c}},
	}
}

func TestDefaults(t *testing.T) {
	d := withDefaults(&corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(80)}}})
	if d.TimeoutSeconds != 1 || d.PeriodSeconds != 10 || d.SuccessThreshold != 1 || d.FailureThreshold != 3 {
		t.Errorf("defaults: %+v", d)
	}
	if d.HTTPGet.Path != "/" || d.HTTPGet.Scheme != corev1.URISchemeHTTP {
		t.Errorf("httpGet defaults: %+v", d.HTTPGet)
	}
	set := withDefaults(&corev1.Probe{TimeoutSeconds: 4, PeriodSeconds: 2, SuccessThreshold: 5, FailureThreshold: 6})
	if set.TimeoutSeconds != 4 || set.PeriodSeconds != 2 || set.SuccessThreshold != 5 || set.FailureThreshold != 6 {
		t.Errorf("set fields changed: %+v", set)
	}
}

func TestReadinessThresholds(t *testing.T) {
	r := newLogicRig(t)
	p := execProbe("check")
	p.SuccessThreshold, p.FailureThreshold = 2, 3
	pod := testPod(corev1.Container{Name: "c", ReadinessProbe: p})
	start := r.now
	r.m.Add(pod, "10.0.0.1", "c", start)
	w := r.worker(t, pod, "c", Readiness)

	if !r.m.Started(pod.UID, "c") || r.m.Ready(pod.UID, "c") {
		t.Fatal("a readiness-probed container is started and not ready before its first probe")
	}
	r.exec.set(execAnswer{code: 0})
	w.doProbe()
	if r.m.Ready(pod.UID, "c") {
		t.Fatal("ready after 1 success with successThreshold 2")
	}
	w.doProbe()
	if !r.m.Ready(pod.UID, "c") {
		t.Fatal("not ready after 2 successes")
	}
	r.exec.set(execAnswer{out: "down\n", code: 1})
	w.doProbe()
	w.doProbe()
	if !r.m.Ready(pod.UID, "c") {
		t.Fatal("not ready after 2 failures with failureThreshold 3")
	}
	w.doProbe()
	if r.m.Ready(pod.UID, "c") {
		t.Fatal("ready after 3 failures")
	}
	want := []string{"Unhealthy: Readiness probe failed: down\n", "Unhealthy: Readiness probe failed: down\n", "Unhealthy: Readiness probe failed: down\n"}
	if got := r.events.messages(); !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if r.events.events[0].ref != "Pod/ns/web/spec.containers{c}" || r.events.events[0].typ != corev1.EventTypeWarning {
		t.Errorf("event %+v", r.events.events[0])
	}
	if len(r.kills.all()) != 0 {
		t.Error("readiness failure killed")
	}
}

func TestLivenessFailureKillsAndHolds(t *testing.T) {
	r := newLogicRig(t)
	p := execProbe("check")
	p.FailureThreshold = 2
	pod := testPod(corev1.Container{Name: "c", LivenessProbe: p})
	pod.Spec.TerminationGracePeriodSeconds = ptr(int64(30))
	start := r.now
	r.m.Add(pod, "10.0.0.1", "c", start)
	w := r.worker(t, pod, "c", Liveness)
	if !r.m.Ready(pod.UID, "c") {
		t.Fatal("a container with only a liveness probe is ready")
	}
	r.exec.set(execAnswer{code: 3})
	w.doProbe()
	if len(r.kills.all()) != 0 {
		t.Fatal("killed below the threshold")
	}
	w.doProbe()
	ks := r.kills.all()
	if len(ks) != 1 {
		t.Fatalf("kills %+v", ks)
	}
	k := ks[0]
	if k.Message != "Container c failed liveness probe, will be restarted" || k.Probe != Liveness || !k.Restart ||
		k.GracePeriodSeconds != 30 || !k.StartedAt.Equal(start) || k.Container != "c" {
		t.Errorf("kill %+v", k)
	}
	// On hold: no probe until a new instance.
	n := r.exec.count()
	w.doProbe()
	w.doProbe()
	if r.exec.count() != n {
		t.Error("probed a container that failed its liveness probe")
	}
	r.now = r.now.Add(time.Minute)
	r.m.Add(pod, "10.0.0.1", "c", r.now) // restarted
	r.exec.set(execAnswer{code: 0})
	w.doProbe()
	if r.exec.count() != n+1 {
		t.Error("no probe of the new instance")
	}
	if len(r.kills.all()) != 1 {
		t.Error("killed again")
	}
}

func TestKillMessagesAndGrace(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	p := execProbe("x")
	p.TerminationGracePeriodSeconds = ptr(int64(5))
	pod := testPod(corev1.Container{Name: "app", LivenessProbe: p, StartupProbe: execProbe("y")})
	pod.Spec.InitContainers = []corev1.Container{{Name: "side", RestartPolicy: &always, LivenessProbe: execProbe("z")}}
	for _, tc := range []struct {
		name      string
		mod       func(*corev1.Pod)
		container string
		kind      Kind
		msg       string
		grace     int64
		restart   bool
	}{
		{"liveness", nil, "app", Liveness, "Container app failed liveness probe, will be restarted", 2, true},
		{"startup", nil, "app", Startup, "Container app failed startup probe, will be restarted", 2, true},
		{"never", func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyNever }, "app", Liveness, "Container app failed liveness probe", 2, false},
		{"onfailure", func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure }, "app", Liveness, "Container app failed liveness probe, will be restarted", 2, true},
		{"sidecar", nil, "side", Liveness, "Init container side failed liveness probe", 2, true},
		{"probe grace", func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = ptr(int64(30)) }, "app", Liveness, "Container app failed liveness probe, will be restarted", 5, true},
		{"pod grace", func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = ptr(int64(30)) }, "app", Startup, "Container app failed startup probe, will be restarted", 30, true},
		{"deletion grace", func(p *corev1.Pod) {
			p.Spec.TerminationGracePeriodSeconds = ptr(int64(30))
			p.DeletionGracePeriodSeconds = ptr(int64(7))
		}, "app", Liveness, "Container app failed liveness probe, will be restarted", 7, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := pod.DeepCopy()
			if tc.mod != nil {
				tc.mod(pod)
			}
			spec, _ := findContainer(pod, tc.container)
			k := killRequest(target{pod: pod, spec: spec}, tc.kind)
			if k.Message != tc.msg || k.GracePeriodSeconds != tc.grace || k.Restart != tc.restart {
				t.Errorf("got %q grace %d restart %v, want %q grace %d restart %v", k.Message, k.GracePeriodSeconds, k.Restart, tc.msg, tc.grace, tc.restart)
			}
		})
	}
}

func TestStartupGatesLivenessAndReadiness(t *testing.T) {
	r := newLogicRig(t)
	startup := execProbe("startup")
	startup.FailureThreshold = 30
	pod := testPod(corev1.Container{Name: "c", StartupProbe: startup, LivenessProbe: execProbe("live"), ReadinessProbe: execProbe("ready")})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	s, l, rd := r.worker(t, pod, "c", Startup), r.worker(t, pod, "c", Liveness), r.worker(t, pod, "c", Readiness)

	l.doProbe()
	rd.doProbe()
	if r.exec.count() != 0 {
		t.Fatal("liveness or readiness probed before startup succeeded")
	}
	if r.m.Started(pod.UID, "c") || r.m.Ready(pod.UID, "c") {
		t.Fatal("started or ready before the startup probe")
	}
	r.exec.set(execAnswer{code: 1})
	s.doProbe()
	if r.m.Started(pod.UID, "c") {
		t.Fatal("started after a startup failure")
	}
	r.exec.set(execAnswer{code: 0})
	s.doProbe()
	if !r.m.Started(pod.UID, "c") {
		t.Fatal("not started after the startup probe succeeded")
	}
	if r.m.Ready(pod.UID, "c") {
		t.Fatal("ready before the readiness probe ran")
	}
	n := r.exec.count()
	s.doProbe() // done for this instance
	if r.exec.count() != n {
		t.Error("startup probed after it succeeded")
	}
	rd.doProbe()
	l.doProbe()
	if !r.m.Ready(pod.UID, "c") {
		t.Error("not ready after the readiness probe succeeded")
	}
	if got := r.exec.calls[n:]; len(got) != 2 || got[0][0] != "ready" || got[1][0] != "live" {
		t.Errorf("calls after startup %q", got)
	}
	// A restart starts over: not started, not ready.
	r.now = r.now.Add(time.Minute)
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	if r.m.Started(pod.UID, "c") || r.m.Ready(pod.UID, "c") {
		t.Error("a restarted container kept its startup or readiness result")
	}
}

func TestStartupFailureKills(t *testing.T) {
	r := newLogicRig(t)
	startup := execProbe("startup")
	startup.FailureThreshold = 2
	pod := testPod(corev1.Container{Name: "c", StartupProbe: startup})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	s := r.worker(t, pod, "c", Startup)
	r.exec.set(execAnswer{out: "not yet", code: 1})
	s.doProbe()
	s.doProbe()
	ks := r.kills.all()
	if len(ks) != 1 || ks[0].Message != "Container c failed startup probe, will be restarted" || ks[0].Probe != Startup {
		t.Fatalf("kills %+v", ks)
	}
	if got := r.events.messages(); len(got) != 2 || got[0] != "Unhealthy: Startup probe failed: not yet" {
		t.Errorf("events %q", got)
	}
}

func TestInitialDelay(t *testing.T) {
	r := newLogicRig(t)
	p := execProbe("check")
	p.InitialDelaySeconds = 5
	pod := testPod(corev1.Container{Name: "c", ReadinessProbe: p})
	start := r.now
	r.m.Add(pod, "10.0.0.1", "c", start)
	w := r.worker(t, pod, "c", Readiness)
	r.now = start.Add(4900 * time.Millisecond)
	w.doProbe()
	if r.exec.count() != 0 {
		t.Fatal("probed within initialDelaySeconds")
	}
	r.now = start.Add(5 * time.Second)
	w.doProbe()
	if r.exec.count() != 1 {
		t.Fatal("not probed after initialDelaySeconds")
	}
}

func TestExitedContainer(t *testing.T) {
	for _, policy := range []corev1.RestartPolicy{corev1.RestartPolicyAlways, corev1.RestartPolicyNever} {
		t.Run(string(policy), func(t *testing.T) {
			r := newLogicRig(t)
			pod := testPod(corev1.Container{Name: "c", ReadinessProbe: execProbe("check")})
			pod.Spec.RestartPolicy = policy
			r.m.Add(pod, "10.0.0.1", "c", r.now)
			w := r.worker(t, pod, "c", Readiness)
			w.doProbe()
			if !r.m.Ready(pod.UID, "c") {
				t.Fatal("not ready")
			}
			r.m.Exited(pod.UID, "c")
			if r.m.Ready(pod.UID, "c") || r.m.Started(pod.UID, "c") {
				t.Fatal("an exited container is ready or started")
			}
			keep := w.doProbe()
			if keep != (policy != corev1.RestartPolicyNever) {
				t.Errorf("keepGoing %v with restartPolicy %s", keep, policy)
			}
			if r.exec.count() != 1 {
				t.Error("probed an exited container")
			}
			if w.result != failure {
				t.Errorf("result %v, want Failure", w.result)
			}
		})
	}
}

func TestDeletionStopsLivenessQuietly(t *testing.T) {
	r := newLogicRig(t)
	pod := testPod(corev1.Container{Name: "c", LivenessProbe: execProbe("live"), ReadinessProbe: execProbe("ready")})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	l, rd := r.worker(t, pod, "c", Liveness), r.worker(t, pod, "c", Readiness)
	deleting := pod.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: r.now}
	r.m.Add(deleting, "10.0.0.1", "c", r.now)
	if l.doProbe() {
		t.Error("liveness goes on during graceful deletion")
	}
	if !rd.doProbe() {
		t.Error("readiness stopped during graceful deletion")
	}
	if got := r.exec.calls; len(got) != 1 || got[0][0] != "ready" {
		t.Errorf("calls %q", got)
	}
}

func TestStopLivenessAndStartupAndRemove(t *testing.T) {
	r := newLogicRig(t)
	pod := testPod(corev1.Container{Name: "c", LivenessProbe: execProbe("live"), ReadinessProbe: execProbe("ready"), StartupProbe: execProbe("s")})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	if r.m.Started(pod.UID, "c") {
		t.Fatal("started before the startup probe")
	}
	r.m.StopLivenessAndStartup(pod.UID)
	if !r.m.Started(pod.UID, "c") {
		t.Error("a container whose startup probe was stopped is not started (the kubelet: no startup worker, started)")
	}
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	r.m.mu.Lock()
	c := r.m.containers[ckey{pod.UID, "c"}]
	lw, sw, rw := c.workers[Liveness], c.workers[Startup], c.workers[Readiness]
	r.m.mu.Unlock()
	if lw != nil || sw != nil || rw == nil {
		t.Errorf("workers after StopLivenessAndStartup and Add: liveness %v startup %v readiness %v", lw, sw, rw)
	}
	r.m.Remove(pod.UID)
	if rw.doProbe() {
		t.Error("a removed worker goes on")
	}
	if r.m.Ready(pod.UID, "c") || r.m.Started(pod.UID, "c") {
		t.Error("a removed container is ready or started")
	}
}

func TestUpdateStatusTriggersReadiness(t *testing.T) {
	r := newLogicRig(t)
	pod := testPod(corev1.Container{Name: "c", ReadinessProbe: execProbe("ready")})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	w := r.worker(t, pod, "c", Readiness)
	started, ready := r.m.UpdateStatus(pod.UID, "c")
	if !started || ready {
		t.Fatalf("started %v ready %v", started, ready)
	}
	select {
	case <-w.trigger:
	default:
		t.Fatal("UpdateStatus of a started, not ready container did not ask for a readiness probe")
	}
	w.doProbe()
	if _, ready := r.m.UpdateStatus(pod.UID, "c"); !ready {
		t.Fatal("not ready")
	}
	select {
	case <-w.trigger:
		t.Fatal("UpdateStatus of a ready container asked for a probe")
	default:
	}
}

func TestChangedCallback(t *testing.T) {
	r := newLogicRig(t)
	var mu sync.Mutex
	var changed []string
	r.m.cfg.Changed = func(uid types.UID, c string) {
		mu.Lock()
		defer mu.Unlock()
		changed = append(changed, string(uid)+"/"+c)
	}
	pod := testPod(corev1.Container{Name: "c", ReadinessProbe: execProbe("ready"), LivenessProbe: execProbe("live")})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	rd, l := r.worker(t, pod, "c", Readiness), r.worker(t, pod, "c", Liveness)
	l.doProbe() // liveness success: nothing Started or Ready depend on changes
	rd.doProbe()
	rd.doProbe() // unchanged
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(changed, []string{"uid-1/c"}) {
		t.Errorf("changed %q", changed)
	}
}

func TestExecErrorsAndTimeout(t *testing.T) {
	r := newLogicRig(t)
	pod := testPod(corev1.Container{Name: "c", LivenessProbe: execProbe("sh", "-c", "sleep 5")})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	w := r.worker(t, pod, "c", Liveness)

	r.exec.set(execAnswer{err: errors.New("container is stopping")})
	w.doProbe()
	if r.exec.count() != maxProbeRetries {
		t.Errorf("an errored probe ran %d times, want %d", r.exec.count(), maxProbeRetries)
	}
	if w.resultRun != 0 {
		t.Error("an errored probe's result was counted")
	}
	r.exec.set(execAnswer{err: fmt.Errorf("exec: %w", context.DeadlineExceeded)})
	w.doProbe()
	want := []string{
		"Unhealthy: Liveness probe errored and resulted in unknown state: container is stopping",
		`Unhealthy: Liveness probe failed: command "sh -c sleep 5" timed out`,
	}
	if got := r.events.messages(); !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	// The output is bounded as the kubelet's.
	r.exec.set(execAnswer{out: strings.Repeat("x", 20<<10), code: 1})
	w.doProbe()
	if got := r.events.messages(); len(got[2]) != len("Unhealthy: Liveness probe failed: ")+maxOutput {
		t.Errorf("output not bounded to 10 KiB: %d bytes", len(got[2]))
	}
}

func TestExecWithoutExecer(t *testing.T) {
	r := newLogicRig(t)
	r.m.cfg.Exec = nil
	pod := testPod(corev1.Container{Name: "c", ReadinessProbe: execProbe("x")})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	r.worker(t, pod, "c", Readiness).doProbe()
	if got := r.events.messages(); len(got) != 1 || !strings.HasPrefix(got[0], "Unhealthy: Readiness probe errored and resulted in unknown state: exec probes: not implemented") {
		t.Errorf("events %q", got)
	}
}

func TestExpandCommand(t *testing.T) {
	env := []corev1.EnvVar{{Name: "A", Value: "alpha"}, {Name: "B", Value: "b b"},
		{Name: "F", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}
	for in, want := range map[string]string{
		"plain":         "plain",
		"$(A)":          "alpha",
		"x$(A)y$(B)z":   "xalphayb bz",
		"$(NOPE)":       "$(NOPE)",
		"$$(A)":         "$(A)",
		"$(F)":          "",
		"$(A":           "$(A",
		"$A":            "$A",
		"trailing$":     "trailing$",
		"$$$(A)":        "$alpha",
		"a$$b":          "a$b",
		"$()":           "$()",
		"cost: $5 $(A)": "cost: $5 alpha",
	} {
		if got := expandCommand([]string{in}, env)[0]; got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
	r := newLogicRig(t)
	pod := testPod(corev1.Container{Name: "c", Env: env, ReadinessProbe: execProbe("test", "$(A)", "-eq", "$(B)")})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	r.worker(t, pod, "c", Readiness).doProbe()
	if got := r.exec.calls[0]; !slices.Equal(got, []string{"test", "alpha", "-eq", "b b"}) {
		t.Errorf("command %q", got)
	}
}

func TestResolvePort(t *testing.T) {
	c := &corev1.Container{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}
	for _, tc := range []struct {
		in   intstr.IntOrString
		port int
		err  string
	}{
		{intstr.FromInt32(80), 80, ""},
		{intstr.FromString("http"), 8080, ""},
		{intstr.FromString("9090"), 9090, ""},
		{intstr.FromString("metrics"), 0, `strconv.Atoi: parsing "metrics": invalid syntax`},
		{intstr.FromInt32(0), 0, "invalid port number: 0"},
		{intstr.FromInt32(70000), 0, "invalid port number: 70000"},
	} {
		port, err := ResolvePort(tc.in, c)
		switch {
		case tc.err != "" && (err == nil || err.Error() != tc.err):
			t.Errorf("%v: error %v, want %q", tc.in.String(), err, tc.err)
		case tc.err == "" && (err != nil || port != tc.port):
			t.Errorf("%v: %d, %v; want %d", tc.in.String(), port, err, tc.port)
		}
	}
}

func TestMissingHandler(t *testing.T) {
	r := newLogicRig(t)
	pod := testPod(corev1.Container{Name: "c", ReadinessProbe: &corev1.Probe{}})
	r.m.Add(pod, "10.0.0.1", "c", r.now)
	r.worker(t, pod, "c", Readiness).doProbe()
	want := "Unhealthy: Readiness probe errored and resulted in unknown state: missing probe handler for web_ns(uid-1):c"
	if got := r.events.messages(); len(got) != 1 || got[0] != want {
		t.Errorf("events %q, want %q", got, want)
	}
}

func TestMissingHandlerIsInvalidArgument(t *testing.T) {
	w := &worker{ctx: context.Background(), spec: corev1.Probe{}}
	pod := testPod(corev1.Container{Name: "c"})
	if _, _, err := w.runProbe(target{pod: pod, spec: &pod.Spec.Containers[0]}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("error %v is not InvalidArgument", err)
	}
}

func ptr[T any](v T) *T { return &v }
