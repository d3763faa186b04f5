// Package network attaches a pod's network namespace to the node's pod
// network through CNI (containernetworking/cni's libcni, the library the
// CRI runtimes use) with the plugins the host carries (Debian's
// containernetworking-plugins), and detaches it again; it also writes the
// pod's /etc/resolv.conf and /etc/hosts as the kubelet does (dns.go,
// hosts.go).
//
// berthd keeps no process per pod for this: an attachment is what the
// plugins leave in the kernel (a veth into the pod's namespace, routes,
// portmap's iptables chains) plus libcni's record of it in a volatile cache, so that a
// detach after a berthd restart (or a crash) has everything DEL needs,
// including the port mappings portmap must remove.
package network

import (
	"bufio"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/hashicorp/go-hclog"
	"sigs.k8s.io/knftables"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// Defaults of the pod network berthd writes when the operator gave none.
const (
	DefaultConfDir = "/etc/berth/cni"
	// DefaultSubnet is the pods' range. Podman's default network is
	// 10.88.0.0/16 and its further networks count up from 10.89.0.0/24;
	// Docker takes 172.17.0.0/16 and up; k3s 10.42.0.0/16 (pods) and
	// 10.43.0.0/16 (services). 10.85.0.0/16 collides with none of them.
	DefaultSubnet  = "10.85.0.0/16"
	DefaultBridge  = "berth0"
	DefaultName    = "berth"
	defaultFile    = "10-berth.conflist"
	ifName         = "eth0" // the pod's interface, as every CRI runtime names it
	defaultVersion = "1.0.0"
)

// DefaultPluginDirs are searched for plugin binaries: Debian's package
// installs them in /usr/lib/cni, Fedora's and RHEL's in /usr/libexec/cni,
// the upstream tarballs in /opt/cni/bin. agent/config's default is the
// same list.
var DefaultPluginDirs = []string{"/usr/lib/cni", "/usr/libexec/cni", "/opt/cni/bin"}

// Config places the network's files.
type Config struct {
	// ConfDir holds the network configuration: the first *.conflist (in
	// lexical order, as the kubelet's CRI runtimes pick one) is the pod
	// network. An empty or missing directory gets berth's default.
	ConfDir string
	// PluginDirs are searched for plugins (DefaultPluginDirs).
	PluginDirs []string
	// RunDir holds volatile state: libcni's cache of attachments and the
	// default network's address leases. Volatile like the namespaces they
	// describe: after a reboot neither exists.
	RunDir string
	Log    hclog.Logger
}

// Network is the node's pod network.
type Network struct {
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
	path string // the configuration file in use
	// leases is host-local's directory of this network's leases (one file
	// per address naming its container), when the network uses host-local.
	leases   string
	cacheDir string // libcni's
	log      hclog.Logger
}

// PortMapping is a container's hostPort, in the form portmap's
// "portMappings" capability takes.
type PortMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"` // tcp, udp or sctp (lower case, as portmap expects)
	HostIP        string `json:"hostIP,omitempty"`
}

// Open reads the pod network's configuration from cfg.ConfDir, writing
// berth's default there first when the directory holds none. A
// configuration that does not parse, or names no plugin that exists, is an
// error: pods must not start without the network the operator asked for.
func Open(ctx context.Context, cfg Config) (*Network, error) {
	if cfg.ConfDir == "" {
		cfg.ConfDir = DefaultConfDir
	}
	if len(cfg.PluginDirs) == 0 {
		cfg.PluginDirs = DefaultPluginDirs
	}
	if cfg.RunDir == "" {
		cfg.RunDir = "/run/berth/cni"
	}
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	files, err := libcni.ConfFiles(cfg.ConfDir, []string{".conflist"})
	if err != nil {
		return nil, fmt.Errorf("network configuration %s: %w", cfg.ConfDir, err)
	}
	if len(files) == 0 {
		if err := os.MkdirAll(cfg.ConfDir, 0o755); err != nil {
			return nil, err
		}
		p := filepath.Join(cfg.ConfDir, defaultFile)
		if err := bndl.WriteFileAtomic(p, DefaultConfList(filepath.Join(cfg.RunDir, "networks")), 0o644); err != nil {
			return nil, fmt.Errorf("write default network: %w", err)
		}
		cfg.Log.Info("wrote the default pod network", "path", p, "subnet", DefaultSubnet)
		files = []string{p}
	}
	slices.Sort(files)
	path := files[0]
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: network configuration %s: %w", errdefs.ErrInvalidArgument, path, err)
	}
	cacheDir := filepath.Join(cfg.RunDir, "cache")
	n := &Network{
		cni:  libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, cacheDir, nil),
		list: list, path: path, cacheDir: cacheDir, log: cfg.Log.Named("network"),
	}
	// Every plugin must exist and speak the list's version: found now, not
	// at the first pod.
	if _, err := n.cni.ValidateNetworkList(ctx, list); err != nil {
		return nil, fmt.Errorf("%w: network configuration %s: %w", errdefs.ErrInvalidArgument, path, err)
	}
	n.leases = hostLocalLeases(list)
	if isDefault(list) {
		nft, err := knftables.New(knftables.IPv4Family, PodTable)
		if err != nil {
			return nil, fmt.Errorf("the default network's masquerading: nftables: %w", err)
		}
		if err := ensureHostRules(ctx, nft); err != nil {
			return nil, fmt.Errorf("the default network's host rules (hostrules.go): %w", err)
		}
	}
	return n, nil
}

