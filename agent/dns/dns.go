// Package dns is the node's cluster DNS, as CoreDNS's kubernetes plugin
// answers on a cluster (the DNS specification for Kubernetes,
// github.com/kubernetes/dns docs/specification.md), served with
// github.com/miekg/dns (CoreDNS's own library):
//
//   - A <service>.<ns>.svc.<domain>: the cluster IP; a headless Service:
//     its ready endpoints' addresses; an ExternalName Service: a CNAME;
//   - A <hostname>.<service>.<ns>.svc.<domain>: a headless Service's
//     endpoint by its hostname (or its address, dashed);
//   - SRV _<port>._<proto>.<service>.<ns>.svc.<domain>: the port, with the
//     Service (or each endpoint of a headless one) as the target;
//   - any other name inside the domain: NXDOMAIN, authoritatively; names
//     outside it: forwarded to the node's resolvers.
//
// It listens on the cluster DNS address (network.clusterDNS, held by lo
// on the node) that pods' resolv.conf names. While berthd restarts the
// port is closed: a query gets an ICMP unreachable at once and the
// resolver retries (glibc: after its timeout, 5 s by default, once per
// attempt), so names resolve again as soon as berthd listens, a second or
// two after its start.
package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/berth-dev/berth/agent/controllers/loop"
	"github.com/berth-dev/berth/agent/store"
)

// Store is what the server reads of agent/store.
type Store interface {
	ScanKeyed(res store.Resource, ns string, fn func(key, data []byte) error) (uint64, error)
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

var _ Store = (*store.Store)(nil)

// Config configures the server.
type Config struct {
	Store Store
	// Domain is the cluster domain ("cluster.local").
	Domain string
	// Addr is where to listen ("10.86.0.10:53"), UDP and TCP.
	Addr string
	// Upstream are the resolvers names outside the domain go to
	// ("192.0.2.1:53"); none: such names are refused (SERVFAIL).
	Upstream []string
	Log      hclog.Logger
}

// TTL is the answers' time to live: CoreDNS's kubernetes plugin default.
const TTL = 5

// Server answers queries.
type Server struct {
	cfg    Config
	log    hclog.Logger
	loop   *loop.Loop
	mu     sync.RWMutex
	zone   string
	index  map[string][]mdns.RR // by lower-case name and type "A", "SRV", "CNAME"
	names  map[string]bool      // every name that exists in the zone (for NODATA against NXDOMAIN)
	client *mdns.Client
	// The lists' decoded objects, read only (store.Decoded).
	svcs   *store.Decoded[corev1.Service]
	slices *store.Decoded[discoveryv1.EndpointSlice]
}

// New returns a server; Run serves.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Domain == "" {
		cfg.Domain = "cluster.local"
	}
	return &Server{cfg: cfg, log: cfg.Log, loop: loop.New(), zone: mdns.Fqdn(strings.ToLower(cfg.Domain)),
		svcs: &store.Decoded[corev1.Service]{Resource: "services"}, slices: &store.Decoded[discoveryv1.EndpointSlice]{Resource: "endpointslices"},
		index: map[string][]mdns.RR{}, names: map[string]bool{}, client: &mdns.Client{Timeout: 2 * time.Second}}
}

// Run listens and keeps the records current until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Rebuild(); err != nil {
		return err
	}
	errc := make(chan error, 2)
	var servers []*mdns.Server
	for _, network := range []string{"udp", "tcp"} {
		started := make(chan struct{})
		srv := &mdns.Server{Addr: s.cfg.Addr, Net: network, Handler: s, NotifyStartedFunc: func() { close(started) }}
		servers = append(servers, srv)
		go func() { errc <- srv.ListenAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			for _, x := range servers[:len(servers)-1] {
				_ = x.Shutdown()
			}
			return fmt.Errorf("listen %s/%s: %w", s.cfg.Addr, network, err)
		}
	}
	defer func() {
		for _, x := range servers {
			_ = x.Shutdown()
		}
	}()
	return s.loop.Run(ctx, s.cfg.Store, []store.Resource{"services", "endpointslices"}, 30*time.Second, s.log,
		func(context.Context) error { return s.Rebuild() })
}

