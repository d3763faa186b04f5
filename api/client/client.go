// Package client is the client side of berthd's socket: plain HTTP over the
// Unix socket, a rest.Config that routes client-go (and so the embedded
// kubectl) there, a loopback CONNECT proxy for the streaming verbs whose
// transports ignore a custom Dial, a discovery cache of berth's own, and
// fetching and writing the kubeconfig for stock tools.
package client

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

const (
	// DefaultSocket is where berthd serves its API.
	DefaultSocket = "/run/berth/berth.sock"
	// SocketEnv overrides DefaultSocket; the --socket flag overrides both.
	SocketEnv = "BERTH_SOCKET"

	// Host is the URL clients use for the socket. The Dial (and the
	// streaming proxy) decide where bytes go; the name only has to be one
	// that can never resolve (RFC 2606's .invalid), so that a transport which
	// ignores both fails instead of sending the request to whatever host
	// "berth" names on the user's network. It also keys client-go's discovery
	// cache directory.
	Host = "http://berth.invalid"
	// hostPort is Host as a CONNECT request names it.
	hostPort = "berth.invalid:80"
)

// Socket is the socket path from the environment, else the default.
func Socket() string {
	if s := os.Getenv(SocketEnv); s != "" {
		return s
	}
	return DefaultSocket
}

// DialContext returns a dialer that connects to socket whatever address it is
// asked for: every request of a client built on it goes to berthd.
func DialContext(socket string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 30 * time.Second}
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "unix", socket)
	}
}

// NewHTTPClient is a plain HTTP client for berth's own endpoints on the
// socket (requests name Host).
func NewHTTPClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: DialContext(socket),
		// Never an environment proxy: the socket is local.
		Proxy:               nil,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}}
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// CacheDir is berth's kubectl cache directory for socket (client-go adds
// discovery/ and http/ below it): under $XDG_CACHE_HOME/berth (default
// ~/.cache/berth), one directory per socket, so that what one berthd serves
// is never mixed with another's or with a cluster's ~/.kube/cache.
func CacheDir(socket string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(socket)
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "berth", "kube", unsafeChars.ReplaceAllString(abs, "_")), nil
}
