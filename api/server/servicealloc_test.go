package server

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// A reserved address (the cluster DNS's) is never allocated nor given
// when asked for; a full range is the apiserver's internal error.
func TestAllocateReserved(t *testing.T) {
	r := serviceRanges{cidr: netip.MustParsePrefix("10.86.0.0/30"), portBase: 30000, portSize: 1, reserved: []netip.Addr{netip.MustParseAddr("10.86.0.1")}}
	used := &serviceAllocs{ips: map[netip.Addr]bool{}, ports: map[int32]bool{}}
	for _, a := range r.reserved {
		used.ips[a] = true
	}
	for i := 0; i < 20; i++ {
		svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}
		if err := r.allocateService(svc, nil, used); err != nil || svc.Spec.ClusterIP != "10.86.0.2" {
			t.Fatalf("allocated %q, %v; want 10.86.0.2, the only address neither reserved, network nor broadcast", svc.Spec.ClusterIP, err)
		}
	}
	asked := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.86.0.1", ClusterIPs: []string{"10.86.0.1"}}}
	if err := r.allocateService(asked, nil, used); err == nil {
		t.Error("the reserved address given when asked for")
	}
	used.ips[netip.MustParseAddr("10.86.0.2")] = true
	full := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}
	if err := r.allocateService(full, nil, used); err == nil {
		t.Error("allocated from a full range")
	}
}
