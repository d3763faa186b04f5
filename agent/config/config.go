// Package config is berthd's configuration file, /etc/berth/berthd.yaml:
// its schema, its defaults and its checks. Every key is documented here, in
// packaging/berthd.yaml (the example the packages install) and in
// docs/berthd.md; a key berthd does not know is refused rather than
// ignored, so that a typo cannot silently leave a setting at its default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"go.yaml.in/yaml/v3"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/verify"
)

// DefaultPath is where berthd reads its configuration.
const DefaultPath = "/etc/berth/berthd.yaml"

// Config is berthd.yaml. The yaml tags are the keys.
type Config struct {
	// StateDir holds the persistent state: state.db (desired state), the
	// image store, pods' bundles, the PKI of the HTTPS listener.
	StateDir string `yaml:"stateDir"`
	// RunDir holds volatile state (pinned pod namespaces).
	RunDir string `yaml:"runDir"`
	// Socket is the API's Unix socket.
	Socket Socket `yaml:"socket"`
	// HTTPS is the loopback HTTPS listener for stock kubectl.
	HTTPS HTTPS `yaml:"https"`
	// NodeName is this node's name in the API (empty: the host name).
	NodeName string `yaml:"nodeName"`
	// LogLevel is trace, debug, info, warn or error.
	LogLevel string `yaml:"logLevel"`
	// Init is the berth-init binary (empty: next to berthd, else
	// /usr/libexec/berth/berth-init).
	Init string `yaml:"init"`
	// Policy is the trust policy (containers-policy.json(5)); absent file:
	// every image is rejected.
	Policy string `yaml:"policy"`
	// Registries is the registry configuration (mirrors, CAs, credentials).
	Registries string `yaml:"registries"`
	// PidsLimit is each container's TasksMax (<= 0: unlimited).
	PidsLimit int64 `yaml:"pidsLimit"`
	// AllowPrivileged allows securityContext.privileged.
	AllowPrivileged bool `yaml:"allowPrivileged"`
	// ShutdownTimeout bounds how long berthd waits for open requests
	// (watches included) on SIGTERM before closing them.
	ShutdownTimeout time.Duration `yaml:"shutdownTimeout"`
	// Network is the pod network and pods' DNS.
	Network Network `yaml:"network"`
	// Volumes is the policy for pods' volumes.
	Volumes Volumes `yaml:"volumes"`
	// Metrics is usage collection and the Prometheus endpoint.
	Metrics Metrics `yaml:"metrics"`
}

// Metrics is usage collection (metrics.k8s.io, /metrics on the socket)
// and the optional TCP listener for a Prometheus elsewhere.
type Metrics struct {
	// Interval between usage collection cycles (the kubelet's cAdvisor
	// housekeeping: 10s); kubectl top's figures are rates over it.
	Interval time.Duration `yaml:"interval"`
	// Listen is host:port of a listener serving /metrics only; empty:
	// none (the default: /metrics is on the socket).
	Listen string `yaml:"listen"`
	// BearerTokenFile holds the token a scraper must send
	// (Authorization: Bearer, Prometheus' authorization.credentials_file).
	BearerTokenFile string `yaml:"bearerTokenFile"`
	// TLSCertFile and TLSKeyFile serve the listener over TLS.
	TLSCertFile string `yaml:"tlsCertFile"`
	TLSKeyFile  string `yaml:"tlsKeyFile"`
	// ClientCAFile requires scrapers' client certificates signed by it
	// (needs TLS).
	ClientCAFile string `yaml:"clientCAFile"`
	// RemoteWrite pushes the same series to Prometheus remote write
	// receivers.
	RemoteWrite RemoteWrite `yaml:"remoteWrite"`
}

// RemoteWrite is where /metrics' series are pushed, every interval.
type RemoteWrite struct {
	// ExternalLabels are added to every series sent (node=<node name>
	// always is, unless set here).
	ExternalLabels map[string]string `yaml:"externalLabels"`
	// QueueDir holds each endpoint's queue of batches (empty:
	// <stateDir>/remote-write).
	QueueDir string `yaml:"queueDir"`
	// Endpoints are the receivers.
	Endpoints []RemoteEndpoint `yaml:"endpoints"`
}

// DefaultQueueMaxBytes bounds an endpoint's queue unless it says
// otherwise: at 10 s intervals, hours of a node's series.
const DefaultQueueMaxBytes = 256 << 20

