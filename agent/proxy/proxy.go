// Package proxy is the node's kube-proxy: it programs every Service's
// forwarding into the kernel with nftables (sigs.k8s.io/knftables, the
// library of kube-proxy's nftables mode), one table, one atomic
// transaction per change, from the Services and EndpointSlices in the
// store. No berth process is in the data path: the rules keep forwarding
// while berthd is stopped, and established connections keep the backend
// conntrack gave them when the rules change (a blue/green switch moves new
// connections only).
//
// The table (ip berth) is laid out as kube-proxy's:
//
//	nat-prerouting, nat-output  → services: cluster IP . protocol . port
//	                               vmap @service-ips; node ports on the
//	                               node's own addresses vmap @service-nodeports
//	svc-<hash>-<ns>/<name>/<proto>/<port>
//	                            → masquerade mark, session affinity, then
//	                               numgen random mod N over its endpoints
//	ep-<hash>-<ns>/<name>/<proto>/<port>__<ip>/<port>
//	                            → dnat to the endpoint
//	filter-input, -forward, -output
//	                            → new connections to a Service without
//	                               endpoints rejected (@no-endpoint-*)
//	nat-postrouting             → masquerade what was marked
//
// Service traffic from pods and from outside is masqueraded (kube-proxy's
// masqueradeAll): berth's bridge network does not pass bridged traffic
// through netfilter (no br_netfilter), so a reply from a backend on the
// same bridge as its client would otherwise skip the reverse translation;
// with it, a pod reaching its own Service (hairpin) works too. Backends
// see the bridge's address as the client's. The node's own connections
// to cluster IPs are not masqueraded (but from 127.0.0.0/8, which cannot
// leave lo; and to node ports, which keep kube-proxy's masquerade: one
// node-port request of 77,000 was refused at a selector switch under load
// without it, not understood yet): on
// one node every backend's reply comes back through the node, where
// conntrack reverses the translation, and keeping the client's port keeps
// a new connection's initial sequence number above the one its port
// last used. With masquerade's random ports, a client that opens many
// short connections to one Service hits the backend's TIME_WAIT sockets
// with sequence numbers out of order, and each such SYN waits for its
// retransmission: measured from a node at ~1,000 connections a second,
// the rate fell to a tenth within 15 s (BenchmarkClusterIPThroughput).
package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"

	"github.com/berth-dev/berth/agent/controllers/loop"
	"github.com/berth-dev/berth/agent/store"
)

