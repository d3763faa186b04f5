package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

// fuzzContentTypes are the bodies the handlers decode, and some they do
// not.
var fuzzContentTypes = []string{
	"application/json", "application/yaml", protobufType, "application/merge-patch+json",
	"application/strategic-merge-patch+json", "application/json-patch+json", "application/apply-patch+yaml",
	"", "text/plain",
}

// FuzzHandlers sends arbitrary bodies, content types and write options to
// create, update and patch (object and status) and delete: the answer is
// never a 5xx nor a panic, and a 4xx stores nothing (the store's
// resourceVersion does not move). Run it bounded:
//
//	go test -run '^$' -fuzz FuzzHandlers -fuzztime 30s ./api/server
func FuzzHandlers(f *testing.F) {
	st, err := store.Open(filepath.Join(f.TempDir(), "state.db"), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	srv, err := New(st, Options{NodeName: "node1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(0), uint8(0), false, "", []byte(podJSON))
	f.Add(uint8(1), uint8(0), false, "fieldValidation=Strict", []byte(podJSON))
	f.Add(uint8(2), uint8(4), false, "", []byte(`{"spec":{"containers":[{"name":"app","image":"x"}]}}`))
	f.Add(uint8(2), uint8(5), true, "", []byte(`[{"op":"replace","path":"/status/phase","value":"Running"}]`))
	f.Add(uint8(2), uint8(3), false, "dryRun=All", []byte(`{"metadata":{"finalizers":["a/b"]}}`))
	f.Add(uint8(3), uint8(0), false, "", []byte(`{"gracePeriodSeconds":0,"preconditions":{"uid":"x"}}`))
	f.Add(uint8(0), uint8(1), false, "", []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: y}\nspec: {containers: [{name: a, image: b}]}\n"))
	f.Fuzz(func(t *testing.T, method, ctype uint8, status bool, query string, body []byte) {
		// The object the writes aim at, recreated when a fuzzed delete took it.
		if err := st.Get("pods", "default", "web", &corev1.Pod{}); err != nil {
			p := &corev1.Pod{}
			if err := decodeJSON([]byte(podJSON), p); err != nil {
				t.Fatal(err)
			}
			p.Namespace = "default"
			p.Spec.NodeName = "node1"
			if err := st.Create("pods", p); err != nil {
				t.Fatal(err)
			}
		}
		url := "/api/v1/namespaces/default/pods/web"
		if status {
			url += "/status"
		}
		var m string
		switch method % 4 {
		case 0:
			m, url = http.MethodPost, "/api/v1/namespaces/default/pods"
		case 1:
			m = http.MethodPut
		case 2:
			m = http.MethodPatch
		case 3:
			m = http.MethodDelete
			if status {
				url = "/api/v1/namespaces/default/pods"
			}
		}
		req, err := http.NewRequest(m, url+"?"+query, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		req.Header.Set("Content-Type", fuzzContentTypes[int(ctype)%len(fuzzContentTypes)])
		before, _ := st.ResourceVersion()
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		after, _ := st.ResourceVersion()
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", m, url, req.Header.Get("Content-Type"), rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			if after != before {
				t.Fatalf("%s %s: %d but the store changed (%d → %d)", m, url, rec.Code, before, after)
			}
			var s metav1.Status
			if err := decodeJSON(rec.Body.Bytes(), &s); err != nil || s.Kind != "Status" || int(s.Code) != rec.Code {
				t.Fatalf("%s %s: %d without a Status: %s", m, url, rec.Code, rec.Body)
			}
		}
	})
}

func decodeJSON(b []byte, v any) error { return json.Unmarshal(b, v) }
