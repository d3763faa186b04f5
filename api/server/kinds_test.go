package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/node"
)

// runAllowing runs kubectl at -v=6 like kubectl.run, accepting a 404 for
// any path containing one of allow (describe's optional lookups).
func (k *kubectl) runAllowing(allow []string, args ...string) (string, string, error) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, stockKubectl, append([]string{"--kubeconfig", k.kubeconfig, "--cache-dir", k.cache, "-v=6"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var msgs []string
	for _, line := range strings.Split(errb.String(), "\n") {
		m := requestLine.FindStringSubmatch(line)
		if m == nil {
			if !strings.HasPrefix(line, "I") && !strings.HasPrefix(line, "W") && line != "" {
				msgs = append(msgs, line)
			}
			continue
		}
		allowed := false
		for _, a := range allow {
			allowed = allowed || strings.Contains(m[2], a)
		}
		if m[3][0] == '5' || (m[3] == "404" && !allowed) {
			k.t.Errorf("kubectl %s: unexpected %s for %s %s", strings.Join(args, " "), m[3], m[1], m[2])
		}
	}
	return out.String(), strings.Join(msgs, "\n"), err
}

// columns splits kubectl's table output into rows of cells (two or more
// spaces apart).
func columns(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
	}
	return rows
}

// kubectl api-resources prints exactly what berth serves.
func TestStockKubectlAPIResources(t *testing.T) {
	k, _ := newKubectl(t)
	out := k.ok("api-resources")
	want := [][]string{
		{"NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"},
		{"configmaps", "cm", "v1", "true", "ConfigMap"},
		{"endpoints", "ep", "v1", "true", "Endpoints"},
		{"events", "ev", "v1", "true", "Event"},
		{"limitranges", "limits", "v1", "true", "LimitRange"},
		{"namespaces", "ns", "v1", "false", "Namespace"},
		{"nodes", "no", "v1", "false", "Node"},
		{"persistentvolumeclaims", "pvc", "v1", "true", "PersistentVolumeClaim"},
		{"persistentvolumes", "pv", "v1", "false", "PersistentVolume"},
		{"pods", "po", "v1", "true", "Pod"},
		{"resourcequotas", "quota", "v1", "true", "ResourceQuota"},
		{"secrets", "v1", "true", "Secret"},
		{"services", "svc", "v1", "true", "Service"},
		{"deployments", "deploy", "apps/v1", "true", "Deployment"},
		{"replicasets", "rs", "apps/v1", "true", "ReplicaSet"},
		{"endpointslices", "discovery.k8s.io/v1", "true", "EndpointSlice"},
		{"events", "ev", "events.k8s.io/v1", "true", "Event"},
		{"storageclasses", "sc", "storage.k8s.io/v1", "false", "StorageClass"},
	}
	got := columns(out)
	if len(got) != len(want) {
		t.Fatalf("api-resources:\n%s", out)
	}
	for i := range want {
		if strings.Join(got[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("row %d = %q, want %q", i, got[i], want[i])
		}
	}
	if out := k.ok("api-resources", "-o", "wide", "--api-group=events.k8s.io"); !strings.Contains(out, "create,delete,deletecollection,get,list,patch,update,watch") {
		t.Errorf("events.k8s.io verbs:\n%s", out)
	}
	if out := k.ok("api-versions"); out != "apps/v1\ndiscovery.k8s.io/v1\nevents.k8s.io/v1\nstorage.k8s.io/v1\nv1\n" {
		t.Errorf("api-versions: %q", out)
	}
}

const manifest = `apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: team, labels: {app: web}}
spec:
  containers: [{name: app, image: busybox}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
data: {a: "1", b: "2"}
binaryData: {c: aGk=}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: team}
stringData: {password: hunter2}
`

// kubectl apply with its default --validate=strict: OpenAPI v3 tells it
// the server validates fields, so it sends fieldValidation=Strict.
func TestStockKubectlApplyStrict(t *testing.T) {
	k, _ := newKubectl(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "all.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := k.runAllowing([]string{"/namespaces/team", "/pods/web", "/configmaps/settings", "/secrets/token"}, "apply", "-f", file)
	if err != nil || out != "namespace/team created\npod/web created\nconfigmap/settings created\nsecret/token created\n" {
		t.Fatalf("apply: %v\n%s%s", err, out, stderr)
	}
	if got := columns(k.ok("get", "configmaps", "-n", "team")); len(got) != 2 || strings.Join(got[0], "|") != "NAME|DATA|AGE" || got[1][0] != "settings" || got[1][1] != "3" {
		t.Errorf("get configmaps: %q", got)
	}
	if got := columns(k.ok("get", "secrets", "-n", "team")); len(got) != 2 || strings.Join(got[0], "|") != "NAME|TYPE|DATA|AGE" || strings.Join(got[1][:3], "|") != "token|Opaque|1" {
		t.Errorf("get secrets: %q", got)
	}
	if out := k.ok("get", "secret", "token", "-n", "team", "-o", "jsonpath={.data.password}"); out != "aHVudGVyMg==" {
		t.Errorf("secret data: %q", out)
	}
	if out := k.ok("get", "secrets", "-n", "team", "--field-selector", "type=Opaque", "-o", "name"); out != "secret/token\n" {
		t.Errorf("secrets by type: %q", out)
	}

	// Apply again: the strategic merge patch comes from the OpenAPI v3
	// schemas (containers merged by name), sent with fieldValidation=Strict.
	changed := strings.Replace(strings.Replace(manifest, `data: {a: "1", b: "2"}`, `data: {a: "1", b: "3"}`, 1), "image: busybox", "image: busybox:1.36", 1)
	if err := os.WriteFile(file, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err = k.runAllowing(nil, "apply", "-f", file)
	if err != nil || out != "namespace/team unchanged\npod/web configured\nconfigmap/settings configured\nsecret/token configured\n" {
		t.Errorf("apply again: %v\n%s%s", err, out, stderr)
	}
	if out := k.ok("get", "pod", "web", "-n", "team", "-o", "jsonpath={.spec.containers[*].image} {.metadata.labels.app}"); out != "busybox:1.36 web" {
		t.Errorf("applied pod: %q", out)
	}
	if out := k.ok("get", "configmap", "settings", "-n", "team", "-o", "jsonpath={.data.b}"); out != "3" {
		t.Errorf("applied configmap: %q", out)
	}
	if out := k.ok("create", "secret", "generic", "literal", "-n", "team", "--from-literal=user=admin"); out != "secret/literal created\n" {
		t.Errorf("create secret generic: %q", out)
	}
	if out := k.ok("create", "configmap", "literal", "-n", "team", "--from-literal=mode=fast"); out != "configmap/literal created\n" {
		t.Errorf("create configmap: %q", out)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: odd, namespace: team}\nspec:\n  foo: 1\n  containers: [{name: app, image: busybox}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, msg, err := k.runAllowing([]string{"/pods/odd"}, "apply", "-f", bad)
	if err == nil || !strings.Contains(msg, `strict decoding error: unknown field "spec.foo"`) {
		t.Errorf("unknown field: %v %s", err, msg)
	}

	badKey := filepath.Join(dir, "badkey.yaml")
	if err := os.WriteFile(badKey, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keys, namespace: team}\ndata: {\"a/b\": x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, msg, err = k.runAllowing([]string{"/configmaps/keys"}, "apply", "-f", badKey)
	if err == nil || !strings.Contains(msg, `The ConfigMap "keys" is invalid: data[a/b]: Invalid value: "a/b": a valid config key must consist of alphanumeric characters, '-', '_' or '.'`) {
		t.Errorf("bad key: %v %s", err, msg)
	}
}

// kubectl explain reads the schemas of /openapi/v3.
func TestStockKubectlExplain(t *testing.T) {
	k, _ := newKubectl(t)
	out := k.ok("explain", "pod.spec.containers.image")
	if !strings.Contains(out, "KIND:       Pod") || !strings.Contains(out, "FIELD: image <string>") || !strings.Contains(out, "Container image name.") {
		t.Errorf("explain:\n%s", out)
	}
	out = k.ok("explain", "pod.spec.containers")
	if !strings.Contains(out, "FIELD: containers <[]Container>") || !strings.Contains(out, "name\t<string> -required-") {
		t.Errorf("explain containers:\n%s", out)
	}
}

// Events: kubectl's columns, describe's Events section (field selectors on
// involvedObject), and the events.k8s.io/v1 view of the same object.
func TestStockKubectlEvents(t *testing.T) {
	k, st := newKubectl(t)
	// Written to the store as the API would have: with their kind.
	pod := &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}}
	pod.Namespace, pod.Name = "default", "web"
	pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "busybox"}}
	if err := st.Create("pods", pod); err != nil {
		t.Fatal(err)
	}
	ev := &corev1.Event{TypeMeta: metav1.TypeMeta{Kind: "Event", APIVersion: "v1"}}
	ev.Namespace, ev.Name = "default", "web.1"
	ev.InvolvedObject = corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web", UID: pod.UID, APIVersion: "v1"}
	ev.Reason, ev.Message, ev.Type, ev.Count = "Pulling", `Pulling image "busybox"`, "Normal", 2
	ev.Source.Component = "berthd"
	ev.FirstTimestamp.Time, ev.LastTimestamp.Time = time.Now().Add(-time.Minute), time.Now()
	if err := st.Create("events", ev); err != nil {
		t.Fatal(err)
	}
	got := columns(k.ok("get", "events"))
	if len(got) != 2 || strings.Join(got[0], "|") != "LAST SEEN|TYPE|REASON|OBJECT|MESSAGE" || strings.Join(got[1][1:], "|") != `Normal|Pulling|pod/web|Pulling image "busybox"` {
		t.Errorf("get events: %q", got)
	}
	got = columns(k.ok("get", "events", "-o", "wide"))
	if len(got) != 2 || strings.Join(got[0], "|") != "LAST SEEN|TYPE|REASON|OBJECT|SUBOBJECT|SOURCE|MESSAGE|FIRST SEEN|COUNT|NAME" || got[1][4] != "berthd" || got[1][8] != "web.1" {
		t.Errorf("get events -o wide: %q", got)
	}
	if out := k.ok("get", "events", "--field-selector", "involvedObject.kind=Pod,reason=Pulling,source=berthd", "-o", "name"); out != "event/web.1\n" {
		t.Errorf("field selector: %q", out)
	}
	out, stderr, err := k.runAllowing(nil, "describe", "pod", "web")
	if err != nil || !regexp.MustCompile(`Events:\n\s+Type\s+Reason\s+Age\s+From\s+Message\n.*\n\s+Normal\s+Pulling\s+\S+ \(x2 over \S+\)\s+berthd\s+Pulling image "busybox"`).MatchString(out) {
		t.Errorf("describe pod: %v\n%s%s", err, out, stderr)
	}
	out = k.ok("get", "events.events.k8s.io", "web.1", "-o", "json")
	var v1 map[string]any
	if err := json.Unmarshal([]byte(out), &v1); err != nil || v1["apiVersion"] != "events.k8s.io/v1" || v1["note"] != `Pulling image "busybox"` || v1["deprecatedCount"] != float64(2) {
		t.Errorf("events.k8s.io/v1: %v\n%s", err, out)
	}
	if out := k.ok("get", "events.events.k8s.io", "-o", "jsonpath={.items[0].regarding.name}"); out != "web" {
		t.Errorf("events.k8s.io/v1 list: %q", out)
	}
}

// The node agent/node registers, as kubectl shows it.
func TestStockKubectlNode(t *testing.T) {
	k, st := newKubectl(t)
	keeper := node.NewKeeper(st, func() (*corev1.Node, error) {
		return node.Object("node-a", node.ObjectOptions{KubeletVersion: GitVersion, RuntimeVersion: "test"})
	}, 0, nil)
	if err := keeper.Sync(); err != nil {
		t.Fatal(err)
	}
	got := columns(k.ok("get", "nodes"))
	if len(got) != 2 || strings.Join(got[0], "|") != "NAME|STATUS|ROLES|AGE|VERSION" || got[1][0] != "node-a" || got[1][1] != "Ready" || got[1][2] != "<none>" || got[1][4] != GitVersion {
		t.Errorf("get nodes: %q", got)
	}
	got = columns(k.ok("get", "nodes", "-o", "wide"))
	if len(got) != 2 || strings.Join(got[0], "|") != "NAME|STATUS|ROLES|AGE|VERSION|INTERNAL-IP|EXTERNAL-IP|OS-IMAGE|KERNEL-VERSION|CONTAINER-RUNTIME" || got[1][len(got[1])-1] != "berth://test" {
		t.Errorf("get nodes -o wide: %q", got)
	}
	if out := k.ok("get", "nodes", "--field-selector", "spec.unschedulable=false", "-o", "name"); out != "node/node-a\n" {
		t.Errorf("field selector: %q", out)
	}
	if out := k.ok("label", "node", "node-a", "node-role.kubernetes.io/edge="); out != "node/node-a labeled\n" {
		t.Errorf("label: %q", out)
	}
	if out := k.ok("cordon", "node-a"); out != "node/node-a cordoned\n" {
		t.Errorf("cordon: %q", out)
	}
	// The keeper's next round keeps both.
	if err := keeper.Sync(); err != nil {
		t.Fatal(err)
	}
	got = columns(k.ok("get", "nodes"))
	if len(got) != 2 || got[1][1] != "Ready,SchedulingDisabled" || got[1][2] != "edge" {
		t.Errorf("get nodes after label and cordon: %q", got)
	}
	// describe looks up the node's Lease, which berth does not serve.
	out, stderr, err := k.runAllowing([]string{"/leases/"}, "describe", "node", "node-a")
	for _, want := range []string{"Name:               node-a", "Capacity:\n  cpu:", "Allocatable:", "Ready            True", "KubeletReady", "berthd is posting ready status", "Container Runtime Version:  berth://test"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe node lacks %q: %v\n%s%s", want, err, out, stderr)
		}
	}
}

