package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

type answer struct {
	code   int
	body   []byte
	header http.Header
	status metav1.Status
	pod    corev1.Pod
}

func call(t *testing.T, method, url, contentType, body string) answer {
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
	a := answer{code: resp.StatusCode, header: resp.Header}
	a.body, _ = io.ReadAll(resp.Body)
	_ = json.Unmarshal(a.body, &a.status)
	_ = json.Unmarshal(a.body, &a.pod)
	return a
}

const podJSON = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}},"spec":{"containers":[{"name":"app","image":"busybox"}]}}`

func createPod(t *testing.T, base string) corev1.Pod {
	t.Helper()
	a := call(t, http.MethodPost, base+"/api/v1/namespaces/default/pods", "application/json", podJSON)
	if a.code != 201 {
		t.Fatalf("create: %d %s", a.code, a.body)
	}
	return a.pod
}

// A created pod carries the apiserver's defaults, the binding to this
// node, and its QoS class.
func TestPodDefaults(t *testing.T) {
	ts, _ := newHTTP(t)
	p := createPod(t, ts.URL)
	s, c := p.Spec, p.Spec.Containers[0]
	if s.RestartPolicy != "Always" || s.DNSPolicy != "ClusterFirst" || *s.TerminationGracePeriodSeconds != 30 || s.SchedulerName != "default-scheduler" ||
		!*s.EnableServiceLinks || s.SecurityContext == nil || *s.Priority != 0 || *s.PreemptionPolicy != "PreemptLowerPriority" || s.NodeName == "" {
		t.Errorf("spec defaults: %+v", s)
	}
	if c.ImagePullPolicy != "Always" || c.TerminationMessagePath != "/dev/termination-log" || c.TerminationMessagePolicy != "File" {
		t.Errorf("container defaults: %+v", c)
	}
	if len(s.Tolerations) != 2 || s.Tolerations[0].Key != "node.kubernetes.io/not-ready" || *s.Tolerations[1].TolerationSeconds != 300 {
		t.Errorf("tolerations: %+v", s.Tolerations)
	}
	if p.Status.QOSClass != "BestEffort" || p.Status.Phase != "Pending" {
		t.Errorf("status: %+v", p.Status)
	}
	for img, want := range map[string]corev1.PullPolicy{"busybox": "Always", "busybox:latest": "Always", "busybox:1.36": "IfNotPresent",
		"reg:5000/busybox": "Always", "busybox@sha256:abc": "IfNotPresent", "reg:5000/b:1@sha256:abc": "IfNotPresent"} {
		c := corev1.Container{Image: img}
		defaultContainer(&c, false)
		if c.ImagePullPolicy != want {
			t.Errorf("%s: %s, want %s", img, c.ImagePullPolicy, want)
		}
	}
	gen := strings.Replace(podJSON, `"name":"web"`, `"generateName":"web-"`, 1)
	if a := call(t, http.MethodPost, ts.URL+"/api/v1/namespaces/default/pods", "", gen); a.code != 201 || !strings.HasPrefix(a.pod.Name, "web-") || len(a.pod.Name) != 9 {
		t.Errorf("generateName: %d %s", a.code, a.body)
	}
	if a := call(t, http.MethodPost, ts.URL+"/api/v1/namespaces/default/pods?dryRun=All", "", strings.Replace(podJSON, `"web"`, `"dry"`, 1)); a.code != 201 ||
		call(t, http.MethodGet, ts.URL+"/api/v1/namespaces/default/pods/dry", "", "").code != 404 {
		t.Errorf("dry-run create: %d %s", a.code, a.body)
	}
	g := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"g"},"spec":{"containers":[{"name":"app","image":"i","resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}}`
	if a := call(t, http.MethodPost, ts.URL+"/api/v1/namespaces/default/pods", "", g); a.pod.Status.QOSClass != "Guaranteed" || a.pod.Spec.Containers[0].Resources.Requests.Cpu().String() != "1" {
		t.Errorf("limits only: %d %s", a.code, a.body)
	}
}

