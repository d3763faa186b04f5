// Package ansible tests the berth.node Ansible collection
// (packaging/ansible) against a real berthd on a real systemd node: the
// collection is built with ansible-galaxy, installed in the node, and
// playbooks run there with the host's ansible-playbook (the node sees the
// host's /usr) over a local connection, as an operator's playbook reaches
// a node. Results are read from ansible's json callback.
//
// One node serves the whole package (TestCollection's subtests run in
// order and build on each other: the role configures berthd first, the
// later subtests use what it configured); TestSanity and TestAnsibleDoc
// need no node.
package ansible

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"go/build"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/test/pkgbuild"
	"github.com/berth-dev/berth/test/testenv"
)

// The host's Debian tools the tests use; the node sees the same files.
const (
	ansiblePlaybook = "/usr/bin/ansible-playbook"
	ansibleGalaxy   = "/usr/bin/ansible-galaxy"
	ansibleDoc      = "/usr/bin/ansible-doc"
	// kubernetes.core ships with Debian's ansible package; it needs
	// python3-kubernetes.
	kubernetesCore   = "/usr/lib/python3/dist-packages/ansible_collections/kubernetes/core"
	pythonKubernetes = "/usr/lib/python3/dist-packages/kubernetes"
)

// collectionsPath is where the built collection is installed in the node.
const collectionsPath = "/root/collections"

var modules = []string{"manifest", "rollout", "image", "trust", "info"}

func collectionDir(t *testing.T) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "packaging", "ansible")
}

func requireAnsible(t *testing.T) {
	t.Helper()
	for _, p := range []string{ansiblePlaybook, ansibleGalaxy, ansibleDoc} {
		_, err := os.Stat(p)
		testenv.Require(t, err == nil, "needs Debian's ansible ("+p+"); `make test` installs it")
	}
}

// hostAnsible is an ansible command on the host with a HOME of its own,
// so that its ~/.ansible (temporary files, caches) goes with the test.
func hostAnsible(t *testing.T, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "ANSIBLE_NOCOLOR=1")
	return cmd
}

// buildCollection builds the collection's tarball into a temporary
// directory, as a release would (galaxy.yml's build_ignore applies).
func buildCollection(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	cmd := hostAnsible(t, ansibleGalaxy, "collection", "build", "--output-path", out, collectionDir(t))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ansible-galaxy collection build: %v\n%s", err, b)
	}
	tars, _ := filepath.Glob(filepath.Join(out, "berth-node-*.tar.gz"))
	if len(tars) != 1 {
		t.Fatalf("ansible-galaxy collection build made %v", tars)
	}
	return tars[0]
}