// DefaultConfList is berth's default pod network: a bridge with the node
// as gateway, host-local addresses from DefaultSubnet (leases under
// leaseDir), hostPorts through portmap; masquerading of traffic leaving
// the node and forwarding where the host's FORWARD policy is DROP (as
// Docker leaves it) are berthd's, once for the range (hostrules.go), not
// the bridge plugin's ipMasq and the firewall plugin's. cniVersion 1.0.0 is
// the newest Debian's plugins speak; their portmap's CHECK is broken
// (containernetworking/plugins#819), so CHECK is disabled.
func DefaultConfList(leaseDir string) []byte {
	conf := map[string]any{
		"cniVersion":   defaultVersion,
		"name":         DefaultName,
		"disableCheck": true,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": DefaultBridge,
				"isGateway": true,
				// A pod reaching its own Service address comes back
				// through the bridge port it left by.
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": DefaultSubnet}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": leaseDir,
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(conf, "", "  ") // maps of strings and bools: cannot fail
	return append(b, '\n')
}

// Path is the configuration file in use.
func (n *Network) Path() string { return n.path }

// Name is the network's name.
func (n *Network) Name() string { return n.list.Name }

// containerID is CNI's container ID for a pod: its key, which names its
// directories and is unique on the host (libcni accepts [a-zA-Z0-9_.-]).
var validID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

func (n *Network) runtimeConf(id, netns string, ports []PortMapping) (*libcni.RuntimeConf, error) {
	if !validID.MatchString(id) {
		return nil, fmt.Errorf("network attachment id %q: not a CNI container ID", id)
	}
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: ifName}
	if len(ports) > 0 {
		// libcni passes a capability only to plugins that declare it.
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	return rt, nil
}

// Attach adds the network namespace at netns (a pinned nsfs file) to the
// pod network under id, with ports mapped on the host, and returns the
// pod's addresses. A failed attach is undone before it returns.
func (n *Network) Attach(ctx context.Context, id, netns string, ports []PortMapping) ([]netip.Addr, error) {
	rt, err := n.runtimeConf(id, netns, ports)
	if err != nil {
		return nil, err
	}
	res, err := n.cni.AddNetworkList(ctx, n.list, rt)
	if err != nil {
		// ADD may have half-succeeded (an address leased, a veth made):
		// DEL is idempotent and takes back whatever exists.
		if derr := n.cni.DelNetworkList(context.WithoutCancel(ctx), n.list, rt); derr != nil {
			n.log.Warn("undo failed attach", "id", id, "error", derr)
		}
		return nil, fmt.Errorf("%w: attach pod network %s: %w", errdefs.ErrUnavailable, n.list.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("pod network %s: result: %w", n.list.Name, err)
	}
	var ips []netip.Addr
	for _, ipc := range r.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			ips = append(ips, a.Unmap())
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("pod network %s gave the pod no address", n.list.Name)
	}
	return ips, nil
}

// Detach removes the pod's attachment under id: its address lease, its
// host-side interface and the iptables rules of its hostPorts. It uses what
// libcni recorded at Attach (the port mappings), so it needs no pod record;
// the namespace at netns may already be gone. Detaching what is not
// attached is not an error.
func (n *Network) Detach(ctx context.Context, id, netns string) error {
	rt, err := n.runtimeConf(id, netns, nil)
	if err != nil {
		return err
	}
	_, cached, err := n.cni.GetNetworkListCachedConfig(n.list, rt)
	switch {
	case err == nil && cached != nil:
		rt.CapabilityArgs = cached.CapabilityArgs
		if netns == "" {
			// The cached RuntimeConf does not carry the namespace; the
			// attachment list does.
			if atts, err := n.cni.GetCachedAttachments(id); err == nil {
				for _, a := range atts {
					if a.Network == n.list.Name && a.IfName == rt.IfName && a.NetNS != "" {
						rt.NetNS = a.NetNS
					}
				}
			}
		}
	default:
		// No record: an ADD cut short (berthd killed) after a plugin had
		// acted but before libcni wrote its record. The firewall plugin
		// finds the rules to remove only through the result it is given,
		// so the record is written from the leases host-local holds for
		// id, and DEL then takes back everything.
		if err := n.recordFromLeases(rt); err != nil {
			n.log.Warn("record a cut-short attachment from its leases", "id", id, "error", err)
		}
	}
	if rt.NetNS != "" {
		if _, err := os.Stat(rt.NetNS); err != nil {
			// The plugins tolerate a namespace that is gone only when
			// they are told none: the bridge plugin then skips the veth
			// (it went with the namespace) and still releases the lease.
			rt.NetNS = ""
		}
	}
	if rt.NetNS == "" {
		// ... but it learns the addresses whose masquerading to remove
		// only from the pod's interface, which is gone: that is done
		// here, after DEL.
		defer func() {
			if err := n.dropMasquerade(ctx, id); err != nil {
				n.log.Warn("remove the masquerading of a pod whose namespace is gone", "id", id, "error", err)
			}
		}()
	}
	if err := n.cni.DelNetworkList(ctx, n.list, rt); err != nil {
		// Debian's bridge plugin (1.1.1) fails the DEL of an ADD cut short
		// before its masquerade chain existed ("Chain ... does not
		// exist"), after it removed the pod's interface. The plugins run
		// in reverse on DEL, the bridge last; a second DEL finds no
		// interface, skips that teardown and completes.
		n.log.Debug("detach failed once; again", "id", id, "error", err)
		if err := n.cni.DelNetworkList(ctx, n.list, rt); err != nil {
			return fmt.Errorf("%w: detach pod network %s: %w", errdefs.ErrUnavailable, n.list.Name, err)
		}
	}
	return nil
}

// cacheRecord is libcni's record of an attachment (its unexported
// cachedInfo, kind "cniCacheV1": the on-disk format every libcni since
// v0.8 reads), written by recordFromLeases.
type cacheRecord struct {
	Kind        string         `json:"kind"`
	ContainerID string         `json:"containerId"`
	Config      []byte         `json:"config"`
	IfName      string         `json:"ifName"`
	NetworkName string         `json:"networkName"`
	Result      map[string]any `json:"result"`
}

// recordFromLeases writes libcni's record of an attachment that has none,
// with the addresses host-local leased to rt's container as its result.
func (n *Network) recordFromLeases(rt *libcni.RuntimeConf) error {
	leases, err := n.leaseMap()
	if err != nil {
		return err
	}
	var ips []any
	for ip, id := range leases {
		if id == rt.ContainerID {
			ips = append(ips, map[string]string{"address": netip.PrefixFrom(ip, ip.BitLen()).String()})
		}
	}
	if len(ips) == 0 {
		return nil
	}
	rec := cacheRecord{Kind: libcni.CNICacheV1, ContainerID: rt.ContainerID, Config: n.list.Bytes, IfName: rt.IfName,
		NetworkName: n.list.Name, Result: map[string]any{"cniVersion": n.list.CNIVersion, "ips": ips}}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	dir := filepath.Join(n.cacheDir, "results")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return bndl.WriteFileAtomic(filepath.Join(dir, n.list.Name+"-"+rt.ContainerID+"-"+rt.IfName), b, 0o600)
}

// GC detaches every attachment whose id keep does not accept: those libcni
// recorded, and address leases host-local holds with no record (a crash
// between the plugin's lease and libcni's record). It runs at berthd's
// start, after reconcile decided which pods remain, so that nothing a
// SIGKILLed berthd left behind stays leased or forwarded.
func (n *Network) GC(ctx context.Context, keep func(id string) bool) error {
	ids := map[string]bool{}
	atts, err := n.cni.GetCachedAttachments("")
	if err != nil {
		return fmt.Errorf("network cache: %w", err)
	}
	for _, a := range atts {
		if a.Network == n.list.Name && a.IfName == ifName {
			ids[a.ContainerID] = true
		}
	}
	leased, err := n.leaseMap()
	if err != nil {
		return err
	}
	for _, id := range leased {
		ids[id] = true
	}
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if keep(id) {
			continue
		}
		n.log.Info("detaching a stale pod network attachment", "id", id)
		if err := n.Detach(ctx, id, ""); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// hostLocalLeases is where host-local keeps the network's leases, if the
// first plugin's IPAM is host-local (its default dataDir is
// /var/lib/cni/networks).
func hostLocalLeases(list *libcni.NetworkConfigList) string {
	for _, p := range list.Plugins {
		var conf struct {
			IPAM struct {
				Type    string `json:"type"`
				DataDir string `json:"dataDir"`
			} `json:"ipam"`
		}
		if json.Unmarshal(p.Bytes, &conf) != nil || conf.IPAM.Type != "host-local" {
			continue
		}
		dir := conf.IPAM.DataDir
		if dir == "" {
			dir = "/var/lib/cni/networks"
		}
		return filepath.Join(dir, list.Name)
	}
	return ""
}

// leaseMap reads host-local's leases: files named by the address, whose
// first line is the container ID (the second its interface).
func (n *Network) leaseMap() (map[netip.Addr]string, error) {
	if n.leases == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(n.leases)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("address leases: %w", err)
	}
	out := map[netip.Addr]string{}
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // lock, last_reserved_ip.N
		}
		f, err := os.Open(filepath.Join(n.leases, e.Name()))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		if sc.Scan() {
			if id := strings.TrimSpace(sc.Text()); validID.MatchString(id) {
				out[ip] = id
			}
		}
		f.Close()
	}
	return out, nil
}

