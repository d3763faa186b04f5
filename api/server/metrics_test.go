package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"

	"github.com/berth-dev/berth/agent/store"
)

// fakeMetrics is a source with two pods in two namespaces and the node.
type fakeMetrics struct{ node bool }

func podMetrics(ns, name, app string) metricsv1beta1.PodMetrics {
	return metricsv1beta1.PodMetrics{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
		Window: metav1.Duration{Duration: 10 * time.Second},
		Containers: []metricsv1beta1.ContainerMetrics{{Name: "c", Usage: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("48Mi")}}}}
}

func (f fakeMetrics) PodMetrics(ns string) []metricsv1beta1.PodMetrics {
	var out []metricsv1beta1.PodMetrics
	for _, p := range []metricsv1beta1.PodMetrics{podMetrics("b", "web", "web"), podMetrics("a", "db", "db"), podMetrics("a", "api", "web")} {
		if ns == "" || p.Namespace == ns {
			out = append(out, p)
		}
	}
	return out
}

func (f fakeMetrics) NodeMetrics(node string) (metricsv1beta1.NodeMetrics, bool) {
	return metricsv1beta1.NodeMetrics{ObjectMeta: metav1.ObjectMeta{Name: node}}, f.node
}

func newMetricsHTTP(t *testing.T, m Metrics) string {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := New(st, Options{NodeName: "n1", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts.URL
}

// metrics.k8s.io as metrics-server serves it: in discovery (both forms),
// lists by namespace and label selector, a get, the 404 of a pod or node
// without figures, and nothing but reads.
func TestMetricsAPI(t *testing.T) {
	url := newMetricsHTTP(t, fakeMetrics{node: true})
	base := url + "/apis/metrics.k8s.io/v1beta1"

	var groups metav1.APIGroupList
	getJSON(t, url+"/apis", &groups)
	found := false
	for _, g := range groups.Groups {
		found = found || g.Name == "metrics.k8s.io" && g.PreferredVersion.Version == "v1beta1"
	}
	if !found {
		t.Errorf("/apis does not list metrics.k8s.io/v1beta1: %+v", groups.Groups)
	}
	req, _ := http.NewRequest("GET", url+"/apis", nil)
	req.Header.Set("Accept", aggregatedType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var agg apidiscoveryv2.APIGroupDiscoveryList
	if err := jsonDecode(resp, &agg); err != nil {
		t.Fatal(err)
	}
	var res []string
	for _, g := range agg.Items {
		if g.Name == "metrics.k8s.io" {
			for _, r := range g.Versions[0].Resources {
				res = append(res, r.Resource+":"+string(r.Scope)+":"+strings.Join(r.Verbs, ","))
			}
		}
	}
	if strings.Join(res, " ") != "nodes:Cluster:get,list pods:Namespaced:get,list" {
		t.Errorf("aggregated discovery of metrics.k8s.io: %v", res)
	}
	var rl metav1.APIResourceList
	if code := getJSON(t, base, &rl); code != 200 || len(rl.APIResources) != 2 {
		t.Errorf("legacy discovery: %d %+v", code, rl)
	}

	var pl metricsv1beta1.PodMetricsList
	getJSON(t, base+"/pods", &pl)
	if pl.Kind != "PodMetricsList" || pl.APIVersion != "metrics.k8s.io/v1beta1" || len(pl.Items) != 3 || pl.Items[0].Name != "api" || pl.Items[2].Name != "web" {
		t.Errorf("all pods: %+v", pl)
	}
	getJSON(t, base+"/namespaces/a/pods?labelSelector=app%3Dweb", &pl)
	if len(pl.Items) != 1 || pl.Items[0].Name != "api" {
		t.Errorf("namespace a, app=web: %+v", pl.Items)
	}
	var pm metricsv1beta1.PodMetrics
	if code := getJSON(t, base+"/namespaces/a/pods/db", &pm); code != 200 || pm.Kind != "PodMetrics" || pm.Containers[0].Usage.Cpu().MilliValue() != 200 {
		t.Errorf("get db: %d %+v", code, pm)
	}
	var nl metricsv1beta1.NodeMetricsList
	if getJSON(t, base+"/nodes", &nl); len(nl.Items) != 1 || nl.Items[0].Name != "n1" {
		t.Errorf("nodes: %+v", nl)
	}
	if getJSON(t, base+"/nodes?labelSelector=x%3Dy", &nl); len(nl.Items) != 0 {
		t.Errorf("nodes x=y: %+v", nl)
	}
	for _, tc := range []struct {
		method, path string
		code         int
		msg          string
	}{
		{"GET", "/namespaces/a/pods/nosuch", 404, `podmetrics.metrics.k8s.io "nosuch" not found`},
		{"GET", "/nodes/other", 404, `nodemetrics.metrics.k8s.io "other" not found`},
		{"GET", "/namespaces/a/pods?labelSelector=a%3D%3D%3Db", 400, "unable to parse requirement"},
		{"DELETE", "/namespaces/a/pods/db", 405, `delete is not supported on resources of kind "pods.metrics.k8s.io"`},
		{"POST", "/namespaces/a/pods", 405, ""},
		{"GET", "/namespaces/a/pods?watch=true", 405, ""},
		{"GET", "/namespaces/a/nodes", 404, ""},
		{"GET", "/deployments", 404, ""},
	} {
		code, st := do(t, tc.method, base+tc.path, "", "")
		if code != tc.code || !strings.Contains(st.Message, tc.msg) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, code, st.Message, tc.code, tc.msg)
		}
	}
}

// Before the first two cycles there are no node figures: the list is
// empty and a get is metrics-server's 404. Without a source the group is
// not served at all.
func TestMetricsAPINotYet(t *testing.T) {
	url := newMetricsHTTP(t, fakeMetrics{node: false})
	var nl metricsv1beta1.NodeMetricsList
	if code := getJSON(t, url+"/apis/metrics.k8s.io/v1beta1/nodes", &nl); code != 200 || len(nl.Items) != 0 {
		t.Errorf("nodes: %d %+v", code, nl)
	}
	if code, _ := do(t, "GET", url+"/apis/metrics.k8s.io/v1beta1/nodes/n1", "", ""); code != 404 {
		t.Errorf("node n1: %d", code)
	}
	url = newMetricsHTTP(t, nil)
	if code, _ := do(t, "GET", url+"/apis/metrics.k8s.io/v1beta1/nodes", "", ""); code != 404 {
		t.Errorf("without a source: %d", code)
	}
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
