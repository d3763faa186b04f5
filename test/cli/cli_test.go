// Package cli tests the berth command (kubectl embedded, cmd/berth) as built
// by the Makefile, against api/server on a real Unix socket, with the stock
// kubectl over plain HTTP to the same handler as the measure: the same
// objects must print the same, ages aside.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gwebsocket "github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/api/server"
	"github.com/berth-dev/berth/test/testenv"
)

const stockKubectl = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"

var (
	berthBin string
	buildErr error
)

func TestMain(m *testing.M) {
	dir, err := testenv.TempDir("berth-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	berthBin, buildErr = build(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build runs the Makefile's own line for bin/berth (with its version
// stamps), with BIN pointed at dir, so that the test checks what `make build`
// ships.
func build(dir string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	root := strings.TrimSpace(string(out))
	out, err = exec.Command("make", "-s", "-n", "-C", root, "build", "BIN="+dir).Output()
	if err != nil {
		return "", fmt.Errorf("make -n build: %w", err)
	}
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasSuffix(strings.TrimSpace(l), " ./cmd/berth") {
			line = l
		}
	}
	if line == "" {
		return "", fmt.Errorf("no line building ./cmd/berth in make build:\n%s", out)
	}
	cmd := exec.Command("bash", "-c", line)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(runtime.GOROOT(), "bin")+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", line, err, out)
	}
	return filepath.Join(dir, "berth"), nil
}

// node is api/server over a fresh store, served on a Unix socket (for
// berth) and on a loopback port (for the stock kubectl), both through
// wrap's handler.
type node struct {
	t      *testing.T
	dir    string
	socket string
	url    string
	env    []string // berth's environment: HOME, XDG_CACHE_HOME, a decoy KUBECONFIG
	kc     string   // the stock kubectl's kubeconfig
}

func newNode(t *testing.T, wrap func(http.Handler) http.Handler) *node {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	dir := t.TempDir()
	srv := apiServer(t, dir)
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(srv)
	}
	sock := serveSocket(t, dir, h)
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)

	n := &node{t: t, dir: dir, socket: sock, url: ts.URL, kc: filepath.Join(dir, "kubeconfig")}
	writeKubeconfig(t, n.kc, ts.URL, "")
	// A decoy: the user's own kubeconfig names another server and namespace;
	// berth over the socket must ignore it.
	decoy := filepath.Join(dir, "decoy.kubeconfig")
	writeKubeconfig(t, decoy, "http://127.0.0.1:1", "decoy")
	n.env = append(os.Environ(), "HOME="+filepath.Join(dir, "home"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"KUBECONFIG="+decoy, "BERTH_SOCKET="+sock, "HTTP_PROXY=http://127.0.0.1:1", "HTTPS_PROXY=http://127.0.0.1:1")
	return n
}

