package image

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.yaml.in/yaml/v3"
)

// DefaultRegistriesPath is where berthd reads the registry configuration
// (REGISTRIES.md documents the file).
const DefaultRegistriesPath = "/etc/berth/registries.yaml"

// Defaults of the `defaults:` section. 30s is containerd's dial timeout
// and the connect/header timeout of most clients; three retries with a
// doubling backoff from 500ms ride out a registry restart (0.5+1+2 s)
// without holding a pod's start for long.
const (
	DefaultTimeout = 30 * time.Second
	DefaultRetries = 3
	DefaultBackoff = 500 * time.Millisecond
)

// retryStatusCodes are go-containerregistry's own defaults: request
// timeout, rate limit and the 5xx family a registry behind a proxy answers
// while it restarts.
var retryStatusCodes = []int{
	http.StatusRequestTimeout, http.StatusTooManyRequests,
	http.StatusInternalServerError, http.StatusBadGateway,
	http.StatusServiceUnavailable, http.StatusGatewayTimeout,
	499, 522,
}

// Registries is the parsed registry configuration: how to reach each
// registry (mirrors, plain HTTP, CA, credentials) and the network policy
// (timeout, retries). It is safe for concurrent use.
type Registries struct {
	source   string
	timeout  time.Duration
	retries  int
	backoff  time.Duration
	authFile string // default Docker config.json ("" = anonymous)

	hosts map[string]*registryConfig // by go-containerregistry RegistryStr()

	// dial replaces the TCP dialer (tests map made-up host names onto
	// loopback registries).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// roots replaces the system pool for hosts without a CA of their own
	// (tests trust their TLS servers as if they were publicly trusted).
	roots *x509.CertPool

	mu       sync.Mutex
	implicit map[string]*registryConfig // registries not in the file, made on first use
}

type registryConfig struct {
	origin  *hostConfig
	mirrors []*hostConfig
}

// hostConfig is how to talk to one host (a registry or a mirror).
type hostConfig struct {
	host     string // host[:port] as go-containerregistry spells it
	insecure bool   // plain HTTP allowed
	caFile   string
	pool     *x509.CertPool // system pool plus caFile; nil = system pool
	authFile string         // Docker config.json, "" = anonymous

	once sync.Once
	rt   http.RoundTripper
}

// Endpoint is one place to fetch a repository from: a mirror or the
// origin registry. Options carry the transport (TLS, timeouts, plain-HTTP
// policy), the credentials and the retry policy, but no context: add
// remote.WithContext for each operation.
type Endpoint struct {
	Host     string // "mirror.local:5000", "index.docker.io"
	Mirror   bool
	Insecure bool // configured for plain HTTP
	Options  []remote.Option
}

// The file's schema. yaml.v3 decodes "30s" into a time.Duration and refuses
// a bare number there.
type registriesFile struct {
	Defaults   *defaultsFile           `yaml:"defaults"`
	Auth       string                  `yaml:"auth"`
	Registries map[string]registryFile `yaml:"registries"`
}

type defaultsFile struct {
	Timeout *time.Duration `yaml:"timeout"`
	Retries *int           `yaml:"retries"`
	Backoff *time.Duration `yaml:"backoff"`
}

type hostFile struct {
	Insecure bool   `yaml:"insecure"`
	CA       string `yaml:"ca"`
	Auth     string `yaml:"auth"`
}

type registryFile struct {
	hostFile `yaml:",inline"`
	Mirrors  []mirrorFile `yaml:"mirrors"`
}

type mirrorFile struct {
	Host     string `yaml:"host"`
	hostFile `yaml:",inline"`
}

// DefaultRegistries is the configuration without a file: every registry
// over HTTPS with the system CAs (plain HTTP only on loopback),
// anonymous, no mirrors, default timeout and retries.
func DefaultRegistries() *Registries {
	r, err := ParseRegistries(nil, "defaults")
	if err != nil {
		panic(err) // the empty document always parses
	}
	return r
}

