package httphook

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The lifecycle request as the kubelet's client makes it: path, query and
// headers (User-Agent and Accept defaulted, Host overridable), redirects
// to the same host followed, elsewhere not, any status a success, HTTPS
// without verification, and an HTTPS request to an HTTP server retried in
// HTTP without Authorization.
func TestGet(t *testing.T) {
	type seen struct{ uri, ua, accept, x, host, auth string }
	got := make(chan seen, 10)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.RequestURI, r.UserAgent(), r.Header.Get("Accept"), r.Header.Get("X-A"), r.Host, r.Header.Get("Authorization")}
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, "http://other.invalid/x", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/hop":
			http.Redirect(w, r, "/end?q=1", http.StatusMovedPermanently)
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	plain := httptest.NewServer(mux)
	defer plain.Close()
	secure := httptest.NewTLSServer(mux)
	defer secure.Close()
	port := func(s *httptest.Server) int { p, _ := strconv.Atoi(s.URL[strings.LastIndex(s.URL, ":")+1:]); return p }
	req := func(s *httptest.Server, scheme, path string, hs ...bndl.HTTPHeader) error {
		return Get(context.Background(), &bndl.HTTPHandler{Scheme: scheme, Host: "127.0.0.1", Port: port(s), Path: path, Headers: hs}, nil)
	}
	drain := func() []seen {
		var out []seen
		for {
			select {
			case s := <-got:
				out = append(out, s)
			default:
				return out
			}
		}
	}
	if err := req(plain, "http", "/a?b=c", bndl.HTTPHeader{Name: "X-A", Value: "1"}); err != nil {
		t.Fatal(err)
	}
	if s := drain(); len(s) != 1 || s[0] != (seen{"/a?b=c", "kube-lifecycle/1.37", "*/*", "1", "127.0.0.1:" + strconv.Itoa(port(plain)), ""}) {
		t.Errorf("request %+v", s)
	}
	if err := req(plain, "http", "/", bndl.HTTPHeader{Name: "Host", Value: "example.com"}, bndl.HTTPHeader{Name: "User-Agent", Value: "me"}); err != nil {
		t.Fatal(err)
	}
	if s := drain(); len(s) != 1 || s[0].host != "example.com" || s[0].ua != "me" {
		t.Errorf("overridden headers %+v", s)
	}
	for _, path := range []string{"/fail", "/away"} {
		if err := req(plain, "http", path); err != nil {
			t.Errorf("%s: %v, want success as on the kubelet", path, err)
		}
	}
	drain()
	if err := req(plain, "http", "/hop"); err != nil {
		t.Fatal(err)
	}
	if s := drain(); len(s) != 2 || s[1].uri != "/end?q=1" {
		t.Errorf("redirect not followed: %+v", s)
	}
	if err := req(plain, "http", "/loop"); err == nil || !strings.Contains(err.Error(), "stopped after 10 redirects") {
		t.Errorf("redirect loop: %v", err)
	}
	if n := len(drain()); n != 10 {
		t.Errorf("redirect loop: %d requests, want 10", n)
	}
	if err := req(secure, "https", "/s"); err != nil {
		t.Errorf("https: %v", err)
	}
	if s := drain(); len(s) != 1 || s[0].uri != "/s" {
		t.Errorf("https request %+v", s)
	}
	if err := req(plain, "https", "/fallback", bndl.HTTPHeader{Name: "Authorization", Value: "secret"}); err != nil {
		t.Errorf("https to an http server: %v", err)
	}
	if s := drain(); len(s) != 1 || s[0].uri != "/fallback" || s[0].auth != "" {
		t.Errorf("fallback request %+v", s)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().(*net.TCPAddr)
	l.Close()
	err = Get(context.Background(), &bndl.HTTPHandler{Scheme: "http", Host: "127.0.0.1", Port: addr.Port, Path: "/x"}, nil)
	if want := `Get "http://127.0.0.1:` + strconv.Itoa(addr.Port) + `/x": dial tcp 127.0.0.1:`; err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("refused: %v, want %s…connection refused", err, want)
	}
}

// A hostile pod's server that answers with an endless status line gets a
// bounded read and a short error, not berth-hook's memory.
func TestGetBoundsTheAnswer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line := []byte("HTTP/1.1 " + strings.Repeat("9", 64<<10))
		for range 64 { // 4 MiB without a newline, then hold the connection
			if _, err := c.Write(line); err != nil {
				return
			}
		}
		buf := make([]byte, 1)
		_, _ = c.Read(buf)
	}()
	port := l.Addr().(*net.TCPAddr).Port
	err = Get(context.Background(), &bndl.HTTPHandler{Scheme: "http", Host: "127.0.0.1", Port: port, Path: "/"}, nil)
	if err == nil || !strings.Contains(err.Error(), "malformed HTTP response") || len(err.Error()) > 1024 {
		t.Fatalf("endless status line: %.300v (%d bytes)", err, len(fmt.Sprint(err)))
	}
}
