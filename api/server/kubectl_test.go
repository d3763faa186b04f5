package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/test/testenv"
)

// The stock kubectl is the measure of compatibility; this is the one these
// machines carry (/usr/bin/kubectl is a dispatcher that picks a version).
const stockKubectl = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"

type kubectl struct {
	t          *testing.T
	kubeconfig string
	cache      string
}

func newKubectl(t *testing.T) (*kubectl, *store.Store) {
	t.Helper()
	_, err := os.Stat(stockKubectl)
	testenv.Require(t, err == nil, "needs the stock kubectl at "+stockKubectl)
	dir := t.TempDir()
	ts, st := newHTTP(t)
	kc := filepath.Join(dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: berth, cluster: {server: %q}}]
users: [{name: berth, user: {}}]
contexts: [{name: berth, context: {cluster: berth, user: berth}}]
current-context: berth
`, ts.URL)
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &kubectl{t: t, kubeconfig: kc, cache: filepath.Join(dir, "cache")}, st
}

// unexpected matches kubectl's -v=6 request log lines with a 404 or 5xx.
var requestLine = regexp.MustCompile(`(GET|POST|PUT|PATCH|DELETE) (\S+) (\d{3})`)

// run runs kubectl at -v=6 and fails on any 5xx, and on a 404 for anything
// but the objects the test expects to be missing (allow404) and OpenAPI,
// which this part of the API does not serve yet.
func (k *kubectl) run(allow404 string, args ...string) (stdout, stderr string, err error) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, stockKubectl, append([]string{"--kubeconfig", k.kubeconfig, "--cache-dir", k.cache, "-v=6"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var msgs []string
	for _, line := range strings.Split(errb.String(), "\n") {
		m := requestLine.FindStringSubmatch(line)
		if m == nil {
			if strings.Contains(line, "] ") && !strings.Contains(line, "round_trippers") && !strings.Contains(line, "loader.go") && !strings.Contains(line, "cert_rotation") && !strings.Contains(line, "helpers.go") {
				continue
			}
			if !strings.HasPrefix(line, "I") && !strings.HasPrefix(line, "W") && line != "" {
				msgs = append(msgs, line)
			}
			continue
		}
		code := m[3]
		if code[0] == '5' || (code == "404" && (allow404 == "" || !strings.Contains(m[2], allow404))) {
			k.t.Errorf("kubectl %s: unexpected %s for %s %s", strings.Join(args, " "), code, m[1], m[2])
		}
	}
	return out.String(), strings.Join(msgs, "\n"), err
}

func (k *kubectl) ok(args ...string) string {
	k.t.Helper()
	out, stderr, err := k.run("", args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

func (k *kubectl) fails(allow404 string, args ...string) string {
	k.t.Helper()
	out, stderr, err := k.run(allow404, args...)
	if err == nil {
		k.t.Fatalf("kubectl %s succeeded:\n%s", strings.Join(args, " "), out)
	}
	return stderr
}

func TestStockKubectl(t *testing.T) {
	k, st := newKubectl(t)
	dir := t.TempDir()
	pod := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(pod, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  containers: [{name: app, image: busybox}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if out := k.ok("version", "-o", "json"); !strings.Contains(out, `"gitVersion": "`+GitVersion+`"`) {
		t.Errorf("version:\n%s", out)
	}
	if out := k.ok("get", "namespaces"); !regexp.MustCompile(`(?m)^NAME\s+STATUS\s+AGE\n(.*\n)*default\s+Active\s+\S+$`).MatchString(out) {
		t.Errorf("get namespaces:\n%s", out)
	}
	if out := k.ok("create", "namespace", "team"); out != "namespace/team created\n" {
		t.Errorf("create namespace: %q", out)
	}
	// --validate=false: kubectl's schema validation needs /openapi/v3,
	// which comes with the rest of the API issue.
	if out := k.ok("create", "--validate=false", "-n", "team", "-f", pod); out != "pod/web created\n" {
		t.Errorf("create pod: %q", out)
	}
	if out := k.ok("get", "pods", "-n", "team"); !regexp.MustCompile(`^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\nweb\s+0/1\s+Pending\s+0\s+\S+\n$`).MatchString(out) {
		t.Errorf("get pods:\n%s", out)
	}
	if out := k.ok("get", "pods", "-A", "-o", "wide", "--show-labels"); !regexp.MustCompile(`(?m)^NAMESPACE\s+NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE\s+NOMINATED NODE\s+READINESS GATES\s+LABELS\nteam\s+web\s+0/1\s+Pending\s+0\s+\S+\s+<none>\s+\S+\s+<none>\s+<none>\s+app=web$`).MatchString(out) {
		t.Errorf("get pods -A -o wide --show-labels:\n%s", out)
	}
	if out := k.ok("get", "pod", "web", "-n", "team", "-o", "jsonpath={.metadata.namespace}/{.metadata.name} {.status.phase}"); out != "team/web Pending" {
		t.Errorf("jsonpath: %q", out)
	}
	if out := k.ok("get", "pods", "-n", "team", "-l", "app=web", "-o", "name"); out != "pod/web\n" {
		t.Errorf("label selector: %q", out)
	}
	if out, stderr, _ := k.run("", "get", "pods", "-n", "team", "--field-selector", "status.phase=Running"); out != "" || !strings.Contains(stderr, "No resources found in team namespace.") {
		t.Errorf("field selector: %q %q", out, stderr)
	}

	// Errors as the apiserver words them, printed by kubectl itself.
	if msg := k.fails("/pods/nope", "get", "pod", "nope", "-n", "team"); !strings.Contains(msg, `Error from server (NotFound): pods "nope" not found`) {
		t.Errorf("missing pod: %s", msg)
	}
	if msg := k.fails("", "create", "--validate=false", "-n", "team", "-f", pod); !strings.Contains(msg, `Error from server (AlreadyExists): error when creating "`+pod+`": pods "web" already exists`) {
		t.Errorf("second create: %s", msg)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: Web_1}\nspec:\n  containers: [{name: app, image: busybox}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg := k.fails("", "create", "--validate=false", "-n", "team", "-f", bad); !strings.Contains(msg, `The Pod "Web_1" is invalid: metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain must consist of`) {
		t.Errorf("invalid name: %s", msg)
	}
	if msg := k.fails("/namespaces/ghost", "create", "--validate=false", "-n", "ghost", "-f", pod); !strings.Contains(msg, `namespaces "ghost" not found`) {
		t.Errorf("pod in a missing namespace: %s", msg)
	}

	// kubectl delete waits until a GET answers 404: the pod is bound to
	// this node, so it is deleted gracefully and the (simulated) pod worker
	// finishes it.
	finishDeletions(t, st)
	if out, stderr, err := k.run("/pods/web", "delete", "pod", "web", "-n", "team"); err != nil || out != "pod \"web\" deleted\n" {
		t.Errorf("delete: %q %v %s", out, err, stderr)
	}
	if out, stderr, _ := k.run("", "get", "pods", "-n", "team"); out != "" || !strings.Contains(stderr, "No resources found in team namespace.") {
		t.Errorf("after delete: %q %q", out, stderr)
	}
	if msg := k.fails("", "delete", "namespace", "default"); !strings.Contains(msg, `Error from server (Forbidden): namespaces "default" is forbidden: this namespace may not be deleted`) {
		t.Errorf("delete default: %s", msg)
	}
}