// LoadRegistries reads and parses the file at path. A missing file is an
// error (wrapping fs.ErrNotExist); berthd falls back to DefaultRegistries
// only for the default path.
func LoadRegistries(path string) (*Registries, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("registry configuration: %w", err)
	}
	return ParseRegistries(b, path)
}

// ParseRegistries parses a registries.yaml document; source names it in
// errors. Parsing is strict: unknown keys, keys not spelt in their one
// (lower-case) form, duplicate keys, malformed durations, unreadable CA or
// auth files and invalid host names are errors that name the line. Host
// names are lower-cased, so "Registry.Example" and "registry.example" are
// the same registry (configured twice, an error).
func ParseRegistries(data []byte, source string) (*Registries, error) {
	// fail formats with fmt.Errorf, so that a %w cause (a CA or auth file
	// that cannot be read, say) stays reachable with errors.As.
	fail := func(line int, format string, args ...any) error {
		if line > 0 {
			return fmt.Errorf("registry configuration %s: line %d: "+format, append([]any{source, line}, args...)...)
		}
		return fmt.Errorf("registry configuration %s: "+format, append([]any{source}, args...)...)
	}
	var f registriesFile
	var root yaml.Node
	if len(bytes.TrimSpace(data)) > 0 {
		if err := yaml.Unmarshal(data, &root); err != nil {
			return nil, fail(0, "%w", err)
		}
		// Before decoding, so that "Insecure" is reported as a misspelling
		// of "insecure" rather than as some unknown field.
		if err := checkKeyCase(&root, reflect.TypeOf(f)); err != nil {
			return nil, fail(err.line, "%s", err.msg)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
			return nil, fail(0, "%w", err)
		}
	}
	line := func(path ...string) int { return lineOf(&root, path...) }

	r := &Registries{source: source, timeout: DefaultTimeout, retries: DefaultRetries, backoff: DefaultBackoff,
		hosts: map[string]*registryConfig{}, implicit: map[string]*registryConfig{}}
	if d := f.Defaults; d != nil {
		if d.Timeout != nil {
			if *d.Timeout < time.Millisecond {
				return nil, fail(line("defaults", "timeout"), "defaults.timeout %s: must be at least 1ms", *d.Timeout)
			}
			r.timeout = *d.Timeout
		}
		if d.Retries != nil {
			if *d.Retries < 0 || *d.Retries > 100 {
				return nil, fail(line("defaults", "retries"), "defaults.retries %d: must be 0..100", *d.Retries)
			}
			r.retries = *d.Retries
		}
		if d.Backoff != nil {
			if *d.Backoff < time.Millisecond {
				return nil, fail(line("defaults", "backoff"), "defaults.backoff %s: must be at least 1ms", *d.Backoff)
			}
			r.backoff = *d.Backoff
		}
	}
	if f.Auth != "" {
		if err := checkAuthFile(f.Auth); err != nil {
			return nil, fail(line("auth"), "auth: %w", err)
		}
		r.authFile = f.Auth
	}

	keys := make([]string, 0, len(f.Registries))
	for k := range f.Registries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		rf := f.Registries[key]
		at := func(field ...string) int {
			if l := line(append([]string{"registries", key}, field...)...); l > 0 {
				return l
			}
			return line("registries", key)
		}
		host, err := registryHost(key)
		if err != nil {
			return nil, fail(line("registries", key), "registry %q: %w", key, err)
		}
		if _, dup := r.hosts[host]; dup {
			return nil, fail(line("registries", key), "registry %q: configured twice (as %s)", key, host)
		}
		origin, field, err := r.newHost(host, rf.hostFile)
		if err != nil {
			return nil, fail(at(field), "registry %q: %w", key, err)
		}
		rc := &registryConfig{origin: origin}
		for i, m := range rf.Mirrors {
			item := itemAt(&root, i, "registries", key, "mirrors")
			mline := lineOf(item)
			if m.Host == "" {
				return nil, fail(mline, "registry %q: mirror %d: host is required", key, i+1)
			}
			mh, err := registryHost(m.Host)
			if err != nil {
				return nil, fail(mline, "registry %q: mirror %q: %w", key, m.Host, err)
			}
			hc, field, err := r.newHost(mh, m.hostFile)
			if err != nil {
				if l := lineOf(item, field); l > 0 {
					mline = l
				}
				return nil, fail(mline, "registry %q: mirror %q: %w", key, m.Host, err)
			}
			rc.mirrors = append(rc.mirrors, hc)
		}
		r.hosts[host] = rc
	}
	return r, nil
}

