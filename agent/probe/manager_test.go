package probe

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// waitFor polls cond until it holds; the bound only keeps a broken build
// from hanging, it is not a claim about speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// switchServer answers each path with the status set for it (200 by
// default) and counts the requests.
type switchServer struct {
	*httptest.Server
	mu    sync.Mutex
	codes map[string]int
	hits  map[string]int
	block chan struct{} // paths under /block wait on it
}

func newSwitchServer(t *testing.T) *switchServer {
	s := &switchServer{codes: map[string]int{}, hits: map[string]int{}, block: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		code := s.codes[r.URL.Path]
		s.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/block") {
			select {
			case <-s.block:
			case <-r.Context().Done():
			}
		}
		if code != 0 {
			w.WriteHeader(code)
		}
	}))
	t.Cleanup(func() {
		close(s.block)
		s.Close()
	})
	return s
}

func (s *switchServer) set(path string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[path] = code
}

func (s *switchServer) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

func fastHTTPProbe(path string, port int32) *corev1.Probe {
	p := httpProbe(path, intstr.FromInt32(port))
	p.PeriodSeconds = 1
	return p
}

// A pod worker's side of the wiring, as a test: status is recomputed on
// every Changed (UpdateStatus), kills are collected.
type fakePodWorker struct {
	m       *Manager
	kills   kills
	events  recorder
	changes atomic.Int32
}

func newFakePodWorker(t *testing.T, jitter bool) *fakePodWorker {
	pw := &fakePodWorker{}
	pw.m = New(Config{Events: &pw.events, Kill: pw.kills.kill, Changed: func(uid types.UID, c string) {
		pw.changes.Add(1)
		pw.m.UpdateStatus(uid, c)
	}})
	if !jitter {
		pw.m.start = time.Now().Add(-time.Hour)
	}
	t.Cleanup(pw.m.Stop)
	return pw
}

func TestRunningReadinessFollowsTheServer(t *testing.T) {
	t.Parallel()
	srv := newSwitchServer(t)
	ip, port := hostPort(t, srv.URL)
	pw := newFakePodWorker(t, true) // a fresh Manager: the first probe is jittered within the period
	pod := testPod(corev1.Container{Name: "c", ReadinessProbe: fastHTTPProbe("/ready", port)})
	pw.m.Add(pod, ip, "c", time.Now())
	if pw.m.Ready(pod.UID, "c") {
		t.Fatal("ready before any probe")
	}
	waitFor(t, "ready", func() bool { return pw.m.Ready(pod.UID, "c") })
	srv.set("/ready", 500)
	waitFor(t, "not ready after 3 failures", func() bool { return !pw.m.Ready(pod.UID, "c") })
	srv.set("/ready", 200)
	waitFor(t, "ready again", func() bool { return pw.m.Ready(pod.UID, "c") })
	if pw.changes.Load() < 3 {
		t.Errorf("%d Changed calls for 3 changes", pw.changes.Load())
	}
	msgs := pw.events.messages()
	if len(msgs) < 3 {
		t.Fatalf("events %q", msgs)
	}
	for _, m := range msgs {
		if m != "Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 500" {
			t.Errorf("event %q", m)
		}
	}
}

func TestRunningLivenessKillsAndResumesAfterRestart(t *testing.T) {
	t.Parallel()
	srv := newSwitchServer(t)
	ip, port := hostPort(t, srv.URL)
	srv.set("/live", 500)
	pw := newFakePodWorker(t, false)
	p := fastHTTPProbe("/live", port)
	p.FailureThreshold = 2
	pod := testPod(corev1.Container{Name: "c", LivenessProbe: p})
	first := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	pw.m.Add(pod, ip, "c", first)
	waitFor(t, "a kill", func() bool { return len(pw.kills.all()) == 1 })
	k := pw.kills.all()[0]
	if k.Message != "Container c failed liveness probe, will be restarted" || !k.StartedAt.Equal(first) {
		t.Errorf("kill %+v", k)
	}
	if msgs := pw.events.messages(); len(msgs) != 2 || msgs[1] != "Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 500" {
		t.Errorf("events %q", msgs)
	}
	// The worker restarts the container; its probes resume for the new instance.
	srv.set("/live", 200)
	before := srv.count("/live")
	pw.m.Add(pod, ip, "c", first.Add(time.Minute))
	waitFor(t, "probes of the restarted container", func() bool { return srv.count("/live") > before+1 })
	if len(pw.kills.all()) != 1 {
		t.Errorf("kills %+v", pw.kills.all())
	}
}

func TestRunningStartupGates(t *testing.T) {
	t.Parallel()
	srv := newSwitchServer(t)
	ip, port := hostPort(t, srv.URL)
	srv.set("/startup", 503)
	pw := newFakePodWorker(t, false)
	startup := fastHTTPProbe("/startup", port)
	startup.FailureThreshold = 100
	pod := testPod(corev1.Container{Name: "c", StartupProbe: startup,
		LivenessProbe: fastHTTPProbe("/live", port), ReadinessProbe: fastHTTPProbe("/ready", port)})
	pw.m.Add(pod, ip, "c", time.Now())
	waitFor(t, "two startup probes", func() bool { return srv.count("/startup") >= 2 })
	if srv.count("/live") != 0 || srv.count("/ready") != 0 {
		t.Fatalf("liveness or readiness probed while the startup probe fails: %v", srv.hits)
	}
	if pw.m.Started(pod.UID, "c") {
		t.Fatal("started while the startup probe fails")
	}
	srv.set("/startup", 200)
	waitFor(t, "started", func() bool { return pw.m.Started(pod.UID, "c") })
	waitFor(t, "ready", func() bool { return pw.m.Ready(pod.UID, "c") })
	waitFor(t, "liveness probed", func() bool { return srv.count("/live") > 0 })
}

func TestStopCancelsAProbeInFlight(t *testing.T) {
	t.Parallel()
	srv := newSwitchServer(t)
	ip, port := hostPort(t, srv.URL)
	pw := newFakePodWorker(t, false)
	p := fastHTTPProbe("/block", port)
	p.TimeoutSeconds = 3600
	pod := testPod(corev1.Container{Name: "c", ReadinessProbe: p})
	pw.m.Add(pod, ip, "c", time.Now())
	waitFor(t, "the probe in flight", func() bool { return srv.count("/block") == 1 })
	pw.m.Remove(pod.UID)
	pw.m.Stop() // returns: the probe was cancelled
	if msgs := pw.events.messages(); len(msgs) != 0 {
		t.Errorf("a cancelled probe recorded %q", msgs)
	}
}
