// Package seccomp compiles an OCI runtime-spec seccomp profile (as Docker's
// default profile from github.com/moby/profiles/seccomp produces it) into a
// classic BPF program. The agent compiles when it writes a bundle
// (Prepare); berth-init loads the result with package filter.
//
// Why not libseccomp: berth-init is built without cgo, and berthd needs no C
// library for this either. Why not
// github.com/elastic/go-seccomp-bpf's Policy: it cannot express what Docker's
// profile needs — SCMP_CMP_MASKED_EQ with a datum, an errno value on the
// default action (its Validate rejects SECCOMP_RET_ERRNO|EPERM), killing on a
// foreign architecture (it falls through to the default action) or a second
// (compat) architecture. We still use its generated syscall tables
// (github.com/elastic/go-seccomp-bpf/arch, kept current: mseal, listmount,
// setxattrat, uretprobe) and golang.org/x/net/bpf for encoding.
//
// Semantics follow runc (libcontainer/seccomp/seccomp_linux.go) on top of
// libseccomp:
//   - SCMP_ACT_ERRNO and SCMP_ACT_TRACE without errnoRet return EPERM;
//     SCMP_ACT_KILL is SECCOMP_RET_KILL_THREAD, as in libseccomp.
//   - A rule whose action equals the default action is dropped (redundant).
//   - Conditions of one rule are ANDed, unless two of them test the same
//     argument: then every condition becomes its own rule (ORed). runc does
//     this and moby's profile relies on it (opencontainers/runc#2735).
//   - Syscall names unknown on an architecture are skipped, as libseccomp
//     does for names that do not exist on an arch.
//   - The native architecture is always filtered; a compat architecture
//     (i386 on amd64, arm on arm64) only when Architectures lists it.
//     Any other AUDIT_ARCH kills the process, like libseccomp's default
//     SCMP_FLTATR_ACT_BADARCH (we use KILL_PROCESS, kernel >= 4.14, so a
//     multi-threaded task cannot survive with a dead thread).
//   - The x32 ABI on amd64 (syscall numbers with __X32_SYSCALL_BIT, sharing
//     AUDIT_ARCH_X86_64) is always killed, even though Docker's profile lists
//     SCMP_ARCH_X32: Debian's kernels leave x32 disabled at boot
//     (syscall.x32=n) and no workload we run needs it, so we take the smaller
//     attack surface. libseccomp kills it the same way when x32 is not added.
//   - Like runc's patchbpf (libcontainer/seccomp/patchbpf/enosys_linux.go),
//     a syscall number above the highest one the profile names for an arch
//     returns ENOSYS instead of the default errno when the default action
//     denies: a syscall newer than the profile must look "not implemented",
//     so libc falls back (clone3 -> clone, faccessat2 -> faccessat) instead
//     of failing with EPERM.
//   - Order of evaluation for one syscall: its conditional rules in profile
//     order (first match wins), then its unconditional rule, then the
//     default action.
package seccomp

import (
	"fmt"
	"runtime"
	"slices"

	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Program is a compiled filter ready for Load.
type Program struct {
	// Instructions is the program before encoding (for dumps and tests).
	Instructions []bpf.Instruction
	// Filter is the encoded program for seccomp(SECCOMP_SET_MODE_FILTER).
	Filter []unix.SockFilter
	// Flags for seccomp(2) (SECCOMP_FILTER_FLAG_LOG, ..._SPEC_ALLOW).
	Flags uint
}

// Offsets into struct seccomp_data (include/uapi/linux/seccomp.h):
// int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
	// Every architecture we support is little-endian: the low word of a
	// 64-bit argument comes first.
	offLo = 0
	offHi = 4
)

// x32SyscallBit is __X32_SYSCALL_BIT (arch/x86/include/uapi/asm/unistd.h).
const x32SyscallBit = 0x40000000

// bpfMaxInsns is BPF_MAXINSNS (include/uapi/linux/bpf_common.h); the kernel
// rejects longer classic programs with EINVAL.
const bpfMaxInsns = 4096

// badArchAction is what a foreign architecture or the x32 ABI gets.
const badArchAction = unix.SECCOMP_RET_KILL_PROCESS

type section struct {
	arch specs.Arch
	info *arch.Info
}

type family struct {
	native    section
	compat    []section
	rejectX32 bool
}

// families lists, per GOARCH, the architectures a process of that GOARCH's
// kernel can enter with (the native ABI and its compat ABI).
var families = map[string]family{
	"amd64": {
		native:    section{specs.ArchX86_64, arch.X86_64},
		compat:    []section{{specs.ArchX86, arch.I386}},
		rejectX32: true,
	},
	"arm64": {
		native: section{specs.ArchAARCH64, arch.AARCH64},
		compat: []section{{specs.ArchARM, arch.ARM}},
	},
}