// Store is what the proxier reads of agent/store.
type Store interface {
	ScanKeyed(res store.Resource, ns string, fn func(key, data []byte) error) (uint64, error)
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

var _ Store = (*store.Store)(nil)

// Routes puts the Service range where the node's own connections can
// reach it (routes.go); nil: nothing (tests with a fake).
type Routes interface {
	Ensure(cidr netip.Prefix) error
	Remove(cidr netip.Prefix) error
}

// Config configures the proxier.
type Config struct {
	Store Store
	// NFT is the table's interface (nil: the real nft on the table
	// "berth", family ip).
	NFT knftables.Interface
	// Routes routes the Service range (nil: none).
	Routes Routes
	// Conntrack clears stale UDP flows (conntrack.go; nil: none).
	Conntrack   Conntrack
	ServiceCIDR netip.Prefix
	Log         hclog.Logger
	// Resync is the period of a full pass without any change (default 30 s).
	Resync time.Duration
}

// Table is the nftables table berth's Service rules live in.
const Table = "berth"

const (
	services       store.Resource = "services"
	endpointSlices store.Resource = "endpointslices"

	// masqMark is the packet mark bit of connections to masquerade
	// (kube-proxy's 0x4000).
	masqMark = "0x4000"

	serviceIPsMap      = "service-ips"
	serviceNodePorts   = "service-nodeports"
	noEndpointServices = "no-endpoint-services"
	noEndpointNodePort = "no-endpoint-nodeports"
)

// Proxier programs the table.
type Proxier struct {
	cfg  Config
	nft  knftables.Interface
	log  hclog.Logger
	loop *loop.Loop
	mu   sync.Mutex
	// state is the ruleset last written (nil: unknown, the next pass
	// rewrites everything); lastAt when the whole table was last
	// rewritten (a resync rewrites it whatever happened to it).
	state  *ruleset
	lastAt time.Time
	// routed: the service range's route is in place.
	routed bool
	// udp: the UDP targets conntrack was last cleared for (nil: never).
	udp *udpTargets
	// The lists' decoded objects, read only (store.Decoded).
	svcs   *store.Decoded[corev1.Service]
	slices *store.Decoded[discoveryv1.EndpointSlice]
}

// New returns a proxier; Run starts it.
func New(cfg Config) (*Proxier, error) {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	nft := cfg.NFT
	if nft == nil {
		var err error
		if nft, err = knftables.New(knftables.IPv4Family, Table); err != nil {
			return nil, fmt.Errorf("nftables: %w", err)
		}
	}
	return &Proxier{cfg: cfg, nft: nft, log: cfg.Log, loop: loop.New(),
		svcs: &store.Decoded[corev1.Service]{Resource: services}, slices: &store.Decoded[discoveryv1.EndpointSlice]{Resource: endpointSlices}}, nil
}

// Run follows Services and EndpointSlices and programs the table after
// each change until ctx ends. The table stays when it ends: forwarding
// goes on without berthd.
func (p *Proxier) Run(ctx context.Context) error {
	return p.loop.Run(ctx, p.cfg.Store, []store.Resource{services, endpointSlices}, p.cfg.Resync, p.log, p.Sync)
}

// Cleanup removes the table and the route, for an uninstall (the
// packages' purge); a stop of berthd never calls it, so that forwarding
// goes on without berthd.
func (p *Proxier) Cleanup(ctx context.Context) error {
	tx := p.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	err := p.nft.Run(ctx, tx)
	if p.cfg.Routes != nil {
		err = errors.Join(err, p.cfg.Routes.Remove(p.cfg.ServiceCIDR))
	}
	return err
}

// servicePort is one port of one Service, with the endpoints traffic to
// it goes to.
type servicePort struct {
	ns, name, portName string
	proto              corev1.Protocol
	clusterIP          string // "" for none
	port, nodePort     int32
	affinity           time.Duration // ClientIP session affinity; 0: none
	endpoints          []endpoint
}

type endpoint struct {
	ip   string
	port int32
}

func (sp *servicePort) id() string {
	return fmt.Sprintf("%s/%s/%s/%s", sp.ns, sp.name, strings.ToLower(string(sp.proto)), sp.portName)
}

// chainName is kube-proxy's servicePortChainName: a hash for uniqueness,
// the readable rest for people.
func chainName(prefix, id string) string {
	h := sha256.Sum256([]byte(id))
	return prefix + "-" + base32.StdEncoding.EncodeToString(h[:])[:8] + "-" + id
}

func (sp *servicePort) chain() string { return chainName("svc", sp.id()) }

func (sp *servicePort) epChain(e endpoint) string {
	return chainName("ep", sp.id()+"__"+e.ip+"/"+strconv.Itoa(int(e.port)))
}

func (sp *servicePort) affinitySet(e endpoint) string {
	return chainName("affinity", sp.id()+"__"+e.ip+"/"+strconv.Itoa(int(e.port)))
}

// ruleset is the table's content as the proxier wants it: chains (their
// definition and rules), map elements, affinity sets.
type ruleset struct {
	chains   map[string]*chainDef
	elements map[string]map[string]string // map → key → value
	sets     map[string]*knftables.Set
}

type chainDef struct {
	chain *knftables.Chain
	rules []string
}

func (c *chainDef) same(o *chainDef) bool {
	return o != nil && strings.Join(c.rules, "\n") == strings.Join(o.rules, "\n")
}

// verdictMaps are the table's verdict maps.
var verdictMaps = []*knftables.Map{
	{Name: serviceIPsMap, Type: "ipv4_addr . inet_proto . inet_service : verdict"},
	{Name: serviceNodePorts, Type: "inet_proto . inet_service : verdict"},
	{Name: noEndpointServices, Type: "ipv4_addr . inet_proto . inet_service : verdict"},
	{Name: noEndpointNodePort, Type: "inet_proto . inet_service : verdict"},
}

// desired computes the ruleset for the service ports.
func desired(ports []*servicePort) *ruleset {
	rs := &ruleset{chains: map[string]*chainDef{}, elements: map[string]map[string]string{}, sets: map[string]*knftables.Set{}}
	for _, m := range verdictMaps {
		rs.elements[m.Name] = map[string]string{}
	}
	chain := func(c *knftables.Chain) *chainDef {
		d := &chainDef{chain: c}
		rs.chains[c.Name] = d
		return d
	}
	rule := func(d *chainDef, parts ...string) { d.rules = append(d.rules, knftables.Concat(toAny(parts)...)) }
	base := func(name string, typ knftables.BaseChainType, hook knftables.BaseChainHook, prio knftables.BaseChainPriority) *chainDef {
		return chain(&knftables.Chain{Name: name, Type: &typ, Hook: &hook, Priority: &prio})
	}
	plain := func(name string) *chainDef { return chain(&knftables.Chain{Name: name}) }
	rule(base("nat-prerouting", knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority), "jump services")
	rule(base("nat-output", knftables.NATType, knftables.OutputHook, knftables.DNATPriority), "jump services")
	rule(base("nat-postrouting", knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority), "jump masquerading")
	filterPrio := knftables.BaseChainPriority("filter - 10")
	for _, c := range []struct {
		name string
		hook knftables.BaseChainHook
	}{{"filter-input", knftables.InputHook}, {"filter-forward", knftables.ForwardHook}, {"filter-output", knftables.OutputHook}} {
		rule(base(c.name, knftables.FilterType, c.hook, filterPrio), "ct state new jump endpoints-check")
	}
	masq := plain("masquerading")
	rule(masq, "meta mark &", masqMark, "== 0 return")
	rule(masq, "meta mark set meta mark ^", masqMark)
	rule(masq, "masquerade fully-random")
	mark := plain("mark-for-masquerade")
	rule(mark, "ip saddr != 127.0.0.0/8 fib saddr type local fib daddr type != local return") // the node's own to cluster IPs, above
	rule(mark, "meta mark set meta mark |", masqMark)
	svcs := plain("services")
	rule(svcs, "ip daddr . meta l4proto . th dport vmap @"+serviceIPsMap)
	// Node ports on the node's own addresses (not loopback: a DNAT of
	// 127.0.0.1 would need route_localnet, as kube-proxy's nftables mode
	// says too).
	rule(svcs, "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @"+serviceNodePorts)
	check := plain("endpoints-check")
	rule(check, "ip daddr . meta l4proto . th dport vmap @"+noEndpointServices)
	rule(check, "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @"+noEndpointNodePort)
	rej := plain("reject-chain")
	// A TCP reset for TCP: the node's own connections (routed by lo, see
	// LoopbackRoutes) ignore the ICMP unreachable plain reject sends, and
	// would wait for their timeout.
	rule(rej, "meta l4proto tcp reject with tcp reset")
	rule(rej, "reject")

	elem := func(m string, key []string, value string) { rs.elements[m][strings.Join(key, " . ")] = value }
	for _, sp := range ports {
		proto := strings.ToLower(string(sp.proto))
		if len(sp.endpoints) == 0 {
			if sp.clusterIP != "" {
				elem(noEndpointServices, []string{sp.clusterIP, proto, strconv.Itoa(int(sp.port))}, "goto reject-chain")
			}
			if sp.nodePort != 0 {
				elem(noEndpointNodePort, []string{proto, strconv.Itoa(int(sp.nodePort))}, "goto reject-chain")
			}
			continue
		}
		svc := chain(&knftables.Chain{Name: sp.chain(), Comment: knftables.PtrTo(sp.id())})
		rule(svc, "jump mark-for-masquerade")
		var vmap []string
		for i, e := range sp.endpoints {
			ep := plain(sp.epChain(e))
			if sp.affinity > 0 {
				set := sp.affinitySet(e)
				rs.sets[set] = &knftables.Set{Name: set, Type: "ipv4_addr", Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
					Timeout: knftables.PtrTo(sp.affinity)}
				rule(svc, "ip saddr @"+set, "goto", ep.chain.Name)
				rule(ep, "update @"+set, "{ ip saddr }")
			}
			rule(ep, "meta l4proto", proto, "dnat to", e.ip+":"+strconv.Itoa(int(e.port)))
			if i > 0 {
				vmap = append(vmap, ",") // a word of its own: "<chain>," would name another chain
			}
			vmap = append(vmap, strconv.Itoa(i), ":", "goto", ep.chain.Name)
		}
		rule(svc, append(append([]string{"numgen random mod", strconv.Itoa(len(sp.endpoints)), "vmap {"}, vmap...), "}")...)
		if sp.clusterIP != "" {
			elem(serviceIPsMap, []string{sp.clusterIP, proto, strconv.Itoa(int(sp.port))}, "goto "+svc.chain.Name)
		}
		if sp.nodePort != 0 {
			elem(serviceNodePorts, []string{proto, strconv.Itoa(int(sp.nodePort))}, "goto "+svc.chain.Name)
		}
	}
	return rs
}

// Sync programs the table from what is stored now, in one transaction:
// the whole table after berthd's start (or a failed write), and from then
// on only what changed since the last write (chains rewritten, map
// elements added and deleted), which keeps a change as cheap with 100
// Services as with one.
func (p *Proxier) Sync(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ports, n, err := p.read()
	if err != nil {
		return err
	}
	// Nothing is written to the host before there is a Service: a node
	// that runs none (or berthd run for other purposes) gets no table and
	// no route. A table written once is kept up to date from then on.
	if n == 0 && p.state == nil {
		if _, err := p.nft.List(ctx, "chains"); knftables.IsNotFound(err) {
			return nil
		}
	}
	if p.cfg.Routes != nil && !p.routed {
		if err := p.cfg.Routes.Ensure(p.cfg.ServiceCIDR); err != nil {
			p.log.Warn("route for the service range", "error", err)
		} else {
			p.routed = true
		}
	}
	want := desired(ports)
	old := p.state
	resync := old == nil || time.Since(p.lastAt) >= p.cfg.Resync
	if resync {
		// What is in the kernel is not known (a start, a resync): every
		// chain and map is rewritten, and what berth no longer wants is
		// found by listing the table.
		old = &ruleset{chains: map[string]*chainDef{}, elements: map[string]map[string]string{}, sets: map[string]*knftables.Set{}}
		for typ, into := range map[string]func(string){
			"chains": func(n string) { old.chains[n] = nil },
			"sets":   func(n string) { old.sets[n] = nil },
		} {
			names, err := p.nft.List(ctx, typ)
			if err != nil && !knftables.IsNotFound(err) {
				return fmt.Errorf("list %s: %w", typ, err)
			}
			for _, n := range names {
				into(n)
			}
		}
	}
	tx := p.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("berth: Services (agent/proxy)")})
	// Chains that go or change are flushed first, so that nothing still
	// refers to what is deleted at the end.
	for name, c := range old.chains {
		if d := want.chains[name]; d == nil || !d.same(c) {
			if _, exists := old.chains[name]; exists {
				tx.Flush(&knftables.Chain{Name: name})
			}
		}
	}
	for _, m := range verdictMaps {
		tx.Add(m)
		if resync {
			tx.Flush(m)
			continue
		}
		// Elements gone or changed first, then what is new.
		for key, v := range old.elements[m.Name] {
			if nv, ok := want.elements[m.Name][key]; !ok || nv != v {
				tx.Delete(&knftables.Element{Map: m.Name, Key: strings.Split(key, " . ")})
			}
		}
	}
	for name, set := range want.sets {
		if _, ok := old.sets[name]; !ok || resync {
			tx.Add(set) // never flushed: the clients stick across syncs
		}
	}
	// Every chain written exists before any rule jumps to it.
	var write []*chainDef
	for _, name := range slices.Sorted(maps.Keys(want.chains)) {
		d := want.chains[name]
		if c, exists := old.chains[name]; exists && d.same(c) && !resync {
			continue
		}
		tx.Add(d.chain)
		write = append(write, d)
	}
	for _, d := range write {
		for _, r := range d.rules {
			tx.Add(&knftables.Rule{Chain: d.chain.Name, Rule: r})
		}
	}
	for _, m := range verdictMaps {
		for _, key := range slices.Sorted(maps.Keys(want.elements[m.Name])) {
			v := want.elements[m.Name][key]
			if ov, ok := old.elements[m.Name][key]; ok && ov == v && !resync {
				continue
			}
			tx.Add(&knftables.Element{Map: m.Name, Key: strings.Split(key, " . "), Value: []string{v}})
		}
	}
	for name := range old.chains {
		if want.chains[name] == nil {
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for name := range old.sets {
		if want.sets[name] == nil {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
	if err := p.nft.Run(ctx, tx); err != nil {
		p.state = nil // the next pass starts over from the kernel's table
		return fmt.Errorf("program the table: %w", err)
	}
	p.state = want
	if resync {
		p.lastAt = time.Now()
	}
	p.clearUDP(ports, resync)
	return nil
}

// clearUDP deletes the UDP flows the rules just written no longer allow
// (conntrack.go), after a change to the UDP Services and at each resync
// (a flow may have outlived a berthd that was down). A failure is logged
// and retried on the next pass: the rules are right, only some flows keep
// their old backend meanwhile.
func (p *Proxier) clearUDP(ports []*servicePort, resync bool) {
	if p.cfg.Conntrack == nil {
		return
	}
	u := udpTargetsOf(ports, p.cfg.ServiceCIDR, p.udp)
	if key := u.key(); p.udp != nil && p.udp.key() == key && (!resync || key == "") {
		// Unchanged; at a resync the table is read again only where there
		// are UDP Services (a node without any reads it once, at start).
		return
	}
	n, err := p.cfg.Conntrack.DeleteUDP(u.stale)
	if err != nil {
		p.log.Warn("clear stale UDP flows", "error", err)
		p.udp = nil
		return
	}
	if n > 0 {
		p.log.Debug("cleared stale UDP flows", "flows", n)
	}
	p.udp = u
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

// read lists the Services and their slices into service ports with the
// endpoints their traffic goes to, in a stable order, and counts the
// Services.
func (p *Proxier) read() ([]*servicePort, int, error) {
	svcs, _, err := p.svcs.List(p.cfg.Store, "")
	if err != nil {
		return nil, 0, err
	}
	all, _, err := p.slices.List(p.cfg.Store, "")
	if err != nil {
		return nil, 0, err
	}
	slices := map[string][]*discoveryv1.EndpointSlice{}
	for _, es := range all {
		if es.AddressType == discoveryv1.AddressTypeIPv4 {
			key := es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]
			slices[key] = append(slices[key], es)
		}
	}
	var out []*servicePort
	for _, s := range svcs {
		out = append(out, servicePorts(s, slices[s.Namespace+"/"+s.Name])...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id() < out[j].id() })
	return out, len(svcs), nil
}

// servicePorts is what one Service asks of the data path: a port each,
// with its endpoints as kube-proxy's CategorizeEndpoints picks them: the
// ready ones; when none is ready, the serving ones that are terminating
// (traffic keeps flowing to pods draining for their grace period); none:
// rejected. On one node, externalTrafficPolicy and internalTrafficPolicy
// Local pick the same endpoints as Cluster (every endpoint is local).
func servicePorts(s *corev1.Service, slices []*discoveryv1.EndpointSlice) []*servicePort {
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	cip := s.Spec.ClusterIP
	if cip == corev1.ClusterIPNone {
		cip = "" // headless: DNS answers with the pods, nothing to forward
	} else if a, err := netip.ParseAddr(cip); err != nil || !a.Is4() {
		cip = ""
	}
	var affinity time.Duration
	if s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = time.Duration(corev1.DefaultClientIPServiceAffinitySeconds) * time.Second
		if c := s.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	var out []*servicePort
	for _, port := range s.Spec.Ports {
		sp := &servicePort{ns: s.Namespace, name: s.Name, portName: port.Name, proto: port.Protocol, clusterIP: cip,
			port: port.Port, nodePort: port.NodePort, affinity: affinity}
		if sp.clusterIP == "" && sp.nodePort == 0 {
			continue
		}
		var ready, terminating []endpoint
		seen := map[endpoint]bool{}
		for _, es := range slices {
			var num int32
			found := false
			for _, ep := range es.Ports {
				if ep.Port != nil && (ep.Name == nil && port.Name == "" || ep.Name != nil && *ep.Name == port.Name) &&
					(ep.Protocol == nil && port.Protocol == corev1.ProtocolTCP || ep.Protocol != nil && *ep.Protocol == port.Protocol) {
					num, found = *ep.Port, true
				}
			}
			if !found {
				continue
			}
			for _, e := range es.Endpoints {
				if len(e.Addresses) == 0 {
					continue
				}
				x := endpoint{ip: e.Addresses[0], port: num}
				if seen[x] {
					continue
				}
				seen[x] = true
				c := e.Conditions
				switch {
				case c.Ready == nil || *c.Ready:
					ready = append(ready, x)
				case c.Serving != nil && *c.Serving && c.Terminating != nil && *c.Terminating:
					terminating = append(terminating, x)
				}
			}
		}
		sp.endpoints = ready
		if len(ready) == 0 {
			sp.endpoints = terminating
		}
		sort.Slice(sp.endpoints, func(i, j int) bool {
			if sp.endpoints[i].ip != sp.endpoints[j].ip {
				return sp.endpoints[i].ip < sp.endpoints[j].ip
			}
			return sp.endpoints[i].port < sp.endpoints[j].port
		})
		out = append(out, sp)
	}
	return out
}
