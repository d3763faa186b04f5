package berthinit

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/unitgen/caps"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// capMask is a 64-bit capability set (two capset(2) words).
type capMask uint64

func (m capMask) has(c int) bool { return m&(1<<uint(c)) != 0 }

// capSets is the spec's capabilities as masks, limited to what the running
// kernel knows (cap_last_cap).
type capSets struct {
	bounding, effective, permitted, inheritable, ambient capMask
	lastCap                                              int
}

// parseCaps converts names to masks. Like runc (libcontainer/capabilities),
// a name unknown to this table or to the running kernel is skipped with a
// warning rather than failing the container: Kubernetes passes
// securityContext capabilities through unchecked, and a newer capability
// must not break an older kernel.
func parseCaps(c *specs.LinuxCapabilities, lastCap int, warn func(string)) capSets {
	s := capSets{lastCap: lastCap}
	if c == nil {
		return s
	}
	conv := func(names []string) capMask {
		var m capMask
		for _, n := range names {
			v, ok := caps.Numbers[strings.ToUpper(n)]
			if !ok || v > lastCap {
				warn(fmt.Sprintf("capability %q is not known to this kernel, skipped", n))
				continue
			}
			m |= 1 << uint(v)
		}
		return m
	}
	s.bounding = conv(c.Bounding)
	s.effective = conv(c.Effective)
	s.permitted = conv(c.Permitted)
	s.inheritable = conv(c.Inheritable)
	s.ambient = conv(c.Ambient)
	return s
}

// lastCap reads /proc/sys/kernel/cap_last_cap (capabilities(7)).
func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read cap_last_cap: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("parse cap_last_cap %q: %w", b, err)
	}
	return n, nil
}

// dropBounding removes every capability outside the bounding set from the
// calling thread's bounding set (PR_CAPBSET_DROP needs CAP_SETPCAP, so this
// comes before the user switch).
func (s capSets) dropBounding() error {
	for c := 0; c <= s.lastCap; c++ {
		if s.bounding.has(c) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// apply sets the calling thread's effective, permitted and inheritable sets
// with capset(2), then the ambient set (PR_CAP_AMBIENT, Linux >= 4.3), which
// needs each capability in permitted and inheritable already.
func (s capSets) apply() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(s.effective), Permitted: uint32(s.permitted), Inheritable: uint32(s.inheritable)},
		{Effective: uint32(s.effective >> 32), Permitted: uint32(s.permitted >> 32), Inheritable: uint32(s.inheritable >> 32)},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset(effective=%#x permitted=%#x inheritable=%#x): %w", uint64(s.effective), uint64(s.permitted), uint64(s.inheritable), err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for c := 0; c <= s.lastCap; c++ {
		if !s.ambient.has(c) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0); err != nil {
			return fmt.Errorf("raise ambient capability %d (it must also be permitted and inheritable): %w", c, err)
		}
	}
	return nil
}