// PUT: a stale resourceVersion is the apiserver's Conflict; the spec is
// immutable but for what ValidatePodUpdate allows; the generation follows
// the spec; the status is the status subresource's.
func TestUpdate(t *testing.T) {
	ts, _ := newHTTP(t)
	url := ts.URL + "/api/v1/namespaces/default/pods/web"
	p := createPod(t, ts.URL)
	stale := p.DeepCopy()
	p.Spec.Containers[0].Image = "busybox:2"
	p.Labels["tier"] = "front"
	p.Status.Phase = "Running" // ignored: status is the subresource's
	b, _ := json.Marshal(p)
	a := call(t, http.MethodPut, url, "application/json", string(b))
	if a.code != 200 || a.pod.Generation != 2 || a.pod.Spec.Containers[0].Image != "busybox:2" || a.pod.Labels["tier"] != "front" || a.pod.Status.Phase != "Pending" || a.pod.UID != p.UID {
		t.Fatalf("update: %d %s", a.code, a.body)
	}
	// A label-only change keeps the generation.
	upd := a.pod
	upd.Labels["x"] = "y"
	b, _ = json.Marshal(upd)
	if a := call(t, http.MethodPut, url, "application/json", string(b)); a.code != 200 || a.pod.Generation != 2 {
		t.Errorf("label update: %d generation %d", a.code, a.pod.Generation)
	}
	b, _ = json.Marshal(stale)
	a = call(t, http.MethodPut, url, "application/json", string(b))
	if a.code != 409 || a.status.Reason != metav1.StatusReasonConflict || a.status.Message != `Operation cannot be fulfilled on pods "web": the object has been modified; please apply your changes to the latest version and try again` {
		t.Errorf("stale: %d %s", a.code, a.body)
	}
	stale.ResourceVersion = ""
	stale.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80}}
	b, _ = json.Marshal(stale)
	a = call(t, http.MethodPut, url, "application/json", string(b))
	if a.code != 422 || a.status.Reason != metav1.StatusReasonInvalid || !strings.Contains(a.status.Message, `Pod "web" is invalid: spec: Forbidden: pod updates may not change fields other than `+"`spec.containers[*].image`") ||
		a.status.Details == nil || a.status.Details.Causes[0].Field != "spec" {
		t.Errorf("immutable: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodPut, url, "application/json", strings.Replace(podJSON, `"web"`, `"other"`, 1))
	if a.code != 400 || a.status.Message != "the name of the object (other) does not match the name on the URL (web)" {
		t.Errorf("other name: %d %s", a.code, a.body)
	}
	// The status subresource changes the status only.
	cur := call(t, http.MethodGet, url, "", "").pod
	cur.Status.Phase = "Running"
	cur.Spec.ActiveDeadlineSeconds = ptr(int64(5))
	b, _ = json.Marshal(cur)
	a = call(t, http.MethodPut, url+"/status", "application/json", string(b))
	if a.code != 200 || a.pod.Status.Phase != "Running" || a.pod.Spec.ActiveDeadlineSeconds != nil || a.pod.Generation != cur.Generation {
		t.Errorf("status: %d %s", a.code, a.body)
	}
	// fieldValidation: Warn (the default) answers a Warning header.
	b, _ = json.Marshal(call(t, http.MethodGet, url, "", "").pod)
	withFoo := strings.Replace(string(b), `"spec":{`, `"spec":{"foo":1,`, 1)
	a = call(t, http.MethodPut, url, "application/json", withFoo)
	if a.code != 200 || a.header.Get("Warning") != `299 - "unknown field \"spec.foo\""` {
		t.Errorf("warn: %d %q %s", a.code, a.header.Get("Warning"), a.body)
	}
	a = call(t, http.MethodPut, url+"?fieldValidation=Strict", "application/json", withFoo)
	if a.code != 400 || a.status.Message != `strict decoding error: unknown field "spec.foo"` {
		t.Errorf("strict: %d %s", a.code, a.body)
	}
	if a := call(t, http.MethodPut, url+"?fieldValidation=Bogus", "application/json", podJSON); a.code != 422 {
		t.Errorf("bad fieldValidation: %d %s", a.code, a.body)
	}
}

// Each patch type, on the object and the status, with the apiserver's
// answers for what it refuses.
func TestPatch(t *testing.T) {
	ts, st := newHTTP(t)
	url := ts.URL + "/api/v1/namespaces/default/pods/web"
	p := createPod(t, ts.URL)
	a := call(t, http.MethodPatch, url, "application/strategic-merge-patch+json", `{"metadata":{"labels":{"tier":"front"}},"spec":{"containers":[{"name":"app","image":"busybox:2"}]}}`)
	if a.code != 200 || a.pod.Labels["app"] != "web" || a.pod.Labels["tier"] != "front" || a.pod.Spec.Containers[0].Image != "busybox:2" || a.pod.Spec.Containers[0].Name != "app" || a.pod.Generation != 2 {
		t.Fatalf("strategic: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodPatch, url, "application/merge-patch+json", `{"metadata":{"labels":{"tier":null}}}`)
	if a.code != 200 || a.pod.Labels["tier"] != "" || a.pod.Labels["app"] != "web" {
		t.Errorf("merge: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodPatch, url, "application/json-patch+json", `[{"op":"add","path":"/metadata/annotations","value":{"a":"b"}}]`)
	if a.code != 200 || a.pod.Annotations["a"] != "b" {
		t.Errorf("json: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodPatch, url, "application/json-patch+json", `[{"op":"test","path":"/metadata/name","value":"x"}]`)
	if a.code != 422 {
		t.Errorf("failed test op: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodPatch, url, "application/merge-patch+json", `{"metadata":{"resourceVersion":"`+p.ResourceVersion+`"},"spec":{"activeDeadlineSeconds":10}}`)
	if a.code != 409 {
		t.Errorf("patch with a stale resourceVersion: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodPatch, url, "application/merge-patch+json", `{"spec":{"restartPolicy":"Never"}}`)
	if a.code != 422 || !strings.Contains(a.status.Message, "pod updates may not change fields other than") {
		t.Errorf("immutable by patch: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodPatch, url+"?fieldValidation=Strict", "application/merge-patch+json", `{"spec":{"foo":1}}`)
	if a.code != 422 || !strings.Contains(a.status.Message, `strict decoding error: unknown field "spec.foo"`) {
		t.Errorf("strict patch: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodPatch, url, "application/strategic-merge-patch+json", `{"spec":{"foo":1}}`)
	if a.code != 200 || a.header.Get("Warning") != `299 - "unknown field \"spec.foo\""` {
		t.Errorf("warn patch: %d %q %s", a.code, a.header.Get("Warning"), a.body)
	}
	a = call(t, http.MethodPatch, url+"/status", "application/merge-patch+json", `{"status":{"phase":"Running"},"spec":{"restartPolicy":"Never"}}`)
	if a.code != 200 || a.pod.Status.Phase != "Running" || a.pod.Spec.RestartPolicy != "Always" {
		t.Errorf("status patch: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodPatch, url+"?fieldManager=kubectl", "application/apply-patch+yaml", "apiVersion: v1\nkind: Pod\n")
	if a.code != 415 || a.status.Reason != metav1.StatusReasonUnsupportedMediaType ||
		a.status.Message != "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json" {
		t.Errorf("apply: %d %s", a.code, a.body)
	}
	rv, _ := st.ResourceVersion()
	a = call(t, http.MethodPatch, url+"?dryRun=All", "application/merge-patch+json", `{"metadata":{"labels":{"dry":"run"}}}`)
	if now, _ := st.ResourceVersion(); a.code != 200 || a.pod.Labels["dry"] != "run" || now != rv {
		t.Errorf("dry run: %d rv %d→%d %s", a.code, rv, now, a.body)
	}
	if a := call(t, http.MethodPatch, ts.URL+"/api/v1/namespaces/default/pods/nope", "application/merge-patch+json", `{}`); a.code != 404 || a.status.Message != `pods "nope" not found` {
		t.Errorf("missing: %d %s", a.code, a.body)
	}
}

// Graceful deletion, its shortening, finalizers, preconditions and dry
// runs, as the apiserver's registry does them.
func TestDelete(t *testing.T) {
	ts, st := newHTTP(t)
	base := ts.URL + "/api/v1/namespaces/default/pods"
	url := base + "/web"
	p := createPod(t, ts.URL)
	if a := call(t, http.MethodDelete, url, "application/json", `{"preconditions":{"uid":"nope"}}`); a.code != 409 ||
		a.status.Message != `Operation cannot be fulfilled on Pod "web": the UID in the precondition (nope) does not match the UID in record (`+string(p.UID)+`). The object might have been deleted and then recreated` {
		t.Errorf("uid precondition: %d %s", a.code, a.body)
	}
	if a := call(t, http.MethodDelete, url+"?dryRun=All", "", ""); a.code != 200 || a.pod.DeletionTimestamp == nil {
		t.Errorf("dry run: %d %s", a.code, a.body)
	}
	if a := call(t, http.MethodDelete, url, "application/json", `{"propagationPolicy":"Sideways"}`); a.code != 422 {
		t.Errorf("bad propagationPolicy: %d %s", a.code, a.body)
	}
	// Bound to this node: graceful, with the pod's 30 s.
	a := call(t, http.MethodDelete, url, "application/json", `{"propagationPolicy":"Background"}`)
	if a.code != 200 || a.pod.DeletionTimestamp == nil || *a.pod.DeletionGracePeriodSeconds != 30 || a.pod.Generation != 2 {
		t.Fatalf("graceful: %d %s", a.code, a.body)
	}
	ts1 := a.pod.DeletionTimestamp
	// A longer period changes nothing; a shorter one moves the deadline.
	if a := call(t, http.MethodDelete, url+"?gracePeriodSeconds=60", "", ""); a.code != 200 || *a.pod.DeletionGracePeriodSeconds != 30 {
		t.Errorf("longer: %d %s", a.code, a.body)
	}
	a = call(t, http.MethodDelete, url+"?gracePeriodSeconds=10", "", "")
	if a.code != 200 || *a.pod.DeletionGracePeriodSeconds != 10 || a.pod.DeletionTimestamp.Sub(ts1.Time) != -20*time.Second {
		t.Errorf("shorter: %d %s", a.code, a.body)
	}
	// An update may not undo it.
	cur := a.pod
	cur.DeletionTimestamp, cur.DeletionGracePeriodSeconds = nil, nil
	b, _ := json.Marshal(cur)
	if a := call(t, http.MethodPut, url, "application/json", string(b)); a.code != 200 || a.pod.DeletionTimestamp == nil {
		t.Errorf("update of a terminating pod: %d %s", a.code, a.body)
	}
	// The worker's end of it.
	if err := st.FinishDeletion("pods", "default", "web", p.UID); err != nil {
		t.Fatal(err)
	}
	if a := call(t, http.MethodGet, url, "", ""); a.code != 404 {
		t.Errorf("after FinishDeletion: %d", a.code)
	}

	// --force --grace-period=0: at once.
	createPod(t, ts.URL)
	if a := call(t, http.MethodDelete, url, "application/json", `{"gracePeriodSeconds":0}`); a.code != 200 || a.pod.Name != "web" {
		t.Errorf("forced: %d %s", a.code, a.body)
	}
	if a := call(t, http.MethodGet, url, "", ""); a.code != 404 {
		t.Errorf("after a forced delete: %d", a.code)
	}
	// Finished pods go at once.
	createPod(t, ts.URL)
	call(t, http.MethodPatch, url+"/status", "application/merge-patch+json", `{"status":{"phase":"Succeeded"}}`)
	if a := call(t, http.MethodDelete, url, "", ""); a.code != 200 || call(t, http.MethodGet, url, "", "").code != 404 {
		t.Errorf("succeeded pod: %d %s", a.code, a.body)
	}

	// Finalizers: the delete marks, the update that empties them removes.
	withFin := strings.Replace(podJSON, `"labels"`, `"finalizers":["example.com/keep"],"labels"`, 1)
	if a := call(t, http.MethodPost, base, "", withFin); a.code != 201 {
		t.Fatalf("create: %d %s", a.code, a.body)
	}
	if a := call(t, http.MethodDelete, url, "application/json", `{"gracePeriodSeconds":0}`); a.code != 200 || a.pod.DeletionTimestamp == nil || *a.pod.DeletionGracePeriodSeconds != 0 {
		t.Fatalf("delete with a finalizer: %d %s", a.code, a.body)
	}
	if a := call(t, http.MethodPatch, url, "application/merge-patch+json", `{"metadata":{"finalizers":["example.com/keep","example.com/new"]}}`); a.code != 422 {
		t.Errorf("new finalizer on a deleting object: %d %s", a.code, a.body)
	}
	if a := call(t, http.MethodPatch, url, "application/merge-patch+json", `{"metadata":{"finalizers":null}}`); a.code != 200 {
		t.Errorf("remove the finalizer: %d %s", a.code, a.body)
	}
	if a := call(t, http.MethodGet, url, "", ""); a.code != 404 {
		t.Errorf("after the last finalizer: %d %s", a.code, a.body)
	}
}

// deletecollection deletes what the selectors match.
func TestDeleteCollection(t *testing.T) {
	ts, _ := newHTTP(t)
	base := ts.URL + "/api/v1/namespaces/default/pods"
	for _, n := range []string{"a", "b", "c"} {
		lbl := "x"
		if n == "c" {
			lbl = "z"
		}
		body := strings.NewReplacer(`"web"`, `"`+n+`"`, `"app":"web"`, `"app":"`+lbl+`"`).Replace(podJSON)
		if a := call(t, http.MethodPost, base, "", body); a.code != 201 {
			t.Fatal(a.code)
		}
	}
	a := call(t, http.MethodDelete, base+"?labelSelector=app%3Dx", "application/json", `{"gracePeriodSeconds":0}`)
	var list corev1.PodList
	if err := json.Unmarshal(a.body, &list); a.code != 200 || err != nil || len(list.Items) != 2 || list.Kind != "PodList" {
		t.Fatalf("deletecollection: %d %s", a.code, a.body)
	}
	json.Unmarshal(call(t, http.MethodGet, base, "", "").body, &list)
	if len(list.Items) != 1 || list.Items[0].Name != "c" {
		t.Errorf("left: %+v", list.Items)
	}
}

// Watch bookmarks (allowWatchBookmarks) and watch-list (sendInitialEvents
// with its initial-events-end bookmark); a selector's transitions.
func TestWatchBookmarksAndWatchList(t *testing.T) {
	defer func(d time.Duration) { bookmarkInterval = d }(bookmarkInterval)
	bookmarkInterval = 50 * time.Millisecond
	ts, _ := newHTTP(t)
	base := ts.URL + "/api/v1/namespaces/default/pods"
	createPod(t, ts.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(query string) (*bufio.Scanner, func()) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"?watch=1&"+query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("watch %s: %v %v", query, err, resp.Status)
		}
		return bufio.NewScanner(resp.Body), func() { resp.Body.Close() }
	}
	next := func(sc *bufio.Scanner) (string, corev1.Pod) {
		t.Helper()
		if !sc.Scan() {
			t.Fatalf("watch ended: %v", sc.Err())
		}
		var ev struct {
			Type   string
			Object corev1.Pod
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		return ev.Type, ev.Object
	}
	sc, done := open("sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
	if typ, p := next(sc); typ != "ADDED" || p.Name != "web" {
		t.Errorf("initial event %s %s", typ, p.Name)
	}
	if typ, p := next(sc); typ != "BOOKMARK" || p.Annotations[metav1.InitialEventsAnnotationKey] != "true" || p.ResourceVersion != "2" || p.Kind != "Pod" {
		t.Errorf("end of initial events: %s %+v", typ, p.ObjectMeta)
	}
	if typ, p := next(sc); typ != "BOOKMARK" || p.ResourceVersion != "2" || len(p.Annotations) != 0 {
		t.Errorf("periodic bookmark: %s %+v", typ, p.ObjectMeta)
	}
	done()
	if code, st := do(t, http.MethodGet, base+"?watch=1&sendInitialEvents=true", "", ""); code != 422 || st.Reason != metav1.StatusReasonInvalid {
		t.Errorf("watch-list without NotOlderThan: %d %s", code, st.Message)
	}

	// status.phase=Pending: the pod leaves the selection when it runs.
	sc, done = open("resourceVersion=2&fieldSelector=status.phase%3DPending")
	defer done()
	call(t, http.MethodPatch, base+"/web/status", "application/merge-patch+json", `{"status":{"phase":"Running"}}`)
	if typ, p := next(sc); typ != "DELETED" || p.Status.Phase != "Running" {
		t.Errorf("leaving the selection: %s %s", typ, p.Status.Phase)
	}
	_ = store.Bookmark
}

// A JSON patch that doubles the object with each copy is refused before it
// exhausts memory, and no patch stores an object larger than a body.
func TestJSONPatchCopiesBounded(t *testing.T) {
	ts, _ := newHTTP(t)
	if code, st := do(t, "POST", ts.URL+"/api/v1/namespaces/default/configmaps", "application/json",
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"a":"`+strings.Repeat("x", 1<<20)+`"}}`); code != 201 {
		t.Fatalf("create: %d %s", code, st.Message)
	}
	var ops []string
	for i := 0; i < 40; i++ {
		ops = append(ops, fmt.Sprintf(`{"op":"copy","from":"/data/a","path":"/data/b%d"}`, i))
	}
	code, st := do(t, "PATCH", ts.URL+"/api/v1/namespaces/default/configmaps/big", "application/json-patch+json", "["+strings.Join(ops, ",")+"]")
	if code < 400 || code >= 500 {
		t.Fatalf("a patch copying 40 MiB: %d %s", code, st.Message)
	}
	code, _ = do(t, "GET", ts.URL+"/api/v1/namespaces/default/configmaps/big", "", "")
	if code != 200 {
		t.Errorf("the object after the refused patch: %d", code)
	}
}