// registryHost validates a registry host[:port] and returns it as
// go-containerregistry names it (docker.io is index.docker.io there), in
// lower case: the key endpoints are looked up by (hostKey).
func registryHost(s string) (string, error) {
	if s == "" || strings.ContainsAny(s, "/@ \t") || strings.Contains(s, "://") {
		return "", fmt.Errorf("not a registry host[:port]")
	}
	reg, err := name.NewRegistry(hostKey(s), name.StrictValidation)
	if err != nil {
		return "", err
	}
	return reg.RegistryStr(), nil
}

// newHost builds a host's settings; on error it also names the field.
func (r *Registries) newHost(host string, hf hostFile) (*hostConfig, string, error) {
	hc := &hostConfig{host: host, insecure: hf.Insecure, authFile: r.authFile}
	if hf.CA != "" {
		pem, err := os.ReadFile(hf.CA)
		if err != nil {
			return nil, "ca", fmt.Errorf("ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "ca", fmt.Errorf("ca %s: no PEM certificate in it", hf.CA)
		}
		hc.caFile, hc.pool = hf.CA, pool
	}
	if hf.Auth != "" {
		if err := checkAuthFile(hf.Auth); err != nil {
			return nil, "auth", fmt.Errorf("auth: %w", err)
		}
		hc.authFile = hf.Auth
	}
	return hc, "", nil
}

// hostKey is a registry host[:port] as configurations are matched: DNS
// names are case-insensitive (RFC 4343), so "Registry.Example" must find
// the settings of "registry.example", not fall back to the defaults.
func hostKey(host string) string { return strings.ToLower(host) }

// keyCaseError is a key of registries.yaml spelt in another case than the
// schema's.
type keyCaseError struct {
	line int
	msg  string
}

// checkKeyCase walks the document against the schema type t and refuses
// every key that matches a field only when letter case is ignored. The
// schema has one spelling per key: yaml.v3 matches exactly, but a decoder
// that folds case (encoding/json, hence sigs.k8s.io/yaml) would take
// "Insecure" for "insecure" and silently merge the two when both are set;
// refusing any other case keeps the file meaning one thing to every tool.
// Unknown keys are left to the strict decoder.
func checkKeyCase(n *yaml.Node, t reflect.Type) *keyCaseError {
	for n != nil && (n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return nil
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n == nil {
		return nil
	}
	switch {
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for _, item := range n.Content {
			if err := checkKeyCase(item, t.Elem()); err != nil {
				return err
			}
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		// Keys of a map (registry hosts) are data, not schema.
		for i := 1; i < len(n.Content); i += 2 {
			if err := checkKeyCase(n.Content[i], t.Elem()); err != nil {
				return err
			}
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" { // a merge key brings in keys of the same schema
				if err := checkKeyCase(v, t); err != nil {
					return err
				}
				continue
			}
			if ft, ok := fields[k.Value]; ok {
				if err := checkKeyCase(v, ft); err != nil {
					return err
				}
				continue
			}
			for name := range fields {
				if strings.EqualFold(name, k.Value) {
					return &keyCaseError{line: k.Line, msg: fmt.Sprintf("key %q: keys are spelt in one case only; write %q", k.Value, name)}
				}
			}
		}
	}
	return nil
}

// yamlFields maps the yaml keys of struct type t (inline structs
// flattened) to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if slices.Contains(strings.Split(opts, ","), "inline") {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // yaml.v3's default key
		}
		out[name] = f.Type
	}
	return out
}

func checkAuthFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := dockerconfig.LoadFromReader(f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// lineOf finds the line of the value at a mapping path in a YAML document
// (0 if absent).
func lineOf(n *yaml.Node, path ...string) int {
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return lineOf(n.Content[0], path...)
	}
	if len(path) == 0 {
		return n.Line
	}
	if n.Kind != yaml.MappingNode {
		return 0
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == path[0] {
			if len(path) == 1 {
				return n.Content[i].Line
			}
			return lineOf(n.Content[i+1], path[1:]...)
		}
	}
	return 0
}

// itemAt finds item i of the sequence at a mapping path (nil if absent).
func itemAt(n *yaml.Node, i int, path ...string) *yaml.Node {
	for n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, p := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == p {
				next = n.Content[j+1]
			}
		}
		n = next
	}
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return nil
	}
	return n.Content[i]
}

// Timeout, Retries and Backoff report the network policy in force.
func (r *Registries) Timeout() time.Duration { return r.timeout }
func (r *Registries) Retries() int           { return r.retries }
func (r *Registries) Backoff() time.Duration { return r.backoff }

// Source names where the configuration came from.
func (r *Registries) Source() string { return r.source }

func (r *Registries) registry(host string) *registryConfig {
	host = hostKey(host)
	if rc, ok := r.hosts[host]; ok {
		return rc
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rc, ok := r.implicit[host]
	if !ok {
		rc = &registryConfig{origin: &hostConfig{host: host, authFile: r.authFile}}
		r.implicit[host] = rc
	}
	return rc
}

// Endpoints lists where repo can be fetched from: the configured mirrors in
// order, then the origin registry (containerd's hosts.toml order).
func (r *Registries) Endpoints(repo name.Repository) []Endpoint {
	rc := r.registry(repo.RegistryStr())
	eps := make([]Endpoint, 0, len(rc.mirrors)+1)
	for _, m := range rc.mirrors {
		eps = append(eps, r.endpoint(m, true))
	}
	return append(eps, r.endpoint(rc.origin, false))
}

// Rebase names repo's path on the endpoint's host: docker.io/library/nginx
// on the mirror "mirror.local:5000" is mirror.local:5000/library/nginx.
func (r *Registries) Rebase(repo name.Repository, ep Endpoint) (name.Repository, error) {
	var opts []name.Option
	if ep.Insecure {
		opts = append(opts, name.Insecure)
	}
	return name.NewRepository(ep.Host+"/"+repo.RepositoryStr(), opts...)
}

func (r *Registries) endpoint(hc *hostConfig, mirror bool) Endpoint {
	opts := []remote.Option{
		remote.WithTransport(r.transport(hc)),
		remote.WithUserAgent("berth"),
		remote.WithRetryBackoff(remote.Backoff{Duration: r.backoff, Factor: 2, Jitter: 0.1, Steps: r.retries + 1}),
		remote.WithRetryStatusCodes(retryStatusCodes...),
		remote.WithRetryPredicate(retryable),
	}
	if hc.authFile != "" {
		opts = append(opts, remote.WithAuthFromKeychain(dockerConfigKeychain{path: hc.authFile}))
	} else {
		opts = append(opts, remote.WithAuth(authn.Anonymous))
	}
	return Endpoint{Host: hc.host, Mirror: mirror, Insecure: hc.insecure, Options: opts}
}

// transport builds (once per host) the HTTP stack under go-containerregistry's
// retry and auth layers: the plain-HTTP policy, the per-request timeout,
// and a TLS configuration with the host's CA added to the system pool.
func (r *Registries) transport(hc *hostConfig) http.RoundTripper {
	hc.once.Do(func() {
		dialer := &net.Dialer{Timeout: r.timeout, KeepAlive: 30 * time.Second}
		dial, proxy := dialer.DialContext, http.ProxyFromEnvironment
		if r.dial != nil {
			dial, proxy = r.dial, nil // tests: every name leads to their registry
		}
		roots := hc.pool
		if roots == nil {
			roots = r.roots // nil: the system pool
		}
		base := &http.Transport{
			Proxy:                 proxy,
			DialContext:           dial,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   50,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   r.timeout,
			ExpectContinueTimeout: time.Second,
			TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		}
		hc.rt = &guardTransport{hc: hc, timeout: r.timeout, inner: base}
	})
	return hc.rt
}

// PlainHTTPError: berth refused to speak plain HTTP to a host, because the
// registry is not configured insecure, or because a redirect led there.
// It is in errdefs' permission-denied class: the policy forbids it.
type PlainHTTPError struct {
	Host string
	// RedirectedFrom is the URL (without its query) whose redirect led to
	// Host, "" if the request was not a redirect.
	RedirectedFrom string
}

func (e *PlainHTTPError) Error() string {
	if e.RedirectedFrom != "" {
		return fmt.Sprintf("plain HTTP to %s refused: redirected there from %s; only a registry configured `insecure: true` may redirect to plain HTTP, and never from HTTPS", e.Host, e.RedirectedFrom)
	}
	return fmt.Sprintf("plain HTTP to %s refused: the registry is not configured `insecure: true` (and is not a loopback registry without a CA)", e.Host)
}

// Forbidden puts the refusal in errdefs' permission-denied class.
func (e *PlainHTTPError) Forbidden() {}

// plainHTTPAllowed decides whether a request to target (host[:port]) may
// go out over plain HTTP; from is the URL whose redirect led to it, nil
// for a request of go-containerregistry's own. go-containerregistry falls
// back to HTTP by itself for loopback, RFC 1918 addresses and *.localhost
// names (name.Registry.Scheme); berth narrows that to what the operator
// configured: hosts marked insecure (with wherever they redirect), and a
// loopback registry without a CA (a CA means TLS is intended) talking to
// loopback — nothing crosses a network there. A redirect from HTTPS to
// plain HTTP is refused unless the registry is insecure: TLS would protect
// the pull up to the redirect and nothing after it, and a remote registry
// could point berth at a plain-HTTP service on the node's own loopback.
// The same holds for a token realm a remote registry names, which is why
// the registry itself, not only the target, must be loopback.
func (hc *hostConfig) plainHTTPAllowed(target string, from *url.URL) bool {
	if hc.insecure {
		return true
	}
	if from != nil && from.Scheme != "http" {
		return false
	}
	return hc.caFile == "" && isLoopback(hc.host) && isLoopback(target)
}

// redirectedFrom returns the URL whose redirect response made req (the
// http.Client sets Request.Response on a redirect, and
// go-containerregistry's transports pass the request on as it is), or nil.
func redirectedFrom(req *http.Request) *url.URL {
	if req.Response == nil {
		return nil
	}
	if req.Response.Request == nil || req.Response.Request.URL == nil {
		return &url.URL{} // a redirect from nowhere known: treat as not plain HTTP
	}
	return req.Response.Request.URL
}

// originalRequest follows redirects back to the request
// go-containerregistry made.
func originalRequest(req *http.Request) *http.Request {
	for req.Response != nil && req.Response.Request != nil {
		req = req.Response.Request
	}
	return req
}

func isLoopback(hostport string) bool {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// guardTransport enforces the plain-HTTP policy and the timeout: a request
// must get its response headers within the timeout, and a body may not
// stall for longer than the timeout between two reads (a whole blob may
// take as long as it needs while bytes flow).
type guardTransport struct {
	hc      *hostConfig
	timeout time.Duration
	inner   http.RoundTripper
}

func (t *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		if from := redirectedFrom(req); !t.hc.plainHTTPAllowed(req.URL.Host, from) {
			if req.Body != nil {
				req.Body.Close()
			}
			pe := &PlainHTTPError{Host: req.URL.Host}
			if from != nil {
				pe.RedirectedFrom = (&url.URL{Scheme: from.Scheme, Host: from.Host, Path: from.Path}).String()
			}
			return nil, pe
		}
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	te := &TimeoutError{Host: req.URL.Host, After: t.timeout}
	timer := time.AfterFunc(t.timeout, func() { cancel(te) })
	resp, err := t.inner.RoundTrip(req.WithContext(ctx))
	if err != nil {
		timer.Stop()
		cause := context.Cause(ctx)
		cancel(nil)
		if cause == te {
			return nil, te
		}
		return nil, err
	}
	resp.Body = &idleBody{rc: resp.Body, ctx: ctx, cancel: cancel, timer: timer, timeout: t.timeout, te: te}
	// Blobs are read no further than their descriptors' sizes (by
	// go-containerregistry and Import). Everything else a registry sends
	// (manifests, indexes, tokens, errors) is read whole into memory, by
	// go-containerregistry up to 100 MiB; cut it at 4 MiB, the manifest
	// limit of containerd and of the distribution registry.
	if !strings.Contains(originalRequest(req).URL.Path, "/blobs/") {
		u := url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path} // no query: it may carry a token
		resp.Body = &cappedBody{rc: resp.Body, left: maxManifestBytes, max: maxManifestBytes, url: u.String()}
	}
	return resp, nil
}

// cappedBody fails a response body that goes on beyond max bytes.
type cappedBody struct {
	rc        io.ReadCloser
	left, max int64
	url       string
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more proves the body is over the limit (not exactly at it).
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, &ResponseTooLargeError{URL: b.url, Max: b.max}
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// ResponseTooLargeError: a registry response other than a blob (a
// manifest, an index, a token) went on beyond the bound berth reads.
type ResponseTooLargeError struct {
	URL string
	Max int64
}

func (e *ResponseTooLargeError) Error() string {
	return fmt.Sprintf("response from %s is larger than %d bytes, the most berth reads of a manifest, index or other non-blob response", e.URL, e.Max)
}

// InvalidParameter puts it in errdefs' invalid-argument class.
func (e *ResponseTooLargeError) InvalidParameter() {}

type idleBody struct {
	rc      io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	timeout time.Duration
	te      *TimeoutError
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.timer.Reset(b.timeout)
	}
	if err != nil && err != io.EOF && context.Cause(b.ctx) == b.te {
		err = b.te
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// TimeoutError: a registry did not answer, or stopped sending, within the
// configured timeout. It is retried like a network error.
type TimeoutError struct {
	Host  string
	After time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s: no response for %s (registries.yaml defaults.timeout)", e.Host, e.After)
}

// Timeout and Temporary make net.Error-style checks (and retries) see it.
func (e *TimeoutError) Timeout() bool   { return true }
func (e *TimeoutError) Temporary() bool { return true }

// retryable decides which failures go-containerregistry's retry transport
// retries: its own choice (temporary errors, including the retried status
// codes, EOFs, resets) plus refused connections and timeouts, so that a
// registry being restarted is waited for. Cancellation, TLS and policy
// errors are final.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *PlainHTTPError
	var rt *ResponseTooLargeError
	if errors.As(err, &pe) || errors.As(err, &rt) {
		return false
	}
	var tmp interface{ Temporary() bool }
	if errors.As(err, &tmp) && tmp.Temporary() {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// dockerConfigKeychain resolves credentials from one Docker config.json
// (the file `docker login` writes; credsStore/credHelpers are honoured as
// Docker does), with the lookup order of go-containerregistry's
// DefaultKeychain: the full repository, then the registry. The file is read
// at each resolution (once per pull and endpoint), so edits apply to the
// next pull.
type dockerConfigKeychain struct{ path string }

func (k dockerConfigKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	f, err := os.Open(k.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("auth file: %w", err)
		}
		return nil, err
	}
	defer f.Close()
	cf, err := dockerconfig.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("auth file %s: %w", k.path, err)
	}
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		ac, err := cf.GetAuthConfig(key)
		if err != nil {
			return nil, fmt.Errorf("auth file %s: %s: %w", k.path, key, err)
		}
		ac.ServerAddress = ""
		if ac.Username != "" || ac.Password != "" || ac.Auth != "" || ac.IdentityToken != "" || ac.RegistryToken != "" {
			return authn.FromConfig(authn.AuthConfig{
				Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
				IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}