// Rebuild reads the Services and their slices into the records.
func (s *Server) Rebuild() error {
	svcs, _, err := s.svcs.List(s.cfg.Store, "")
	if err != nil {
		return err
	}
	all, _, err := s.slices.List(s.cfg.Store, "")
	if err != nil {
		return err
	}
	slices := map[string][]*discoveryv1.EndpointSlice{}
	for _, x := range all {
		key := x.Namespace + "/" + x.Labels[discoveryv1.LabelServiceName]
		slices[key] = append(slices[key], x)
	}
	index := map[string][]mdns.RR{}
	names := map[string]bool{}
	add := func(rr mdns.RR) {
		h := rr.Header()
		h.Name = strings.ToLower(h.Name)
		h.Class, h.Ttl = mdns.ClassINET, TTL
		key := h.Name + " " + mdns.TypeToString[h.Rrtype]
		index[key] = append(index[key], rr)
		// The name and every parent inside the zone exist (empty
		// non-terminals answer NODATA, not NXDOMAIN).
		for n := h.Name; mdns.IsSubDomain(s.zone, n); {
			names[n] = true
			i, end := mdns.NextLabel(n, 0)
			if end {
				break
			}
			n = n[i:]
		}
	}
	for _, svc := range svcs {
		name := fmt.Sprintf("%s.%s.svc.%s", svc.Name, svc.Namespace, s.zone)
		hdr := func(n string, t uint16) mdns.RR_Header { return mdns.RR_Header{Name: n, Rrtype: t} }
		switch {
		case svc.Spec.Type == corev1.ServiceTypeExternalName:
			add(&mdns.CNAME{Hdr: hdr(name, mdns.TypeCNAME), Target: mdns.Fqdn(svc.Spec.ExternalName)})
		case svc.Spec.ClusterIP == corev1.ClusterIPNone:
			// Headless: the endpoints themselves.
			type ep struct{ ip, host string }
			var eps []ep
			seen := map[string]bool{}
			for _, es := range slices[svc.Namespace+"/"+svc.Name] {
				if es.AddressType != discoveryv1.AddressTypeIPv4 {
					continue
				}
				for _, e := range es.Endpoints {
					ready := e.Conditions.Ready == nil || *e.Conditions.Ready
					if (!ready && !svc.Spec.PublishNotReadyAddresses) || len(e.Addresses) == 0 || seen[e.Addresses[0]] {
						continue
					}
					seen[e.Addresses[0]] = true
					host := strings.ReplaceAll(e.Addresses[0], ".", "-")
					if e.Hostname != nil && *e.Hostname != "" {
						host = *e.Hostname
					}
					eps = append(eps, ep{e.Addresses[0], host})
				}
			}
			sort.Slice(eps, func(i, j int) bool { return eps[i].ip < eps[j].ip })
			names[name] = true // a headless Service without endpoints exists: NODATA
			for _, e := range eps {
				ip := net.ParseIP(e.ip)
				add(&mdns.A{Hdr: hdr(name, mdns.TypeA), A: ip})
				add(&mdns.A{Hdr: hdr(e.host+"."+name, mdns.TypeA), A: ip})
				for _, p := range svc.Spec.Ports {
					if p.Name == "" {
						continue
					}
					add(&mdns.SRV{Hdr: hdr(fmt.Sprintf("_%s._%s.%s", p.Name, strings.ToLower(string(p.Protocol)), name), mdns.TypeSRV),
						Priority: 0, Weight: uint16(100 / len(eps)), Port: uint16(portOf(es(slices, svc), p.Name, p.Port)), Target: e.host + "." + name})
				}
			}
		default:
			a, err := netip.ParseAddr(svc.Spec.ClusterIP)
			if err != nil || !a.Is4() {
				continue
			}
			add(&mdns.A{Hdr: hdr(name, mdns.TypeA), A: net.IP(a.AsSlice())})
			for _, p := range svc.Spec.Ports {
				if p.Name == "" {
					continue
				}
				add(&mdns.SRV{Hdr: hdr(fmt.Sprintf("_%s._%s.%s", p.Name, strings.ToLower(string(p.Protocol)), name), mdns.TypeSRV),
					Priority: 0, Weight: 100, Port: uint16(p.Port), Target: name})
			}
		}
	}
	s.mu.Lock()
	s.index, s.names = index, names
	s.mu.Unlock()
	return nil
}