type env struct {
	t      *testing.T
	n      *node.Node
	signed *nodereg.Signed
	http   *http.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	requireAnsible(t)
	tarball := buildCollection(t)
	// The HTTPS listener is on so kubernetes.core can be pointed at the
	// node with `berth kubeconfig`'s kubeconfig.
	n, signed := nodeberthd.Setup(t, "ansible", "https:\n  enabled: true\n")
	e := &env{t: t, n: n, signed: signed, http: nodeberthd.Client(n)}
	b, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	e.write("/root/"+filepath.Base(tarball), string(b))
	e.run(ansibleGalaxy, "collection", "install", "-p", collectionsPath, "/root/"+filepath.Base(tarball))
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

func (e *env) read(path string) string {
	e.t.Helper()
	b, err := os.ReadFile(e.n.HostPath(path))
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// get asks berthd's API (through the socket, from the host) and returns
// the status code and the decoded body.
func (e *env) get(path string) (int, map[string]any) {
	e.t.Helper()
	resp, err := e.http.Get("http://berth" + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// playResult is ansible's json callback output.
type playResult struct {
	Plays []struct {
		Tasks []struct {
			Task  struct{ Name string } `json:"task"`
			Hosts map[string]result     `json:"hosts"`
		} `json:"tasks"`
	} `json:"plays"`
	Stats map[string]map[string]int `json:"stats"`
	raw   string
}

type result map[string]any

// task is localhost's result of the last task named name.
func (r *playResult) task(t *testing.T, name string) result {
	t.Helper()
	var found result
	for _, p := range r.Plays {
		for _, tk := range p.Tasks {
			if tk.Task.Name == name {
				found = tk.Hosts["localhost"]
			}
		}
	}
	if found == nil {
		t.Fatalf("no result for task %q in:\n%s", name, r.raw)
	}
	return found
}

func (r *playResult) stat(key string) int { return r.Stats["localhost"][key] }

func (r result) changed() bool { b, _ := r["changed"].(bool); return b }
func (r result) failed() bool  { b, _ := r["failed"].(bool); return b }
func (r result) str(key string) string {
	s, _ := r[key].(string)
	return s
}

// actions is a manifest result's per-object actions.
func (r result) actions() []string {
	var out []string
	rs, _ := r["results"].([]any)
	for _, x := range rs {
		m, _ := x.(map[string]any)
		out = append(out, fmt.Sprint(m["action"]))
	}
	return out
}

func (r result) String() string {
	b, _ := json.MarshalIndent(map[string]any(r), "", "  ")
	return string(b)
}

// play writes playbook (the tasks of one play on localhost) into the node
// and runs it with ansible-playbook there. A failing task is expected only
// where the playbook says ignore_errors; any other failure fails the test.
func (e *env) play(name, tasks string, args ...string) *playResult {
	e.t.Helper()
	r, err := e.playMayFail(name, tasks, args...)
	if err != nil || r.stat("failures") > 0 || r.stat("unreachable") > 0 {
		e.t.Fatalf("playbook %s failed: %v\n%s", name, err, r.raw)
	}
	return r
}

// playMayFail is play for a playbook expected to fail: its result and
// ansible-playbook's error.
func (e *env) playMayFail(name, tasks string, args ...string) (*playResult, error) {
	e.t.Helper()
	path := "/root/plays/" + name + ".yml"
	e.write(path, "- hosts: localhost\n  gather_facts: false\n  tasks:\n"+indent(tasks, "    "))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	argv := append([]string{"env", "ANSIBLE_STDOUT_CALLBACK=json", "ANSIBLE_COLLECTIONS_PATH=" + collectionsPath,
		"ANSIBLE_LOCALHOST_WARNING=false", "ANSIBLE_INVENTORY_UNPARSED_WARNING=false", "ANSIBLE_NOCOLOR=1",
		ansiblePlaybook, "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3", path}, args...)
	start := time.Now()
	out, err := e.n.Run(ctx, argv...)
	e.t.Logf("playbook %s: %.1fs", name, time.Since(start).Seconds())
	r := &playResult{raw: out}
	if jerr := json.Unmarshal([]byte(out), r); jerr != nil {
		e.t.Fatalf("%s: %v; output is not ansible's json: %v\n%s", name, err, jerr, out)
	}
	return r, err
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// TestCollection drives every module and the role against one node.
func TestCollection(t *testing.T) {
	testenv.RequireRoot(t)
	_, err := os.Stat(kubernetesCore)
	testenv.Require(t, err == nil, "needs Debian's ansible package (kubernetes.core at "+kubernetesCore+")")
	_, err = os.Stat(pythonKubernetes)
	testenv.Require(t, err == nil, "needs python3-kubernetes for kubernetes.core")
	e := newEnv(t)
	if os.Geteuid() == 0 && willRun("TestRolePackage") && canBuildPackages() {
		startPackages()
	}

	// Order matters: each subtest leaves the node as the next expects.
	for _, st := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"Role", testRole},
		{"Image", testImage},
		{"Manifest", testManifest},
		{"Rollout", testRollout},
		{"Info", testInfo},
		{"Remove", testRemove},
		{"Trust", testTrust},
		{"KubernetesCore", testKubernetesCore},
	} {
		if !t.Run(st.name, func(t *testing.T) { e.t = t; st.fn(t, e) }) {
			// Later subtests build on this one's state.
			t.FailNow()
		}
	}
}

// rolePlay is the role with what the test node needs: berth is installed
// by nodeberthd (binaries in /opt/berth/bin, not a package), the HTTPS
// listener stays on for kubernetes.core.
func rolePlay(signed *nodereg.Signed, logLevel string) string {
	return fmt.Sprintf(`- name: Configure berthd
  ansible.builtin.include_role:
    name: berth.node.node
  vars:
    berth_install_package: false
    berth_https: true
    berth_config:
      logLevel: %s
    berth_registries:
      defaults: {timeout: 30s}
    berth_operators: [operator1]
    berth_trust_keys:
      team: "{{ lookup('ansible.builtin.file', '/etc/berth/keys/cosign.pub') }}"
    berth_trust_policy:
      default: [{type: reject}]
      transports:
        docker:
          %s/demo/hello: [{type: sigstoreSigned, keyPath: /etc/berth/keys/team.pub}]
`, logLevel, signed.Host)
}

func mainPID(t *testing.T, e *env) string {
	t.Helper()
	return strings.TrimSpace(e.run("systemctl", "show", "-p", "MainPID", "--value", "berthd.service"))
}

func testRole(t *testing.T, e *env) {
	e.run("useradd", "--no-create-home", "operator1")
	pid := mainPID(t, e)
	r := e.play("role-1", rolePlay(e.signed, "debug"))
	if r.stat("changed") == 0 {
		t.Fatalf("first run of the role changed nothing:\n%s", r.raw)
	}
	cfg := e.read("/etc/berth/berthd.yaml")
	for _, want := range []string{"logLevel: debug", "https:\n  enabled: true", "group: berth"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("berthd.yaml lacks %q:\n%s", want, cfg)
		}
	}
	if reg := e.read("/etc/berth/registries.yaml"); !strings.Contains(reg, "timeout: 30s") {
		t.Errorf("registries.yaml:\n%s", reg)
	}
	if !strings.Contains(e.read("/etc/berth/policy.json"), "/etc/berth/keys/team.pub") {
		t.Errorf("the role's policy was not written:\n%s", e.read("/etc/berth/policy.json"))
	}
	if !strings.Contains(e.run("id", "-nG", "operator1"), "berth") {
		t.Errorf("operator1 is not in group berth: %s", e.run("id", "-nG", "operator1"))
	}
	if e.run("systemctl", "is-enabled", "berthd.service") != "enabled\n" {
		t.Errorf("berthd.service is not enabled")
	}
	// berthd.yaml changed, so the handler restarted berthd.
	if now := mainPID(t, e); now == pid {
		t.Errorf("berthd was not restarted after its configuration changed (MainPID %s)", now)
	}

	pid = mainPID(t, e)
	r = e.play("role-2", rolePlay(e.signed, "debug"))
	if c := r.stat("changed"); c != 0 {
		t.Errorf("second run of the role: changed=%d, want 0:\n%s", c, r.raw)
	}
	if now := mainPID(t, e); now != pid {
		t.Errorf("an unchanged configuration restarted berthd (MainPID %s → %s)", pid, now)
	}

	// A key berthd refuses: the role fails with berthd's own reason from
	// the journal, then a good configuration brings it back.
	bad := strings.Replace(rolePlay(e.signed, "info"), "      logLevel: info\n", "      logLevel: info\n      bogusKey: 1\n", 1)
	r, err := e.playMayFail("role-bad", bad)
	if err == nil {
		t.Errorf("the role with a key berthd refuses succeeded")
	}
	var failed result
	for _, p := range r.Plays {
		for _, tk := range p.Tasks {
			if h := tk.Hosts["localhost"]; h.failed() {
				failed = h
			}
		}
	}
	if failed == nil || !strings.Contains(failed.str("msg"), "bogusKey") {
		t.Errorf("a configuration berthd refuses: want a failure naming bogusKey, got:\n%s", r.raw)
	}
	e.play("role-3", rolePlay(e.signed, "info"))
	if code, _ := e.get("/readyz"); code != http.StatusOK {
		t.Fatalf("berthd not ready after the good configuration: %d", code)
	}

	// Check mode: the change is reported (with its diff), nothing is
	// written and berthd is not restarted.
	pid = mainPID(t, e)
	r = e.play("role-check", rolePlay(e.signed, "warn"), "--check", "--diff")
	if r.stat("changed") == 0 || !strings.Contains(r.raw, "logLevel: warn") {
		t.Errorf("check mode with another logLevel: want a change with its diff:\n%s", r.raw)
	}
	if cfg := e.read("/etc/berth/berthd.yaml"); !strings.Contains(cfg, "logLevel: info") {
		t.Errorf("check mode wrote berthd.yaml:\n%s", cfg)
	}
	if now := mainPID(t, e); now != pid {
		t.Errorf("check mode restarted berthd (MainPID %s → %s)", pid, now)
	}
}

func testImage(t *testing.T, e *env) {
	ref, unsigned := e.signed.Ref, e.signed.Unsigned
	r := e.play("image", fmt.Sprintf(`- name: check
  berth.node.image: {ref: %q}
  check_mode: true
- name: pull
  berth.node.image: {ref: %q}
- name: again
  berth.node.image: {ref: %q}
- name: unsigned
  berth.node.image: {ref: %q}
  ignore_errors: true
`, ref, ref, ref, unsigned))
	if c := r.task(t, "check"); !c.changed() || c.str("operation") != "pulled" {
		t.Errorf("check mode pull of a missing image: %s", c)
	}
	p := r.task(t, "pull")
	if !p.changed() || p.str("digest") != e.signed.Digest {
		t.Errorf("pull: want changed and digest %s, got %s", e.signed.Digest, p)
	}
	if j, _ := p["judgement"].(map[string]any); j == nil || j["allowed"] != true {
		t.Errorf("pull: judgement %v", p["judgement"])
	}
	if a := r.task(t, "again"); a.changed() || a.str("digest") != e.signed.Digest {
		t.Errorf("second pull: want unchanged, got %s", a)
	}
	u := r.task(t, "unsigned")
	if !u.failed() || !strings.Contains(u.str("msg"), "rejected by policy") || !strings.Contains(u.str("msg"), "is forbidden") {
		t.Errorf("unsigned image: want berth's refusal, got %s", u)
	}
	code, list := e.get("/berth/v1/images")
	if code != 200 || strings.Contains(fmt.Sprint(list), "unsigned") {
		t.Errorf("the refused image is stored: %d %v", code, list)
	}
}

const configMap = `apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {greeting: hello}
`

func webDeployment(image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: web
          image: %s
          command: [sleep, "3600"]
`, image)
}

// manifestTask is a berth.node.manifest task whose definition is docs as
// a YAML string (the action plugin parses it on the controller).
func manifestTask(name, docs string, extra ...string) string {
	s := "- name: " + name + "\n  berth.node.manifest:\n    definition: |\n" + indent(docs, "      ")
	for _, x := range extra {
		s += "  " + x + "\n"
	}
	return s
}

func testManifest(t *testing.T, e *env) {
	docs := configMap + "---\n" + webDeployment(e.signed.Ref)

	// Check mode: berthd validates (dryRun=All), nothing is stored.
	r := e.play("manifest-check", manifestTask("create", docs, "check_mode: true"))
	if c := r.task(t, "create"); !c.changed() || strings.Join(c.actions(), ",") != "created,created" {
		t.Errorf("check mode create: %s", c)
	}
	if code, _ := e.get("/api/v1/namespaces/default/configmaps/web-config"); code != http.StatusNotFound {
		t.Fatalf("check mode stored the ConfigMap: GET answered %d", code)
	}

	r = e.play("manifest-apply", manifestTask("apply", docs))
	if c := r.task(t, "apply"); !c.changed() || strings.Join(c.actions(), ",") != "created,created" {
		t.Errorf("apply: %s", c)
	}
	_, cm := e.get("/api/v1/namespaces/default/configmaps/web-config")
	rv := fmt.Sprint(cm["metadata"].(map[string]any)["resourceVersion"])

	r = e.play("manifest-again", manifestTask("again", docs)+manifestTask("merge", docs, "args: {merge_type: merge}"))
	if c := r.task(t, "again"); c.changed() || strings.Join(c.actions(), ",") != "unchanged,unchanged" {
		t.Errorf("second apply: %s", c)
	}
	// A JSON merge patch replaces the containers list, which then gets
	// the same defaults again: no difference either.
	if c := r.task(t, "merge"); c.changed() || strings.Join(c.actions(), ",") != "unchanged,unchanged" {
		t.Errorf("apply with merge_type merge: %s", c)
	}
	_, cm = e.get("/api/v1/namespaces/default/configmaps/web-config")
	if now := fmt.Sprint(cm["metadata"].(map[string]any)["resourceVersion"]); now != rv {
		t.Errorf("an unchanged apply wrote the ConfigMap (resourceVersion %s → %s)", rv, now)
	}

	// A change in check and diff mode: reported with the field, not written.
	changed := strings.Replace(configMap, "greeting: hello", "greeting: goodbye", 1)
	r = e.play("manifest-diff", manifestTask("diff", changed, "check_mode: true", "diff: true"))
	d := r.task(t, "diff")
	if !d.changed() || strings.Join(d.actions(), ",") != "patched" {
		t.Errorf("check mode change: %s", d)
	}
	diff, _ := json.Marshal(d["diff"])
	if !strings.Contains(string(diff), `"greeting":"hello"`) || !strings.Contains(string(diff), `"greeting":"goodbye"`) ||
		strings.Contains(string(diff), "resourceVersion") {
		t.Errorf("diff: want before greeting=hello and after greeting=goodbye without server fields, got %s", diff)
	}
	if _, cm = e.get("/api/v1/namespaces/default/configmaps/web-config"); fmt.Sprint(cm["data"]) != "map[greeting:hello]" {
		t.Errorf("check mode patched the ConfigMap: %v", cm["data"])
	}

	r = e.play("manifest-patch", manifestTask("patch", changed))
	if p := r.task(t, "patch"); !p.changed() || strings.Join(p.actions(), ",") != "patched" {
		t.Errorf("patch: %s", p)
	}
	if _, cm = e.get("/api/v1/namespaces/default/configmaps/web-config"); fmt.Sprint(cm["data"]) != "map[greeting:goodbye]" {
		t.Errorf("after the patch: %v", cm["data"])
	}

	// src: a multi-document file on the controller, a namespace for the
	// objects that name none.
	e.write("/root/plays/files/extra.yaml", "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n---\n"+
		"apiVersion: v1\nkind: Secret\nmetadata: {name: token}\nstringData: {token: s3cret}\n---\n"+
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {a: b}\n---\n"+
		// A Service: the apiserver's allocations (cluster IP, node port)
		// are the server's fields an apply must not see as a difference.
		"apiVersion: v1\nkind: Service\nmetadata: {name: front}\nspec:\n  type: NodePort\n  selector: {app: front}\n"+
		"  ports: [{port: 80, targetPort: 8080}]\n")
	r = e.play("manifest-src", `- name: src
  berth.node.manifest: {src: extra.yaml, namespace: extra}
- name: src again
  berth.node.manifest: {src: extra.yaml, namespace: extra}
`)
	if s := r.task(t, "src"); !s.changed() || strings.Join(s.actions(), ",") != "created,created,created,created" {
		t.Errorf("src: %s", s)
	}
	if s := r.task(t, "src again"); s.changed() {
		t.Errorf("src applied again (a Secret from stringData, a Service with allocated ports included): %s", s)
	}
	if code, _ := e.get("/api/v1/namespaces/extra/secrets/token"); code != http.StatusOK {
		t.Errorf("the Secret from src is not in namespace extra: %d", code)
	}

	// Check mode of a new namespace and an object in it: the namespace's
	// creation is a dry run, so the object's is reported unvalidated.
	r = e.play("manifest-check-ns", manifestTask("ns", "apiVersion: v1\nkind: Namespace\nmetadata: {name: fresh}\n---\n"+configMap,
		"check_mode: true", "args: {namespace: fresh}"))
	if c := r.task(t, "ns"); c.failed() || strings.Join(c.actions(), ",") != "created,created" || !strings.Contains(fmt.Sprint(c["warnings"]), "not validated") {
		t.Errorf("check mode of a namespace and its content: %s", c)
	}

	// Refusals carry the apiserver's message.
	r = e.play("manifest-bad", `- name: invalid
  berth.node.manifest:
    definition:
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: bad}
      spec:
        replicas: -1
        selector: {matchLabels: {app: bad}}
        template:
          metadata: {labels: {app: bad}}
          spec: {containers: [{name: c, image: x}]}
  ignore_errors: true
- name: unknown kind
  berth.node.manifest:
    definition: {apiVersion: v1, kind: Gadget, metadata: {name: g}}
  ignore_errors: true
- name: not yaml
  berth.node.manifest:
    definition: "kind: [unclosed"
  ignore_errors: true
`)
	const invalid = `Deployment.apps "bad" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0`
	if b := r.task(t, "invalid"); !b.failed() || !strings.Contains(b.str("msg"), invalid) || b.str("reason") != "Invalid" {
		t.Errorf("invalid Deployment: want %q, got %s", invalid, b)
	}
	if b := r.task(t, "unknown kind"); !b.failed() || !strings.Contains(b.str("msg"), `no matches for kind "Gadget" in version "v1"`) {
		t.Errorf("unknown kind: %s", b)
	}
	if b := r.task(t, "not yaml"); !b.failed() || !strings.Contains(b.str("msg"), "not valid YAML") {
		t.Errorf("malformed YAML: %s", b)
	}
}

func testRollout(t *testing.T, e *env) {
	stuck := `apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  replicas: 1
  progressDeadlineSeconds: 600
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: "` + e.signed.Unsigned + `", command: [sleep, "3600"]}]
`
	r := e.play("rollout", `- name: web
  berth.node.rollout: {name: web, timeout: 120}
