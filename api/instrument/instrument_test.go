package instrument

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

type call struct {
	verb, resource string
	code           int
	long           bool
}

type recorder struct{ calls []call }

func (r *recorder) APIRequest(verb, resource string, code int, took time.Duration, longRunning bool) {
	r.calls = append(r.calls, call{verb, resource, code, longRunning})
}

// Requests are counted in the apiserver's terms, with the code the
// handler wrote (200 when it wrote none), and a bounded label for paths
// that are not resources.
func TestHandler(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		code         int
		want         call
	}{
		{"GET", "/api/v1/namespaces/default/pods", 200, call{"list", "pods", 200, false}},
		{"GET", "/api/v1/namespaces/default/pods?watch=true", 200, call{"watch", "pods", 200, true}},
		{"POST", "/api/v1/namespaces/default/pods", 403, call{"create", "pods", 403, false}},
		{"GET", "/api/v1/namespaces/default/pods/web/log", 200, call{"get", "pods/log", 200, true}},
		{"PATCH", "/apis/apps/v1/namespaces/shop/deployments/web/scale", 0, call{"patch", "deployments/scale", 200, false}},
		{"GET", "/openapi/v3/apis/apps/v1", 200, call{"get", "/openapi", 200, false}},
		{"GET", "/metrics", 200, call{"get", "/metrics", 200, false}},
	} {
		rec := &recorder{}
		h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tc.code != 0 {
				w.WriteHeader(tc.code)
			}
			_, _ = w.Write([]byte("x"))
		}), rec)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, tc.path, nil))
		if len(rec.calls) != 1 || rec.calls[0] != tc.want {
			t.Errorf("%s %s: %+v, want %+v", tc.method, tc.path, rec.calls, tc.want)
		}
	}
}

// A streaming handler still reaches Flush and Hijack through the wrapper.
func TestWriterPassesThrough(t *testing.T) {
	var flushed, hijackable bool
	h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, hijackable = w.(http.Hijacker)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
			flushed = true
		}
	}), &recorder{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/pods?watch=1", nil))
	if !flushed || !hijackable || !rec.Flushed {
		t.Errorf("flushed %v (recorder %v), hijacker %v", flushed, rec.Flushed, hijackable)
	}
}