// apiServer is api/server over a fresh store in dir.
func apiServer(t *testing.T, dir string) *server.Server {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := server.New(st, server.Options{NodeName: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// serveSocket serves h on dir/berth.sock until the test ends.
func serveSocket(t *testing.T, dir string, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(dir, "berth.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}

func writeKubeconfig(t *testing.T, path, server, ns string) {
	t.Helper()
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: %q}}]
current-context: x
`, server, ns)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

type result struct {
	out, err string
	code     int
	took     time.Duration
}

func (n *node) exec(bin string, env []string, args ...string) result {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{out: out.String(), err: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("%s %s: %v", bin, strings.Join(args, " "), err)
	}
	return r
}

func (n *node) berth(args ...string) result { return n.exec(berthBin, n.env, args...) }

func (n *node) stock(args ...string) result {
	return n.exec(stockKubectl, os.Environ(), append([]string{"--kubeconfig", n.kc, "--cache-dir", filepath.Join(n.dir, "stock-cache")}, args...)...)
}

func (n *node) berthOK(args ...string) string {
	n.t.Helper()
	r := n.berth(args...)
	if r.code != 0 {
		n.t.Fatalf("berth %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return r.out
}

func (n *node) stockOK(args ...string) string {
	n.t.Helper()
	r := n.stock(args...)
	if r.code != 0 {
		n.t.Fatalf("kubectl %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return r.out
}

// ages blanks what differs between two runs a moment apart: AGE columns
// ("5s", "2m3s") and nothing else.
var ages = regexp.MustCompile(`(?m)\b\d+[smhd](\d+[smh])?(\s*)$|\b\d+[smhd](\d+[smh])?(\s{2,})`)

func sameAgesAside(a, b string) bool {
	return ages.ReplaceAllString(a, "AGE$2$4") == ages.ReplaceAllString(b, "AGE$2$4")
}

const podYAML = `apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers: [{name: app, image: busybox}]
`

// The same requests through berth over the socket and the stock kubectl
// over HTTP print the same, ages aside.
func TestBerthPrintsAsStockKubectl(t *testing.T) {
	_, err := os.Stat(stockKubectl)
	testenv.Require(t, err == nil, "needs the stock kubectl at "+stockKubectl)
	n := newNode(t, nil)
	pod := filepath.Join(n.dir, "pod.yaml")
	if err := os.WriteFile(pod, []byte(podYAML), 0o644); err != nil {
		t.Fatal(err)
	}

	if out := n.berthOK("get", "pods"); out != "" {
		t.Errorf("get pods on an empty node: %q", out)
	}
	if r := n.berth("get", "pods"); r.err != "No resources found in default namespace.\n" {
		t.Errorf("get pods on an empty node, stderr: %q (the decoy kubeconfig's namespace must not count)", r.err)
	}
	if out := n.berthOK("create", "-f", pod); out != "pod/web created\n" {
		t.Errorf("create -f: %q", out)
	}

	for _, args := range [][]string{
		{"get", "pods"},
		{"get", "pods", "-o", "wide"},
		{"get", "pod", "web", "-o", "yaml"},
		{"get", "ns", "-o", "yaml"},
		{"get", "ns"},
		{"get", "pods", "-A", "--show-labels"},
		{"api-resources"},
		{"api-versions"},
		{"get", "pod", "nope"},
	} {
		b, s := n.berth(args...), n.stock(args...)
		if b.code != s.code || !sameAgesAside(b.out, s.out) || !sameAgesAside(b.err, s.err) {
			t.Errorf("%s: berth and the stock kubectl differ:\nberth (exit %d):\n%s%s\nkubectl (exit %d):\n%s%s",
				strings.Join(args, " "), b.code, b.out, b.err, s.code, s.out, s.err)
		}
	}
	if out := n.berthOK("get", "pods"); !regexp.MustCompile(`^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\nweb\s+`).MatchString(out) {
		t.Errorf("get pods:\n%s", out)
	}

	// version: berth's client is the embedded kubectl, stamped; the server
	// part is the same as the stock kubectl's.
	bv, sv := n.berth("version"), n.stock("version")
	if !regexp.MustCompile(`(?m)^Client Version: v1\.\d+\.\d+\+berth$`).MatchString(bv.out) {
		t.Errorf("berth version, client:\n%s", bv.out)
	}
	serverLine := regexp.MustCompile(`(?m)^Server Version: .*$`)
	if got, want := serverLine.FindString(bv.out), serverLine.FindString(sv.out); got == "" || got != want || !strings.Contains(got, server.GitVersion) {
		t.Errorf("berth version, server: %q, stock kubectl: %q, want %s", got, want, server.GitVersion)
	}

	// The discovery cache is berth's own, keyed by socket.
	key := regexp.MustCompile(`[^A-Za-z0-9._-]`).ReplaceAllString(n.socket, "_")
	if _, err := os.Stat(filepath.Join(n.dir, "cache", "berth", "kube", key, "discovery", "berth.invalid", "v1", "serverresources.json")); err != nil {
		t.Errorf("berth's discovery cache: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "home", ".kube")); !os.IsNotExist(err) {
		t.Errorf("berth touched ~/.kube: %v", err)
	}

	// One timing, reported, not asserted.
	r := n.berth("get", "pods")
	t.Logf("berth get pods (warm discovery cache): %v", r.took)
}

// streamRecorder answers the streaming subresources as a berthd without
// them would, with a Status, and records how each request arrived.
type streamRecorder struct {
	mu   sync.Mutex
	seen []string // "METHOD subresource Upgrade transport"
}

func (s *streamRecorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub := path.Base(r.URL.Path)
		if sub != "exec" && sub != "attach" && sub != "portforward" {
			h.ServeHTTP(w, r)
			return
		}
		via := "socket"
		if strings.HasPrefix(r.RemoteAddr, "127.0.0.1:") {
			via = "tcp"
		}
		s.mu.Lock()
		s.seen = append(s.seen, fmt.Sprintf("%s %s %s %s", r.Method, sub, r.Header.Get("Upgrade"), via))
		s.mu.Unlock()
		if sub == "exec" && r.URL.Query().Get("command") == "hello" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			fakeExec(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(&metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
			Reason: metav1.StatusReasonForbidden, Code: http.StatusForbidden,
			Message: "berth-test: pods/" + sub + " comes in the next issue",
		})
	})
}

// fakeExec is the server side of kubectl's exec over WebSocket, protocol
// v5.channel.k8s.io (one binary message per frame, the first byte naming
// the stream: 1 stdout, 3 the error stream with the final Status), for a
// command that prints a line and succeeds.
func fakeExec(w http.ResponseWriter, r *http.Request) {
	u := gwebsocket.Upgrader{Subprotocols: []string{"v5.channel.k8s.io"}}
	c, err := u.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	c.WriteMessage(gwebsocket.BinaryMessage, append([]byte{1}, "hello through berth's socket\n"...))
	c.WriteMessage(gwebsocket.BinaryMessage, append([]byte{3}, `{"metadata":{},"status":"Success"}`...))
	c.WriteMessage(gwebsocket.CloseMessage, gwebsocket.FormatCloseMessage(gwebsocket.CloseNormalClosure, ""))
	// Until the client closes too.
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}

func (s *streamRecorder) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := s.seen
	s.seen = nil
	return seen
}

// exec, attach, cp and port-forward: client-go's streaming transports ignore
// the socket Dial; berth's loopback proxy carries them to the socket, first
// as WebSocket, then (after the refusal) as SPDY, and the server's words
// reach the user.
func TestStreamingVerbsReachTheSocket(t *testing.T) {
	rec := &streamRecorder{}
	n := newNode(t, rec.wrap)
	pod := filepath.Join(n.dir, "pod.yaml")
	if err := os.WriteFile(pod, []byte(podYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	n.berthOK("create", "-f", pod)
	// port-forward first checks that the pod runs; no pod worker here.
	n.berthOK("patch", "pod", "web", "--subresource=status", "--type=merge", "-p", `{"status":{"phase":"Running"}}`)

	for _, tc := range []struct {
		args []string
		sub  string
	}{
		{[]string{"exec", "web", "--", "true"}, "exec"},
		{[]string{"exec", "-i", "web", "--", "cat"}, "exec"},
		{[]string{"cp", "web:/etc/hostname", filepath.Join(n.dir, "hostname")}, "exec"},
		{[]string{"attach", "web"}, "attach"},
		{[]string{"port-forward", "pod/web", ":80"}, "portforward"},
	} {
		r := n.berth(tc.args...)
		msg := "berth-test: pods/" + tc.sub + " comes in the next issue"
		if r.code == 0 || !strings.Contains(r.err, msg) {
			t.Errorf("berth %s: exit %d, stderr %q, want the server's %q", strings.Join(tc.args, " "), r.code, r.err, msg)
		}
		seen := rec.take()
		if len(seen) == 0 {
			t.Errorf("berth %s: nothing reached the server", strings.Join(tc.args, " "))
		}
		for _, s := range seen {
			if !strings.HasSuffix(s, " socket") || !strings.Contains(s, " "+tc.sub+" ") {
				t.Errorf("berth %s: %q", strings.Join(tc.args, " "), s)
			}
		}
		t.Logf("berth %s: %q; %s", strings.Join(tc.args, " "), seen, strings.TrimSpace(r.err))

		// The proxy is transparent: the same berth straight to the server
		// over TCP (--kubeconfig) ends with the same words. (The stock 1.32
		// words it differently, "Error from server (Forbidden): …": that is
		// kubectl 1.32 against 1.37, not the socket.)
		dr := n.berth(append([]string{"--kubeconfig", n.kc}, tc.args...)...)
		if seen := rec.take(); len(seen) == 0 || !strings.HasSuffix(seen[0], " tcp") {
			t.Errorf("berth --kubeconfig %s: %q", strings.Join(tc.args, " "), seen)
		}
		if last(dr.err) != last(r.err) || dr.code != r.code {
			t.Errorf("%s: over the socket %q (exit %d), over TCP %q (exit %d)", strings.Join(tc.args, " "), last(r.err), r.code, last(dr.err), dr.code)
		}
	}

	// A stream that works: exec's output comes back through the proxy.
	if out := n.berthOK("exec", "web", "--", "hello"); out != "hello through berth's socket\n" {
		t.Errorf("exec through the socket: %q", out)
	}
	if seen := rec.take(); len(seen) != 1 || seen[0] != "GET exec websocket socket" {
		t.Errorf("exec through the socket: %q", seen)
	}
}

func last(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// berth kubeconfig fetches berthd's kubeconfig over the socket and writes it
// 0600, atomically; berthd's refusal reaches the user in its words.
func TestKubeconfig(t *testing.T) {
	var answer func(w http.ResponseWriter)
	var calls int
	var mu sync.Mutex
	n := newNode(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/berth/v1/kubeconfig" {
				h.ServeHTTP(w, r)
				return
			}
			mu.Lock()
			calls++
			mu.Unlock()
			answer(w)
		})
	})
	// What berthd would send, pointing (for this test) at the plain-HTTP
	// listener of the same handler, so the stock kubectl can use it.
	yaml := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: berth, cluster: {server: %q}}]
users: [{name: berth, user: {}}]
contexts: [{name: berth, context: {cluster: berth, user: berth}}]
current-context: berth
`, n.url)
	answer = func(w http.ResponseWriter) { io.WriteString(w, yaml) }

	file := filepath.Join(n.dir, "out", "berth.kubeconfig")
	if out := n.berthOK("kubeconfig", "-o", file); out != "kubeconfig written to "+file+"\n" {
		t.Errorf("kubeconfig -o: %q", out)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	if b, _ := os.ReadFile(file); string(b) != yaml {
		t.Errorf("written:\n%s", b)
	}
	if _, err := os.Stat(stockKubectl); err == nil {
		r := n.exec(stockKubectl, os.Environ(), "--kubeconfig", file, "--cache-dir", filepath.Join(n.dir, "stock-cache"), "get", "ns", "default", "-o", "name")
		if r.out != "namespace/default\n" {
			t.Errorf("stock kubectl with the written kubeconfig: %q %s", r.out, r.err)
		}
	}

	// The default file, and standard output only when asked for.
	def := filepath.Join(n.dir, "home", ".kube", "berth.yaml")
	if out := n.berthOK("kubeconfig"); out != "kubeconfig written to "+def+"\n" {
		t.Errorf("kubeconfig: %q", out)
	}
	if out := n.berthOK("kubeconfig", "-o", "-"); out != yaml {
		t.Errorf("kubeconfig -o -: %q", out)
	}

	status := func(code int, msg string) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
				Status: metav1.StatusFailure, Code: int32(code), Reason: metav1.StatusReason(http.StatusText(code)), Message: msg})
		}
	}
	for _, tc := range []struct {
		code int
		msg  string
	}{
		{404, "the loopback HTTPS listener is off: turn it on in /etc/berth/berthd.yaml"},
		{403, `user "alice" may not have a kubeconfig`},
	} {
		answer = status(tc.code, tc.msg)
		out := filepath.Join(n.dir, fmt.Sprintf("refused-%d", tc.code))
		r := n.berth("kubeconfig", "-o", out)
		if r.code != 1 || r.err != "error: "+tc.msg+"\n" || r.out != "" {
			t.Errorf("%d: exit %d, stdout %q, stderr %q", tc.code, r.code, r.out, r.err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%d: a file was written", tc.code)
		}
	}

	mu.Lock()
	before := calls
	mu.Unlock()
	if r := n.berth("--kubeconfig", n.kc, "kubeconfig"); r.code == 0 || !strings.Contains(r.err, "socket") {
		t.Errorf("kubeconfig with --kubeconfig: exit %d %q", r.code, r.err)
	}
	if calls != before {
		t.Errorf("kubeconfig with --kubeconfig asked berthd")
	}
}