// Compile compiles s for the running architecture.
func Compile(s *specs.LinuxSeccomp) (*Program, error) {
	return CompileFor(s, runtime.GOARCH)
}

// CompileFor compiles s for the kernel of goarch ("amd64" or "arm64").
func CompileFor(s *specs.LinuxSeccomp, goarch string) (*Program, error) {
	if s == nil {
		return nil, fmt.Errorf("seccomp: nil profile")
	}
	fam, ok := families[goarch]
	if !ok {
		return nil, fmt.Errorf("seccomp: architecture %s not supported", goarch)
	}
	def, err := encodeAction(s.DefaultAction, s.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("seccomp: default action: %w", err)
	}
	flags, err := encodeFlags(s.Flags)
	if err != nil {
		return nil, err
	}
	rules, err := parseRules(s, def)
	if err != nil {
		return nil, err
	}

	sections := []section{fam.native}
	for _, c := range fam.compat {
		if slices.Contains(s.Architectures, c.arch) {
			sections = append(sections, c)
		}
	}

	var a assembler
	// Dispatch on the audit architecture. A far jump needs `ja`, so each
	// test is "jne ID -> next test; ja section".
	a.ldAbs(offArch)
	secLabels := make([]label, len(sections))
	for i, sec := range sections {
		secLabels[i] = a.newLabel()
		next := a.newLabel()
		a.jmp(bpf.JumpEqual, uint32(sec.info.ID), fall, next)
		a.ja(secLabels[i])
		a.mark(next)
	}
	a.ret(badArchAction)

	for i, sec := range sections {
		a.mark(secLabels[i])
		if err := emitSection(&a, sec, fam.rejectX32 && sec.info == arch.X86_64, s.Syscalls, rules, def); err != nil {
			return nil, err
		}
	}

	insns, err := a.resolve()
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	if len(insns) > bpfMaxInsns {
		return nil, fmt.Errorf("seccomp: program has %d instructions, the kernel accepts %d", len(insns), bpfMaxInsns)
	}
	raw, err := bpf.Assemble(insns)
	if err != nil {
		return nil, fmt.Errorf("seccomp: assemble: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return &Program{Instructions: insns, Filter: filter, Flags: flags}, nil
}

// rule is one match of a syscall: all conds must hold (AND).
type rule struct {
	name   string
	action uint32
	conds  []specs.LinuxSeccompArg
}

// parseRules flattens the profile into per-name rules in profile order.
func parseRules(s *specs.LinuxSeccomp, def uint32) ([]rule, error) {
	var out []rule
	for i, sc := range s.Syscalls {
		act, err := encodeAction(sc.Action, sc.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("seccomp: syscalls[%d] %v: %w", i, sc.Names, err)
		}
		if act == def {
			continue // runc: "Ignore it, it's redundant with the default action"
		}
		for _, c := range sc.Args {
			if c.Index > 5 {
				return nil, fmt.Errorf("seccomp: syscalls[%d] %v: argument index %d out of range 0..5", i, sc.Names, c.Index)
			}
			if !knownOp(c.Op) {
				return nil, fmt.Errorf("seccomp: syscalls[%d] %v: unknown operator %q", i, sc.Names, c.Op)
			}
		}
		// Same-argument conditions are ORed, each becoming its own rule.
		groups := [][]specs.LinuxSeccompArg{sc.Args}
		if sameArgTwice(sc.Args) {
			groups = groups[:0]
			for _, c := range sc.Args {
				groups = append(groups, []specs.LinuxSeccompArg{c})
			}
		}
		for _, name := range sc.Names {
			for _, g := range groups {
				out = append(out, rule{name: name, action: act, conds: g})
			}
		}
	}
	return out, nil
}

func sameArgTwice(args []specs.LinuxSeccompArg) bool {
	var seen [6]bool
	for _, c := range args {
		if seen[c.Index] {
			return true
		}
		seen[c.Index] = true
	}
	return false
}

func knownOp(op specs.LinuxSeccompOperator) bool {
	switch op {
	case specs.OpEqualTo, specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual,
		specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpMaskedEqual:
		return true
	}
	return false
}

// sysPlan is what one syscall number does on one architecture.
type sysPlan struct {
	nr     uint32
	name   string
	conds  []rule
	uncond *uint32
}

func emitSection(a *assembler, sec section, rejectX32 bool, profile []specs.LinuxSyscall, rules []rule, def uint32) error {
	plans := map[uint32]*sysPlan{}
	for _, r := range rules {
		n, ok := sec.info.SyscallNames[r.name]
		if !ok {
			continue // unknown on this arch: skipped, as libseccomp does
		}
		nr := uint32(n)
		p := plans[nr]
		if p == nil {
			p = &sysPlan{nr: nr, name: r.name}
			plans[nr] = p
		}
		if len(r.conds) > 0 {
			p.conds = append(p.conds, r)
			continue
		}
		if p.uncond != nil && *p.uncond != r.action {
			return fmt.Errorf("seccomp: %s: conflicting actions %#x and %#x for %s", sec.arch, *p.uncond, r.action, r.name)
		}
		act := r.action
		p.uncond = &act
	}

	a.ldAbs(offNr)
	if rejectX32 {
		native := a.newLabel()
		a.jmp(bpf.JumpGreaterOrEqual, x32SyscallBit, fall, native)
		a.ret(badArchAction)
		a.mark(native)
	}
	if denies(def) {
		// Highest number named in the profile for this arch, whatever the
		// rule (even one dropped as redundant); anything newer is "not implemented" (runc's ENOSYS stub).
		var maxNr uint32
		for _, sc := range profile {
			for _, name := range sc.Names {
				if n, ok := sec.info.SyscallNames[name]; ok && uint32(n) > maxNr {
					maxNr = uint32(n)
				}
			}
		}
		if maxNr > 0 {
			skip := a.newLabel()
			a.jmp(bpf.JumpGreaterThan, maxNr, fall, skip)
			a.ret(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
			a.mark(skip)
		}
	}

	// Dispatch on the number with a balanced binary search over ranges of
	// numbers that share an outcome, as libseccomp's binary-tree
	// optimisation does: a syscall costs O(log n) comparisons instead of a
	// scan of the whole list, and so does the kernel's emulation of the
	// filter for every syscall number when it loads it (the bitmap of
	// always-allowed syscalls, seccomp_cache_prepare, kernel >= 5.11): with
	// Docker's profile the load takes about a third of the time of the old
	// linear program (make bench: one load per container start).
	emitTree(a, segments(plans, def), def)
	return nil
}

// segment is a range of syscall numbers lo..hi with one outcome: a return
// value or, for a syscall with argument conditions (lo == hi), its plan.
type segment struct {
	lo, hi uint32
	ret    uint32
	plan   *sysPlan
}

// segments covers 0..0xffffffff in ascending, disjoint ranges: numbers
// without a plan return def, and neighbours that return the same merge.
func segments(plans map[uint32]*sysPlan, def uint32) []segment {
	nrs := make([]uint32, 0, len(plans))
	for nr := range plans {
		nrs = append(nrs, nr)
	}
	slices.Sort(nrs)
	var segs []segment
	add := func(s segment) {
		if n := len(segs); n > 0 && s.plan == nil && segs[n-1].plan == nil && segs[n-1].ret == s.ret {
			segs[n-1].hi = s.hi // always contiguous: the caller fills gaps
			return
		}
		segs = append(segs, s)
	}
	next := uint32(0) // lowest number not covered yet
	for _, nr := range nrs {
		if nr > next {
			add(segment{lo: next, hi: nr - 1, ret: def})
		}
		p := plans[nr]
		switch {
		case len(p.conds) > 0:
			add(segment{lo: nr, hi: nr, plan: p})
		case p.uncond != nil:
			add(segment{lo: nr, hi: nr, ret: *p.uncond})
		default:
			add(segment{lo: nr, hi: nr, ret: def})
		}
		next = nr + 1
	}
	if len(nrs) == 0 || nrs[len(nrs)-1] < 0xffffffff {
		add(segment{lo: next, hi: 0xffffffff, ret: def})
	}
	return segs
}

// emitTree emits the search over segs (A = nr on entry). An inner node is
// "jge <first number of the upper half>, else the lower half right after;
// ja upper half" — two instructions, so that every conditional jump is
// short whatever the size of the subtrees. A leaf returns, or runs the
// syscall's argument checks, which all end in a return.
func emitTree(a *assembler, segs []segment, def uint32) {
	if len(segs) == 1 {
		s := segs[0]
		if s.plan == nil {
			a.ret(s.ret)
			return
		}
		for _, r := range s.plan.conds {
			next := a.newLabel()
			for _, c := range r.conds {
				emitCond(a, c, next)
			}
			a.ret(r.action)
			a.mark(next)
		}
		if s.plan.uncond != nil {
			a.ret(*s.plan.uncond)
		} else {
			a.ret(def)
		}
		return
	}
	mid := len(segs) / 2
	lower, upper := a.newLabel(), a.newLabel()
	a.jmp(bpf.JumpGreaterOrEqual, segs[mid].lo, fall, lower)
	a.ja(upper)
	a.mark(lower)
	emitTree(a, segs[:mid], def)
	a.mark(upper)
	emitTree(a, segs[mid:], def)
}

// emitCond emits a 64-bit comparison of argument c.Index; it falls through
// when the condition holds and jumps to fail otherwise. Comparisons are
// unsigned, as in libseccomp. A compat (32-bit) task's arguments arrive
// zero-extended, so the same code is right for it.
func emitCond(a *assembler, c specs.LinuxSeccompArg, fail label) {
	lo := uint32(offArgs + 8*c.Index + offLo)
	hi := uint32(offArgs + 8*c.Index + offHi)
	vhi, vlo := uint32(c.Value>>32), uint32(c.Value)
	pass := a.newLabel()
	switch c.Op {
	case specs.OpEqualTo:
		a.ldAbs(hi)
		a.jmp(bpf.JumpEqual, vhi, fall, fail)
		a.ldAbs(lo)
		a.jmp(bpf.JumpEqual, vlo, fall, fail)
	case specs.OpNotEqual:
		a.ldAbs(hi)
		a.jmp(bpf.JumpEqual, vhi, fall, pass)
		a.ldAbs(lo)
		a.jmp(bpf.JumpEqual, vlo, fail, fall)
	case specs.OpGreaterThan, specs.OpGreaterEqual:
		a.ldAbs(hi)
		a.jmp(bpf.JumpGreaterThan, vhi, pass, fall)
		a.jmp(bpf.JumpEqual, vhi, fall, fail)
		a.ldAbs(lo)
		cmp := bpf.JumpGreaterThan
		if c.Op == specs.OpGreaterEqual {
			cmp = bpf.JumpGreaterOrEqual
		}
		a.jmp(cmp, vlo, fall, fail)
	case specs.OpLessThan, specs.OpLessEqual:
		a.ldAbs(hi)
		a.jmp(bpf.JumpLessThan, vhi, pass, fall)
		a.jmp(bpf.JumpEqual, vhi, fall, fail)
		a.ldAbs(lo)
		cmp := bpf.JumpLessThan
		if c.Op == specs.OpLessEqual {
			cmp = bpf.JumpLessOrEqual
		}
		a.jmp(cmp, vlo, fall, fail)
	case specs.OpMaskedEqual:
		// libseccomp: (arg & datum_a) == datum_b; runc passes Value as
		// datum_a (the mask) and ValueTwo as datum_b.
		mhi, mlo := uint32(c.Value>>32), uint32(c.Value)
		dhi, dlo := uint32(c.ValueTwo>>32), uint32(c.ValueTwo)
		a.ldAbs(hi)
		a.and(mhi)
		a.jmp(bpf.JumpEqual, dhi, fall, fail)
		a.ldAbs(lo)
		a.and(mlo)
		a.jmp(bpf.JumpEqual, dlo, fall, fail)
	}
	a.mark(pass)
}

// denies reports whether the default action refuses the call (so an
// unknown, newer syscall should rather see ENOSYS).
func denies(def uint32) bool {
	switch def & unix.SECCOMP_RET_ACTION_FULL {
	case unix.SECCOMP_RET_ALLOW, unix.SECCOMP_RET_LOG:
		return false
	}
	return true
}

func encodeAction(act specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	data := func() (uint32, error) {
		if errnoRet == nil {
			return uint32(unix.EPERM), nil // runc's default for ERRNO and TRACE
		}
		if *errnoRet > unix.SECCOMP_RET_DATA {
			return 0, fmt.Errorf("errnoRet %d does not fit SECCOMP_RET_DATA", *errnoRet)
		}
		return uint32(*errnoRet), nil
	}
	noData := func(v uint32) (uint32, error) {
		if errnoRet != nil {
			return 0, fmt.Errorf("errnoRet is only valid with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not %s", act)
		}
		return v, nil
	}
	switch act {
	case specs.ActAllow:
		return noData(unix.SECCOMP_RET_ALLOW)
	case specs.ActLog:
		return noData(unix.SECCOMP_RET_LOG)
	case specs.ActKill, specs.ActKillThread:
		return noData(unix.SECCOMP_RET_KILL_THREAD)
	case specs.ActKillProcess:
		return noData(unix.SECCOMP_RET_KILL_PROCESS)
	case specs.ActTrap:
		return noData(unix.SECCOMP_RET_TRAP)
	case specs.ActErrno:
		d, err := data()
		return unix.SECCOMP_RET_ERRNO | d, err
	case specs.ActTrace:
		d, err := data()
		return unix.SECCOMP_RET_TRACE | d, err
	case specs.ActNotify:
		return 0, fmt.Errorf("%s needs a seccomp agent (listenerPath); berth has none", act)
	}
	return 0, fmt.Errorf("unknown action %q", act)
}

func encodeFlags(flags []specs.LinuxSeccompFlag) (uint, error) {
	var f uint
	for _, fl := range flags {
		switch fl {
		case specs.LinuxSeccompFlagLog:
			f |= unix.SECCOMP_FILTER_FLAG_LOG
		case specs.LinuxSeccompFlagSpecAllow:
			f |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		default:
			return 0, fmt.Errorf("seccomp: flag %q not supported", fl)
		}
	}
	return f, nil
}
