package openapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/kube-openapi/pkg/spec3"
)

var resources = []Resource{
	{Version: "v1", Resource: "pods", Kind: "Pod", Namespaced: true, Verbs: []string{"get", "list", "patch", "create"},
		Subresources: []string{"status"}, Object: &corev1.Pod{}, List: &corev1.PodList{}},
	{Version: "v1", Resource: "nodes", Kind: "Node", Verbs: []string{"get", "patch"}, Object: &corev1.Node{}, List: &corev1.NodeList{}},
	{Version: "v1", Resource: "namespaces", Kind: "Namespace", Verbs: []string{"get"}, Object: &corev1.Namespace{}, List: &corev1.NamespaceList{}},
	{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespaced: true, Verbs: []string{"get"}, Object: &corev1.ConfigMap{}, List: &corev1.ConfigMapList{}},
	{Version: "v1", Resource: "secrets", Kind: "Secret", Namespaced: true, Verbs: []string{"get"}, Object: &corev1.Secret{}, List: &corev1.SecretList{}},
	{Version: "v1", Resource: "events", Kind: "Event", Namespaced: true, Verbs: []string{"get"}, Object: &corev1.Event{}, List: &corev1.EventList{}},
	{Group: "events.k8s.io", Version: "v1", Resource: "events", Kind: "Event", Namespaced: true, Verbs: []string{"get", "list"},
		Object: &eventsv1.Event{}, List: &eventsv1.EventList{}},
}

// The documents parse as OpenAPI v3 (kube-openapi's spec3, what client-go
// reads), and a strategic merge patch computed from them (as kubectl apply
// does) merges containers by name.
func TestDocuments(t *testing.T) {
	h := NewHandler(resources)
	b, _, err := h.Document("api/v1")
	if err != nil {
		t.Fatal(err)
	}
	var doc spec3.OpenAPI
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	pod := doc.Components.Schemas["io.k8s.api.core.v1.Pod"]
	if pod == nil || pod.Extensions["x-kubernetes-group-version-kind"] == nil || pod.Properties["spec"].AllOf[0].Ref.String() != "#/components/schemas/io.k8s.api.core.v1.PodSpec" {
		t.Fatalf("Pod schema %+v", pod)
	}
	if q := doc.Components.Schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]; q == nil || len(q.OneOf) != 2 {
		t.Errorf("Quantity %+v", q)
	}
	if ts := doc.Components.Schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]; ts == nil || ts.Format != "date-time" {
		t.Errorf("Time %+v", ts)
	}
	if _, ok := doc.Paths.Paths["/api/v1/namespaces/{namespace}/pods/{name}/status"]; !ok {
		t.Error("no status path")
	}
	if p := doc.Paths.Paths["/api/v1/nodes/{name}"]; p == nil || p.Patch == nil || p.Put != nil || p.Delete != nil {
		t.Errorf("node path: only the verbs served: %+v", p)
	}
	meta := strategicpatch.PatchMetaFromOpenAPIV3{Schema: pod, SchemaList: doc.Components.Schemas}
	original := []byte(`{"spec":{"containers":[{"name":"a","image":"x"},{"name":"b","image":"y"}]}}`)
	modified := []byte(`{"spec":{"containers":[{"name":"a","image":"z"},{"name":"b","image":"y"}]}}`)
	patch, err := strategicpatch.CreateThreeWayMergePatch(original, modified, original, meta, false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(patch), `"$setElementOrder/containers"`) || !strings.Contains(string(patch), `{"image":"z","name":"a"}`) {
		t.Errorf("patch %s", patch)
	}

	b, _, err = h.Document("apis/events.k8s.io/v1")
	if err != nil || !strings.Contains(string(b), `"io.k8s.api.events.v1.Event"`) || strings.Contains(string(b), `"io.k8s.api.core.v1.Pod"`) {
		t.Errorf("events.k8s.io/v1: %v", err)
	}
}

func TestNotAcceptable(t *testing.T) {
	ts := httptest.NewServer(NewHandler(resources))
	defer ts.Close()
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/openapi/v3/api/v1", nil)
	req.Header.Set("Accept", "application/com.github.proto-openapi.spec.v3.v1.0+protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotAcceptable {
		t.Errorf("protobuf only: %d", resp.StatusCode)
	}
}

// What building the documents costs, once (go test -run XXX -bench .
// -benchmem ./api/openapi); the log line of TestCost says the same.
func BenchmarkBuild(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, _, err := NewHandler(resources).Document("api/v1"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCost(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	h := NewHandler(resources)
	b, _, err := h.Document("api/v1")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("api/v1 document: %d bytes, built in %v, %d KiB retained", len(b), took, (int64(after.HeapAlloc)-int64(before.HeapAlloc))/1024)
	runtime.KeepAlive(h)
}