// Where berth goes: the socket (--socket over $BERTH_SOCKET), or, with
// --kubeconfig or --server, exactly where kubectl would.
func TestWhichServer(t *testing.T) {
	n := newNode(t, nil)
	n.berthOK("create", "namespace", "team")

	// --socket over the environment.
	env := append(n.env, "BERTH_SOCKET=/nonexistent.sock")
	r := n.exec(berthBin, env, "--socket", n.socket, "get", "ns", "team", "-o", "name")
	if r.out != "namespace/team\n" {
		t.Errorf("--socket: %q %s", r.out, r.err)
	}
	r = n.exec(berthBin, env, "get", "ns")
	if r.code == 0 || !strings.Contains(r.err, "dial unix /nonexistent.sock") {
		t.Errorf("$BERTH_SOCKET: exit %d %q", r.code, last(r.err))
	}

	// --kubeconfig and --server: plain kubectl.
	if out := n.berthOK("--kubeconfig", n.kc, "get", "ns", "team", "-o", "name"); out != "namespace/team\n" {
		t.Errorf("--kubeconfig: %q", out)
	}
	if out := n.berthOK("--server", n.url, "get", "ns", "team", "-o", "name"); out != "namespace/team\n" {
		t.Errorf("--server: %q", out)
	}
	if r := n.berth("--socket", n.socket, "--kubeconfig", n.kc, "get", "ns"); r.code == 0 || !strings.Contains(r.err, "--socket cannot be used with --kubeconfig or --server") {
		t.Errorf("--socket with --kubeconfig: exit %d %q", r.code, r.err)
	}
	// berth config edits kubeconfig files only when named.
	if r := n.berth("config", "view"); r.code == 0 || !strings.Contains(r.err, "--kubeconfig") {
		t.Errorf("config view: exit %d %q", r.code, r.err)
	}
	if out := n.berthOK("--kubeconfig", n.kc, "config", "view", "-o", "jsonpath={.clusters[0].cluster.server}"); out != n.url {
		t.Errorf("config view --kubeconfig: %q", out)
	}
}

