package proxy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// UDP has no connection for an endpoint's removal to end: conntrack keeps
// a flow's translation as long as datagrams keep coming (each one renews
// it), so a client that sends from the same port (a DNS resolver, a
// syslog or statsd sender) would keep reaching a backend the Service no
// longer selects, or, for a flow that began before the Service had
// endpoints, reach nothing, forever. kube-proxy clears such flows after
// each sync (pkg/proxy/conntrack/cleanup.go); the proxier does the same:
// a UDP flow to a cluster IP and port, or to a node port, whose reply
// comes from anything but one of that port's endpoints now is deleted, so
// the next datagram is translated afresh. TCP needs none of this: a
// removed endpoint's connections end, or are reset, on their own.

// Tuple is one direction of a conntrack flow.
type Tuple struct {
	Src, Dst netip.AddrPort
}

// Conntrack is the kernel's connection tracking table as the proxier
// clears it; nil in Config: nothing is cleared (tests with a fake nft).
type Conntrack interface {
	// DeleteUDP deletes the IPv4 UDP flows stale matches (given their
	// original and reply directions) and says how many it deleted.
	DeleteUDP(stale func(orig, reply Tuple) bool) (uint, error)
}

// NetlinkConntrack is the table of the calling thread's network
// namespace, through netlink (nf_conntrack_netlink).
type NetlinkConntrack struct{}

type udpFilter func(orig, reply Tuple) bool

func (f udpFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	return f(tupleOf(flow.Forward), tupleOf(flow.Reverse))
}

func tupleOf(t netlink.IPTuple) Tuple {
	src, _ := netip.AddrFromSlice(t.SrcIP)
	dst, _ := netip.AddrFromSlice(t.DstIP)
	return Tuple{Src: netip.AddrPortFrom(src.Unmap(), t.SrcPort), Dst: netip.AddrPortFrom(dst.Unmap(), t.DstPort)}
}

// DeleteUDP deletes the flows stale matches.
func (NetlinkConntrack) DeleteUDP(stale func(orig, reply Tuple) bool) (uint, error) {
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, udpFilter(stale))
	if err != nil {
		return n, fmt.Errorf("conntrack: %w", err)
	}
	return n, nil
}

// udpTargets is where UDP traffic to the Services may go now: for each
// cluster IP and port, and each node port, the endpoints (address and
// port) a reply may come from.
type udpTargets struct {
	clusterIPs map[netip.AddrPort]map[netip.AddrPort]bool
	nodePorts  map[uint16]map[netip.AddrPort]bool
	// serviceCIDR: a translated flow to an address in it that is no
	// Service port now is a deleted Service's; gone: the node ports of
	// the last targets that are no longer any Service's.
	serviceCIDR netip.Prefix
	gone        map[uint16]bool
	k           *string // key(), once computed
}

func udpTargetsOf(ports []*servicePort, cidr netip.Prefix, last *udpTargets) *udpTargets {
	u := &udpTargets{clusterIPs: map[netip.AddrPort]map[netip.AddrPort]bool{}, nodePorts: map[uint16]map[netip.AddrPort]bool{},
		serviceCIDR: cidr, gone: map[uint16]bool{}}
	for _, sp := range ports {
		if sp.proto != corev1.ProtocolUDP {
			continue
		}
		eps := map[netip.AddrPort]bool{}
		for _, e := range sp.endpoints {
			if a, err := netip.ParseAddr(e.ip); err == nil {
				eps[netip.AddrPortFrom(a, uint16(e.port))] = true
			}
		}
		if a, err := netip.ParseAddr(sp.clusterIP); err == nil {
			u.clusterIPs[netip.AddrPortFrom(a, uint16(sp.port))] = eps
		}
		if sp.nodePort != 0 {
			u.nodePorts[uint16(sp.nodePort)] = eps
		}
	}
	if last != nil {
		for p := range last.nodePorts {
			if _, ok := u.nodePorts[p]; !ok {
				u.gone[p] = true
			}
		}
	}
	return u
}

// stale: a flow to a Service port whose reply does not come from one of
// its endpoints (a removed endpoint's, or one never translated because it
// began when the port had none), or a translated flow to a Service that
// is gone. Node ports are matched on the port alone, as kube-proxy
// matches them: the range is the Services'. An untranslated flow to an
// address of the range that is no Service's is left alone: it is the
// node's own (the cluster DNS listener's).
func (u *udpTargets) stale(orig, reply Tuple) bool {
	if eps, ok := u.clusterIPs[orig.Dst]; ok {
		return !eps[reply.Src]
	}
	if eps, ok := u.nodePorts[orig.Dst.Port()]; ok {
		return !eps[reply.Src]
	}
	translated := reply.Src != orig.Dst
	return translated && (u.serviceCIDR.IsValid() && u.serviceCIDR.Contains(orig.Dst.Addr()) || u.gone[orig.Dst.Port()])
}

// key is the targets in a stable form, to clear only after a change;
// computed once (a pass compares the new targets' with the last ones').
func (u *udpTargets) key() string {
	if u.k != nil {
		return *u.k
	}
	var b strings.Builder
	for _, k := range slices.SortedFunc(maps.Keys(u.clusterIPs), netip.AddrPort.Compare) {
		fmt.Fprintf(&b, "%s>%s;", k, slices.SortedFunc(maps.Keys(u.clusterIPs[k]), netip.AddrPort.Compare))
	}
	for _, k := range slices.Sorted(maps.Keys(u.nodePorts)) {
		fmt.Fprintf(&b, "%d>%s;", k, slices.SortedFunc(maps.Keys(u.nodePorts[k]), netip.AddrPort.Compare))
	}
	k := b.String()
	u.k = &k
	return k
}
