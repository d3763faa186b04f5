package registrytest

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Proxy is a plain-HTTP reverse proxy on a loopback port in front of a
// registry: it records every request, and hooks let a test answer requests
// itself (a registry that is down or returns 5xx) or change responses (a
// corrupted or stalled blob). Registry-built URLs keep pointing at the
// proxy, since the Host header is passed through.
type Proxy struct {
	Host string // "127.0.0.1:<port>"
	URL  string // "http://127.0.0.1:<port>"

	mu   sync.Mutex
	reqs []string
}

// ProxyOptions are the proxy's hooks; nil hooks pass everything through.
type ProxyOptions struct {
	// Intercept answers a request itself when it returns true.
	Intercept func(w http.ResponseWriter, r *http.Request) bool
	// ModifyResponse may change the upstream's response (wrap its Body).
	ModifyResponse func(*http.Response) error
}

// NewProxy starts a proxy to upstream (the registry's URL) until the test
// ends. Requests are recorded before the hooks run.
func NewProxy(t testing.TB, upstream *Registry, o ProxyOptions) *Proxy {
	t.Helper()
	target, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport:      upstream.Transport(),
		ModifyResponse: o.ModifyResponse,
		ErrorLog:       log.New(io.Discard, "", 0), // aborted copies are what tests provoke
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs = append(p.reqs, r.Method+" "+r.URL.Path)
		p.mu.Unlock()
		if o.Intercept != nil && o.Intercept(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		// Stalled requests would keep Close waiting: cut them first.
		srv.CloseClientConnections()
		srv.Close()
	})
	p.URL = srv.URL
	p.Host = strings.TrimPrefix(srv.URL, "http://")
	return p
}

// Requests returns "METHOD /path" of every request so far.
func (p *Proxy) Requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.reqs...)
}

// Count returns how many requests so far had a path containing substr
// ("" counts all).
func (p *Proxy) Count(substr string) int {
	n := 0
	for _, r := range p.Requests() {
		if strings.Contains(r, substr) {
			n++
		}
	}
	return n
}

// IsBlob reports whether r fetches the blob with this digest.
func IsBlob(r *http.Request, digest string) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+digest)
}

// BodyWrapper replaces a response body.
type BodyWrapper func(resp *http.Response, body io.ReadCloser) io.ReadCloser

// WrapBody replaces resp's body with wrap's.
func WrapBody(resp *http.Response, wrap BodyWrapper) {
	resp.Body = wrap(resp, resp.Body)
}

// FlipByte returns a body wrapper that inverts the byte at offset off.
func FlipByte(off int64) BodyWrapper {
	return func(_ *http.Response, rc io.ReadCloser) io.ReadCloser { return &flipper{rc: rc, at: off} }
}

type flipper struct {
	rc io.ReadCloser
	n  int64
	at int64
}

func (f *flipper) Read(b []byte) (int, error) {
	n, err := f.rc.Read(b)
	if f.at >= f.n && f.at < f.n+int64(n) {
		b[f.at-f.n] ^= 0xff
	}
	f.n += int64(n)
	return n, err
}

func (f *flipper) Close() error { return f.rc.Close() }

// StallAfter returns a body wrapper that passes n bytes, then closes
// stalled (once per wrapper, so use one per request) and blocks until the
// client goes away or the proxy shuts down.
func StallAfter(n int64, stalled chan<- struct{}) BodyWrapper {
	var once sync.Once
	return func(resp *http.Response, rc io.ReadCloser) io.ReadCloser {
		return &staller{rc: rc, left: n, stalled: stalled, once: &once, done: resp.Request.Context().Done()}
	}
}

type staller struct {
	rc      io.ReadCloser
	left    int64
	stalled chan<- struct{}
	once    *sync.Once
	done    <-chan struct{} // the request's context: the client left
}

func (s *staller) Read(b []byte) (int, error) {
	if s.left <= 0 {
		s.once.Do(func() { close(s.stalled) })
		<-s.done
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(b)) > s.left {
		b = b[:s.left]
	}
	n, err := s.rc.Read(b)
	s.left -= int64(n)
	return n, err
}

func (s *staller) Close() error { return s.rc.Close() }