// RemoteEndpoint is one receiver.
type RemoteEndpoint struct {
	URL string `yaml:"url"`
	// BearerTokenFile holds a token sent as Authorization: Bearer.
	BearerTokenFile string `yaml:"bearerTokenFile"`
	// CAFile verifies the receiver's certificate (empty: the system's
	// roots); CertFile and KeyFile are a client certificate.
	CAFile   string `yaml:"caFile"`
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	// QueueMaxBytes bounds the batches kept on disk while the receiver is
	// unreachable (0: DefaultQueueMaxBytes); past it the oldest go.
	QueueMaxBytes int64 `yaml:"queueMaxBytes"`
	// Labels are added to this endpoint's series only.
	Labels map[string]string `yaml:"labels"`
}

// Volumes is the policy for pods' volumes.
type Volumes struct {
	// HostPathPrefixes are the host directories hostPath volumes may name
	// (the directory or anything below it, after resolving symlinks).
	// Empty: every hostPath volume is refused.
	HostPathPrefixes []string `yaml:"hostPathPrefixes"`
}

// Network is the pod network (CNI) and the node's resolver for pods.
type Network struct {
	// CNIConfDir holds the pod network's CNI configuration: the first
	// *.conflist in lexical order. berthd writes its default network
	// (a bridge on 10.85.0.0/16) there when the directory has none.
	CNIConfDir string `yaml:"cniConfDir"`
	// CNIPluginDirs are searched for CNI plugins.
	CNIPluginDirs []string `yaml:"cniPluginDirs"`
	// ResolvConf is the node's resolver configuration pods with dnsPolicy
	// Default start from, and where the cluster DNS forwards names outside
	// the cluster domain to. When it names only systemd-resolved's stub
	// (127.0.0.53, which a pod cannot reach),
	// /run/systemd/resolve/resolv.conf is used.
	ResolvConf string `yaml:"resolvConf"`
	// ServiceCIDR is the IPv4 range Services' cluster IPs are allocated
	// from (the apiserver's --service-cluster-ip-range).
	ServiceCIDR string `yaml:"serviceCIDR"`
	// NodePortRange is the range NodePort Services' ports are allocated
	// from, "first-last" (the apiserver's --service-node-port-range).
	NodePortRange string `yaml:"nodePortRange"`
	// ClusterDNS is the address of the node's cluster DNS, inside
	// ServiceCIDR and never given to a Service: pods with dnsPolicy
	// ClusterFirst resolve Services' names there (the kubelet's
	// --cluster-dns). Empty: no cluster DNS; such pods use the node's
	// resolvers, with the kubelet's MissingClusterDNS warning.
	ClusterDNS string `yaml:"clusterDNS"`
}

// Node is the node's name: NodeName, else the host name.
func (c Config) Node() (string, error) {
	if c.NodeName != "" {
		return c.NodeName, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("node name: %w", err)
	}
	return h, nil
}

// ClusterDNSAddr parses ClusterDNS; the zero Addr when it is empty.
func (n Network) ClusterDNSAddr() (netip.Addr, error) {
	if n.ClusterDNS == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(n.ClusterDNS)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address", n.ClusterDNS)
	}
	if p, err := n.ServiceRange(); err == nil && (!p.Contains(a) || a == p.Addr()) {
		return netip.Addr{}, fmt.Errorf("%s is not an address of serviceCIDR %s", a, p)
	}
	return a, nil
}

// ServiceRange parses ServiceCIDR: an IPv4 range from /8 to /30.
func (n Network) ServiceRange() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(n.ServiceCIDR)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR range", n.ServiceCIDR)
	}
	if !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("%q: want an IPv4 range from /8 to /30", n.ServiceCIDR)
	}
	return p.Masked(), nil
}

// NodePorts parses NodePortRange into its first port and its size.
func (n Network) NodePorts() (base, size int, err error) {
	var first, last int
	if _, err := fmt.Sscanf(n.NodePortRange, "%d-%d", &first, &last); err != nil || fmt.Sprintf("%d-%d", first, last) != n.NodePortRange ||
		first < 1 || last > 65535 || last < first {
		return 0, 0, fmt.Errorf("%q is not a port range first-last within 1-65535", n.NodePortRange)
	}
	return first, last - first + 1, nil
}

