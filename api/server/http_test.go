package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/admission"
	"github.com/berth-dev/berth/agent/store"
)

// newHTTP serves the API over a fresh store on a loopback port, with the
// namespace deleter running.
func newHTTP(t *testing.T) (*httptest.Server, *store.Store) {
	t.Helper()
	srv, st, ts := newHTTPServer(t)
	runNamespaces(t, srv)
	return ts, st
}

// newHTTPServer is newHTTP without the namespace deleter (tests that run
// it themselves, or play what happens without it).
func newHTTPServer(t *testing.T) (*Server, *store.Store, *httptest.Server) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// Admission as berthd wires it: every create goes through it.
	srv, err := New(st, Options{Admission: admission.New(st, admission.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return srv, st, ts
}

// runNamespaces runs the namespace deleter until the test ends (before
// the store closes: cleanups run last-in first-out).
func runNamespaces(t *testing.T, srv *Server) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.RunNamespaces(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func do(t *testing.T, method, url, contentType, body string) (int, metav1.Status) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st metav1.Status
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &st)
	return resp.StatusCode, st
}

// Bad input gets the apiserver's 4xx and nothing is stored.
func TestBadInput(t *testing.T) {
	ts, _ := newHTTP(t)
	pods := ts.URL + "/api/v1/namespaces/default/pods"
	for _, tc := range []struct {
		name, url, body string
		code            int
		reason          metav1.StatusReason
		msg             string
	}{
		{"broken JSON", pods, `{"metadata":`, 400, metav1.StatusReasonBadRequest, "unexpected end of JSON input"},
		{"unknown field, strict", pods + "?fieldValidation=Strict", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"i"}]},"spek":1}`, 400, metav1.StatusReasonBadRequest, `strict decoding error: unknown field "spek"`},
		{"duplicate field, strict", pods + "?fieldValidation=Strict", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","name":"b"},"spec":{"containers":[{"name":"c","image":"i"}]}}`, 400, metav1.StatusReasonBadRequest, `strict decoding error: duplicate field "metadata.name"`},
		{"wrong kind", pods, `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}`, 400, metav1.StatusReasonBadRequest, "does not match"},
		{"no containers", pods, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{}}`, 422, metav1.StatusReasonInvalid, `Pod "a" is invalid: spec.containers: Required value`},
		{"oversized", pods, `{"metadata":{"name":"` + strings.Repeat("a", maxBody) + `"}}`, 413, metav1.StatusReasonRequestEntityTooLarge, "limit is"},
		{"unknown resource", ts.URL + "/api/v1/namespaces/default/widgets", `{}`, 404, metav1.StatusReasonNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, st := do(t, http.MethodPost, tc.url, "application/json", tc.body)
			if code != tc.code || st.Reason != tc.reason || !strings.Contains(st.Message, tc.msg) || st.Kind != "Status" {
				t.Errorf("= %d %s %q, want %d %s %q", code, st.Reason, st.Message, tc.code, tc.reason, tc.msg)
			}
		})
	}
	resp, err := http.Get(pods)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"items":[]`) {
		t.Errorf("something was stored: %s", b)
	}
}

