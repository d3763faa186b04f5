package exporter

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/agent/usage"
	"github.com/berth-dev/berth/cgroup"
)

// fakeStore holds objects by resource, as JSON.
type fakeStore map[store.Resource][]any

func (f fakeStore) ScanKeyed(res store.Resource, ns string, fn func(key, data []byte) error) (uint64, error) {
	for i, o := range f[res] {
		b, _ := json.Marshal(o)
		if err := fn([]byte(fmt.Sprint(i)), b); err != nil {
			return 0, err
		}
	}
	return 1, nil
}

type fixedUsage struct{ s *usage.Snapshot }

func (f fixedUsage) Last() *usage.Snapshot { return f.s }
func (f fixedUsage) Cycles() uint64        { return 7 }

func shopPod(name string, uid types.UID) *corev1.Pod {
	t := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: uid,
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-5d8", Controller: &t}}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.85.0.9",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", RestartCount: 3, Ready: true,
				State:                corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled"}}}}},
	}
}

func snapshot(n int) (*usage.Snapshot, fakeStore) {
	snap := &usage.Snapshot{Time: time.Unix(1700000000, 0), Window: 10 * time.Second,
		Node: cgroup.Stats{CPUUsageNSec: 100e9, MemoryWorkingSet: 1 << 30}}
	st := fakeStore{}
	for i := range n {
		name := fmt.Sprintf("web-%d", i)
		p := shopPod(name, types.UID(fmt.Sprintf("uid-%d", i)))
		st["pods"] = append(st["pods"], p)
		grp := "/berth.slice/berth-shop.slice/berth-shop-burstable.slice/berth-shop-burstable-poduid_" + fmt.Sprint(i) + ".slice"
		snap.Pods = append(snap.Pods, &usage.Pod{Namespace: "shop", Name: name, UID: p.UID, Cgroup: grp,
			Stats: cgroup.Stats{CPUUsageNSec: 3e9, MemoryWorkingSet: 50 << 20},
			Containers: []usage.Container{
				{Name: "app", Image: "reg/app:1", Unit: "berth-shop_" + name + "_app.service", Cgroup: grp + "/berth-shop_" + name + "_app.service",
					Stats: cgroup.Stats{CPUUsageNSec: 2e9, CPUUserNSec: 15e8, CPUSystemNSec: 5e8, CPUPeriods: 100, CPUThrottled: 40, CPUThrottledNSec: 3e9,
						MemoryUsage: 60 << 20, MemoryWorkingSet: 48 << 20, MemoryRSS: 47 << 20, MemoryLimit: 128 << 20, OOMKills: 1, Pids: 4}},
			}})
	}
	snap.Namespaces = []usage.Namespace{{Name: "shop", Cgroup: "/berth.slice/berth-shop.slice", Stats: cgroup.Stats{CPUUsageNSec: 9e9, MemoryWorkingSet: 70 << 20, MemoryLimit: 1 << 30}}}
	replicas := int32(3)
	st["apps/deployments"] = []any{&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Generation: 4},
		Spec:   appsv1.DeploymentSpec{Replicas: &replicas},
		Status: appsv1.DeploymentStatus{Replicas: 3, AvailableReplicas: 2, UpdatedReplicas: 3, ReadyReplicas: 2, UnavailableReplicas: 1, ObservedGeneration: 4}}}
	st["resourcequotas"] = []any{&corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "q"},
		Status: corev1.ResourceQuotaStatus{
			Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("10"), corev1.ResourceRequestsCPU: resource.MustParse("1500m")},
			Used: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("4"), corev1.ResourceRequestsCPU: resource.MustParse("250m")}}}}
	st["nodes"] = []any{&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{
		Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")}}}}
	return snap, st
}

func gather(t testing.TB, n int) map[string][]*dto.Metric {
	t.Helper()
	snap, st := snapshot(n)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewOwn(fixedUsage{snap}))
	e := New(fixedUsage{snap}, st)
	// Pedantic: the cached series checked against their descriptions too.
	e.reg = prometheus.NewPedanticRegistry()
	e.reg.MustRegister(collector{e})
	mfs, err := Gatherer(reg, e).Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*dto.Metric{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf.Metric
	}
	return out
}

