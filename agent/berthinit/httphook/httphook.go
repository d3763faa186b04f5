// Package httphook is the httpGet lifecycle hook, as the kubelet's
// runHTTPHandler makes it: linked into berth-hook only, so that berth-init,
// which runs at every container start, links neither package net nor
// crypto/tls (their initialisation made every exec of it milliseconds
// slower; test/deptest holds the line).
package httphook

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// Target opens the network namespace of the container the hook is for
// (an fd the caller hands over), ok false when it has none of its own
// (host network).
type Target func() (netns int, ok bool, err error)

// hookUserAgent is the kubelet's for lifecycle requests (pkg/probe/http
// userAgent("lifecycle")), of the Kubernetes version berth's API serves.
const hookUserAgent = "kube-lifecycle/1.37"

// maxRedirects is the kubelet's (and net/http's) bound on redirects.
const maxRedirects = 10

// Get is the kubelet's runHTTPHandler: a GET from the host with the
// kubelet's lifecycle client: no certificate verification, no proxy,
// redirects followed only to the same host and at most 10 (a redirect
// elsewhere is the answer), and an HTTPS request answered in HTTP retried
// in HTTP without its Authorization header. Any answer is a success: the
// kubelet does not look at a hook's status code (kubernetes#56963).
//
// The request is HTTP/1.1 written here over package net rather than with
// net/http: berth-init runs at every container start, and linking net/http
// with crypto/x509 made every exec of it about 3 ms slower, for a request
// that needs none of it (one GET, "Connection: close", the answer's status
// line and headers).
func Get(ctx context.Context, g *bndl.HTTPHandler, target Target) error {
	host, dial, err := hookHost(g.Host, target)
	if err != nil {
		return err
	}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	u, perr := url.Parse(g.Path)
	if perr != nil {
		// A broken path is passed on as it is, as the kubelet does.
		u = &url.URL{Path: g.Path}
	}
	u.Scheme = g.Scheme
	u.Host = net.JoinHostPort(host, strconv.Itoa(g.Port))
	var headers [][2]string
	has := map[string]bool{}
	for _, hh := range g.Headers {
		headers = append(headers, [2]string{hh.Name, hh.Value})
		has[strings.ToLower(hh.Name)] = true
	}
	if !has["user-agent"] {
		headers = append(headers, [2]string{"User-Agent", hookUserAgent})
	}
	if !has["accept"] {
		headers = append(headers, [2]string{"Accept", "*/*"})
	}
	err = get(ctx, dial, u, headers)
	if err != nil && u.Scheme == "https" && errors.Is(err, errHTTPAnswer) {
		plain := *u
		plain.Scheme = "http"
		var noAuth [][2]string
		for _, h := range headers {
			if !strings.EqualFold(h[0], "Authorization") {
				noAuth = append(noAuth, h)
			}
		}
		if get(ctx, dial, &plain, noAuth) == nil {
			fmt.Fprintf(os.Stderr, "berth-hook: request to HTTPS lifecycle hook %s got HTTP response, retry with HTTP succeeded\n", u.Host)
			err = nil
		}
	}
	return err
}

// maxAnswerHead bounds what is read of an answer: its status line and
// headers (the body is not read).
const maxAnswerHead = 1 << 20

// clip cuts text of the answer quoted in an error to 256 bytes.
func clip(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}

// errHTTPAnswer: a TLS handshake that got an HTTP answer (net/http's
// "server gave HTTP response to HTTPS client").
var errHTTPAnswer = errors.New("server gave HTTP response to HTTPS client")

// get requests u and follows redirects as httpGet says; errors read like
// net/http's (`Get "<url>": <cause>`).
func get(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), u *url.URL, headers [][2]string) error {
	for redirects := 0; ; redirects++ {
		loc, err := getOnce(ctx, dial, u, headers)
		if err != nil {
			return fmt.Errorf("Get %q: %w", u.String(), err)
		}
		if loc == "" {
			return nil
		}
		next, err := u.Parse(loc)
		if err != nil {
			return fmt.Errorf("Get %q: failed to parse Location header %q: %w", u.String(), loc, err)
		}
		if next.Hostname() != u.Hostname() {
			return nil // the kubelet's RedirectChecker(false): the redirect is the answer
		}
		if redirects+1 >= maxRedirects {
			return fmt.Errorf("Get %q: stopped after %d redirects", next.String(), maxRedirects)
		}
		if next.Scheme != "http" && next.Scheme != "https" {
			return nil
		}
		u = next
	}
}

