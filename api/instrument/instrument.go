// Package instrument counts the API's requests for Prometheus (agent/exporter.Own
// observes them), in the apiserver's terms: verb, resource, status code.
package instrument

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/berth-dev/berth/api/authz"
)

// Observer counts the API's requests (agent/exporter.Own).
type Observer interface {
	// APIRequest is one request answered: its verb and resource in the
	// apiserver's terms (resource with its subresource, "pods/log"; the
	// path's first part for a non-resource request), its status code,
	// and how long it took; longRunning for a watch, logs or a stream,
	// whose duration is the client's.
	APIRequest(verb, resource string, code int, took time.Duration, longRunning bool)
}

// Handler wraps the API's handler (authorization included, so that
// refusals count) with obs.
func Handler(next http.Handler, obs Observer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		ri := authz.Parse(r)
		res, long := ri.Resource, false
		if !ri.IsResourceRequest {
			res = nonResource(ri.Path)
		} else if ri.Subresource != "" {
			res += "/" + ri.Subresource
		}
		switch {
		case ri.Verb == "watch", ri.Subresource == "log", ri.Subresource == "exec", ri.Subresource == "attach", ri.Subresource == "portforward":
			long = true
		}
		obs.APIRequest(ri.Verb, res, rec.code, time.Since(start), long)
	})
}

// nonResource is a bounded label for a non-resource path: its first part
// ("/openapi/v3/apis/apps/v1" → "/openapi"), so that no caller can make
// a new series per path.
func nonResource(p string) string {
	if len(p) <= 1 {
		return "/"
	}
	for i := 1; i < len(p); i++ {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return p
}

// statusRecorder keeps the status code and passes on what streaming
// handlers need of the writer (Flush, Hijack).
type statusRecorder struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := s.ResponseWriter.(http.Hijacker); ok {
		s.code, s.wrote = http.StatusSwitchingProtocols, true
		return h.Hijack()
	}
	return nil, nil, errors.New("hijack: the response writer cannot")
}

// Unwrap lets http.ResponseController reach the writer beneath.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