`+manifestTask("stuck", stuck)+`- name: timeout
  berth.node.rollout: {name: stuck, timeout: 3}
  ignore_errors: true
- name: deadline
  berth.node.manifest:
    definition: {apiVersion: apps/v1, kind: Deployment, metadata: {name: stuck}, spec: {progressDeadlineSeconds: 2}}
- name: exceeded
  berth.node.rollout: {name: stuck, timeout: 60}
  ignore_errors: true
- name: cleanup
  berth.node.manifest:
    state: absent
    definition: {apiVersion: apps/v1, kind: Deployment, metadata: {name: stuck}}
`)
	if w := r.task(t, "web"); w.changed() || w.failed() || w.str("message") != `deployment "web" successfully rolled out` {
		t.Errorf("rollout of web: %s", w)
	}
	if w := r.task(t, "timeout"); !w.failed() || !strings.HasPrefix(w.str("msg"), "timed out waiting for the condition") ||
		!strings.Contains(w.str("message"), `Waiting for deployment "stuck" rollout to finish`) {
		t.Errorf("rollout timeout: %s", w)
	}
	if w := r.task(t, "exceeded"); !w.failed() || w.str("msg") != `deployment "stuck" exceeded its progress deadline` {
		t.Errorf("progress deadline: %s", w)
	}
}

func testInfo(t *testing.T, e *env) {
	r := e.play("info", `- name: info
  berth.node.info: {wait_for_usage: true, usage_timeout: 90}
