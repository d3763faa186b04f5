package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

func TestDecodeLogOptions(t *testing.T) {
	since := metav1.NewTime(time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		query string
		want  corev1.PodLogOptions
		err   string
	}{
		{query: "", want: corev1.PodLogOptions{}},
		{query: "container=app&follow=true&previous=1&timestamps=true&tailLines=10&limitBytes=5&sinceSeconds=60",
			want: corev1.PodLogOptions{Container: "app", Follow: true, Previous: true, Timestamps: true,
				TailLines: ptrTo[int64](10), LimitBytes: ptrTo[int64](5), SinceSeconds: ptrTo[int64](60)}},
		{query: "sinceTime=2026-12-02T13:00:00Z&insecureSkipTLSVerifyBackend=true",
			want: corev1.PodLogOptions{SinceTime: &since, InsecureSkipTLSVerifyBackend: true}},
		{query: "follow=false&tailLines=-1", want: corev1.PodLogOptions{TailLines: ptrTo[int64](-1)}},
		{query: "stream=Stdout", want: corev1.PodLogOptions{Stream: ptrTo("Stdout")}},
		{query: "tailLines=ten", err: `strconv.ParseInt: parsing "ten": invalid syntax`},
		// Any value but "0" and "false" is true, as the apiserver reads it.
		{query: "follow=yes&previous=0&timestamps=FALSE", want: corev1.PodLogOptions{Follow: true}},
		{query: "sinceTime=yesterday", err: `parsing time "yesterday"`},
	} {
		q, _ := url.ParseQuery(tc.query)
		var got corev1.PodLogOptions
		err := logParams.DecodeParameters(q, corev1.SchemeGroupVersion, &got)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.query, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.query, err)
		default:
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(tc.want)
			if !bytes.Equal(g, w) {
				t.Errorf("%q: %s, want %s", tc.query, g, w)
			}
		}
	}
}

// logPod is a pod with containers a and b (and an init container), a
// running, b waiting.
func logPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-1"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "x"}},
			Containers:     []corev1.Container{{Name: "a", Image: "x"}, {Name: "b", Image: "x"}},
		},
		Status: corev1.PodStatus{
			InitContainerStatuses: []corev1.ContainerStatus{{Name: "init", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}}},
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "a", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
					LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}},
				{Name: "b", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}},
			},
		},
	}
}

// recordedLogs is the Logs the handler calls: what it was asked, and a
// fixed answer.
type recordedLogs struct {
	container string
	opts      *corev1.PodLogOptions
	out       string
	err       error
	writes    int
}

func (l *recordedLogs) ContainerLogs(_ context.Context, pod *corev1.Pod, container string, opts *corev1.PodLogOptions, w io.Writer) error {
	l.container, l.opts = container, opts
	for _, line := range strings.SplitAfter(l.out, "\n") {
		if line == "" {
			continue
		}
		l.writes++
		if _, err := io.WriteString(w, line); err != nil {
			return err
		}
	}
	return l.err
}

func logServer(t *testing.T, logs Logs) *Server {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := New(st, Options{Logs: logs})
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	srv.kinds["namespaces"].prepare(ns)
	if err := st.Create("namespaces", ns); err != nil {
		t.Fatal(err)
	}
	pod := logPod()
	srv.kinds["pods"].prepare(pod)
	pod.Status = logPod().Status
	if err := st.Create("pods", pod); err != nil {
		t.Fatal(err)
	}
	one := logPod()
	one.Name, one.UID = "one", "uid-2"
	one.Spec.InitContainers, one.Spec.Containers = nil, one.Spec.Containers[:1]
	srv.kinds["pods"].prepare(one)
	one.Status = logPod().Status
	if err := st.Create("pods", one); err != nil {
		t.Fatal(err)
	}
	return srv
}

// getLog calls the handler as routing does for GET .../pods/NAME/log.
func getLog(srv *Server, method, name, query string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/api/v1/namespaces/shop/pods/"+name+"/log?"+query, nil)
	rec := httptest.NewRecorder()
	srv.podLog(rec, req, srv.kinds["pods"], "shop", name)
	return rec
}