// getOnce makes one request and returns the Location of a redirect the
// client follows (net/http's: 301, 302, 303, 307, 308), else "".
func getOnce(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), u *url.URL, headers [][2]string) (string, error) {
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if u.Scheme == "https" {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname()}) //nolint:gosec // the kubelet does not verify hook targets
		if err := tc.HandshakeContext(ctx); err != nil {
			if rh := (tls.RecordHeaderError{}); errors.As(err, &rh) && looksLikeHTTP(rh.RecordHeader[:]) {
				return "", errHTTPAnswer
			}
			return "", err
		}
		conn = tc
	}
	host := u.Host
	var b strings.Builder
	for _, h := range headers {
		if strings.EqualFold(h[0], "Host") {
			host = h[1] // as net/http's req.Host
		}
	}
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), host)
	for _, h := range headers {
		if strings.EqualFold(h[0], "Host") || strings.EqualFold(h[0], "Connection") || (strings.EqualFold(h[0], "Accept") && h[1] == "") {
			continue // an Accept overridden with nothing is not sent
		}
		if strings.ContainsAny(h[0]+h[1], "\r\n") {
			return "", fmt.Errorf("invalid header field %q", h[0])
		}
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", err
	}
	// The pod's server is not trusted: what is read of its answer is
	// bounded (net/http's client reads at most 10 MB of headers), and what
	// of it reaches the failure record is cut short.
	br := bufio.NewReaderSize(io.LimitReader(conn, maxAnswerHead), 4096)
	status, err := br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("malformed HTTP response: %w", err)
	}
	f := strings.Fields(status)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return "", fmt.Errorf("malformed HTTP response %q", clip(strings.TrimSpace(status)))
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		return "", fmt.Errorf("malformed HTTP status code %q", clip(f[1]))
	}
	var loc string
	for n := 0; ; n++ {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("malformed MIME header: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if n > 1000 {
			return "", errors.New("too many header lines")
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Location") {
			loc = strings.TrimSpace(v)
		}
	}
	switch code {
	case 301, 302, 303, 307, 308:
		return loc, nil
	}
	return "", nil
}

// looksLikeHTTP is net/http's check of a TLS record header that is the
// start of an HTTP answer.
func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "HTTP/", "http/":
		return true
	}
	return false
}

// hookHost is where a hook's request goes. A host given (or resolved by
// berthd: a host-network pod's node address) is dialled from the host. An
// empty one is the pod's address, as the kubelet's: berth-init reads it
// from the network namespace of the container's process when the hook
// runs, which is also when the pod network has surely attached it; the
// first global address, IPv4 before IPv6 (a CNI bridge's eth0), is dialled
// from the host. A pod without one (berth without a pod network: loopback
// only, which a kubelet never has) is reached on its own loopback, dialled
// inside its namespace; a host-network pod without a node address berthd
// knew, on the node's loopback.
func hookHost(host string, target Target) (string, func(ctx context.Context, network, addr string) (net.Conn, error), error) {
	if host != "" {
		return host, nil, nil
	}
	netns, ok, err := target()
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return "127.0.0.1", nil, nil // the node's network namespace
	}
	var addrs []net.Addr
	err = inNetns(netns, func() error {
		var err error
		addrs, err = net.InterfaceAddrs()
		return err
	})
	if err != nil {
		unix.Close(netns)
		return "", nil, fmt.Errorf("the pod's address: %w", err)
	}
	if ip := podAddress(addrs); ip != "" {
		unix.Close(netns)
		return ip, nil, nil
	}
	// netns stays open until the hook's process exits.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(netns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return "127.0.0.1", dial, nil
}

// podAddress picks the pod's address from its interfaces' addresses: the
// first global unicast IPv4 address, else IPv6; "" if it has none.
func podAddress(addrs []net.Addr) string {
	var v6 string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			return n.IP.String()
		}
		if v6 == "" {
			v6 = n.IP.String()
		}
	}
	return v6
}

// inNetns runs f on a thread of its own that joined the network namespace
// netns (an fd): sockets f makes belong to it. The thread is never given
// back (Go retires it with the goroutine), so no other goroutine runs there.
func inNetns(netns int, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(netns, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("join the pod's network namespace: %w", err)
			return
		}
		done <- f()
	}()
	return <-done
}
