package client

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	gwebsocket "github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/transport/websocket"
)

// fakeServer speaks plain HTTP and both upgrades on a real Unix socket: the
// transport logic is what is under test, not an exec implementation.
type fakeServer struct {
	socket   string
	accepted atomic.Int32 // connections the socket accepted
	mu       sync.Mutex
	upgrades []string // Upgrade header of each upgrade request, in order
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	fs := &fakeServer{socket: filepath.Join(t.TempDir(), "berth.sock")}
	ln, err := net.Listen("unix", fs.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: fs, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			fs.accepted.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return fs
}

func (fs *fakeServer) saw() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]string(nil), fs.upgrades...)
}

func (fs *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := r.Header.Get("Upgrade")
	if up != "" {
		fs.mu.Lock()
		fs.upgrades = append(fs.upgrades, up)
		fs.mu.Unlock()
	}
	switch {
	case strings.EqualFold(up, "websocket"):
		u := gwebsocket.Upgrader{Subprotocols: []string{"v5.channel.k8s.io"}}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	case up != "":
		// Any other protocol (SPDY/3.1, "echo"): 101, then raw echo.
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", up)
		io.Copy(conn, buf)
	default:
		fmt.Fprintf(w, "plain %s %s", r.Host, r.URL.Path)
	}
}

func TestConfigureRoutesPlainRequestsOverDialAndUpgradesThroughProxy(t *testing.T) {
	fs := newFakeServer(t)
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1") // must be ignored
	f := &Flags{Socket: fs.socket}
	cfg := f.Configure(&rest.Config{Host: "https://cluster.example:6443", BearerToken: "secret", TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	defer f.Close()

	// Plain requests: straight to the socket, proxy not even listening.
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(Host + "/api")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "plain berth.invalid /api" {
		t.Errorf("plain request: %q", body)
	}
	if f.proxy.url != nil {
		t.Errorf("proxy started for a plain request")
	}

	// WebSocket (kubectl's first try for exec, attach, cp, port-forward).
	rt, holder, err := websocket.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", Host+"/api/v1/namespaces/default/pods/web/exec", nil)
	ws, err := websocket.Negotiate(rt, holder, req, "v5.channel.k8s.io")
	if err != nil {
		t.Fatalf("websocket through the proxy: %v", err)
	}
	if err := ws.WriteMessage(gwebsocket.BinaryMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "echo:hello" {
		t.Errorf("websocket echo: %q, %v", msg, err)
	}
	ws.Close()
	if f.proxy.url == nil {
		t.Fatal("websocket did not go through the proxy")
	}

	// SPDY (kubectl's fallback).
	srt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest("POST", Host+"/api/v1/namespaces/default/pods/web/exec", nil)
	resp, err = srt.RoundTrip(req)
	if err != nil {
		t.Fatalf("SPDY through the proxy: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("SPDY: %s", resp.Status)
	}
	if conn, err := upgrader.NewConnection(resp); err != nil {
		t.Errorf("SPDY connection: %v", err)
	} else {
		conn.Close()
	}

	if got := fs.saw(); len(got) != 2 || got[0] != "websocket" || got[1] != "SPDY/3.1" {
		t.Errorf("upgrades that reached the socket: %q", got)
	}
}

// connect sends a CONNECT with the given Proxy-Authorization and returns the
// answer's status and the connection.
func connect(t *testing.T, addr, target, auth string) (int, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if auth != "" {
		req += "Proxy-Authorization: " + auth + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, c, br
}

func TestProxyDemandsTokenBeforeTouchingSocket(t *testing.T) {
	fs := newFakeServer(t)
	p := NewProxy(fs.socket)
	defer p.Close()
	u, err := p.Start()
	if err != nil {
		t.Fatal(err)
	}
	if u2, _ := p.Start(); u2 != u {
		t.Errorf("Start twice: two proxies")
	}
	if h, _, _ := net.SplitHostPort(u.Host); h != "127.0.0.1" {
		t.Errorf("proxy listens on %s, not loopback", u.Host)
	}
	tok, _ := u.User.Password()
	if len(tok) < 32 {
		t.Errorf("token %q too short", tok)
	}

	for _, tc := range []struct {
		name, target, auth string
		want               int
	}{
		{"no token", hostPort, "", http.StatusProxyAuthRequired},
		{"wrong token", hostPort, "Basic " + b64("berth:"+strings.Repeat("0", len(tok))), http.StatusProxyAuthRequired},
		{"token as bearer", hostPort, "Bearer " + tok, http.StatusProxyAuthRequired},
		{"other host", "example.com:443", p.auth, http.StatusForbidden},
	} {
		if code, _, _ := connect(t, u.Host, tc.target, tc.auth); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
	if n := fs.accepted.Load(); n != 0 {
		t.Fatalf("refused CONNECTs reached the socket %d times", n)
	}

	code, c, br := connect(t, u.Host, hostPort, p.auth)
	if code != http.StatusOK {
		t.Fatalf("CONNECT with the token: %d", code)
	}
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: berth.invalid\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through the tunnel: %v %v", resp, err)
	}
	io.WriteString(c, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Errorf("bytes through the tunnel: %q %v", got, err)
	}
}

func TestProxyAnswersBadGatewayWhenSocketIsDown(t *testing.T) {
	p := NewProxy(filepath.Join(t.TempDir(), "missing.sock"))
	defer p.Close()
	u, err := p.Start()
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := connect(t, u.Host, hostPort, p.auth); code != http.StatusBadGateway {
		t.Errorf("socket down: %d", code)
	}
}