func es(slices map[string][]*discoveryv1.EndpointSlice, svc *corev1.Service) []*discoveryv1.EndpointSlice {
	return slices[svc.Namespace+"/"+svc.Name]
}

// portOf is a headless Service port's number on its endpoints (their
// slice's port of that name), else the Service's.
func portOf(slices []*discoveryv1.EndpointSlice, name string, def int32) int32 {
	for _, x := range slices {
		for _, p := range x.Ports {
			if p.Name != nil && *p.Name == name && p.Port != nil {
				return *p.Port
			}
		}
	}
	return def
}

// ServeDNS answers one query.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	m := new(mdns.Msg)
	if len(req.Question) != 1 {
		m.SetRcode(req, mdns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if !mdns.IsSubDomain(s.zone, name) {
		s.forward(w, req)
		return
	}
	m.SetReply(req)
	m.Authoritative = true
	s.mu.RLock()
	defer s.mu.RUnlock()
	// A CNAME answers every type (an ExternalName Service).
	if cn := s.index[name+" CNAME"]; len(cn) > 0 {
		m.Answer = append(m.Answer, cn...)
		_ = w.WriteMsg(m)
		return
	}
	switch q.Qtype {
	case mdns.TypeA, mdns.TypeSRV:
		m.Answer = append(m.Answer, s.index[name+" "+mdns.TypeToString[q.Qtype]]...)
		if q.Qtype == mdns.TypeSRV {
			for _, rr := range m.Answer {
				m.Extra = append(m.Extra, s.index[strings.ToLower(rr.(*mdns.SRV).Target)+" A"]...)
			}
		}
	case mdns.TypeANY:
		m.Answer = append(append(m.Answer, s.index[name+" A"]...), s.index[name+" SRV"]...)
	}
	if len(m.Answer) == 0 {
		if !s.names[name] {
			m.Rcode = mdns.RcodeNameError
		}
		m.Ns = []mdns.RR{s.soa()}
	}
	_ = w.WriteMsg(m)
}

// soa is the zone's SOA, for negative answers (their TTL).
func (s *Server) soa() mdns.RR {
	return &mdns.SOA{Hdr: mdns.RR_Header{Name: s.zone, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: TTL},
		Ns: "ns.dns." + s.zone, Mbox: "hostmaster." + s.zone, Serial: uint32(time.Now().Unix()), Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: TTL}
}

// forward asks the node's resolvers, in order, over the query's transport.
func (s *Server) forward(w mdns.ResponseWriter, req *mdns.Msg) {
	c := s.client
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
		c = &mdns.Client{Net: "tcp", Timeout: s.client.Timeout}
	}
	for _, up := range s.cfg.Upstream {
		resp, _, err := c.Exchange(req, up)
		if err == nil {
			_ = w.WriteMsg(resp)
			return
		}
		s.log.Debug("upstream", "server", up, "error", err)
	}
	m := new(mdns.Msg)
	m.SetRcode(req, mdns.RcodeServerFailure)
	_ = w.WriteMsg(m)
}

// Upstream reads the nameservers of a resolv.conf as host:53, skipping
// the cluster DNS address itself and loopback ones a forward from here
// could loop back to.
func Upstream(resolvConf []byte, self string) []string {
	var out []string
	for _, line := range strings.Split(string(resolvConf), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" || f[1] == self {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil && !a.IsLoopback() {
			out = append(out, net.JoinHostPort(a.String(), strconv.Itoa(53)))
		}
	}
	return out
}