- name: facts
  ansible.builtin.assert:
    that:
      - ansible_facts.berth.node.name | length > 0
      - ansible_facts.berth.usage.available
`)
	i := r.task(t, "info")
	b, _ := json.Marshal(map[string]any(i))
	var info struct {
		Node struct {
			Name       string
			Capacity   map[string]string
			Conditions []struct{ Type, Status string }
		}
		Pods []struct {
			Namespace, Name, Phase string
			Ready                  bool
			Images                 []string
		}
		Usage struct {
			Available bool
			Node      struct {
				CPUCores    float64 `json:"cpu_cores"`
				MemoryBytes float64 `json:"memory_bytes"`
			}
			Pods []struct {
				Name        string
				MemoryBytes float64 `json:"memory_bytes"`
			}
		}
		Images []struct{ Digest string }
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if info.Node.Name == "" || info.Node.Capacity["cpu"] == "" || len(info.Node.Conditions) == 0 {
		t.Errorf("node: %+v", info.Node)
	}
	var web string
	for _, p := range info.Pods {
		if strings.HasPrefix(p.Name, "web-") && p.Phase == "Running" && p.Ready && len(p.Images) == 1 && p.Images[0] == e.signed.Ref {
			web = p.Name
		}
	}
	if web == "" {
		t.Errorf("no ready web pod in %+v", info.Pods)
	}
	if !info.Usage.Available || info.Usage.Node.MemoryBytes <= 0 {
		t.Errorf("node usage: %+v", info.Usage)
	}
	found := false
	for _, p := range info.Usage.Pods {
		found = found || (p.Name == web && p.MemoryBytes > 0)
	}
	if !found {
		t.Errorf("no usage of pod %s in %+v", web, info.Usage.Pods)
	}
	found = false
	for _, im := range info.Images {
		found = found || im.Digest == e.signed.Digest
	}
	if !found {
		t.Errorf("image %s not in %+v", e.signed.Digest, info.Images)
	}
}

func testRemove(t *testing.T, e *env) {
	docs := configMap + "---\n" + webDeployment(e.signed.Ref)
	r := e.play("remove", manifestTask("check", docs, "check_mode: true", "args: {state: absent}")+
		manifestTask("remove", docs, "args: {state: absent, wait: true}")+
		manifestTask("again", docs, "args: {state: absent}")+
		`- name: namespace
  berth.node.manifest:
    state: absent
    wait: true
    wait_timeout: 120
    definition: {apiVersion: v1, kind: Namespace, metadata: {name: extra}}
