package dns

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// HoldAddress puts addr on the node's lo (a /32), so that the node
// receives what pods send to it by their default route, and berthd can
// listen on it; idempotent.
func HoldAddress(addr netip.Addr) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("link lo: %w", err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())}}
	if err := netlink.AddrReplace(lo, a); err != nil {
		return fmt.Errorf("address %s on lo: %w", addr, err)
	}
	return nil
}