// Socket is the Unix socket's placement and permissions.
type Socket struct {
	// Path of the socket; its directory is created 0755.
	Path string `yaml:"path"`
	// Group owns the socket (empty: root's group). Members of it, and root,
	// may do everything through the socket; see docs/berthd.md.
	Group string `yaml:"group"`
	// Mode is the socket's file mode, octal. The default 0666 lets every
	// local user connect and read what api/authz allows them (peer
	// credentials are the gate, as with Tailscale's local API); 0660 shuts
	// out everyone outside Group.
	Mode string `yaml:"mode"`
}

// HTTPS is the loopback listener with client-certificate authentication.
type HTTPS struct {
	// Enabled turns the listener on.
	Enabled bool `yaml:"enabled"`
	// Address to listen on: a loopback IP and a port.
	Address string `yaml:"address"`
}

// Default is the configuration with no file.
func Default() Config {
	return Config{
		StateDir:        "/var/lib/berth",
		RunDir:          "/run/berth",
		Socket:          Socket{Path: "/run/berth/berth.sock", Group: "berth", Mode: "0666"},
		HTTPS:           HTTPS{Enabled: false, Address: "127.0.0.1:6443"},
		LogLevel:        "info",
		Policy:          verify.DefaultPolicyPath,
		Registries:      image.DefaultRegistriesPath,
		PidsLimit:       4096,
		ShutdownTimeout: 10 * time.Second,
		Network: Network{
			CNIConfDir:    "/etc/berth/cni",
			CNIPluginDirs: []string{"/usr/lib/cni", "/usr/libexec/cni", "/opt/cni/bin"},
			ResolvConf:    "/etc/resolv.conf",
			ServiceCIDR:   "10.86.0.0/16",
			NodePortRange: "30000-32767",
			ClusterDNS:    "10.86.0.10",
		},
		Volumes: Volumes{HostPathPrefixes: []string{}},
		Metrics: Metrics{Interval: 10 * time.Second, RemoteWrite: RemoteWrite{ExternalLabels: map[string]string{}, Endpoints: []RemoteEndpoint{}}},
	}
}