// Leases returns the addresses host-local has leased on this network, in
// order, for tests and diagnostics.
func (n *Network) Leases() ([]netip.Addr, error) {
	m, err := n.leaseMap()
	if err != nil {
		return nil, err
	}
	return slices.SortedFunc(maps.Keys(m), netip.Addr.Compare), nil
}

// dropMasquerade removes what the bridge plugin's ipMasq set up for
// container id (ip.SetupIPMasq: a POSTROUTING rule per address jumping to
// a chain of its own, both commented with the network and the id), for a
// DEL that could not: the plugin finds the addresses only on the pod's
// interface. Rules are matched by the plugin's comment, the chain by the
// plugin's name for it (utils.FormatChainName).
func (n *Network) dropMasquerade(ctx context.Context, id string) error {
	if !n.masquerades() {
		return nil
	}
	out, err := exec.CommandContext(ctx, "iptables", "-t", "nat", "-S", "POSTROUTING", "--wait").Output()
	if err != nil {
		return fmt.Errorf("list POSTROUTING: %w", err)
	}
	comment := fmt.Sprintf(`--comment "name: \"%s\" id: \"%s\""`, n.list.Name, id)
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "-A POSTROUTING ") || !strings.Contains(line, comment) {
			continue
		}
		args, err := splitRule(strings.TrimPrefix(line, "-A POSTROUTING "))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cmd := exec.CommandContext(ctx, "iptables", append([]string{"-t", "nat", "-D", "POSTROUTING", "--wait"}, args...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("iptables -D POSTROUTING %s: %w: %s", strings.Join(args, " "), err, b))
		}
	}
	sum := sha512.Sum512([]byte(n.list.Name + id))
	chain := "CNI-" + hex.EncodeToString(sum[:])[:24]
	for _, op := range []string{"-F", "-X"} {
		cmd := exec.CommandContext(ctx, "iptables", "-t", "nat", op, chain, "--wait")
		if b, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(b), "No chain") && !strings.Contains(string(b), "does not exist") {
			errs = append(errs, fmt.Errorf("iptables %s %s: %w: %s", op, chain, err, b))
		}
	}
	return errors.Join(errs...)
}

// masquerades tells whether the network's bridge plugin masquerades.
func (n *Network) masquerades() bool {
	for _, p := range n.list.Plugins {
		var conf struct {
			Type   string `json:"type"`
			IPMasq bool   `json:"ipMasq"`
		}
		if json.Unmarshal(p.Bytes, &conf) == nil && conf.Type == "bridge" && conf.IPMasq {
			return true
		}
	}
	return false
}

// splitRule splits a rule as iptables -S prints it into arguments: words,
// and double-quoted strings with \" escapes (the plugin's comments).
func splitRule(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQuote, have = !inQuote, true
		case c == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unbalanced quotes in rule %q", s)
	}
	if have {
		args = append(args, cur.String())
	}
	return args, nil
}
