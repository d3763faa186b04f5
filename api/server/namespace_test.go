package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A namespace is deleted as on a cluster, seen through the stock kubectl:
// Terminating while its pods stop, with the namespace controller's
// conditions; nothing new may be created in it, nor the namespace again;
// once the pods are gone the rest goes and the namespace with it, and
// kubectl's wait for its deletion ends.
func TestNamespaceTerminating(t *testing.T) {
	k, st := newKubectl(t)
	manifest := filepath.Join(t.TempDir(), "team.yaml")
	if err := os.WriteFile(manifest, []byte(`apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: team}
data: {a: b}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: team}
spec:
  containers: [{name: c, image: busybox:1.36}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := k.run("/team", "apply", "-f", manifest); err != nil {
		t.Fatalf("apply: %v %s", err, stderr)
	}
	if out := k.ok("get", "namespace", "team", "-o", "jsonpath={.spec.finalizers}"); out != `["kubernetes"]` {
		t.Errorf("spec.finalizers of a new namespace: %s", out)
	}
	if out := k.ok("delete", "namespace", "team", "--wait=false"); out != "namespace \"team\" deleted\n" {
		t.Errorf("delete: %q", out)
	}
	if out := k.ok("get", "namespace", "team", "--no-headers"); !strings.Contains(out, "Terminating") {
		t.Errorf("get namespace team: %q, want Terminating", out)
	}
	if stderr := k.fails("", "delete", "namespace", "team", "--wait=false"); !strings.Contains(stderr, `Error from server (Conflict): Operation cannot be fulfilled on namespaces "team": The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.`) {
		t.Errorf("a second delete: %s", stderr)
	}
	// No worker runs here: the pod stays Terminating, and so does its
	// namespace, saying why.
	var msg string
	for i := 0; i < 100 && msg == ""; i++ {
		msg = k.ok("get", "namespace", "team", "-o", `jsonpath={.status.conditions[?(@.type=="NamespaceContentRemaining")].message}`)
	}
	if msg != "Some resources are remaining: pods has 1 resource instances" {
		t.Errorf("NamespaceContentRemaining: %q", msg)
	}
	if out := k.ok("get", "configmap", "cfg", "-n", "team", "-o", "name"); out != "configmap/cfg\n" {
		t.Errorf("the configmap went before the pod: %q", out)
	}
	if stderr := k.fails("", "create", "configmap", "x", "-n", "team"); !strings.Contains(stderr, `error: failed to create configmap: configmaps "x" is forbidden: unable to create new content in namespace team because it is being terminated`) {
		t.Errorf("create in a terminating namespace: %s", stderr)
	}
	if stderr := k.fails("", "create", "namespace", "team"); !strings.Contains(stderr, `Error from server (AlreadyExists): object is being deleted: namespaces "team" already exists`) {
		t.Errorf("create the terminating namespace again: %s", stderr)
	}
	// The worker's part: the pod's units are stopped, the pod removed.
	finishDeletions(t, st)
	if _, stderr, err := k.run("/namespaces/team", "wait", "--for=delete", "namespace/team", "--timeout=60s"); err != nil {
		t.Fatalf("wait for the namespace's deletion: %v %s", err, stderr)
	}
	k.ok("create", "namespace", "team")
	if stderr := k.fails("/configmaps/cfg", "get", "configmap", "cfg", "-n", "team"); !strings.Contains(stderr, `configmaps "cfg" not found`) {
		t.Errorf("the configmap survived its namespace: %s", stderr)
	}
}

// A deletion a killed berthd left half done is finished by the next one's
// deleter at its start, without a new DELETE.
func TestNamespaceDeletionResumes(t *testing.T) {
	_, st, ts := newHTTPServer(t)
	if code, s := do(t, "POST", ts.URL+"/api/v1/namespaces", "application/json", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"old"}}`); code != 201 {
		t.Fatalf("create: %d %s", code, s.Message)
	}
	if code, s := do(t, "POST", ts.URL+"/api/v1/namespaces/old/configmaps", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}`); code != 201 {
		t.Fatalf("create configmap: %d %s", code, s.Message)
	}
	// No deleter runs: the namespace stays Terminating with its content.
	if code, s := do(t, "DELETE", ts.URL+"/api/v1/namespaces/old", "", ""); code != 200 {
		t.Fatalf("delete: %d %s", code, s.Message)
	}
	var ns corev1.Namespace
	if code := getJSON(t, ts.URL+"/api/v1/namespaces/old", &ns); code != 200 || ns.Status.Phase != corev1.NamespaceTerminating || ns.DeletionTimestamp == nil {
		t.Fatalf("after delete: %d %+v", code, ns.Status)
	}
	// The next berthd's deleter.
	again, err := New(st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	runNamespaces(t, again)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if code, _ := do(t, "GET", ts.URL+"/api/v1/namespaces/old", "", ""); code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Terminating namespace was not finished")
		}
	}
	if code, _ := do(t, "GET", ts.URL+"/api/v1/namespaces/old/configmaps/c", "", ""); code != 404 {
		t.Errorf("its configmap: %d", code)
	}
}

// A create that passed NamespaceLifecycle just before the namespace was
// marked is removed again once stored, with the admission's Forbidden, so
// nothing outlives its namespace.
func TestCreateRacingNamespaceDeletion(t *testing.T) {
	srv, st, ts := newHTTPServer(t)
	if code, s := do(t, "POST", ts.URL+"/api/v1/namespaces", "application/json", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"race"}}`); code != 201 {
		t.Fatalf("create: %d %s", code, s.Message)
	}
	// The create's store write, landing after the mark.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: "race"}}
	srv.kinds["configmaps"].prepare(cm)
	if err := st.Create("configmaps", cm); err != nil {
		t.Fatal(err)
	}
	if code, s := do(t, "DELETE", ts.URL+"/api/v1/namespaces/race", "", ""); code != 200 {
		t.Fatalf("delete: %d %s", code, s.Message)
	}
	se := srv.recheckNamespace(srv.kinds["configmaps"], cm)
	if se == nil || se.ErrStatus.Code != 403 || se.ErrStatus.Message != `configmaps "late" is forbidden: unable to create new content in namespace race because it is being terminated` {
		t.Fatalf("recheck: %v", se)
	}
	if err := st.Get("configmaps", "race", "late", &corev1.ConfigMap{}); err == nil {
		t.Error("the late configmap is still stored")
	}
	// In a namespace that is fine, the object stays.
	ok := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "fine", Namespace: "default"}}
	srv.kinds["configmaps"].prepare(ok)
	if err := st.Create("configmaps", ok); err != nil {
		t.Fatal(err)
	}
	if se := srv.recheckNamespace(srv.kinds["configmaps"], ok); se != nil {
		t.Errorf("recheck in default: %v", se)
	}
	if err := st.Get("configmaps", "default", "fine", &corev1.ConfigMap{}); err != nil {
		t.Errorf("fine: %v", err)
	}
}
