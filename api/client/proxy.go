package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Proxy carries the streaming verbs (exec, attach, cp, port-forward) to the
// socket. client-go's SPDY and WebSocket transports dial TCP themselves and
// ignore rest.Config.Dial (kubernetes#129915), but both honour
// rest.Config.Proxy and open an HTTP CONNECT tunnel through it, for plain
// http:// targets too. So the rest.Config keeps Host and its Dial, and
// ProxyFunc sends only upgrade requests to a CONNECT proxy on 127.0.0.1 that
// splices each tunnel onto a new socket connection.
//
// A tunnel carries bytes, not HTTP, so one proxy serves SPDY and WebSocket
// alike; the Host (and so the discovery cache) stays the same whatever the
// verb; and ordinary requests never touch it. The proxy listens only once a
// streaming transport asks for it and lives as long as the command.
//
// Any local user can reach a loopback port, so the proxy demands a random
// token (the password of the proxy URL's userinfo, which both transports send
// as Proxy-Authorization: Basic) before it dials the socket: without it, a
// user could borrow this process's peer credentials at berthd.
type Proxy struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu   sync.Mutex
	url  *url.URL
	auth string // the Proxy-Authorization value that admits a client
	ln   net.Listener
	srv  *http.Server
	err  error
}

// proxyUser is the user name in the proxy URL; only the token is secret.
const proxyUser = "berth"

// NewProxy returns a proxy to socket; it listens on first use.
func NewProxy(socket string) *Proxy {
	return &Proxy{dial: DialContext(socket)}
}

// ProxyFunc is a rest.Config.Proxy (and http.Transport.Proxy): upgrade
// requests go through the loopback proxy, started on the first; every other
// request gets nil, no proxy, and goes through the config's Dial.
func (p *Proxy) ProxyFunc(req *http.Request) (*url.URL, error) {
	if req.Header.Get("Upgrade") == "" {
		return nil, nil
	}
	return p.Start()
}

// Start listens on 127.0.0.1 on a free port, once, and returns the proxy's
// URL with its token.
func (p *Proxy) Start() (*url.URL, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.url != nil || p.err != nil {
		return p.url, p.err
	}
	var tok [32]byte
	if _, err := rand.Read(tok[:]); err != nil {
		p.err = fmt.Errorf("streaming proxy token: %w", err)
		return nil, p.err
	}
	token := hex.EncodeToString(tok[:])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.err = fmt.Errorf("streaming proxy: %w", err)
		return nil, p.err
	}
	p.ln = ln
	p.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(proxyUser+":"+token))
	p.url = &url.URL{Scheme: "http", User: url.UserPassword(proxyUser, token), Host: ln.Addr().String()}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed on Close
	return p.url, nil
}

// Close stops listening. Tunnels already spliced end with their connections.
func (p *Proxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv == nil {
		return nil
	}
	return p.srv.Close()
}

// ServeHTTP answers CONNECT berth.invalid:80 from a client with the token by
// splicing the connection onto the socket.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Proxy-Authorization")), []byte(p.auth)) != 1 {
		w.Header().Set("Proxy-Authenticate", `Basic realm="berth"`)
		http.Error(w, "berth streaming proxy: wrong or missing token", http.StatusProxyAuthRequired)
		return
	}
	if r.Method != http.MethodConnect {
		http.Error(w, "berth streaming proxy: only CONNECT", http.StatusMethodNotAllowed)
		return
	}
	if r.Host != hostPort {
		http.Error(w, "berth streaming proxy: only "+hostPort, http.StatusForbidden)
		return
	}
	up, err := p.dial(r.Context(), "unix", "")
	if err != nil {
		http.Error(w, "berth streaming proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "berth streaming proxy: cannot hijack", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	if _, err := io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		up.Close()
		down.Close()
		return
	}
	splice(down, buf.Reader, up)
}

// splice copies both ways until either side ends, then closes both: SPDY
// and WebSocket frame their own streams' ends, so a TCP half-close carries
// nothing they need, and a tunnel must not outlive either of its ends.
func splice(down net.Conn, downBuf *bufio.Reader, up net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		// What the client sent after CONNECT may already sit in the buffer.
		_, _ = io.Copy(up, downBuf)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(down, up)
		done <- struct{}{}
	}()
	<-done
	down.Close()
	up.Close()
	<-done
}
