package daemon

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/test/testenv"
)

const podJSON = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}`

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// A real user outside the writers' group reads pods but is refused, with
// the apiserver's own words, on create, delete, secrets and logs; a member
// writes. Then stock kubectl through the HTTPS listener with each one's
// kubeconfig from /berth/v1/kubeconfig.
func TestRealUsers(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"useradd", "userdel", "groupadd", "groupdel", "setpriv", "curl"} {
		testenv.RequireCommand(t, c)
	}
	_, err := os.Stat(stockKubectl)
	testenv.Require(t, err == nil, "needs the stock kubectl at "+stockKubectl)

	sfx := randomSuffix()
	group := "berthg" + sfx
	addGroup(t, group)
	reader := addUser(t, "berthr"+sfx)
	writer := addUser(t, "berthw"+sfx, group)
	addr := "127.0.0.1:" + freePort(t)
	d := startDaemon(t, "--socket-group", group, "--https", "--https-address", addr)

	// The socket: root:group, the configured (default) mode.
	fi, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o666 || fi.Mode().Type() != os.ModeSocket || strconv.Itoa(int(st.Gid)) != g.Gid || st.Uid != 0 {
		t.Errorf("socket %s: mode %v owner %d:%d, want 0666 socket root:%s", d.socket, fi.Mode(), st.Uid, st.Gid, g.Gid)
	}

	// The writer creates; the reader reads.
	if code, body := writer.curl(t, d.socket, "POST", "/api/v1/namespaces/default/pods", podJSON); code != 201 {
		t.Fatalf("writer create pod: %d %s", code, body)
	}
	for _, p := range []string{"/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/pods/web", "/api/v1/pods?watch=false", "/api", "/apis", "/version", "/readyz"} {
		code, body := reader.curl(t, d.socket, "GET", p, "")
		if code != 200 {
			t.Errorf("reader GET %s: %d %s", p, code, body)
		}
		if strings.Contains(p, "pods") && !strings.Contains(body, `"web"`) {
			t.Errorf("reader GET %s: pod web not in %s", p, body)
		}
	}

	// The reader is refused, with the apiserver's RBAC message.
	who := reader.name
	for _, tc := range []struct{ method, path, body, msg string }{
		{"POST", "/api/v1/namespaces/default/pods", podJSON, `pods is forbidden: User "` + who + `" cannot create resource "pods" in API group "" in the namespace "default"`},
		{"DELETE", "/api/v1/namespaces/default/pods/web", "", `pods "web" is forbidden: User "` + who + `" cannot delete resource "pods" in API group "" in the namespace "default"`},
		{"GET", "/api/v1/namespaces/default/secrets", "", `secrets is forbidden: User "` + who + `" cannot list resource "secrets" in API group "" in the namespace "default"`},
		{"GET", "/api/v1/namespaces/default/secrets/s", "", `secrets "s" is forbidden: User "` + who + `" cannot get resource "secrets" in API group "" in the namespace "default"`},
		{"GET", "/api/v1/namespaces/default/pods/web/log", "", `pods "web" is forbidden: User "` + who + `" cannot get resource "pods/log" in API group "" in the namespace "default"`},
		{"POST", "/api/v1/namespaces/default/pods/web/exec?command=sh", "", `pods "web" is forbidden: User "` + who + `" cannot create resource "pods/exec" in API group "" in the namespace "default"`},
		// berth's own endpoints (berth image, berth plan) are the writers'.
		{"GET", "/berth/v1/images", "", `forbidden: User "` + who + `" cannot get path "/berth/v1/images"`},
		{"POST", "/berth/v1/images/pull?ref=busybox", "", `forbidden: User "` + who + `" cannot post path "/berth/v1/images/pull"`},
		{"POST", "/berth/v1/plan", podJSON, `forbidden: User "` + who + `" cannot post path "/berth/v1/plan"`},
	} {
		code, body := reader.curl(t, d.socket, tc.method, tc.path, tc.body)
		var s metav1.Status
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Errorf("reader %s %s: %d, not a Status: %s", tc.method, tc.path, code, body)
			continue
		}
		if code != 403 || s.Code != 403 || s.Reason != metav1.StatusReasonForbidden || s.Message != tc.msg {
			t.Errorf("reader %s %s: %d %q (%s)\nwant 403 %q", tc.method, tc.path, code, s.Message, s.Reason, tc.msg)
		}
	}

	// A writer reaches them: berthd serve opened the image store for them.
	if code, body := writer.curl(t, d.socket, "GET", "/berth/v1/images", ""); code != 200 || strings.TrimSpace(body) != `{"items":[]}` {
		t.Errorf("writer GET /berth/v1/images: %d %s", code, body)
	}

	// Nothing the reader tried took effect; the writer deletes.
	if code, body := writer.curl(t, d.socket, "GET", "/api/v1/namespaces/default/pods/web", ""); code != 200 {
		t.Errorf("pod web after the reader's delete: %d %s", code, body)
	}
	if code, body := writer.curl(t, d.socket, "DELETE", "/api/v1/namespaces/default/pods/web", ""); code != 200 && code != 202 {
		t.Errorf("writer delete pod: %d %s", code, body)
	}

	// Stock kubectl through the HTTPS listener, each user with the
	// kubeconfig the socket gave them.
	kdir := t.TempDir()
	kubeconfig := func(u osUser) string {
		code, body := u.curl(t, d.socket, "GET", "/berth/v1/kubeconfig", "")
		if code != 200 {
			t.Fatalf("kubeconfig for %s: %d %s", u.name, code, body)
		}
		p := filepath.Join(kdir, u.name+".kubeconfig")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kubectl := func(kc string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, stockKubectl, append([]string{"--kubeconfig", kc, "--cache-dir", filepath.Join(kdir, "cache")}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	wkc, rkc := kubeconfig(writer), kubeconfig(reader)
	if !strings.Contains(mustRead(t, wkc), "server: https://"+addr) {
		t.Errorf("writer kubeconfig does not point at https://%s:\n%s", addr, mustRead(t, wkc))
	}
	for _, args := range [][]string{{"get", "pods"}, {"create", "namespace", "x" + sfx}, {"get", "namespace", "x" + sfx}, {"version"}} {
		if out, err := kubectl(wkc, args...); err != nil {
			t.Errorf("writer kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if out, err := kubectl(rkc, "get", "pods"); err != nil {
		t.Errorf("reader kubectl get pods: %v\n%s", err, out)
	}
	// The node keeper wired in berthd serve registers this host: Ready.
	if out, err := kubectl(rkc, "get", "nodes", "--no-headers"); err != nil || !strings.Contains(out, " Ready ") {
		t.Errorf("reader kubectl get nodes: %v\n%s", err, out)
	}
	out, err := kubectl(rkc, "create", "namespace", "y"+sfx)
	want := `Error from server (Forbidden): namespaces is forbidden: User "` + who + `" cannot create resource "namespaces" in API group "" at the cluster scope`
	if err == nil || !strings.Contains(out, want) {
		t.Errorf("reader kubectl create namespace: %v\n%s\nwant %s", err, out, want)
	}
	if out, err := kubectl(rkc, "get", "--raw", "/api/v1/namespaces/default/secrets"); err == nil || !strings.Contains(out, `secrets is forbidden: User "`+who+`" cannot list resource "secrets"`) {
		t.Errorf("reader kubectl get --raw secrets: %v\n%s", err, out)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A configuration key berthd does not know stops it at start, with the
// file and the key named.
func TestUnknownKeyRefused(t *testing.T) {
	bin := binaries(t)
	conf := filepath.Join(t.TempDir(), "berthd.yaml")
	if err := os.WriteFile(conf, []byte("https:\n  enable: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "berthd"), "serve", "--config", conf).CombinedOutput()
	if err == nil || !strings.Contains(string(out), conf) || !strings.Contains(string(out), "field enable not found") {
		t.Errorf("berthd serve with an unknown key: %v\n%s", err, out)
	}
}

// socket.mode 0660: users outside the group cannot even connect; members
// can.
func TestSocketMode0660(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"useradd", "userdel", "groupadd", "groupdel", "setpriv", "curl"} {
		testenv.RequireCommand(t, c)
	}
	sfx := randomSuffix()
	group := "berthg" + sfx
	addGroup(t, group)
	reader := addUser(t, "berthr"+sfx)
	writer := addUser(t, "berthw"+sfx, group)
	d := startDaemon(t, "--socket-group", group, "--socket-mode", "0660")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, stderr, err := reader.as(ctx, nil, "curl", "-sS", "--unix-socket", d.socket, "http://localhost/version")
	// curl words EACCES from connect(2) as exit 7, "Couldn't connect".
	if err == nil || !strings.Contains(stderr, "Couldn't connect") {
		t.Errorf("reader on a 0660 socket: %v %s", err, stderr)
	}
	if code, body := writer.curl(t, d.socket, "GET", "/api/v1/namespaces/default/secrets", ""); code == 403 || code >= 500 {
		t.Errorf("writer on a 0660 socket: %d %s", code, body)
	}
}
