package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

// runningPods stores n pods in a real store the way berthd does: created
// through the handler (defaults, admission), then their status written by
// updates as the pod worker writes it (ContainerCreating, then Running),
// with the kubelet's five Events for each. It returns the server.
func runningPods(tb testing.TB, st *store.Store, n int) *Server {
	tb.Helper()
	srv, err := New(st, Options{NodeName: "node-1"})
	if err != nil {
		tb.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}
	srv.kinds["namespaces"].prepare(ns)
	if err := st.Create("namespaces", ns); err != nil {
		tb.Fatal(err)
	}
	image := "localhost:5000/busybox@sha256:" + fmt.Sprintf("%064x", 1)
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for i := 0; i < n; i++ {
		body := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p%04d","namespace":"bench","labels":{"bench":"bench"}},`+
			`"spec":{"terminationGracePeriodSeconds":1,"containers":[{"name":"c","image":%q,"command":["sleep","100000"]}]}}`, i, image)
		req := httptest.NewRequest(http.MethodPost, "/api/v1/namespaces/bench/pods", bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			tb.Fatalf("create: %d %s", rec.Code, rec.Body)
		}
		name := fmt.Sprintf("p%04d", i)
		for _, running := range []bool{false, true} {
			var p corev1.Pod
			if err := st.Get("pods", "bench", name, &p); err != nil {
				tb.Fatal(err)
			}
			cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
				c := corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now, ObservedGeneration: 1}
				if !ok {
					c.Status, c.Reason, c.Message = corev1.ConditionFalse, "ContainersNotReady", "containers with unready status: [c]"
				}
				return c
			}
			cs := corev1.ContainerStatus{Name: "c", Image: image, Started: ptr(running), Ready: running,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
			phase := corev1.PodPending
			if running {
				cs.ImageID = image
				cs.ContainerID = "berth://bench-" + name + "-c"
				cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
				phase = corev1.PodRunning
			}
			p.Status = corev1.PodStatus{Phase: phase, HostIP: "10.0.0.1", HostIPs: []corev1.HostIP{{IP: "10.0.0.1"}},
				StartTime: &now, QOSClass: corev1.PodQOSBestEffort, ObservedGeneration: 1,
				Conditions: []corev1.PodCondition{cond(corev1.PodReadyToStartContainers, running), cond(corev1.PodInitialized, true),
					cond(corev1.PodReady, running), cond(corev1.ContainersReady, running), cond(corev1.PodScheduled, true)},
				ContainerStatuses: []corev1.ContainerStatus{cs}}
			if err := st.Update("pods", &p, false); err != nil {
				tb.Fatal(err)
			}
		}
		for j, reason := range []string{"Scheduled", "Pulling", "Pulled", "Created", "Started"} {
			ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", name, j), Namespace: "bench"},
				InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: "bench", Name: name, FieldPath: "spec.containers{c}"},
				Reason:         reason, Message: reason + " container c with image " + image, FirstTimestamp: now, LastTimestamp: now, Count: 1,
				Type: corev1.EventTypeNormal, Source: corev1.EventSource{Component: "kubelet", Host: "node-1"}, ReportingController: "kubelet", ReportingInstance: "node-1"}
			if err := st.Create("events", ev); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return srv
}

// BenchmarkList lists 500 running pods through the handler, as JSON and as
// kubectl's Table:
//
//	go test -run '^$' -bench BenchmarkList -benchmem -cpuprofile cpu.out -memprofile mem.out ./api/server
func BenchmarkList(b *testing.B) {
	st, err := store.Open(filepath.Join(b.TempDir(), "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	srv := runningPods(b, st, 500)
	// Over a Unix socket, as berthd serves it.
	sock := filepath.Join(b.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	defer hs.Close()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for _, f := range []struct{ name, accept string }{
		{"JSON", "application/json"},
		{"Table", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"},
		{"Selector", "application/json"},
	} {
		b.Run(f.name, func(b *testing.B) {
			url := "/api/v1/namespaces/bench/pods"
			if f.name == "Selector" {
				url += "?labelSelector=bench%3Dbench"
			}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				req, _ := http.NewRequest(http.MethodGet, "http://berth"+url, nil)
				req.Header.Set("Accept", f.accept)
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("list: %d", resp.StatusCode)
				}
				b.SetBytes(n)
			}
		})
	}
}

// BenchmarkHeldMemory reports the Go heap that stays in use once 500 pods
// are stored and running (the store's watch history among it).
func BenchmarkHeldMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		st, err := store.Open(filepath.Join(b.TempDir(), "state.db"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		srv := runningPods(b, st, 500)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heapMB")
		// What a Table list leaves cached.
		req := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/bench/pods", nil)
		req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
		srv.ServeHTTP(httptest.NewRecorder(), req)
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.ReportMetric(float64(before.HeapAlloc-after.HeapAlloc)/(1<<20), "listCacheMB")
		runtime.KeepAlive(srv)
		st.Close()
	}
}
