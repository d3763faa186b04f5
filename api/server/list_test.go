package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

// listServer is a server over a real store whose clock stands still a
// day ago, so that ages read the same in two answers.
func listServer(t *testing.T) (*Server, *store.Store) {
	t.Helper()
	day := time.Now().Add(-24 * time.Hour)
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{Now: func() time.Time { return day }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := New(st, Options{NodeName: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	return srv, st
}

func serve(t *testing.T, srv *Server, method, url, accept, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, url, strings.NewReader(body))
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	return rec
}

const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

// oldList is how a list was answered before lists passed stored JSON
// through: every object decoded, then encoded by json.Encoder in a list or
// in the Table that table() builds.
func oldList(t *testing.T, srv *Server, k *kind, ns, query string, table bool) []byte {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/x?"+query, nil)
	ls, fs, err := selectors(r)
	if err != nil {
		t.Fatal(err)
	}
	var raws []json.RawMessage
	var objs []store.Object
	rv, err := srv.store.List(store.Resource(k.resource), ns, func(data []byte) error {
		obj, err := srv.decode(k, data)
		if err != nil {
			return err
		}
		if matches(k, obj, ls, fs) {
			raws, objs = append(raws, data), append(objs, obj)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var v any = struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata"`
		Items           []json.RawMessage `json:"items"`
	}{metav1.TypeMeta{Kind: k.kind + "List", APIVersion: "v1"}, metav1.ListMeta{ResourceVersion: fmt.Sprint(rv)}, raws}
	if raws == nil {
		v = struct {
			metav1.TypeMeta `json:",inline"`
			metav1.ListMeta `json:"metadata"`
			Items           []json.RawMessage `json:"items"`
		}{metav1.TypeMeta{Kind: k.kind + "List", APIVersion: "v1"}, metav1.ListMeta{ResourceVersion: fmt.Sprint(rv)}, make([]json.RawMessage, 0)}
	}
	if table {
		v = srv.table(k, objs, fmt.Sprint(rv), r, true)
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Lists answer exactly what encoding every object again answered: the
// same bytes for a list and a Table (with selectors too), the same
// objects for a Table with includeObject=Object; and a Table follows every
// change of a pod (its cached decoding is per resourceVersion).
func TestListAsStored(t *testing.T) {
	srv, st := listServer(t)
	pods := "/api/v1/namespaces/default/pods"
	for i, body := range []string{
		podJSON,
		// What encoding/json escapes, and more than ASCII.
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"esc","labels":{"app":"esc"},"annotations":{"a":"<b> & \"c\" \u2028 ünï"}},"spec":{"containers":[{"name":"app","image":"busybox"}]}}`,
		// Init containers, a sidecar, readiness gates.
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"init","labels":{"app":"other"}},"spec":{"readinessGates":[{"conditionType":"x/ready"}],` +
			`"initContainers":[{"name":"i","image":"busybox"},{"name":"s","image":"busybox","restartPolicy":"Always"}],"containers":[{"name":"a","image":"busybox"},{"name":"b","image":"busybox"}]}}`,
	} {
		if rec := serve(t, srv, http.MethodPost, pods, "", body); rec.Code != http.StatusCreated {
			t.Fatalf("create %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	// Status as the worker writes it (through Update: the stored JSON is then
	// anyObject's, its keys sorted), a deletion begun on one.
	var p corev1.Pod
	if err := st.Get("pods", "default", "init", &p); err != nil {
		t.Fatal(err)
	}
	ten := metav1.NewTime(time.Now().Add(-10 * time.Minute).Truncate(time.Second))
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.0.7", PodIPs: []corev1.PodIP{{IP: "10.1.0.7"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodInitialized, Status: corev1.ConditionTrue}, {Type: "x/ready", Status: corev1.ConditionTrue}},
		InitContainerStatuses: []corev1.ContainerStatus{{Name: "i", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}},
			{Name: "s", Ready: true, Started: ptrTo(true), RestartCount: 2, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, FinishedAt: ten}}}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "a", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			{Name: "b", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}}
	if err := st.Update("pods", &p, false); err != nil {
		t.Fatal(err)
	}
	if rec := serve(t, srv, http.MethodDelete, pods+"/web", "", ""); rec.Code != http.StatusOK {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(t, srv, http.MethodPost, "/api/v1/namespaces", "", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"empty"}}`); rec.Code != http.StatusCreated {
		t.Fatalf("create namespace: %d %s", rec.Code, rec.Body)
	}

	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "init.1", Namespace: "default"}, InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "init"},
		Reason: "Started", Message: "Started container a", Type: corev1.EventTypeNormal, Count: 2, Source: corev1.EventSource{Component: "kubelet", Host: "node-1"},
		FirstTimestamp: ten, LastTimestamp: ten}
	if err := st.Create("events", ev); err != nil {
		t.Fatal(err)
	}

	check := func(t *testing.T) {
		for _, tc := range []struct {
			k         *kind
			ns, query string
		}{
			{srv.kinds["pods"], "default", ""},
			{srv.kinds["pods"], "", ""},
			{srv.kinds["pods"], "empty", ""},
			{srv.kinds["pods"], "default", "labelSelector=app%3Desc"},
			{srv.kinds["pods"], "default", "fieldSelector=status.phase%3DRunning"},
			{srv.kinds["pods"], "default", "labelSelector=app%3Dnone"},
			{srv.kinds["namespaces"], "", ""},
			{srv.kinds["events"], "", ""},
			{srv.kinds["events"], "default", "fieldSelector=involvedObject.name%3Dinit"},
			{srv.kinds["events.k8s.io/events"], "default", ""},
		} {
			prefix := "/api/v1/"
			if tc.k.group != "" {
				prefix = "/apis/" + tc.k.group + "/" + tc.k.version + "/"
			}
			url := prefix + tc.k.resource
			if tc.ns != "" {
				url = prefix + "namespaces/" + tc.ns + "/" + tc.k.resource
			}
			url += "?" + tc.query
			for _, table := range []bool{false, true} {
				if !table && tc.k.newList != nil {
					continue // converted: not a list of stored JSON
				}
				accept := "application/json"
				if table {
					accept = tableAccept
				}
				rec := serve(t, srv, http.MethodGet, url, accept, "")
				if want := oldList(t, srv, tc.k, tc.ns, tc.query, table); rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), want) {
					t.Errorf("GET %s (Table %v) = %d\n%s\nwant\n%s", url, table, rec.Code, rec.Body, want)
				}
				if rec.Header().Get("Content-Length") != fmt.Sprint(rec.Body.Len()) {
					t.Errorf("GET %s: Content-Length %s for %d bytes", url, rec.Header().Get("Content-Length"), rec.Body.Len())
				}
			}
			// The whole objects in the rows: the same objects (the stored
			// JSON's keys may come in another order).
			rec := serve(t, srv, http.MethodGet, url+"&includeObject=Object", tableAccept, "")
			r := httptest.NewRequest(http.MethodGet, url+"&includeObject=Object", nil)
			var got, want any
			_ = json.Unmarshal(rec.Body.Bytes(), &got)
			_ = json.Unmarshal(oldListObject(t, srv, tc.k, tc.ns, r), &want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("GET %s includeObject=Object =\n%s\nwant\n%v", url, rec.Body, want)
			}
		}
	}
	t.Run("first", check)
	// Cached now: the same again, and after the pod changed.
	t.Run("cached", check)
	p.ResourceVersion = ""
	if err := st.Get("pods", "default", "init", &p); err != nil {
		t.Fatal(err)
	}
	p.Status.ContainerStatuses[1].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	p.Status.ContainerStatuses[1].Ready = true
	if err := st.Update("pods", &p, false); err != nil {
		t.Fatal(err)
	}
	t.Run("changed", check)
	rec := serve(t, srv, http.MethodGet, pods, tableAccept, "")
	var tbl metav1.Table
	if err := json.Unmarshal(rec.Body.Bytes(), &tbl); err != nil {
		t.Fatal(err)
	}
	if len(tbl.Rows) != 3 || tbl.Rows[1].Cells[1] != "3/3" {
		t.Errorf("rows after the change: %+v", tbl.Rows)
	}
	// A pod gone leaves the cache with the next list of its namespace.
	if _, err := st.Delete("pods", "default", "esc", "", ""); err != nil {
		t.Fatal(err)
	}
	t.Run("deleted", check)
	c := srv.kinds["pods"].cache
	c.mu.Lock()
	_, left := c.m["default/esc"]
	c.mu.Unlock()
	if left {
		t.Error("a deleted pod stays cached after a list of its namespace")
	}
}

func oldListObject(t *testing.T, srv *Server, k *kind, ns string, r *http.Request) []byte {
	t.Helper()
	ls, fs, _ := selectors(r)
	var objs []store.Object
	rv, err := srv.store.List(store.Resource(k.resource), ns, func(data []byte) error {
		obj, err := srv.decode(k, data)
		if err == nil && matches(k, obj, ls, fs) {
			objs = append(objs, obj)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(srv.table(k, objs, fmt.Sprint(rv), r, true))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// identity reads what encoding/json wrote, and refuses what it cannot read
// exactly.
func TestIdentity(t *testing.T) {
	for _, tc := range []struct {
		in, key, rv string
		ok          bool
	}{
		{`{"kind":"Pod","metadata":{"name":"a","namespace":"b","resourceVersion":"7"},"spec":{}}`, "b/a", "7", true},
		{`{"data":{"metadata":"{\"resourceVersion\":\"1\"}","x":[1,{"y":"}"}]},"metadata":{"name":"n","resourceVersion":"12"}}`, "/n", "12", true},
		{`{"spec":{"metadata":{"name":"inner","resourceVersion":"1"}},"metadata":{"name":"outer","resourceVersion":"2"}}`, "/outer", "2", true},
		{`{"metadata":{"name":"a\"b","resourceVersion":"1"}}`, "", "", false},
		{`{"metadata":{"name":"a"}}`, "", "", false},
		{`{"metadata":{"name":"a","resourceVersion":"1"}`, "", "", false},
		{`[]`, "", "", false},
		{`{}`, "", "", false},
	} {
		key, rv, ok := identity([]byte(tc.in))
		if key != tc.key || rv != tc.rv || ok != tc.ok {
			t.Errorf("identity(%s) = %q %q %v, want %q %q %v", tc.in, key, rv, ok, tc.key, tc.rv, tc.ok)
		}
	}
}

// itemBuffer joins items with commas across its buffers, whatever their
// sizes.
func TestItemBuffer(t *testing.T) {
	var items [][]byte
	var b itemBuffer
	for i := 0; i < 300; i++ {
		item := bytes.Repeat([]byte{byte('a' + i%26)}, (i*7919)%9000+1)
		items = append(items, item)
		b.add(item)
	}
	if got, want := bytes.Join(b.bufs, nil), bytes.Join(items, []byte{','}); !bytes.Equal(got, want) || b.n != len(want) {
		t.Errorf("joined %d bytes (n %d) in %d buffers, want %d", len(got), b.n, len(b.bufs), len(want))
	}
}
