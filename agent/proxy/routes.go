package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
)

// LoopbackRoutes routes the Service range to the loopback device. A
// node's own connection to a cluster IP needs a route for the kernel to
// send it at all (its nat-output DNAT then reroutes it to the backend),
// and a node without a default route (a test node, an isolated host) has
// none; kube-proxy's IPVS mode binds cluster IPs to a dummy device for the
// same reason, but the dummy module is not on every kernel (these
// machines lack it). A packet no rule translates leaves on lo with an
// address that is not local and is dropped, as the dummy device would
// drop it, instead of leaving by the default route.
type LoopbackRoutes struct{}

func routeOf(cidr netip.Prefix) (*netlink.Route, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("link lo: %w", err)
	}
	dst := &net.IPNet{IP: cidr.Addr().AsSlice(), Mask: net.CIDRMask(cidr.Bits(), cidr.Addr().BitLen())}
	return &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}, nil
}

// Ensure adds the route, idempotently.
func (LoopbackRoutes) Ensure(cidr netip.Prefix) error {
	r, err := routeOf(cidr)
	if err != nil {
		return err
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s dev lo: %w", cidr, err)
	}
	return nil
}

// Remove deletes the route.
func (LoopbackRoutes) Remove(cidr netip.Prefix) error {
	r, err := routeOf(cidr)
	if err != nil {
		return err
	}
	if err := netlink.RouteDel(r); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("route %s dev lo: %w", cidr, err)
	}
	return nil
}