// Load reads path over the defaults. A missing file is the defaults when
// mustExist is false (the default path on a host without one); unknown
// keys, a second document and bad values are errdefs.ErrInvalidArgument
// naming the file.
func Load(path string, mustExist bool) (Config, error) {
	c := Default()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !mustExist {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read configuration: %w", err)
	}
	if err := Parse(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes data over c (which holds the defaults) and checks it.
func Parse(data []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && err != io.EOF {
		return fmt.Errorf("%w: %s", errdefs.ErrInvalidArgument, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra any
	if err := dec.Decode(&extra); err != io.EOF {
		return fmt.Errorf("%w: one YAML document expected", errdefs.ErrInvalidArgument)
	}
	return c.Validate()
}

// Validate checks values a YAML type cannot.
func (c *Config) Validate() error {
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", errdefs.ErrInvalidArgument, key, fmt.Sprintf(format, a...))
	}
	for key, p := range map[string]string{"stateDir": c.StateDir, "runDir": c.RunDir, "socket.path": c.Socket.Path,
		"network.cniConfDir": c.Network.CNIConfDir} {
		if !strings.HasPrefix(p, "/") {
			return bad(key, "%q is not an absolute path", p)
		}
	}
	if _, err := c.Socket.FileMode(); err != nil {
		return bad("socket.mode", "%v", err)
	}
	switch strings.ToLower(c.LogLevel) {
	case "trace", "debug", "info", "warn", "error":
	default:
		return bad("logLevel", "%q is not one of trace, debug, info, warn, error", c.LogLevel)
	}
	if len(c.Network.CNIPluginDirs) == 0 {
		return bad("network.cniPluginDirs", "empty: no CNI plugin could be found")
	}
	for _, d := range c.Network.CNIPluginDirs {
		if !strings.HasPrefix(d, "/") {
			return bad("network.cniPluginDirs", "%q is not an absolute path", d)
		}
	}
	for _, d := range c.Volumes.HostPathPrefixes {
		if !strings.HasPrefix(d, "/") || d == "/" {
			return bad("volumes.hostPathPrefixes", "%q is not an absolute path below /", d)
		}
	}
	if p := c.Network.ResolvConf; p != "" && !strings.HasPrefix(p, "/") {
		return bad("network.resolvConf", "%q is not an absolute path", p)
	}
	if _, err := c.Network.ServiceRange(); err != nil {
		return bad("network.serviceCIDR", "%v", err)
	}
	if _, err := c.Network.ClusterDNSAddr(); err != nil {
		return bad("network.clusterDNS", "%v", err)
	}
	if _, _, err := c.Network.NodePorts(); err != nil {
		return bad("network.nodePortRange", "%v", err)
	}
	if c.ShutdownTimeout <= 0 {
		return bad("shutdownTimeout", "%v is not positive", c.ShutdownTimeout)
	}
	if c.HTTPS.Enabled {
		if err := CheckLoopback(c.HTTPS.Address); err != nil {
			return bad("https.address", "%v", err)
		}
	}
	return c.Metrics.validate(bad)
}

func (m Metrics) validate(bad func(key, format string, a ...any) error) error {
	if m.Interval < time.Second {
		return bad("metrics.interval", "%v is shorter than 1s", m.Interval)
	}
	for key, p := range map[string]string{"metrics.bearerTokenFile": m.BearerTokenFile, "metrics.tlsCertFile": m.TLSCertFile,
		"metrics.tlsKeyFile": m.TLSKeyFile, "metrics.clientCAFile": m.ClientCAFile} {
		if p != "" && !strings.HasPrefix(p, "/") {
			return bad(key, "%q is not an absolute path", p)
		}
	}
	if err := m.RemoteWrite.validate(bad); err != nil {
		return err
	}
	if m.Listen == "" {
		return nil
	}
	if _, port, err := net.SplitHostPort(m.Listen); err != nil || port == "" {
		return bad("metrics.listen", "%q is not host:port", m.Listen)
	}
	tls := m.TLSCertFile != "" || m.TLSKeyFile != ""
	switch {
	case (m.TLSCertFile == "") != (m.TLSKeyFile == ""):
		return bad("metrics.tlsCertFile", "tlsCertFile and tlsKeyFile go together")
	case m.ClientCAFile != "" && !tls:
		return bad("metrics.clientCAFile", "client certificates need TLS (tlsCertFile, tlsKeyFile)")
	case CheckLoopback(m.Listen) != nil && (!tls || m.BearerTokenFile == "" && m.ClientCAFile == ""):
		// Pod names, images and usage are not for anyone on the network.
		return bad("metrics.listen", "%q is not a loopback address: it needs TLS and a bearer token or client certificates", m.Listen)
	}
	return nil
}

// FileMode parses Mode ("0666", "660").
func (s Socket) FileMode() (fs.FileMode, error) {
	var m uint32
	if _, err := fmt.Sscanf(s.Mode, "%o", &m); err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal file mode", s.Mode)
	}
	return fs.FileMode(m), nil
}

// CheckLoopback accepts only a loopback host and a port: the listener is
// for this machine's kubectl, not a remote API (client certificates or not,
// berth makes no promise about exposing the API to a network).
func CheckLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if port == "" {
		return fmt.Errorf("%q has no port", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (127.0.0.0/8, ::1 or localhost)", host)
	}
	return nil
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

func (r RemoteWrite) validate(bad func(key, format string, a ...any) error) error {
	if r.QueueDir != "" && !strings.HasPrefix(r.QueueDir, "/") {
		return bad("metrics.remoteWrite.queueDir", "%q is not an absolute path", r.QueueDir)
	}
	labels := func(key string, m map[string]string) error {
		for k := range m {
			if !labelName.MatchString(k) || strings.HasPrefix(k, "__") {
				return bad(key, "%q is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)", k)
			}
		}
		return nil
	}
	if err := labels("metrics.remoteWrite.externalLabels", r.ExternalLabels); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, e := range r.Endpoints {
		key := fmt.Sprintf("metrics.remoteWrite.endpoints[%d]", i)
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad(key+".url", "%q is not an http or https URL", e.URL)
		}
		if seen[e.URL] {
			return bad(key+".url", "%q is listed twice", e.URL)
		}
		seen[e.URL] = true
		for k, p := range map[string]string{"bearerTokenFile": e.BearerTokenFile, "caFile": e.CAFile, "certFile": e.CertFile, "keyFile": e.KeyFile} {
			if p != "" && !strings.HasPrefix(p, "/") {
				return bad(key+"."+k, "%q is not an absolute path", p)
			}
		}
		if (e.CertFile == "") != (e.KeyFile == "") {
			return bad(key+".certFile", "certFile and keyFile go together")
		}
		if e.QueueMaxBytes < 0 {
			return bad(key+".queueMaxBytes", "%d is negative", e.QueueMaxBytes)
		}
		if err := labels(key+".labels", e.Labels); err != nil {
			return err
		}
	}
	return nil
}
