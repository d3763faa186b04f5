package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Deployments and ReplicaSets as the stock kubectl creates, reads, scales
// and applies them: apps/v1's defaults, kubectl's columns, the scale
// subresource (a new generation), and the apiserver's validation messages.
// No controller acts on them here.
func TestStockKubectlDeployments(t *testing.T) {
	k, _ := newKubectl(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if out := k.ok("create", "deployment", "web", "--image=busybox", "--replicas=3"); out != "deployment.apps/web created\n" {
		t.Errorf("create deployment: %q", out)
	}
	got := k.ok("get", "deployment", "web", "-o", "jsonpath={.spec.replicas} {.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge} {.spec.strategy.rollingUpdate.maxUnavailable} "+
		"{.spec.revisionHistoryLimit} {.spec.progressDeadlineSeconds} {.metadata.generation} {.spec.template.spec.restartPolicy} {.spec.template.spec.containers[0].imagePullPolicy}")
	if got != "3 RollingUpdate 25% 25% 10 600 1 Always Always" {
		t.Errorf("defaults: %q", got)
	}
	if out := k.ok("get", "deploy"); !regexp.MustCompile(`^NAME\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+AGE\nweb\s+0/3\s+0\s+0\s+\d+s\n$`).MatchString(out) {
		t.Errorf("get deploy:\n%s", out)
	}
	if out := k.ok("get", "deploy", "-o", "wide"); !regexp.MustCompile(`(?m)^NAME\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+AGE\s+CONTAINERS\s+IMAGES\s+SELECTOR\nweb\s+0/3\s+0\s+0\s+\d+s\s+busybox\s+busybox\s+app=web$`).MatchString(out) {
		t.Errorf("get deploy -o wide:\n%s", out)
	}

	// kubectl scale patches the scale subresource: spec.replicas, and a
	// new generation, as a spec change.
	if out := k.ok("scale", "deployment", "web", "--replicas=5"); out != "deployment.apps/web scaled\n" {
		t.Errorf("scale: %q", out)
	}
	if got := k.ok("get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.generation}"); got != "5 2" {
		t.Errorf("after scale: %q", got)
	}
	var sc struct {
		Kind, APIVersion string
		Metadata         struct{ Name, ResourceVersion string }
		Spec             struct{ Replicas int }
		Status           struct {
			Replicas int
			Selector string
		}
	}
	if err := json.Unmarshal([]byte(k.ok("get", "--raw", "/apis/apps/v1/namespaces/default/deployments/web/scale")), &sc); err != nil {
		t.Fatal(err)
	}
	if sc.Kind != "Scale" || sc.APIVersion != "autoscaling/v1" || sc.Metadata.Name != "web" || sc.Spec.Replicas != 5 || sc.Status.Selector != "app=web" || sc.Metadata.ResourceVersion == "" {
		t.Errorf("scale: %+v", sc)
	}
	// A PUT of the Scale: replicas set; a stale resourceVersion is a
	// conflict, as on the object; a negative count is refused with
	// ValidateScale's words.
	scalePath := "/apis/apps/v1/namespaces/default/deployments/web/scale"
	putScale := func(body string) (string, string, error) {
		return k.run("", "replace", "--raw", scalePath, "-f", write("scale.json", body))
	}
	if out, stderr, err := putScale(`{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"web"},"spec":{"replicas":4}}`); err != nil || !strings.Contains(out, `"replicas":4`) {
		t.Errorf("PUT scale: %v %s %s", err, out, stderr)
	}
	if _, stderr, err := putScale(`{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"web","resourceVersion":"` + sc.Metadata.ResourceVersion + `"},"spec":{"replicas":6}}`); err == nil || !strings.Contains(stderr, "the object has been modified") {
		t.Errorf("PUT scale with a stale resourceVersion: %v %s", err, stderr)
	}
	if _, stderr, err := putScale(`{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"web"},"spec":{"replicas":-2}}`); err == nil || !strings.Contains(stderr, `The Scale "web" is invalid: spec.replicas: Invalid value: -2: must be greater than or equal to 0`) {
		t.Errorf("PUT scale of -2: %v %s", err, stderr)
	}
	k.ok("scale", "deployment", "web", "--replicas=5")

	// --current-replicas is a precondition on the Scale.
	if msg := k.fails("", "scale", "deployment", "web", "--current-replicas=4", "--replicas=6"); !strings.Contains(msg, "Expected replicas to be 4, was 5") {
		t.Errorf("scale with a wrong --current-replicas: %s", msg)
	}
	if msg := k.fails("", "scale", "deployment", "web", "--replicas=-1"); !strings.Contains(msg, "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0") {
		t.Errorf("scale to -1: %s", msg)
	}

	// The apiserver's validation, in its words.
	bad := write("bad.yaml", `apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  selector: {matchLabels: {app: bad}}
  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: other}}
    spec:
      restartPolicy: Never
      containers: [{name: app, image: busybox}]
`)
	msg := k.fails("", "create", "-f", bad)
	for _, want := range []string{
		`The Deployment "bad" is invalid: `,
		"spec.template.metadata.labels: Invalid value: {\"app\":\"other\"}: `selector` does not match template `labels`",
		`spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"`,
		"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("invalid deployment: %s\nlacks %s", msg, want)
		}
	}
	if msg := k.fails("", "patch", "deploy", "web", "--type", "merge", "-p", `{"spec":{"selector":{"matchLabels":{"app":"other"}},"template":{"metadata":{"labels":{"app":"other"}}}}}`); !strings.Contains(msg, `The Deployment "web" is invalid: spec.selector: Invalid value: `) || !strings.Contains(msg, "field is immutable") {
		t.Errorf("selector change: %s", msg)
	}
	if msg := k.fails("", "patch", "deploy", "web", "--type", "merge", "-p", `{"spec":{"minReadySeconds":700}}`); !strings.Contains(msg, `spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds`) {
		t.Errorf("minReadySeconds above the deadline: %s", msg)
	}

	// Client-side apply (OpenAPI for the strategic merge): created, then
	// configured; an annotation change is a new generation. (apply reads
	// the object first: a 404 while it does not exist.)
	applied := func(file string) string {
		t.Helper()
		out, stderr, err := k.run("/deployments/api", "apply", "-f", file)
		if err != nil {
			t.Fatalf("apply: %v\n%s%s", err, out, stderr)
		}
		return out
	}
	apply := func(replicas, note string) string {
		return write("api.yaml", `apiVersion: apps/v1
kind: Deployment
metadata: {name: api, annotations: {note: "`+note+`"}}
spec:
  replicas: `+replicas+`
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: app, image: busybox}]}
`)
	}
	if out := applied(apply("2", "a")); out != "deployment.apps/api created\n" {
		t.Errorf("apply: %q", out)
	}
	if out := applied(apply("4", "a")); out != "deployment.apps/api configured\n" {
		t.Errorf("apply again: %q", out)
	}
	applied(apply("4", "b"))
	if got := k.ok("get", "deploy", "api", "-o", "jsonpath={.spec.replicas} {.metadata.generation}"); got != "4 3" {
		t.Errorf("after the applies: %q, want 4 replicas and generation 3 (a spec change, an annotation change)", got)
	}

	// ReplicaSets.
	rs := write("rs.yaml", `apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: front}
spec:
  replicas: 2
  selector: {matchLabels: {tier: front}}
  template:
    metadata: {labels: {tier: front}}
    spec: {containers: [{name: nginx, image: nginx:1.27}]}
`)
	if out := k.ok("create", "-f", rs); out != "replicaset.apps/front created\n" {
		t.Errorf("create rs: %q", out)
	}
	if out := k.ok("get", "rs", "-o", "wide"); !regexp.MustCompile(`^NAME\s+DESIRED\s+CURRENT\s+READY\s+AGE\s+CONTAINERS\s+IMAGES\s+SELECTOR\nfront\s+2\s+0\s+0\s+\d+s\s+nginx\s+nginx:1.27\s+tier=front\n$`).MatchString(out) {
		t.Errorf("get rs -o wide:\n%s", out)
	}
	if out := k.ok("scale", "rs", "front", "--replicas=0"); out != "replicaset.apps/front scaled\n" {
		t.Errorf("scale rs: %q", out)
	}
	if got := k.ok("get", "rs", "front", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].imagePullPolicy}"); got != "0 IfNotPresent" {
		t.Errorf("rs after scale: %q", got)
	}
	empty := write("empty.yaml", `apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: empty}
spec:
  selector: {}
  template: {spec: {containers: [{name: app, image: busybox}]}}
`)
	if msg := k.fails("", "create", "-f", empty); !strings.Contains(msg, `The ReplicaSet "empty" is invalid: spec.selector: Invalid value: {}: empty selector is invalid for deployment`) {
		t.Errorf("empty selector: %s", msg)
	}

	// kubectl get all lists them (category all).
	if out := k.ok("get", "all"); !strings.Contains(out, "deployment.apps/web") || !strings.Contains(out, "replicaset.apps/front") {
		t.Errorf("get all:\n%s", out)
	}
	// delete waits for the object to go: its last GET is a 404.
	if out, stderr, err := k.run("/deployments/web", "delete", "deploy", "web"); err != nil || out != "deployment.apps \"web\" deleted\n" {
		t.Errorf("delete: %v %q %s", err, out, stderr)
	}
}