`)
	if c := r.task(t, "check"); !c.changed() || strings.Join(c.actions(), ",") != "deleted,deleted" {
		t.Errorf("check mode remove: %s", c)
	}
	if rm := r.task(t, "remove"); !rm.changed() || strings.Join(rm.actions(), ",") != "deleted,deleted" {
		t.Errorf("remove: %s", rm)
	}
	if a := r.task(t, "again"); a.changed() || strings.Join(a.actions(), ",") != "absent,absent" {
		t.Errorf("second remove: %s", a)
	}
	for _, p := range []string{"/api/v1/namespaces/default/configmaps/web-config", "/apis/apps/v1/namespaces/default/deployments/web",
		"/api/v1/namespaces/extra"} {
		if code, _ := e.get(p); code != http.StatusNotFound {
			t.Errorf("GET %s after remove with wait: %d", p, code)
		}
	}
}

func testTrust(t *testing.T, e *env) {
	orig := e.read("/etc/berth/policy.json")
	t.Cleanup(func() { e.write("/etc/berth/policy.json", orig) })
	host := e.signed.Host
	policy := func(extra string) string {
		return fmt.Sprintf(`default: [{type: reject}]
        transports:
          docker:
            %s/demo/hello: [{type: sigstoreSigned, keyPath: /etc/berth/keys/team.pub}]