func TestPodLog(t *testing.T) {
	logs := &recordedLogs{out: "one\ntwo\n"}
	srv := logServer(t, logs)

	rec := getLog(srv, http.MethodGet, "one", "tailLines=2&timestamps=true")
	if rec.Code != http.StatusOK || rec.Body.String() != "one\ntwo\n" || rec.Header().Get("Content-Type") != "text/plain" {
		t.Errorf("single container: %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	if logs.container != "a" || *logs.opts.TailLines != 2 || !logs.opts.Timestamps {
		t.Errorf("asked for %q %+v", logs.container, logs.opts)
	}
	rec = getLog(srv, http.MethodGet, "web", "container=init&follow=true")
	if rec.Code != http.StatusOK || logs.container != "init" || !logs.opts.Follow || !rec.Flushed {
		t.Errorf("init container, following: %d %q flushed %v", rec.Code, logs.container, rec.Flushed)
	}

	for _, tc := range []struct {
		method, name, query string
		code                int
		msg                 string
	}{
		{"GET", "web", "", 400, "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [init]"},
		{"GET", "web", "container=zz", 400, "container zz is not valid for pod web"},
		{"GET", "web", "container=b", 400, `container "b" in pod "web" is waiting to start: ContainerCreating`},
		{"GET", "web", "container=b&previous=true", 400, `previous terminated container "b" in pod "web" not found`},
		{"GET", "gone", "", 404, `pods "gone" not found`},
		{"GET", "one", "tailLines=-1", 422, `PodLogOptions "one" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0`},
		{"GET", "one", "limitBytes=0", 422, `PodLogOptions "one" is invalid: limitBytes: Invalid value: 0: must be greater than 0`},
		{"GET", "one", "sinceSeconds=0", 422, `PodLogOptions "one" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0`},
		{"GET", "one", "sinceSeconds=5&sinceTime=2026-12-02T13:00:00Z", 422, "PodLogOptions \"one\" is invalid: []: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"},
		{"GET", "one", "stream=Stderr", 422, `PodLogOptions "one" is invalid: stream: Forbidden: may not be specified`},
		{"GET", "one", "tailLines=many", 400, `strconv.ParseInt: parsing "many": invalid syntax`},
		{"PUT", "one", "", 405, `put is not supported on resources of kind "pods/log"`},
	} {
		rec := getLog(srv, tc.method, tc.name, tc.query)
		var st metav1.Status
		_ = json.Unmarshal(rec.Body.Bytes(), &st)
		if rec.Code != tc.code || !strings.Contains(st.Message, tc.msg) || st.Kind != "Status" {
			t.Errorf("%s %s?%s: %d %q, want %d %q", tc.method, tc.name, tc.query, rec.Code, st.Message, tc.code, tc.msg)
		}
	}

	// An error before any output is the request's Status, with the
	// kubelet's text; after output has begun, the stream just ends.
	logs.out, logs.err = "", kubeletRefusal(`previous terminated container "a" in pod "one" not found`)
	if !errdefs.IsInvalidArgument(logs.err) {
		t.Fatal("the refusal is not InvalidArgument")
	}
	rec = getLog(srv, http.MethodGet, "one", "previous=true")
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), `"message":"previous terminated container \"a\" in pod \"one\" not found"`) {
		t.Errorf("refusal of the reader: %d %s", rec.Code, rec.Body)
	}
	logs.out, logs.err = "partial\n", fmt.Errorf("journalctl died")
	if rec = getLog(srv, http.MethodGet, "one", ""); rec.Code != 200 || rec.Body.String() != "partial\n" {
		t.Errorf("error after output: %d %q", rec.Code, rec.Body)
	}
	logs.out, logs.err = "", nil
	if rec = getLog(srv, http.MethodGet, "one", ""); rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "text/plain" {
		t.Errorf("no output: %d %q", rec.Code, rec.Body)
	}
}

// kubeletRefusal is how agent/logs classes the kubelet's refusals.
type kubeletRefusal string

func (e kubeletRefusal) Error() string     { return string(e) }
func (e kubeletRefusal) InvalidParameter() {}

func TestLogStatusError(t *testing.T) {
	pod := logPod()
	set := func(i int, st corev1.ContainerState) { pod.Status.ContainerStatuses[i].State = st }
	for _, tc := range []struct {
		state    corev1.ContainerState
		previous bool
		want     string
	}{
		{corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}, false, ""},
		{corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}, false, ""},
		{corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull"}}, false, `container "b" in pod "web" is waiting to start: image can't be pulled`},
		{corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}, false, `container "b" in pod "web" is waiting to start: trying and failing to pull image`},
		{corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}, false, `container "b" in pod "web" is waiting to start: ContainerCreating`},
		{corev1.ContainerState{}, false, `container "b" in pod "web" is waiting to start - no logs yet`},
		{corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}, true, `previous terminated container "b" in pod "web" not found`},
	} {
		set(1, tc.state)
		err := logStatusError(pod, "b", tc.previous)
		if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && !strings.Contains(got, tc.want)) {
			t.Errorf("%+v previous=%v: %v, want %q", tc.state, tc.previous, err, tc.want)
		}
	}
	if err := logStatusError(pod, "a", true); err != nil {
		t.Errorf("previous of a restarted container: %v", err)
	}
	if err := logStatusError(pod, "x", false); err == nil || !strings.Contains(err.Error(), `container "x" in pod "web" is not available`) {
		t.Errorf("a container without status: %v", err)
	}
}

// Through the router: pods/log is served for GET only, and never touches
// the pod (a PUT or PATCH there is not an update of the pod).
func TestPodLogRoute(t *testing.T) {
	srv := logServer(t, &recordedLogs{out: "one\ntwo\n"})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	resp, err := http.Get(ts.URL + "/api/v1/namespaces/shop/pods/one/log?tailLines=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "one\ntwo\n" {
		t.Errorf("GET pods/one/log: %d %q", resp.StatusCode, body)
	}
	for _, method := range []string{http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodPost} {
		req, _ := http.NewRequest(method, ts.URL+"/api/v1/namespaces/shop/pods/one/log", strings.NewReader(`{"metadata":{"labels":{"x":"y"}}}`))
		req.Header.Set("Content-Type", "application/merge-patch+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s pods/one/log: %d, want 405", method, resp.StatusCode)
		}
	}
	var pod corev1.Pod
	if err := srv.store.Get("pods", "shop", "one", &pod); err != nil || pod.Labels["x"] != "" {
		t.Errorf("the pod after writes to its log: %v %v", pod.Labels, err)
	}
}
