package server

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// Cluster IPs and node ports, allocated as the apiserver's service REST
// allocates them (pkg/registry/core/service/storage/alloc.go), with its
// errors. The apiserver keeps a bitmap of each range in etcd, repaired
// from the Services by a controller; here the Services in the store are
// the only record: every allocation lists them, under one lock held from
// the allocation until the Service is stored, so two writes can never take
// the same address or port and nothing is to repair after a crash.

// Default ranges: 10.86.0.0/16 collides with neither berth's pod network
// (10.85.0.0/16), Podman's (10.88.0.0/16 and up), Docker's
// (172.17.0.0/16), k3s' (10.42/10.43) nor kubeadm's service range
// (10.96.0.0/12); node ports are Kubernetes' 30000-32767.
var (
	DefaultServiceCIDR  = netip.MustParsePrefix("10.86.0.0/16")
	DefaultNodePortBase = 30000
	DefaultNodePortSize = 2768
)

// serviceRanges are the node's service ranges (Options).
type serviceRanges struct {
	cidr               netip.Prefix
	portBase, portSize int
	reserved           []netip.Addr // never allocated, nor given when asked for
}

func (r serviceRanges) portRange() string {
	return fmt.Sprintf("%d-%d", r.portBase, r.portBase+r.portSize-1)
}

// serviceAllocs is what the other Services hold.
type serviceAllocs struct {
	ips   map[netip.Addr]bool
	ports map[int32]bool
}

// beginServiceAlloc takes the allocation lock and reads what every Service
// but ns/name holds. unlock must be called once the write is stored or
// given up.
func (s *Server) beginServiceAlloc(ns, name string) (*serviceAllocs, func(), error) {
	s.serviceMu.Lock()
	used := &serviceAllocs{ips: map[netip.Addr]bool{}, ports: map[int32]bool{}}
	for _, a := range s.svcRanges.reserved {
		used.ips[a] = true
	}
	_, err := s.store.List(store.Resource("services"), "", func(data []byte) error {
		var svc corev1.Service
		if err := json.Unmarshal(data, &svc); err != nil {
			return err
		}
		if svc.Namespace == ns && svc.Name == name {
			return nil
		}
		for _, ip := range svc.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				used.ips[a] = true
			}
		}
		for _, p := range svc.Spec.Ports {
			if p.NodePort != 0 {
				used.ports[p.NodePort] = true
			}
		}
		if svc.Spec.HealthCheckNodePort != 0 {
			used.ports[svc.Spec.HealthCheckNodePort] = true
		}
		return nil
	})
	if err != nil {
		s.serviceMu.Unlock()
		return nil, nil, fmt.Errorf("list services: %w", err)
	}
	return used, s.serviceMu.Unlock, nil
}

// allocateService gives svc what it needs and has not got: a cluster IP
// (unless headless or ExternalName), node ports for NodePort and
// LoadBalancer Services; what it asks for by value is checked against the
// range and the other Services. old is the stored Service on an update
// (its allocations stay its own), nil on a create.
func (r serviceRanges) allocateService(svc, old *corev1.Service, used *serviceAllocs) error {
	if needsClusterIP(svc) && !isHeadless(svc) {
		ip := svc.Spec.ClusterIP
		switch {
		case ip == "":
			a, err := r.nextIP(used)
			if err != nil {
				return apierrors.NewInternalError(fmt.Errorf("failed to allocate a serviceIP: %v", err))
			}
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = a.String(), []string{a.String()}
		case old != nil && old.Spec.ClusterIP == ip:
			// Its own.
		default:
			a, err := netip.ParseAddr(ip)
			if err != nil {
				break // validation says so
			}
			var why string
			switch {
			case !r.cidr.Contains(a) || a == r.cidr.Masked().Addr() || a == lastAddr(r.cidr):
				why = fmt.Sprintf("the provided IP (%s) is not in the valid range. The range of valid IPs is %s", ip, r.cidr)
			case used.ips[a]:
				why = "provided IP is already allocated"
			}
			if why != "" {
				return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), svc.Name, field.ErrorList{
					field.Invalid(field.NewPath("spec", "clusterIPs"), svc.Spec.ClusterIPs, fmt.Sprintf("failed to allocate IP %s: %s", ip, why))})
			}
		}
	}
	if needsClusterIP(svc) {
		if len(svc.Spec.IPFamilies) == 0 {
			svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		}
		if svc.Spec.IPFamilyPolicy == nil {
			p := corev1.IPFamilyPolicySingleStack
			svc.Spec.IPFamilyPolicy = &p
		}
	}
	allocate := svc.Spec.Type == corev1.ServiceTypeNodePort ||
		svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.AllocateLoadBalancerNodePorts != nil && *svc.Spec.AllocateLoadBalancerNodePorts
	own := map[int32]bool{}
	if old != nil {
		for _, p := range old.Spec.Ports {
			own[p.NodePort] = true
		}
	}
	taken := map[int32]bool{}
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		switch {
		case p.NodePort == 0 && allocate:
			n, err := r.nextPort(used, taken)
			if err != nil {
				return apierrors.NewInternalError(fmt.Errorf("failed to allocate a nodePort: %v", err))
			}
			p.NodePort = n
		case p.NodePort == 0, own[p.NodePort] || taken[p.NodePort]:
		default:
			var why string
			switch {
			case int(p.NodePort) < r.portBase || int(p.NodePort) >= r.portBase+r.portSize:
				why = "provided port is not in the valid range. The range of valid ports is " + r.portRange()
			case used.ports[p.NodePort]:
				why = "provided port is already allocated"
			}
			if why != "" {
				return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), svc.Name, field.ErrorList{
					field.Invalid(field.NewPath("spec", "ports").Index(i).Child("nodePort"), p.NodePort, why)})
			}
		}
		taken[p.NodePort] = true
	}
	return nil
}

// nextIP is AllocateNext: a free address from a random offset, as the
// apiserver picks one, so that an address just freed is not handed out
// again at once. The range is IPv4 (Options).
func (r serviceRanges) nextIP(used *serviceAllocs) (netip.Addr, error) {
	b := r.cidr.Masked().Addr().As4()
	base := binary.BigEndian.Uint32(b[:]) + 1 // not the network address
	size := 1<<(32-r.cidr.Bits()) - 2         // nor the broadcast one
	if size <= 0 {
		return netip.Addr{}, fmt.Errorf("range %s is full", r.cidr)
	}
	start := rand.IntN(size)
	for i := 0; i < size; i++ {
		var ip [4]byte
		binary.BigEndian.PutUint32(ip[:], base+uint32((start+i)%size))
		if a := netip.AddrFrom4(ip); !used.ips[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("range %s is full", r.cidr)
}

// nextPort is the node port allocator's AllocateNext.
func (r serviceRanges) nextPort(used *serviceAllocs, taken map[int32]bool) (int32, error) {
	start := rand.IntN(r.portSize)
	for i := 0; i < r.portSize; i++ {
		n := int32(r.portBase + (start+i)%r.portSize)
		if !used.ports[n] && !taken[n] {
			return n, nil
		}
	}
	return 0, fmt.Errorf("range %s is full", r.portRange())
}

// lastAddr is an IPv4 prefix's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	n := binary.BigEndian.Uint32(b[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}