%s`, host, extra)
	}
	open := fmt.Sprintf("            %s/demo/unsigned: [{type: insecureAcceptAnything}]\n", host)
	task := func(name, pol string, extra ...string) string {
		s := "- name: " + name + "\n  berth.node.trust:\n    policy:\n        " + pol
		for _, x := range extra {
			s += "  " + x + "\n"
		}
		return s
	}
	r := e.play("trust", task("same", policy(""))+
		task("check", policy(open), "check_mode: true", "diff: true")+
		`- name: pull refused
  berth.node.image: {ref: "`+e.signed.Unsigned+`"}
  ignore_errors: true
`+task("open", policy(open))+task("open again", policy(open))+
		`- name: pull allowed
  berth.node.image: {ref: "`+e.signed.Unsigned+`"}
- name: remove it
  berth.node.image: {ref: "`+e.signed.Unsigned+`", state: absent}
- name: remove it again
  berth.node.image: {ref: "`+e.signed.Unsigned+`", state: absent}
`+task("typo", strings.Replace(policy(""), "keyPath", "keyPat", 1), "ignore_errors: true")+
		task("missing key", strings.Replace(policy(""), "team.pub", "nobody.pub", 1), "ignore_errors: true"))

	if s := r.task(t, "same"); s.changed() {
		t.Errorf("the role's policy again: %s", s)
	}
	c := r.task(t, "check")
	diff, _ := json.Marshal(c["diff"])
	if !c.changed() || !strings.Contains(string(diff), "demo/unsigned") {
		t.Errorf("check mode: want changed with a diff naming demo/unsigned, got %s", c)
	}
	if u := r.task(t, "pull refused"); !u.failed() {
		t.Errorf("check mode wrote the policy: the unsigned image was pulled: %s", u)
	}
	if o := r.task(t, "open"); !o.changed() {
		t.Errorf("open: %s", o)
	}
	if o := r.task(t, "open again"); o.changed() {
		t.Errorf("open again: %s", o)
	}
	// berthd reads the policy at every pull: no restart between.
	if p := r.task(t, "pull allowed"); !p.changed() {
		t.Errorf("pull after the policy allows it: %s", p)
	}
	if rm := r.task(t, "remove it"); !rm.changed() || rm.str("operation") != "removed" {
		t.Errorf("remove: %s", rm)
	}
	if rm := r.task(t, "remove it again"); rm.changed() || rm.str("operation") != "absent" {
		t.Errorf("remove again: %s", rm)
	}
	if ty := r.task(t, "typo"); !ty.failed() || !strings.Contains(ty.str("msg"), `unknown field "keyPat"`) {
		t.Errorf("typo: %s", ty)
	}
	if m := r.task(t, "missing key"); !m.failed() || !strings.Contains(m.str("msg"), "/etc/berth/keys/nobody.pub") {
		t.Errorf("missing key: %s", m)
	}
	if p := e.read("/etc/berth/policy.json"); !strings.Contains(p, "demo/unsigned") || strings.Contains(p, "keyPat\"") {
		t.Errorf("a refused policy was written:\n%s", p)
	}
	if fi, err := os.Stat(e.n.HostPath("/etc/berth/policy.json")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("policy.json mode: %v %v", fi.Mode(), err)
	}
}

func testKubernetesCore(t *testing.T, e *env) {
	e.run("berth", "kubeconfig", "-o", "/root/kubeconfig")
	k8s := func(name, state, def string, extra ...string) string {
		s := "- name: " + name + "\n  kubernetes.core.k8s:\n    kubeconfig: /root/kubeconfig\n    state: " + state + "\n    definition:\n" + indent(def, "      ")
		for _, x := range extra {
			s += "    " + x + "\n"
		}
		return s
	}
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k8s-config, namespace: default}\ndata: {x: \"1\"}\n"
	deploy := strings.Replace(strings.Replace(webDeployment(e.signed.Ref), "name: web}", "name: k8s-web, namespace: default}", 1), "app: web", "app: k8s-web", -1)
	r := e.play("kubernetes-core", k8s("cm", "present", cm)+k8s("cm again", "present", cm)+
		k8s("deploy", "present", deploy, "wait: true", "wait_timeout: 120")+
		k8s("delete deploy", "absent", deploy, "wait: true", "wait_timeout: 120")+
		k8s("delete cm", "absent", cm)+k8s("delete cm again", "absent", cm))
	for name, want := range map[string]bool{"cm": true, "cm again": false, "deploy": true, "delete deploy": true, "delete cm": true, "delete cm again": false} {
		if got := r.task(t, name); got.changed() != want {
			t.Errorf("kubernetes.core.k8s %s: changed=%v, want %v: %s", name, got.changed(), want, got)
		}
	}
	for _, p := range []string{"/api/v1/namespaces/default/configmaps/k8s-config", "/apis/apps/v1/namespaces/default/deployments/k8s-web"} {
		if code, _ := e.get(p); code != http.StatusNotFound {
			t.Errorf("GET %s after kubernetes.core deleted it: %d", p, code)
		}
	}
}

// TestSanity runs packaging/ansible/sanity.sh: ansible-test sanity on the
// collection, offline, with Debian's linters.
func TestSanity(t *testing.T) {
	requireAnsible(t)
	_, err := os.Stat("/usr/bin/ansible-test")
	testenv.Require(t, err == nil, "needs /usr/bin/ansible-test (Debian's ansible-core)")
	for _, tool := range []string{"pylint", "yamllint", "shellcheck"} {
		testenv.RequireCommand(t, tool)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(collectionDir(t), "sanity.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("sanity.sh: %v\n%s", err, out)
	}
	// Every test but the two without an offline tool must have run.
	var ran string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "sanity.sh: ran: ") {
			ran = l
		}
	}
	for _, want := range []string{"ansible-doc", "validate-modules", "pylint", "pep8", "yamllint", "import", "compile", "shellcheck", "runtime-metadata"} {
		if !strings.Contains(ran, " "+want+" ") {
			t.Errorf("sanity test %s did not run:\n%s", want, out)
		}
	}
	t.Logf("%s", ran)
}

// TestAnsibleDoc renders every module's documentation and the role's
// argument spec from the built collection.
func TestAnsibleDoc(t *testing.T) {
	requireAnsible(t)
	tarball := buildCollection(t)
	dir := t.TempDir()
	if b, err := hostAnsible(t, ansibleGalaxy, "collection", "install", "-p", dir, tarball).CombinedOutput(); err != nil {
		t.Fatalf("install: %v\n%s", err, b)
	}
	docs := map[string][]string{}
	for _, m := range modules {
		docs["berth.node."+m] = []string{ansibleDoc, "berth.node." + m}
	}
	docs["role berth.node.node"] = []string{ansibleDoc, "-t", "role", "berth.node.node"}
	for name, argv := range docs {
		cmd := hostAnsible(t, argv...)
		cmd.Env = append(cmd.Env, "ANSIBLE_COLLECTIONS_PATH="+dir, "PAGER=cat")
		out, err := cmd.CombinedOutput()
		s := string(out)
		if err != nil || len(s) < 200 || strings.Contains(s, "ERROR") || strings.Contains(s, "WARNING") {
			t.Errorf("ansible-doc %s: %v\n%s", name, err, s)
		}
		for _, section := range []string{"OPTIONS", "EXAMPLES", "RETURN VALUES"} {
			if !strings.HasPrefix(name, "role") && !strings.Contains(s, section) {
				t.Errorf("ansible-doc %s has no %s", name, section)
			}
		}
	}
}

// pkg is the .deb and .rpm of this tree (test/pkgbuild), built once in the
// background: TestCollection starts the build when TestRolePackage will
// run, so the packaging overlaps its playbooks instead of adding a minute
// to the package's run.
var pkg struct {
	once sync.Once
	done chan struct{}
	dir  string
	p    *pkgbuild.Packages
	err  error
}

func canBuildPackages() bool {
	for _, tool := range []string{"dpkg-deb", "rpm", "strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	_, err := os.Stat(filepath.Join(build.Default.GOPATH, "bin", "nfpm"))
	return err == nil
}

func startPackages() {
	pkg.once.Do(func() {
		pkg.done = make(chan struct{})
		go func() {
			defer close(pkg.done)
			if pkg.dir, pkg.err = testenv.TempDir("berth-ansible-pkg"); pkg.err == nil {
				pkg.p, pkg.err = pkgbuild.Build(pkg.dir, "")
			}
		}()
	})
}

// willRun reports whether -test.run selects the top-level test name.
func willRun(name string) bool {
	f := flag.Lookup("test.run")
	if f == nil || f.Value.String() == "" {
		return true
	}
	ok, err := regexp.MatchString(strings.Split(f.Value.String(), "/")[0], name)
	return err == nil && ok
}

// TestMain removes the packages' build directory, once their build has
// ended.
func TestMain(m *testing.M) {
	code := m.Run()
	if pkg.done != nil {
		<-pkg.done
		if pkg.dir != "" {
			os.RemoveAll(pkg.dir)
		}
	}
	os.Exit(code)
}

// TestRolePackage is the role's install path: the .deb `make package`
// builds (test/pkgbuild, nfpm), given as berth_package_file on the
// controller, installed by the role into a node whose /usr and package
// databases are its own (node.Options.Packages), then configured and
// started; a second run changes nothing.
func TestRolePackage(t *testing.T) {
	testenv.RequireRoot(t)
	requireAnsible(t)
	testenv.Require(t, canBuildPackages(), "needs dpkg-deb, rpm, strip and nfpm to build the packages (make setup installs them)")
	tarball := buildCollection(t)
	startPackages()
	<-pkg.done
	if pkg.err != nil {
		t.Fatal(pkg.err)
	}
	pkgs := pkg.p
	n := nodetest.New(t, node.Options{Name: "ansible-pkg", Packages: true})
	e := &env{t: t, n: n, http: nodeberthd.Client(n)}
	for _, f := range []string{tarball, pkgs.Deb} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		e.write("/root/"+filepath.Base(f), string(b))
	}
	e.run(ansibleGalaxy, "collection", "install", "-p", collectionsPath, "/root/"+filepath.Base(tarball))
	// The controller is the node itself (a local connection), so the
	// package file is a path there.
	role := fmt.Sprintf(`- name: Install and configure berth
  ansible.builtin.include_role:
    name: berth.node.node
  vars:
    berth_package_file: /root/%s
    berth_https: true
    berth_config:
      logLevel: debug
`, filepath.Base(pkgs.Deb))
	r := e.play("package-1", role)
	if r.stat("changed") == 0 {
		t.Errorf("first run changed nothing:\n%s", r.raw)
	}
	if st := e.run("dpkg-query", "-W", "-f", "${Status} ${Version}", "berth"); !strings.HasPrefix(st, "install ok installed "+pkgs.Version) {
		t.Errorf("berth package: %q, want installed %s", st, pkgs.Version)
	}
	if exec := e.run("systemctl", "show", "-p", "ExecStart", "--value", "berthd.service"); !strings.Contains(exec, "/usr/bin/berthd") {
		t.Errorf("berthd.service runs %q, not the package's /usr/bin/berthd", exec)
	}
	if code, _ := e.get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	// The role's berthd.yaml replaced the package's conffile.
	if cfg := e.read("/etc/berth/berthd.yaml"); !strings.Contains(cfg, "logLevel: debug") {
		t.Errorf("berthd.yaml:\n%s", cfg)
	}
	r = e.play("package-2", role)
	if c := r.stat("changed"); c != 0 {
		t.Errorf("second run: changed=%d, want 0:\n%s", c, r.raw)
	}
}