// A watch resumes from a resourceVersion the store still has, answers 410
// Gone for one it has not, and 422 for a watch-list request without
// allowWatchBookmarks, as the apiserver (watch-list itself: verbs_test.go).
func TestWatchResumeAndGone(t *testing.T) {
	ts, _ := newHTTP(t)
	pods := ts.URL + "/api/v1/namespaces/default/pods"
	body := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"NAME"},"spec":{"containers":[{"name":"c","image":"i"}]}}`
	for _, n := range []string{"a", "b"} {
		if code, st := do(t, http.MethodPost, pods, "application/json", strings.Replace(body, "NAME", n, 1)); code != 201 {
			t.Fatalf("create %s: %d %s", n, code, st.Message)
		}
	}
	// A plain list passes both through, with the list's resourceVersion.
	resp0, err := http.Get(pods)
	if err != nil {
		t.Fatal(err)
	}
	var list corev1.PodList
	err = json.NewDecoder(resp0.Body).Decode(&list)
	resp0.Body.Close()
	if err != nil || list.Kind != "PodList" || list.ResourceVersion != "3" || len(list.Items) != 2 || list.Items[1].Name != "b" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	// Namespace default is rv 1, pod a rv 2, b rv 3: from rv 2, b is replayed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, pods+"?watch=1&resourceVersion=2", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ev metav1.WatchEvent
	if err := json.NewDecoder(resp.Body).Decode(&ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "ADDED" || !strings.Contains(string(ev.Object.Raw), `"name":"b"`) {
		t.Errorf("replayed %s %s", ev.Type, ev.Object.Raw)
	}
	if code, st := do(t, http.MethodGet, pods+"?watch=1&resourceVersion=1&timeoutSeconds=1", "", ""); code != 200 {
		t.Errorf("resume from rv 1: %d %s", code, st.Message)
	}
	if code, st := do(t, http.MethodGet, pods+"?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", "", ""); code != 422 || st.Reason != metav1.StatusReasonInvalid {
		t.Errorf("watch-list: %d %s %s", code, st.Reason, st.Message)
	}
	if code, st := do(t, http.MethodGet, pods+"?watch=1&resourceVersion=x", "", ""); code != 400 {
		t.Errorf("bad rv: %d %s", code, st.Message)
	}
}

// kubectl get -w prints the Table rows of changes as they happen. No
// sleep is needed: kubectl watches from the resourceVersion of its list, so
// a pod created right after the list is delivered even if the watch request
// arrives later.
func TestStockKubectlWatch(t *testing.T) {
	k, st := newKubectl(t)
	newPod := func(name string) {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
		p.Status.Phase = corev1.PodPending
		if err := st.Create("pods", p); err != nil {
			t.Fatal(err)
		}
	}
	newPod("a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, stockKubectl, "--kubeconfig", k.kubeconfig, "--cache-dir", k.cache, "get", "pods", "-n", "default", "-w")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(out)
	await := func(prefix string) string {
		t.Helper()
		for lines.Scan() {
			if strings.HasPrefix(lines.Text(), prefix) {
				return lines.Text()
			}
		}
		t.Fatalf("kubectl get -w ended before a line starting %q: %v", prefix, lines.Err())
		return ""
	}
	await("NAME ")
	await("a ")
	newPod("b")
	if row := await("b "); !strings.Contains(row, "0/1") || !strings.Contains(row, "Pending") {
		t.Errorf("watched row %q", row)
	}
}

// Deleting a namespace deletes every object in it: recreating the
// namespace must not bring back its Secrets, ConfigMaps or Events.
func TestNamespaceDeletionTakesEverything(t *testing.T) {
	ts, st := newHTTP(t)
	for _, c := range []struct{ path, body string }{
		{"/api/v1/namespaces", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team"}}`},
		{"/api/v1/namespaces/team/secrets", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db"},"stringData":{"p":"x"}}`},
		{"/api/v1/namespaces/team/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},"data":{"a":"b"}}`},
		{"/api/v1/namespaces/team/pods", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x"}]}}`},
		{"/api/v1/namespaces/team/events", `{"apiVersion":"v1","kind":"Event","metadata":{"name":"e"},"involvedObject":{"kind":"Pod","name":"p","namespace":"team"},"reason":"R","message":"m","type":"Normal"}`},
	} {
		if code, st := do(t, "POST", ts.URL+c.path, "application/json", c.body); code != 201 {
			t.Fatalf("create %s: %d %s", c.path, code, st.Message)
		}
	}
	finishDeletions(t, st)
	if code, st := do(t, "DELETE", ts.URL+"/api/v1/namespaces/team", "", ""); code != 200 {
		t.Fatalf("delete namespace: %d %s", code, st.Message)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if code, _ := do(t, "GET", ts.URL+"/api/v1/namespaces/team", "", ""); code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("namespace team still there after 30 s")
		}
	}
	if code, st := do(t, "POST", ts.URL+"/api/v1/namespaces", "application/json", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team"}}`); code != 201 {
		t.Fatalf("recreate namespace: %d %s", code, st.Message)
	}
	for _, p := range []string{"secrets/db", "configmaps/cfg", "events/e", "pods/p"} {
		if code, _ := do(t, "GET", ts.URL+"/api/v1/namespaces/team/"+p, "", ""); code != 404 {
			t.Errorf("%s survived its namespace: %d", p, code)
		}
	}
}
