package stage1

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// capNumbers maps the names used in an OCI spec to capability numbers
// (include/uapi/linux/capability.h). A small table rather than a library:
// it is the kernel ABI and changes once every few years.
var capNumbers = map[string]int{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE,
	"CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH, "CAP_FOWNER": unix.CAP_FOWNER,
	"CAP_FSETID": unix.CAP_FSETID, "CAP_KILL": unix.CAP_KILL, "CAP_SETGID": unix.CAP_SETGID,
	"CAP_SETUID": unix.CAP_SETUID, "CAP_SETPCAP": unix.CAP_SETPCAP,
	"CAP_LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE, "CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE,
	"CAP_NET_BROADCAST": unix.CAP_NET_BROADCAST, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
	"CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_IPC_LOCK": unix.CAP_IPC_LOCK, "CAP_IPC_OWNER": unix.CAP_IPC_OWNER,
	"CAP_SYS_MODULE": unix.CAP_SYS_MODULE, "CAP_SYS_RAWIO": unix.CAP_SYS_RAWIO,
	"CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT, "CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE,
	"CAP_SYS_PACCT": unix.CAP_SYS_PACCT, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN,
	"CAP_SYS_BOOT": unix.CAP_SYS_BOOT, "CAP_SYS_NICE": unix.CAP_SYS_NICE,
	"CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_SYS_TIME": unix.CAP_SYS_TIME,
	"CAP_SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG, "CAP_MKNOD": unix.CAP_MKNOD,
	"CAP_LEASE": unix.CAP_LEASE, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	"CAP_AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "CAP_SETFCAP": unix.CAP_SETFCAP,
	"CAP_MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE, "CAP_MAC_ADMIN": unix.CAP_MAC_ADMIN,
	"CAP_SYSLOG": unix.CAP_SYSLOG, "CAP_WAKE_ALARM": unix.CAP_WAKE_ALARM,
	"CAP_BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND, "CAP_AUDIT_READ": unix.CAP_AUDIT_READ,
	"CAP_PERFMON": unix.CAP_PERFMON, "CAP_BPF": unix.CAP_BPF,
	"CAP_CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

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
			v, ok := capNumbers[strings.ToUpper(n)]
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
