package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// newTransport is the kubelet's probe transport: no certificate
// verification, no keep-alives (every probe is a new connection), no
// proxy, no compression, the lingering dialer, and the apimachinery
// defaults (HTTP/2 over TLS, handshake timeout).
func newTransport() *http.Transport {
	return utilnet.SetTransportDefaults(&http.Transport{
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the kubelet does not verify probe targets
		DisableKeepAlives:  true,
		Proxy:              http.ProxyURL(nil),
		DisableCompression: true,
		DialContext:        dialer(0).DialContext,
	})
}

// httpRunner is a worker's httpGet state: the request is built once per
// pod IP and reused, as the kubelet's httpProbeRunner does.
type httpRunner struct {
	podIP  string
	req    *http.Request
	client *http.Client
}

func (w *worker) runHTTP(t target, timeout time.Duration) (outcome, string, error) {
	r := w.http
	if r == nil {
		r = &httpRunner{client: &http.Client{Timeout: timeout, Transport: w.m.transport, CheckRedirect: checkRedirect}}
		w.http = r
	}
	if r.req == nil || r.podIP != t.podIP {
		req, err := newHTTPRequest(w.ctx, w.spec.HTTPGet, t.spec, t.podIP)
		if err != nil {
			return outcomeUnknown, "", err
		}
		r.req, r.podIP = req, t.podIP
	}
	return doHTTP(r.client, r.req)
}

// newHTTPRequest is the kubelet's NewRequestForHTTPGetAction.
func newHTTPRequest(ctx context.Context, h *corev1.HTTPGetAction, c *corev1.Container, podIP string) (*http.Request, error) {
	scheme := strings.ToLower(string(h.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	host := h.Host
	if host == "" {
		host = podIP
	}
	port, err := ResolvePort(h.Port, c)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(h.Path)
	if err != nil {
		// A broken path is passed on as it is, as the kubelet does.
		u = &url.URL{Path: h.Path}
	}
	u.Scheme = scheme
	u.Host = net.JoinHostPort(host, strconv.Itoa(port))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	headers := make(http.Header, len(h.HTTPHeaders)+2)
	for _, hh := range h.HTTPHeaders {
		headers.Add(hh.Name, hh.Value)
	}
	if _, ok := headers["User-Agent"]; !ok {
		headers.Set("User-Agent", UserAgent)
	}
	if _, ok := headers["Accept"]; !ok {
		headers.Set("Accept", "*/*")
	} else if headers.Get("Accept") == "" {
		headers.Del("Accept") // overridden with nothing: sent without
	}
	req.Header = headers
	req.Host = headers.Get("Host")
	return req, nil
}

// checkRedirect follows redirects only to the same host, at most 10 (the
// kubelet's RedirectChecker(false)). A redirect elsewhere ends the probe
// with the redirect itself: a success with a warning.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Hostname() != via[0].URL.Hostname() {
		return http.ErrUseLastResponse
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// bodyBufs holds the buffers response bodies are read into.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, maxOutput); return &b }}

// doHTTP is the kubelet's DoHTTPProbe: 200–399 succeeds (300–399, a
// redirect not followed, with a warning), anything else or no answer
// fails. At most 10 KiB of the body is read.
func doHTTP(client *http.Client, req *http.Request) (outcome, string, error) {
	res, err := client.Do(req)
	if err != nil {
		return outcomeFailure, err.Error(), nil
	}
	defer res.Body.Close()
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	n, err := io.ReadFull(res.Body, *bp)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return outcomeFailure, "", err
	}
	if res.StatusCode >= http.StatusOK && res.StatusCode < http.StatusBadRequest {
		if res.StatusCode >= http.StatusMultipleChoices {
			return outcomeWarning, "Probe terminated redirects, Response body: " + string((*bp)[:n]), nil
		}
		return outcomeSuccess, "", nil
	}
	// The body is not in the message, as the kubelet's (kubernetes#99425).
	return outcomeFailure, fmt.Sprintf("HTTP probe failed with statuscode: %d", res.StatusCode), nil
}
