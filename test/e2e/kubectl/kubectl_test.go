// Package kubectl is issue 9's scenario on a real node, through the socket
// only: berthd installed as a service from packaging/, a registry with a
// cosign-signed image, and the stock kubectl (through the loopback HTTPS
// listener and `berth kubeconfig`) and berth (over the socket) doing what an
// operator does. Every kubectl runs at -v=6; an unexpected 404 or any 5xx
// fails the test.
package kubectl

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen"
)

// stockKubectl is the real kubectl these machines carry; the node sees the
// host's /usr.
const stockKubectl = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"

const kubeconfig = "/root/berth.kubeconfig"

type env struct {
	t      *testing.T
	n      *node.Node
	signed *nodereg.Signed
	// promURL is the node's Prometheus (default http://127.0.0.1:9090).
	promURL string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, err := os.Stat(stockKubectl)
	testenv.Require(t, err == nil, "needs the stock kubectl at "+stockKubectl)
	n, signed := nodeberthd.Setup(t, "kctl", "https:\n  enabled: true\n")
	e := &env{t: t, n: n, signed: signed}
	e.run("berth", "kubeconfig", "-o", kubeconfig)
	return e
}

func (e *env) run(args ...string) string {
	e.t.Helper()
	return nodeberthd.Run(e.t, e.n, args...)
}

func (e *env) write(path, content string) {
	e.t.Helper()
	nodeberthd.Write(e.t, e.n, path, content)
}

// requestLine is a request in kubectl's -v=6 log:
// `"Response" verb="GET" url="https://..." status="200 OK"` (1.32) or the
// older `GET https://... 200 OK`.
var (
	requestLine    = regexp.MustCompile(`verb="(\w+)" url="([^"]+)" status="(\d{3})`)
	oldRequestLine = regexp.MustCompile(`(GET|POST|PUT|PATCH|DELETE) (https?://\S+) (\d{3})`)
)

// client is a kubectl: the stock binary with the generated kubeconfig, or
// berth over the socket.
type client struct {
	e    *env
	argv []string
}

func (e *env) stock() *client {
	return &client{e, []string{stockKubectl, "--kubeconfig", kubeconfig, "--cache-dir", "/root/.kube-stock-cache"}}
}

func (e *env) berth() *client { return &client{e, []string{"berth"}} }

// kubectl runs args at -v=6; allow404 names the URL part a 404 is expected
// for (an object the step creates or deletes). It returns stdout and the
// lines of stderr that are not request logs.
func (c *client) kubectl(allow404 string, args ...string) (string, string, error) {
	c.e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := c.e.n.Command(ctx, append(append(append([]string{}, c.argv...), "-v=6"), args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var msgs []string
	for _, line := range strings.Split(errb.String(), "\n") {
		m := requestLine.FindStringSubmatch(line)
		if m == nil {
			m = oldRequestLine.FindStringSubmatch(line)
		}
		if m == nil {
			if line != "" && !(len(line) > 5 && (line[0] == 'I' || line[0] == 'W') && line[1] >= '0' && line[1] <= '9') {
				msgs = append(msgs, line)
			}
			continue
		}
		code := m[3]
		if code[0] == '5' || (code == "404" && (allow404 == "" || !strings.Contains(m[2], allow404))) {
			c.e.t.Errorf("%s %s: unexpected %s for %s %s", filepath.Base(c.argv[0]), strings.Join(args, " "), code, m[1], m[2])
		}
	}
	return out.String(), strings.Join(msgs, "\n"), err
}

// must is kubectl that must succeed.
func (c *client) must(args ...string) string {
	c.e.t.Helper()
	out, msg, err := c.kubectl("", args...)
	if err != nil {
		c.e.t.Fatalf("%s %s: %v\n%s", filepath.Base(c.argv[0]), strings.Join(args, " "), err, msg)
	}
	return out
}

// eventually polls kubectl until out satisfies ok.
func (c *client) eventually(what string, ok func(string) bool, args ...string) string {
	c.e.t.Helper()
	var out string
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		out, _, _ = c.kubectl("", args...)
		if ok(out) {
			return out
		}
	}
	c.e.t.Fatalf("%s: never happened; last output of %s:\n%s", what, strings.Join(args, " "), out)
	return ""
}

// lockedBuffer is a bytes.Buffer a command writes while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func contains(s string) func(string) bool {
	return func(out string) bool { return strings.Contains(out, s) }
}