// value finds the sample of name whose labels include want.
func value(t *testing.T, fams map[string][]*dto.Metric, name string, want map[string]string) (float64, bool) {
	t.Helper()
	for _, m := range fams[name] {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// The series carry the upstream exporters' names, labels and units, and
// the pedantic registry finds them consistent with their descriptions.
func TestSeries(t *testing.T) {
	fams := gather(t, 1)
	app := map[string]string{"namespace": "shop", "pod": "web-0", "container": "app", "image": "reg/app:1", "name": "berth-shop_web-0_app.service"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"container_cpu_usage_seconds_total", map[string]string{"container": "app", "cpu": "total"}, 2},
		{"container_cpu_user_seconds_total", app, 1.5},
		{"container_cpu_cfs_throttled_periods_total", app, 40},
		{"container_cpu_cfs_throttled_seconds_total", app, 3},
		{"container_memory_working_set_bytes", app, 48 << 20},
		{"container_memory_rss", app, 47 << 20},
		{"container_spec_memory_limit_bytes", app, 128 << 20},
		{"container_oom_events_total", app, 1},
		{"container_threads", app, 4},
		// The pod's slice: container="", and the root: id="/".
		{"container_memory_working_set_bytes", map[string]string{"pod": "web-0", "container": "", "image": ""}, 50 << 20},
		{"container_cpu_usage_seconds_total", map[string]string{"id": "/", "pod": "", "namespace": ""}, 100},
		{"kube_pod_status_phase", map[string]string{"pod": "web-0", "phase": "Running", "uid": "uid-0"}, 1},
		{"kube_pod_status_phase", map[string]string{"pod": "web-0", "phase": "Pending"}, 0},
		{"kube_pod_status_ready", map[string]string{"pod": "web-0", "condition": "true"}, 1},
		{"kube_pod_container_status_restarts_total", map[string]string{"pod": "web-0", "container": "app"}, 3},
		{"kube_pod_container_status_last_terminated_reason", map[string]string{"container": "app", "reason": "OOMKilled"}, 1},
		{"kube_pod_container_resource_requests", map[string]string{"resource": "cpu", "unit": "core"}, 0.25},
		{"kube_pod_container_resource_limits", map[string]string{"resource": "memory", "unit": "byte"}, 128 << 20},
		{"kube_pod_info", map[string]string{"pod": "web-0", "created_by_kind": "ReplicaSet", "created_by_name": "web-5d8", "pod_ip": "10.85.0.9", "node": "n1"}, 1},
		{"kube_deployment_status_replicas_available", map[string]string{"namespace": "shop", "deployment": "web"}, 2},
		{"kube_deployment_spec_replicas", map[string]string{"deployment": "web"}, 3},
		{"kube_resourcequota", map[string]string{"resourcequota": "q", "resource": "pods", "type": "hard"}, 10},
		{"kube_resourcequota", map[string]string{"resourcequota": "q", "resource": "requests.cpu", "type": "used"}, 0.25},
		{"kube_resourcequota", map[string]string{"resourcequota": "q", "resource": "requests.cpu", "type": "hard"}, 1.5},
		{"kube_node_status_capacity", map[string]string{"node": "n1", "resource": "memory", "unit": "byte"}, 4 << 30},
		{"berth_usage_collections_total", nil, 7},
		{"berth_namespace_cpu_usage_seconds_total", map[string]string{"namespace": "shop", "id": "/berth.slice/berth-shop.slice"}, 9},
		{"berth_namespace_memory_limit_bytes", map[string]string{"namespace": "shop"}, 1 << 30},
	} {
		got, ok := value(t, fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// cAdvisor's label set, in full.
	var names []string
	for _, l := range fams["container_memory_rss"][0].Label {
		names = append(names, l.GetName())
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "container,id,image,name,namespace,pod" {
		t.Errorf("labels of container_memory_rss: %v", names)
	}
	// A group without a CPU quota has no CFS series (cAdvisor's way).
	if _, ok := value(t, fams, "container_cpu_cfs_periods_total", map[string]string{"id": "/"}); ok {
		t.Error("the root has CFS series")
	}
	// Stamped with the cycle's time.
	if ts := fams["container_memory_rss"][0].GetTimestampMs(); ts != 1700000000000 {
		t.Errorf("timestamp %d", ts)
	}
}

// The cache is built again when the cycle or an object changes, and
// only then.
func TestCache(t *testing.T) {
	snap, st := snapshot(2)
	u := &fixedUsage{snap}
	e := New(u, st)
	a, _ := e.Gather()
	b, _ := e.Gather()
	if &a[0] != &b[0] {
		t.Error("nothing changed, but the series were built again")
	}
	st["pods"][0].(*corev1.Pod).Status.ContainerStatuses[0].RestartCount = 9
	c, _ := e.Gather()
	if &c[0] == &b[0] {
		t.Fatal("a pod changed, the series did not")
	}
	text, _ := e.Text()
	if !strings.Contains(string(text), `kube_pod_container_status_restarts_total{container="app",namespace="shop",pod="web-0",uid="uid-0"} 9`) {
		t.Errorf("the text does not show the change")
	}
	next := *snap
	u.s = &next
	if d, _ := e.Gather(); &d[0] == &c[0] {
		t.Error("a new cycle, the series did not change")
	}
}

// /metrics: the registry's series, then the exporter's, in the text
// format.
func TestHandler(t *testing.T) {
	snap, st := snapshot(1)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewOwn(fixedUsage{snap}))
	rec := httptest.NewRecorder()
	Handler(reg, New(fixedUsage{snap}, st)).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4") ||
		!strings.Contains(body, "# TYPE berth_usage_collections_total counter\nberth_usage_collections_total 7\n") ||
		!strings.Contains(body, "# TYPE container_memory_rss gauge\n") {
		t.Errorf("%d %s\n%.600s", rec.Code, rec.Header(), body)
	}
	// Every family once: the text format allows no second TYPE line.
	seen := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "# TYPE ") {
			if seen[l] {
				t.Errorf("twice: %s", l)
			}
			seen[l] = true
		}
	}
}

// BenchmarkScrape is one scrape of /metrics on a node with 500 pods
// between two cycles, nothing changed (the steady state: Prometheus
// scrapes more often than pods change); BenchmarkScrapeChanged one where
// a pod changed, which builds the exporter's series again. No cgroup is
// read either way (the cycle is agent/usage's).
func BenchmarkScrape(b *testing.B) { benchScrape(b, false) }

func BenchmarkScrapeChanged(b *testing.B) { benchScrape(b, true) }

func benchScrape(b *testing.B, change bool) {
	snap, st := snapshot(500)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewOwn(fixedUsage{snap}))
	h := Handler(reg, New(fixedUsage{snap}, st))
	req := httptest.NewRequest("GET", "/metrics", nil)
	var n int
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if change {
			st["pods"][0].(*corev1.Pod).Status.ContainerStatuses[0].RestartCount = int32(i)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		n = rec.Body.Len()
	}
	b.ReportMetric(float64(n), "bytes/scrape")
	// What stays on the heap: the 500 pods' objects, the cycle, the
	// cached series and their text.
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
	runtime.KeepAlive(h)
}
