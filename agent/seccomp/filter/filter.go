// Package filter is a compiled seccomp filter as berth-init loads it: the
// classic BPF program and its seccomp(2) flags, with a small file encoding.
// The agent compiles the spec's profile (package seccomp) once, when it
// writes a container's bundle; berth-init only reads and loads the result,
// so it carries neither the compiler nor its syscall tables (about 1 ms of
// every container start, make bench).
package filter

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Annotation in the bundle's config.json is the sha256 (hex) of the
// bundle's seccomp filter file (bundle.SeccompFile), which holds the filter
// compiled by berthd from the profile unitgen chose, in MarshalBinary's
// encoding: the spec says which filter the container gets, and the file must
// be it. The spec's linux.seccomp is then empty.
const Annotation = "dev.berth.seccomp.sha256"

// Filter is a compiled program ready for Load.
type Filter struct {
	Insns []unix.SockFilter // for seccomp(SECCOMP_SET_MODE_FILTER)
	Flags uint              // SECCOMP_FILTER_FLAG_LOG, ..._SPEC_ALLOW
}

// magic starts every encoded filter; the digit is the format's version.
const magic = "BERTHSC1"

// MaxInsns is BPF_MAXINSNS (include/uapi/linux/bpf_common.h): the kernel
// rejects longer classic programs.
const MaxInsns = 4096

// MarshalBinary encodes f: magic, flags (uint32), instruction count
// (uint32), then each instruction as code (uint16), jt, jf (uint8) and k
// (uint32), all little-endian.
func (f *Filter) MarshalBinary() ([]byte, error) {
	if len(f.Insns) == 0 || len(f.Insns) > MaxInsns {
		return nil, fmt.Errorf("seccomp filter: %d instructions, want 1 to %d", len(f.Insns), MaxInsns)
	}
	b := make([]byte, 0, len(magic)+8+8*len(f.Insns))
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(f.Flags))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Insns)))
	for _, in := range f.Insns {
		b = binary.LittleEndian.AppendUint16(b, in.Code)
		b = append(b, in.Jt, in.Jf)
		b = binary.LittleEndian.AppendUint32(b, in.K)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote; anything else (another
// version, a truncated or padded file) is an error.
func (f *Filter) UnmarshalBinary(b []byte) error {
	if len(b) < len(magic)+8 || string(b[:len(magic)]) != magic {
		return errors.New("seccomp filter: not a berth seccomp filter (bad magic)")
	}
	b = b[len(magic):]
	flags := binary.LittleEndian.Uint32(b)
	n := binary.LittleEndian.Uint32(b[4:])
	b = b[8:]
	if n == 0 || n > MaxInsns || uint64(len(b)) != 8*uint64(n) {
		return fmt.Errorf("seccomp filter: %d instructions announced, %d bytes of them", n, len(b))
	}
	insns := make([]unix.SockFilter, n)
	for i := range insns {
		p := b[8*i:]
		insns[i] = unix.SockFilter{Code: binary.LittleEndian.Uint16(p), Jt: p[2], Jf: p[3], K: binary.LittleEndian.Uint32(p[4:])}
	}
	f.Insns, f.Flags = insns, uint(flags)
	return nil
}