// Without a home (a unit, env -i) berth caches discovery for the one
// command and removes it, also when kubectl ends the command on an error.
func TestNoHomeLeavesNoCache(t *testing.T) {
	n := newNode(t, nil)
	tmp := filepath.Join(n.dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "TMPDIR=" + tmp, "BERTH_SOCKET=" + n.socket}
	if r := n.exec(berthBin, env, "get", "ns", "default", "-o", "name"); r.out != "namespace/default\n" {
		t.Errorf("get ns without a home: %q %s", r.out, r.err)
	}
	if r := n.exec(berthBin, env, "get", "pod", "nope"); r.code != 1 || r.err != "Error from server (NotFound): pods \"nope\" not found\n" {
		t.Errorf("get pod nope without a home: exit %d %q", r.code, r.err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("left in TMPDIR: %v", ents)
	}
}

func TestHelpListsBerthVerbs(t *testing.T) {
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	out := (&node{t: t}).exec(berthBin, os.Environ(), "--help").out
	re := regexp.MustCompile(`(?s)Berth Commands:\n  image +Pull, list, remove and load.*\n  plan +Show the systemd units.*\n  kubeconfig +Write a kubeconfig.*\n  version +Print the client and server version information\n\nBasic Commands \(Beginner\):\n  create.*Troubleshooting and Debugging Commands:.*  exec .*Other Commands:`)
	if !re.MatchString(out) {
		t.Errorf("help:\n%s", out)
	}
	if !strings.HasPrefix(out, "berth controls a berth node.") {
		t.Errorf("help does not start with berth's description:\n%s", out)
	}
	// Every verb of kubectl's is grouped as kubectl groups it: none fell
	// through to "Other Commands" but kubectl's own ungrouped ones.
	other := out[strings.Index(out, "Other Commands:"):]
	other = other[:strings.Index(other, "\n\n")]
	for _, l := range strings.Split(other, "\n")[1:] {
		name := strings.Fields(l)[0]
		switch name {
		case "alpha", "api-resources", "api-versions", "config", "kuberc":
		default:
			t.Errorf("%s is not in a group (cmd/berth's kubectlGroups is behind kubectl)", name)
		}
	}
}