// kubectl delete --cascade=orphan and =foreground of an owner kind leave
// the object being deleted with the finalizer the garbage collector acts
// on (no collector runs here: it stays).
func TestDeletePropagationFinalizers(t *testing.T) {
	k, _ := newKubectl(t)
	k.ok("create", "deployment", "orphan", "--image=busybox")
	k.ok("create", "deployment", "fore", "--image=busybox")
	if _, msg, err := k.run("", "delete", "deployment", "orphan", "--cascade=orphan", "--wait=false"); err != nil {
		t.Fatalf("delete --cascade=orphan: %v %s", err, msg)
	}
	if _, msg, err := k.run("", "delete", "deployment", "fore", "--cascade=foreground", "--wait=false"); err != nil {
		t.Fatalf("delete --cascade=foreground: %v %s", err, msg)
	}
	got := k.ok("get", "deployments", "-o", `jsonpath={range .items[*]}{.metadata.name}={.metadata.finalizers}/{.metadata.deletionTimestamp}{"\n"}{end}`)
	for _, want := range []string{`fore=["foregroundDeletion"]/20`, `orphan=["orphan"]/20`} {
		if !strings.Contains(got, want) {
			t.Errorf("deployments being deleted:\n%s\nlack %s", got, want)
		}
	}
	k.ok("create", "service", "clusterip", "svc", "--tcp=80")
	if _, msg, err := k.run("services/svc", "delete", "service", "svc", "--cascade=orphan", "--wait=false"); err != nil {
		t.Fatalf("delete service: %v %s", err, msg)
	}
	if got := k.ok("get", "svc", "svc", "-o", "jsonpath={.metadata.finalizers}"); got != `["orphan"]` {
		t.Errorf("service deleted with orphan: %q", got)
	}
}