// /openapi/v3: the index points at hash URLs, served with the apiserver's
// caching headers; a stale hash redirects.
func TestOpenAPIv3(t *testing.T) {
	ts, _ := newHTTP(t)
	resp, err := http.Get(ts.URL + "/openapi/v3")
	if err != nil {
		t.Fatal(err)
	}
	var index struct {
		Paths map[string]struct {
			ServerRelativeURL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	err = json.NewDecoder(resp.Body).Decode(&index)
	resp.Body.Close()
	if err != nil || len(index.Paths) != 5 || !strings.HasPrefix(index.Paths["apis/discovery.k8s.io/v1"].ServerRelativeURL, "/openapi/v3/apis/discovery.k8s.io/v1?hash=") || !strings.HasPrefix(index.Paths["apis/apps/v1"].ServerRelativeURL, "/openapi/v3/apis/apps/v1?hash=") || !strings.HasPrefix(index.Paths["api/v1"].ServerRelativeURL, "/openapi/v3/api/v1?hash=") ||
		!strings.HasPrefix(index.Paths["apis/events.k8s.io/v1"].ServerRelativeURL, "/openapi/v3/apis/events.k8s.io/v1?hash=") ||
		!strings.HasPrefix(index.Paths["apis/storage.k8s.io/v1"].ServerRelativeURL, "/openapi/v3/apis/storage.k8s.io/v1?hash=") {
		t.Fatalf("index %+v, %v", index, err)
	}
	resp, err = http.Get(ts.URL + index.Paths["api/v1"].ServerRelativeURL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("api/v1 document: %d bytes", len(b))
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, immutable" || resp.Header.Get("Etag") == "" {
		t.Errorf("document: %d %v", resp.StatusCode, resp.Header)
	}
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	patch := string(doc.Paths["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"])
	if !strings.Contains(patch, `"name":"fieldValidation"`) || !strings.Contains(patch, `"x-kubernetes-group-version-kind":{"group":"","kind":"Pod","version":"v1"}`) || !strings.Contains(patch, "application/strategic-merge-patch+json") {
		t.Errorf("pod PATCH: %s", patch)
	}
	if _, ok := doc.Paths["/api/v1/nodes/{name}"]; !ok {
		t.Errorf("no node path")
	}
	containers := string(doc.Components.Schemas["io.k8s.api.core.v1.PodSpec"])
	if !strings.Contains(containers, `"x-kubernetes-patch-merge-key":"name"`) {
		t.Errorf("PodSpec: %.300s", containers)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noRedirect.Get(ts.URL + "/openapi/v3/api/v1?hash=stale")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 301 || resp.Header.Get("Location") != index.Paths["api/v1"].ServerRelativeURL {
		t.Errorf("stale hash: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _ := do(t, http.MethodGet, ts.URL+"/openapi/v3/apis/batch/v1", "", ""); code != 404 {
		t.Errorf("unknown group-version: %d", code)
	}
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil && resp.StatusCode == 200 {
			t.Fatalf("%s: %v", url, err)
		}
	}
	return resp.StatusCode
}

// Legacy discovery (what clients without aggregated discovery read) says
// the same as the aggregated one kubectl uses.
func TestLegacyDiscovery(t *testing.T) {
	ts, _ := newHTTP(t)
	var core metav1.APIResourceList
	getJSON(t, ts.URL+"/api/v1", &core)
	var names []string
	for _, r := range core.APIResources {
		names = append(names, r.Name+"="+strings.Join(r.Verbs, ","))
	}
	all := "create,delete,deletecollection,get,list,patch,update,watch"
	want := []string{"configmaps=" + all, "endpoints=" + all, "events=" + all, "limitranges=" + all, "namespaces=" + all, "nodes=" + all,
		"persistentvolumeclaims=" + all, "persistentvolumeclaims/status=get,patch,update", "persistentvolumes=" + all, "persistentvolumes/status=get,patch,update",
		"pods=" + all, "pods/attach=create,get", "pods/exec=create,get", "pods/log=get", "pods/portforward=create,get", "pods/status=get,patch,update",
		"resourcequotas=" + all, "resourcequotas/status=get,patch,update", "secrets=" + all, "services=" + all, "services/status=get,patch,update"}
	if strings.Join(names, " ") != strings.Join(want, " ") || core.GroupVersion != "v1" {
		t.Errorf("/api/v1: %v", names)
	}
	var groups metav1.APIGroupList
	getJSON(t, ts.URL+"/apis", &groups)
	// The apiserver's order: apps before events.k8s.io, storage.k8s.io and
	// discovery.k8s.io (their priorities in the apiserver's
	// apiVersionPriorities).
	if len(groups.Groups) != 4 || groups.Groups[3].Name != "discovery.k8s.io" || groups.Groups[0].Name != "apps" || groups.Groups[0].PreferredVersion.GroupVersion != "apps/v1" ||
		groups.Groups[1].Name != "events.k8s.io" || groups.Groups[1].PreferredVersion.GroupVersion != "events.k8s.io/v1" ||
		groups.Groups[2].Name != "storage.k8s.io" || groups.Groups[2].PreferredVersion.GroupVersion != "storage.k8s.io/v1" {
		t.Errorf("/apis: %+v", groups)
	}
	var group metav1.APIGroup
	if code := getJSON(t, ts.URL+"/apis/events.k8s.io", &group); code != 200 || group.Kind != "APIGroup" || group.Name != "events.k8s.io" {
		t.Errorf("/apis/events.k8s.io: %d %+v", code, group)
	}
	var ev metav1.APIResourceList
	getJSON(t, ts.URL+"/apis/events.k8s.io/v1", &ev)
	if len(ev.APIResources) != 1 || ev.APIResources[0].Name != "events" || strings.Join(ev.APIResources[0].Verbs, ",") != all || !ev.APIResources[0].Namespaced {
		t.Errorf("/apis/events.k8s.io/v1: %+v", ev)
	}
	// The scale subresource is autoscaling/v1's Scale, as kubectl's scale
	// client looks it up.
	var apps metav1.APIResourceList
	getJSON(t, ts.URL+"/apis/apps/v1", &apps)
	var appsNames []string
	for _, r := range apps.APIResources {
		appsNames = append(appsNames, r.Name+"="+r.Group+"/"+r.Version+"/"+r.Kind)
	}
	if got := strings.Join(appsNames, " "); got != "deployments=//Deployment deployments/scale=autoscaling/v1/Scale deployments/status=//Deployment "+
		"replicasets=//ReplicaSet replicasets/scale=autoscaling/v1/Scale replicasets/status=//ReplicaSet" {
		t.Errorf("/apis/apps/v1: %s", got)
	}
	for _, path := range []string{"/apis/apps/v2", "/apis/batch/v1", "/apis/events.k8s.io/v2", "/apis/events.k8s.io/v1/pods", "/api/v1/nodes/a/b/c", "/api/v1/pods/web"} {
		if code := getJSON(t, ts.URL+path, nil); code != 404 {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
}

// A watch on events.k8s.io/v1 streams the events.k8s.io/v1 form of Events
// written through core/v1.
func TestEventsV1Watch(t *testing.T) {
	ts, _ := newHTTP(t)
	body := `{"apiVersion":"v1","kind":"Event","metadata":{"name":"e1"},"involvedObject":{"kind":"Pod","name":"web","namespace":"default"},"reason":"Started","message":"Started container app","type":"Normal"}`
	if code, st := do(t, http.MethodPost, ts.URL+"/api/v1/namespaces/default/events", "application/json", body); code != 201 {
		t.Fatalf("create: %d %s", code, st.Message)
	}
	resp, err := http.Get(ts.URL + "/apis/events.k8s.io/v1/namespaces/default/events?watch=1&resourceVersion=0&timeoutSeconds=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ev struct {
		Type   string
		Object map[string]any
	}
	if err := json.NewDecoder(resp.Body).Decode(&ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "ADDED" || ev.Object["apiVersion"] != "events.k8s.io/v1" || ev.Object["note"] != "Started container app" || ev.Object["regarding"].(map[string]any)["name"] != "web" {
		t.Errorf("watched %+v", ev)
	}
}

// The apiserver's validation of the kinds here, in its words.
func TestKindValidation(t *testing.T) {
	ts, _ := newHTTP(t)
	ns := ts.URL + "/api/v1/namespaces/default/"
	for _, tc := range []struct {
		name, url, body, msg string
	}{
		{"secret name", ns + "secrets", `{"metadata":{"name":"A_b"}}`, `Secret "A_b" is invalid: metadata.name: Invalid value: "A_b": a lowercase RFC 1123 subdomain must consist of`},
		{"secret key", ns + "secrets", `{"metadata":{"name":"s"},"data":{"a b":""}}`, `Secret "s" is invalid: data[a b]: Invalid value: "a b": a valid config key must consist of alphanumeric characters`},
		{"tls keys", ns + "secrets", `{"metadata":{"name":"t"},"type":"kubernetes.io/tls","data":{}}`, `Secret "t" is invalid: [data[tls.crt]: Required value, data[tls.key]: Required value]`},
		{"dockerconfigjson", ns + "secrets", `{"metadata":{"name":"d"},"type":"kubernetes.io/dockerconfigjson","data":{".dockerconfigjson":"e30K"}}`, ""},
		{"configmap duplicate", ns + "configmaps", `{"metadata":{"name":"c"},"data":{"k":"v"},"binaryData":{"k":"dg=="}}`, `ConfigMap "c" is invalid: data[k]: Invalid value: "k": duplicate of key present in binaryData`},
		{"event namespace", ns + "events", `{"metadata":{"name":"e"},"involvedObject":{"namespace":"other"}}`, `Event "e" is invalid: involvedObject.namespace: Invalid value: "other": does not match event.namespace`},
		{"event name", ns + "events", `{"metadata":{"name":"a/b"}}`, `Event "a/b" is invalid: metadata.name: Invalid value: "a/b": may not contain '/'`},
		{"node name", ts.URL + "/api/v1/nodes", `{"metadata":{"name":"Node_1"}}`, `Node "Node_1" is invalid: metadata.name: Invalid value: "Node_1": a lowercase RFC 1123 subdomain`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, st := do(t, http.MethodPost, tc.url, "application/json", tc.body)
			if tc.msg == "" {
				if code != 201 {
					t.Errorf("= %d %s", code, st.Message)
				}
				return
			}
			if code != 422 || st.Reason != metav1.StatusReasonInvalid || !strings.Contains(st.Message, tc.msg) {
				t.Errorf("= %d %s %q, want %q", code, st.Reason, st.Message, tc.msg)
			}
		})
	}
	// Defaults: Opaque, stringData merged into data and not kept.
	var s corev1.Secret
	if code, st := do(t, http.MethodPost, ns+"secrets", "application/json", `{"metadata":{"name":"plain"},"stringData":{"k":"v"}}`); code != 201 {
		t.Fatalf("create: %d %s", code, st.Message)
	}
	getJSON(t, ns+"secrets/plain", &s)
	if s.Type != corev1.SecretTypeOpaque || string(s.Data["k"]) != "v" || s.StringData != nil {
		t.Errorf("secret %+v", s)
	}
	// The same on update: stringData merged, the type defaulted (so it does
	// not count as changed).
	if code, st := do(t, http.MethodPut, ns+"secrets/plain", "application/json", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"plain"},"data":{"k":"dg=="},"stringData":{"l":"w"}}`); code != 200 {
		t.Fatalf("update: %d %s", code, st.Message)
	}
	s = corev1.Secret{}
	getJSON(t, ns+"secrets/plain", &s)
	if s.Type != corev1.SecretTypeOpaque || string(s.Data["k"]) != "v" || string(s.Data["l"]) != "w" || s.StringData != nil {
		t.Errorf("updated secret %+v", s)
	}
}

// An immutable ConfigMap or Secret keeps its data (the update hook).
func TestImmutable(t *testing.T) {
	ts, _ := newHTTP(t)
	ns := ts.URL + "/api/v1/namespaces/default/"
	if code, st := do(t, http.MethodPost, ns+"configmaps", "application/json", `{"metadata":{"name":"c"},"data":{"k":"v"},"immutable":true}`); code != 201 {
		t.Fatalf("create: %d %s", code, st.Message)
	}
	code, st := do(t, http.MethodPut, ns+"configmaps/c", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"w"},"immutable":true}`)
	if code != 422 || !strings.Contains(st.Message, "data: Forbidden: field is immutable when `immutable` is set") {
		t.Errorf("configmap update: %d %s", code, st.Message)
	}
	if code, st := do(t, http.MethodPost, ns+"secrets", "application/json", `{"metadata":{"name":"s"},"data":{"k":"dg=="},"immutable":true}`); code != 201 {
		t.Fatalf("create: %d %s", code, st.Message)
	}
	code, st = do(t, http.MethodPut, ns+"secrets/s", "application/json", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"k":"dg=="},"type":"Opaque"}`)
	if code != 422 || !strings.Contains(st.Message, "immutable: Forbidden: field is immutable when `immutable` is set") {
		t.Errorf("secret update: %d %s", code, st.Message)
	}
}