// pullPolicies are pods whose images the kubelet's pull policies decide:
// the image web pulled, used as it is; an image absent under Never.
const pullPolicies = `apiVersion: v1
kind: Pod
metadata: {name: cached, namespace: shop}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: %s, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: never, namespace: shop}
spec:
  containers:
  - {name: c, image: %s, imagePullPolicy: Never}
`

const app = `apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: shop}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: web-secret, namespace: shop}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: %s
    imagePullPolicy: Always
    command: ["sh", "-c", "echo up; while :; do sleep 1; done"]
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 200m, memory: 64Mi}
---
apiVersion: v1
kind: Pod
metadata:
  name: once
  namespace: shop
  labels: {app: once}
spec:
  restartPolicy: Never
  containers:
  - name: once
    image: %s
    command: ["sh", "-c", "echo done"]
`

func TestStockKubectlScenario(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()

	if out := k.must("version"); !strings.Contains(out, "Server Version: v1.32.0-berth") {
		t.Errorf("kubectl version: %s", out)
	}
	res := k.must("api-resources")
	for _, r := range []string{"pods", "namespaces", "events", "configmaps", "secrets", "nodes"} {
		if !regexp.MustCompile(`(?m)^` + r + `\s`).MatchString(res) {
			t.Errorf("api-resources lacks %s:\n%s", r, res)
		}
	}
	if out := k.must("get", "nodes"); !regexp.MustCompile(`\sReady\s`).MatchString(out) {
		t.Errorf("node not Ready:\n%s", out)
	}

	k.must("create", "namespace", "shop")
	e.write("/var/tmp/app.yaml", fmt.Sprintf(app, e.signed.Ref, e.signed.Ref))

	// A watch that sees the pod start; `timeout` ends it inside the node
	// even if this test cannot.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	watch := e.n.Command(ctx, "timeout", "180", stockKubectl, "--kubeconfig", kubeconfig, "get", "pods", "-n", "shop", "-w")
	watched := &lockedBuffer{}
	watch.Stdout = watched
	watch.WaitDelay = 2 * time.Second
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}

	if out, msg, err := k.kubectl("/shop/", "apply", "-f", "/var/tmp/app.yaml"); err != nil {
		t.Fatalf("apply: %v\n%s", err, msg)
	} else {
		for _, want := range []string{"configmap/web-config created", "secret/web-secret created", "pod/web created", "pod/once created"} {
			if !strings.Contains(out, want) {
				t.Errorf("apply printed %q, want %q", out, want)
			}
		}
	}
	k.must("wait", "--for=condition=Ready", "pod/web", "-n", "shop", "--timeout=120s")
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(watched.String(), "Running") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	_, _ = e.n.Run(ctx, "pkill", "-f", "get pods -n shop -w")
	_ = watch.Wait()
	if w := watched.String(); !strings.Contains(w, "Running") || (!strings.Contains(w, "ContainerCreating") && !strings.Contains(w, "Pending")) {
		t.Errorf("the watch did not show the pod pending, then running:\n%s", w)
	}

	out := k.must("get", "pods", "-n", "shop")
	if !regexp.MustCompile(`(?m)^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^web\s+1/1\s+Running\s+0\s+\S+$`).MatchString(out) {
		t.Errorf("get pods:\n%s", out)
	}
	k.eventually("the pod that exits 0 to complete", regexp.MustCompile(`(?m)^once\s+0/1\s+Completed\s+0\s`).MatchString, "get", "pods", "-n", "shop")
	out = k.must("get", "pods", "-n", "shop", "-o", "wide")
	if !regexp.MustCompile(`(?m)^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE\s+NOMINATED NODE\s+READINESS GATES$`).MatchString(out) {
		t.Errorf("get pods -o wide:\n%s", out)
	}
	if out := k.must("get", "pod", "web", "-n", "shop", "-o", "yaml"); !strings.Contains(out, "phase: Running") || !strings.Contains(out, "qosClass: Burstable") {
		t.Errorf("get -o yaml:\n%s", out)
	}
	if out := k.must("get", "pod", "web", "-n", "shop", "-o", "json"); !strings.Contains(out, `"kind": "Pod"`) || !strings.Contains(out, `"imageID"`) {
		t.Errorf("get -o json:\n%s", out)
	}
	if out := k.must("get", "pods", "-n", "shop", "-o", "name", "-l", "app=web"); strings.TrimSpace(out) != "pod/web" {
		t.Errorf("get -o name -l app=web: %q", out)
	}
	if out := k.must("get", "pod", "web", "-n", "shop", "-o", "jsonpath={.status.phase}"); out != "Running" {
		t.Errorf("jsonpath: %q", out)
	}
	if out := k.must("get", "pods", "-A", "--field-selector", "status.phase=Running"); !regexp.MustCompile(`(?m)^shop\s+web\s`).MatchString(out) || strings.Contains(out, "once") {
		t.Errorf("get -A --field-selector status.phase=Running:\n%s", out)
	}
	if out := k.must("get", "configmaps,secrets", "-n", "shop"); !strings.Contains(out, "configmap/web-config") || !strings.Contains(out, "secret/web-secret") {
		t.Errorf("get configmaps,secrets:\n%s", out)
	}

	desc := k.must("describe", "pod", "web", "-n", "shop")
	for _, want := range []string{"Status:       Running", "QoS Class:", "Events:", "Scheduled", "Pulling", "Pulled", "Created", "Started"} {
		if !strings.Contains(desc, want) {
			t.Errorf("describe pod lacks %q:\n%s", want, desc)
		}
	}

	// Patches of each type, as kubectl sends them.
	k.must("patch", "pod", "web", "-n", "shop", "-p", `{"metadata":{"labels":{"tier":"front"}}}`)
	k.must("patch", "pod", "web", "-n", "shop", "--type", "merge", "-p", `{"metadata":{"annotations":{"berth.dev/note":"merged"}}}`)
	k.must("patch", "pod", "web", "-n", "shop", "--type", "json", "-p", `[{"op":"add","path":"/metadata/labels/patched","value":"json"}]`)
	if out := k.must("get", "pod", "web", "-n", "shop", "-o", `jsonpath={.metadata.labels.tier}/{.metadata.annotations.berth\.dev/note}/{.metadata.labels.patched}`); out != "front/merged/json" {
		t.Errorf("after the three patches: %q", out)
	}

	// replace with a stale resourceVersion.
	stale := k.must("get", "pod", "web", "-n", "shop", "-o", "yaml")
	k.must("label", "pod", "web", "-n", "shop", "bump=1")
	e.write("/var/tmp/stale.yaml", stale)
	if _, msg, err := k.kubectl("", "replace", "-f", "/var/tmp/stale.yaml"); err == nil || !strings.Contains(msg, "Error from server (Conflict)") ||
		!strings.Contains(msg, "the object has been modified; please apply your changes to the latest version and try again") {
		t.Errorf("replace with a stale resourceVersion: err %v, %s", err, msg)
	}

	// An unsigned image is refused where users look.
	e.write("/var/tmp/bad.yaml", fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: shop}\nspec:\n  containers:\n  - {name: bad, image: %s}\n", e.signed.Unsigned))
	if _, msg, err := k.kubectl("pods/bad", "apply", "-f", "/var/tmp/bad.yaml"); err != nil {
		t.Fatalf("apply bad.yaml: %v\n%s", err, msg)
	}
	k.eventually("SignatureValidationFailed", contains("SignatureValidationFailed"), "get", "pod", "bad", "-n", "shop", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}")
	k.eventually("a Warning event for the refusal", contains("Warning"), "get", "events", "-n", "shop", "--field-selector", "involvedObject.name=bad")

	// The same objects through berth over the socket print the same, ages aside.
	b := e.berth()
	age := regexp.MustCompile(`\b\d+(\.\d+)?(s|m|h|d)(\d+s)?\b`)
	for _, args := range [][]string{
		{"get", "pods", "-n", "shop"},
		{"get", "pods", "-n", "shop", "-o", "wide"},
		{"get", "ns"},
		{"get", "pod", "web", "-n", "shop", "-o", "yaml"},
		{"get", "nodes"},
		{"api-resources"},
	} {
		so, bo := k.must(args...), b.must(args...)
		if age.ReplaceAllString(so, "AGE") != age.ReplaceAllString(bo, "AGE") {
			t.Errorf("%s differs between the stock kubectl and berth:\nstock:\n%s\nberth:\n%s", strings.Join(args, " "), so, bo)
		}
	}

	// berth's own verbs against the real berthd service: the image the
	// pods pulled (accepted for its cosign signature), a pull the policy
	// refuses, the units a manifest would get, and rm refused while the
	// image runs.
	if out := e.run("berth", "image", "ls"); !strings.Contains(out, e.signed.Ref) || !strings.Contains(out, strings.TrimPrefix(e.signed.Digest, "sha256:")[:12]) {
		t.Errorf("berth image ls:\n%s", out)
	}
	if out := e.run("berth", "image", "pull", e.signed.Ref); !strings.Contains(out, e.signed.Digest+" (accepted by ") || !strings.Contains(out, "sigstoreSigned") {
		t.Errorf("berth image pull of the signed image: %s", out)
	}
	if _, err := e.n.Run(ctx, "berth", "image", "pull", e.signed.Unsigned); err == nil || !strings.Contains(err.Error(), "Error from server (Forbidden)") {
		t.Errorf("berth image pull of the unsigned image: %v", err)
	}
	if _, err := e.n.Run(ctx, "berth", "image", "rm", e.signed.Ref); err == nil || !strings.Contains(err.Error(), "Error from server (Conflict)") || !strings.Contains(err.Error(), "is in use by a container") {
		t.Errorf("berth image rm while pod web runs: %v", err)
	}
	e.write("/var/tmp/plan.yaml", fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: planned, namespace: shop}\nspec:\n  containers:\n  - {name: c, image: %s, command: [sleep, \"3600\"]}\n", e.signed.Ref))
	plan := e.run("berth", "plan", "-f", "/var/tmp/plan.yaml")
	for _, want := range []string{"# " + unitgen.UnitName("shop", "planned", "c"), "ExecStart=", `"sleep"`, e.signed.Digest} {
		if !strings.Contains(plan, want) {
			t.Errorf("berth plan lacks %q:\n%s", want, plan)
		}
	}
	if _, msg, err := k.kubectl("pods/planned", "get", "pod", "planned", "-n", "shop"); err == nil || !strings.Contains(msg, `pods "planned" not found`) {
		t.Errorf("berth plan created the pod: %v %s", err, msg)
	}

	// imagePullPolicy, with the kubelet's events and reasons.
	e.write("/var/tmp/policies.yaml", fmt.Sprintf(pullPolicies, e.signed.Ref, e.signed.Unsigned))
	if _, msg, err := k.kubectl("/shop/pods/", "apply", "-f", "/var/tmp/policies.yaml"); err != nil {
		t.Fatalf("apply policies.yaml: %v\n%s", err, msg)
	}
	k.eventually("pod cached Running", contains("Running"), "get", "pod", "cached", "-n", "shop", "-o", "jsonpath={.status.phase}")
	k.eventually("the already-present event", contains(`Container image "`+e.signed.Ref+`" already present on machine`), "get", "events", "-n", "shop", "--field-selector", "involvedObject.name=cached")
	if out := k.must("get", "events", "-n", "shop", "--field-selector", "involvedObject.name=cached,reason=Pulling"); strings.Contains(out, "Pulling") {
		t.Errorf("IfNotPresent pulled an image that was present:\n%s", out)
	}
	k.eventually("ErrImageNeverPull", contains("ErrImageNeverPull"), "get", "pod", "never", "-n", "shop", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}")
	k.eventually("the never-pull event", contains(`Container image "`+e.signed.Unsigned+`" is not present with pull policy of Never`), "get", "events", "-n", "shop", "--field-selector", "involvedObject.name=never")

	// Graceful delete: kubectl waits until berthd has stopped the units.
	k.must("delete", "pod", "web", "-n", "shop")
	if out := e.run("systemctl", "list-units", "--all", "--no-legend", "--plain", "berth-*.service"); strings.Contains(out, "web") {
		t.Errorf("units of the deleted pod remain:\n%s", out)
	}
	if _, msg, err := k.kubectl("pods/web", "get", "pod", "web", "-n", "shop"); err == nil || !strings.Contains(msg, `pods "web" not found`) {
		t.Errorf("get after delete: %v %s", err, msg)
	}
	// Deleting the namespace waits until it is gone (the final GET is a 404).
	if _, msg, err := k.kubectl("namespaces/shop", "delete", "namespace", "shop"); err != nil {
		t.Fatalf("delete namespace: %v\n%s", err, msg)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
		out := e.run("systemctl", "list-units", "--all", "--no-legend", "--plain", "berth-*.service")
		if strings.TrimSpace(out) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("units left after the namespace was deleted:\n%s", out)
		}
	}
}
