package seccomp

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// dockerCaps is Docker's default capability set (moby oci/caps DefaultCapabilities).
var dockerCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// DockerDefault returns moby's default profile for a spec with Docker's
// default capabilities, as dockerd/containerd would put it in config.json.
func dockerDefault(t testing.TB, caps []string) *specs.LinuxSeccomp {
	t.Helper()
	sp := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding: caps, Effective: caps, Permitted: caps,
	}}}
	p, err := mobyseccomp.GetDefaultProfile(sp)
	if err != nil {
		t.Fatalf("GetDefaultProfile: %v", err)
	}
	return p
}

// call is one seccomp_data.
type call struct {
	arch uint32
	nr   uint32
	args [6]uint64
}

// run evaluates prog on c in x/net/bpf's VM. The VM loads words
// big-endian (network order) where the kernel loads them native-endian, so
// each 32-bit field is stored big-endian at the offset the kernel uses: the
// program sees the same values either way.
func run(t *testing.T, p *Program, c call) uint32 {
	t.Helper()
	vm, err := bpf.NewVM(p.Instructions)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	buf := make([]byte, 64)
	binary.BigEndian.PutUint32(buf[offNr:], c.nr)
	binary.BigEndian.PutUint32(buf[offArch:], c.arch)
	for i, a := range c.args {
		binary.BigEndian.PutUint32(buf[offArgs+8*i+offLo:], uint32(a))
		binary.BigEndian.PutUint32(buf[offArgs+8*i+offHi:], uint32(a>>32))
	}
	out, err := vm.Run(buf)
	if err != nil {
		t.Fatalf("vm.Run: %v", err)
	}
	return uint32(out)
}

func nr(t *testing.T, info *arch.Info, name string) uint32 {
	t.Helper()
	n, ok := info.SyscallNames[name]
	if !ok {
		t.Fatalf("%s has no syscall %s", info.Name, name)
	}
	return uint32(n)
}

func actName(v uint32) string {
	data := v & unix.SECCOMP_RET_DATA
	switch v & unix.SECCOMP_RET_ACTION_FULL {
	case unix.SECCOMP_RET_ALLOW:
		return "ALLOW"
	case unix.SECCOMP_RET_LOG:
		return "LOG"
	case unix.SECCOMP_RET_KILL_PROCESS:
		return "KILL_PROCESS"
	case unix.SECCOMP_RET_KILL_THREAD:
		return "KILL_THREAD"
	case unix.SECCOMP_RET_TRAP:
		return "TRAP"
	case unix.SECCOMP_RET_ERRNO:
		return fmt.Sprintf("ERRNO(%s)", unix.ErrnoName(unix.Errno(data)))
	case unix.SECCOMP_RET_TRACE:
		return fmt.Sprintf("TRACE(%d)", data)
	}
	return fmt.Sprintf("%#x", v)
}

var (
	x8664 = uint32(arch.X86_64.ID)
	i386  = uint32(arch.I386.ID)
	a64   = uint32(arch.AARCH64.ID)
	arm32 = uint32(arch.ARM.ID)
)

func TestDockerDefaultAmd64(t *testing.T) {
	prof := dockerDefault(t, dockerCaps)
	// What moby puts there on amd64, whatever this test runs on.
	prof.Architectures = []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	p, err := CompileFor(prof, "amd64")
	if err != nil {
		t.Fatalf("CompileFor: %v", err)
	}
	if n := len(p.Filter); n == 0 || n > bpfMaxInsns {
		t.Fatalf("program length %d", n)
	}
	X := arch.X86_64
	forkFlags := uint64(unix.CLONE_CHILD_SETTID | unix.CLONE_CHILD_CLEARTID | uint64(unix.SIGCHLD))
	cases := []struct {
		name string
		c    call
		want string
	}{
		{"getpid allowed", call{x8664, nr(t, X, "getpid"), [6]uint64{}}, "ALLOW"},
		{"openat allowed", call{x8664, nr(t, X, "openat"), [6]uint64{}}, "ALLOW"},
		{"mount needs CAP_SYS_ADMIN", call{x8664, nr(t, X, "mount"), [6]uint64{}}, "ERRNO(EPERM)"},
		{"unshare needs CAP_SYS_ADMIN", call{x8664, nr(t, X, "unshare"), [6]uint64{unix.CLONE_NEWUSER}}, "ERRNO(EPERM)"},
		{"keyctl denied", call{x8664, nr(t, X, "keyctl"), [6]uint64{}}, "ERRNO(EPERM)"},
		{"init_module denied", call{x8664, nr(t, X, "init_module"), [6]uint64{}}, "ERRNO(EPERM)"},
		{"reboot denied", call{x8664, nr(t, X, "reboot"), [6]uint64{}}, "ERRNO(EPERM)"},
		{"clone fork flags allowed", call{x8664, nr(t, X, "clone"), [6]uint64{forkFlags}}, "ALLOW"},
		{"clone CLONE_NEWUSER denied", call{x8664, nr(t, X, "clone"), [6]uint64{forkFlags | unix.CLONE_NEWUSER}}, "ERRNO(EPERM)"},
		{"clone CLONE_NEWNS denied", call{x8664, nr(t, X, "clone"), [6]uint64{unix.CLONE_NEWNS}}, "ERRNO(EPERM)"},
		{"clone3 ENOSYS so libc falls back", call{x8664, nr(t, X, "clone3"), [6]uint64{}}, "ERRNO(ENOSYS)"},
		{"personality 0", call{x8664, nr(t, X, "personality"), [6]uint64{0}}, "ALLOW"},
		{"personality 8", call{x8664, nr(t, X, "personality"), [6]uint64{8}}, "ALLOW"},
		{"personality query 0xffffffff", call{x8664, nr(t, X, "personality"), [6]uint64{0xffffffff}}, "ALLOW"},
		{"personality 1 denied", call{x8664, nr(t, X, "personality"), [6]uint64{1}}, "ERRNO(EPERM)"},
		{"personality high word set denied", call{x8664, nr(t, X, "personality"), [6]uint64{1 << 32}}, "ERRNO(EPERM)"},
		{"socket AF_UNIX", call{x8664, nr(t, X, "socket"), [6]uint64{unix.AF_UNIX}}, "ALLOW"},
		{"socket AF_INET6", call{x8664, nr(t, X, "socket"), [6]uint64{unix.AF_INET6}}, "ALLOW"},
		{"socket AF_ALG denied", call{x8664, nr(t, X, "socket"), [6]uint64{unix.AF_ALG}}, "ERRNO(EPERM)"},
		{"socket AF_VSOCK denied", call{x8664, nr(t, X, "socket"), [6]uint64{unix.AF_VSOCK}}, "ERRNO(EPERM)"},
		// moby's first range is "domain < last+1", which includes AF_UNSPEC
		// on purpose: it is not creatable, the kernel says EAFNOSUPPORT.
		{"socket AF_UNSPEC left to the kernel", call{x8664, nr(t, X, "socket"), [6]uint64{unix.AF_UNSPEC}}, "ALLOW"},
		{"syscall newer than the profile: ENOSYS", call{x8664, 999, [6]uint64{}}, "ERRNO(ENOSYS)"},
		{"x32 ABI killed", call{x8664, x32SyscallBit | nr(t, arch.X32, "getpid"), [6]uint64{}}, "KILL_PROCESS"},
		{"foreign arch killed", call{a64, 172, [6]uint64{}}, "KILL_PROCESS"},
		{"i386 getpid allowed (profile lists SCMP_ARCH_X86)", call{i386, nr(t, arch.I386, "getpid"), [6]uint64{}}, "ALLOW"},
		{"i386 mount denied", call{i386, nr(t, arch.I386, "mount"), [6]uint64{}}, "ERRNO(EPERM)"},
		{"i386 clone CLONE_NEWUSER denied", call{i386, nr(t, arch.I386, "clone"), [6]uint64{unix.CLONE_NEWUSER}}, "ERRNO(EPERM)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := actName(run(t, p, tc.c)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDockerDefaultWithSysAdminAllowsMount(t *testing.T) {
	prof := dockerDefault(t, append([]string{"CAP_SYS_ADMIN"}, dockerCaps...))
	p, err := CompileFor(prof, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mount", "unshare", "clone3"} {
		if got := actName(run(t, p, call{x8664, nr(t, arch.X86_64, name), [6]uint64{unix.CLONE_NEWNS}})); got != "ALLOW" {
			t.Errorf("%s with CAP_SYS_ADMIN: got %s, want ALLOW", name, got)
		}
	}
}

func TestDockerDefaultArm64(t *testing.T) {
	prof := dockerDefault(t, dockerCaps)
	prof.Architectures = []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
	p, err := CompileFor(prof, "arm64")
	if err != nil {
		t.Fatalf("CompileFor arm64: %v", err)
	}
	cases := []struct {
		c    call
		want string
	}{
		{call{a64, nr(t, arch.AARCH64, "getpid"), [6]uint64{}}, "ALLOW"},
		{call{a64, nr(t, arch.AARCH64, "mount"), [6]uint64{}}, "ERRNO(EPERM)"},
		{call{arm32, nr(t, arch.ARM, "getpid"), [6]uint64{}}, "ALLOW"},
		{call{x8664, 39, [6]uint64{}}, "KILL_PROCESS"},
	}
	for _, tc := range cases {
		if got := actName(run(t, p, tc.c)); got != tc.want {
			t.Errorf("%+v: got %s, want %s", tc.c, got, tc.want)
		}
	}
}

func TestCompatArchOnlyWhenListed(t *testing.T) {
	prof := &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"getpid"}, Action: specs.ActAllow}},
	}
	p, err := CompileFor(prof, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if got := actName(run(t, p, call{i386, nr(t, arch.I386, "getpid"), [6]uint64{}})); got != "KILL_PROCESS" {
		t.Errorf("i386 without SCMP_ARCH_X86: got %s, want KILL_PROCESS", got)
	}
	if got := actName(run(t, p, call{x8664, nr(t, arch.X86_64, "getpid"), [6]uint64{}})); got != "ALLOW" {
		t.Errorf("native without Architectures: got %s, want ALLOW", got)
	}
}

// TestOperators compares every operator on boundary arguments around a
// value with both 32-bit halves non-zero against Go's own arithmetic.
func TestOperators(t *testing.T) {
	const v = uint64(0x1_0000_0005)
	const mask, datum = uint64(0xffff0000_0000ff00), uint64(0x12340000_00005600)
	args := map[string]uint64{
		"zero":                     0,
		"v-1":                      v - 1,
		"v":                        v,
		"v+1":                      v + 1,
		"low word equal only":      0x5,
		"high word greater":        0x2_0000_0005,
		"high word equal, low max": 0x1_ffff_ffff,
		"high word less, low max":  0x0_ffff_ffff,
		"max":                      ^uint64(0),
		"masked hit":               0x1234abcd_99995677,
		"masked miss high":         0x1235abcd_99995677,
		"masked miss low":          0x1234abcd_99995777,
	}
	ops := map[specs.LinuxSeccompOperator]func(a uint64) bool{
		specs.OpEqualTo:      func(a uint64) bool { return a == v },
		specs.OpNotEqual:     func(a uint64) bool { return a != v },
		specs.OpGreaterThan:  func(a uint64) bool { return a > v },
		specs.OpGreaterEqual: func(a uint64) bool { return a >= v },
		specs.OpLessThan:     func(a uint64) bool { return a < v },
		specs.OpLessEqual:    func(a uint64) bool { return a <= v },
		specs.OpMaskedEqual:  func(a uint64) bool { return a&mask == datum },
	}
	for op, oracle := range ops {
		arg := specs.LinuxSeccompArg{Index: 3, Value: v, Op: op}
		if op == specs.OpMaskedEqual {
			arg.Value, arg.ValueTwo = mask, datum
		}
		p, err := CompileFor(&specs.LinuxSeccomp{
			DefaultAction: specs.ActErrno,
			Syscalls: []specs.LinuxSyscall{{
				Names: []string{"write"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{arg},
			}},
		}, "amd64")
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		for name, a := range args {
			want := "ERRNO(EPERM)"
			if oracle(a) {
				want = "ALLOW"
			}
			c := call{arch: x8664, nr: nr(t, arch.X86_64, "write")}
			c.args[3] = a
			c.args[2] = ^a // a neighbouring argument must not matter
			if got := actName(run(t, p, c)); got != want {
				t.Errorf("%s %s (%#x): got %s, want %s", op, name, a, got, want)
			}
		}
	}
}

func TestRuleSemantics(t *testing.T) {
	X := arch.X86_64
	einval := uint(unix.EINVAL)
	prof := &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Syscalls: []specs.LinuxSyscall{
			// Same argument twice: ORed (runc splits them into two rules).
			{Names: []string{"read"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 0, Value: 2, Op: specs.OpEqualTo}}},
			// Different arguments: ANDed.
			{Names: []string{"write"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 1, Value: 2, Op: specs.OpEqualTo}}},
			// Conditional rule before the unconditional one of the same syscall.
			{Names: []string{"close"}, Action: specs.ActAllow},
			{Names: []string{"close"}, Action: specs.ActErrno, ErrnoRet: &einval, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 7, Op: specs.OpEqualTo}}},
			// Unknown names are skipped, known ones in the same entry kept.
			{Names: []string{"no_such_syscall", "getpid"}, Action: specs.ActLog},
			// A rule equal to the default action is redundant.
			{Names: []string{"getppid"}, Action: specs.ActErrno},
		},
	}
	p, err := CompileFor(prof, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		c    call
		want string
	}{
		{"OR: first value", call{x8664, nr(t, X, "read"), [6]uint64{1}}, "ALLOW"},
		{"OR: second value", call{x8664, nr(t, X, "read"), [6]uint64{2}}, "ALLOW"},
		{"OR: neither", call{x8664, nr(t, X, "read"), [6]uint64{3}}, "ERRNO(EPERM)"},
		{"AND: both", call{x8664, nr(t, X, "write"), [6]uint64{1, 2}}, "ALLOW"},
		{"AND: only first", call{x8664, nr(t, X, "write"), [6]uint64{1, 3}}, "ERRNO(EPERM)"},
		{"AND: only second", call{x8664, nr(t, X, "write"), [6]uint64{0, 2}}, "ERRNO(EPERM)"},
		{"conditional wins", call{x8664, nr(t, X, "close"), [6]uint64{7}}, "ERRNO(EINVAL)"},
		{"unconditional otherwise", call{x8664, nr(t, X, "close"), [6]uint64{8}}, "ALLOW"},
		{"known name of a mixed entry", call{x8664, nr(t, X, "getpid"), [6]uint64{}}, "LOG"},
		{"redundant rule", call{x8664, nr(t, X, "getppid"), [6]uint64{}}, "ERRNO(EPERM)"},
		{"unlisted, below the highest named", call{x8664, nr(t, X, "open"), [6]uint64{}}, "ERRNO(EPERM)"},
		{"unlisted, above the highest named (getppid=110)", call{x8664, nr(t, X, "mount"), [6]uint64{}}, "ERRNO(ENOSYS)"},
	}
	for _, tc := range cases {
		if got := actName(run(t, p, tc.c)); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestActions(t *testing.T) {
	e := uint(unix.EACCES)
	cases := []struct {
		act   specs.LinuxSeccompAction
		errno *uint
		want  string
	}{
		{specs.ActAllow, nil, "ALLOW"},
		{specs.ActLog, nil, "LOG"},
		{specs.ActKill, nil, "KILL_THREAD"},
		{specs.ActKillThread, nil, "KILL_THREAD"},
		{specs.ActKillProcess, nil, "KILL_PROCESS"},
		{specs.ActTrap, nil, "TRAP"},
		{specs.ActErrno, nil, "ERRNO(EPERM)"},
		{specs.ActErrno, &e, "ERRNO(EACCES)"},
		{specs.ActTrace, nil, fmt.Sprintf("TRACE(%d)", unix.EPERM)},
	}
	for _, tc := range cases {
		p, err := CompileFor(&specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Syscalls:      []specs.LinuxSyscall{{Names: []string{"getpid"}, Action: tc.act, ErrnoRet: tc.errno}},
		}, "amd64")
		if err != nil {
			t.Fatalf("%s: %v", tc.act, err)
		}
		if got := actName(run(t, p, call{arch: x8664, nr: nr(t, arch.X86_64, "getpid")})); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.act, got, tc.want)
		}
		// An allowing default adds no ENOSYS stub: unknown numbers are allowed.
		if got := actName(run(t, p, call{arch: x8664, nr: 999})); got != "ALLOW" {
			t.Errorf("%s: nr 999 under default ALLOW: got %s", tc.act, got)
		}
	}
}

func TestDefaultErrnoRet(t *testing.T) {
	nosys := uint(unix.ENOSYS)
	p, err := CompileFor(&specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno, DefaultErrnoRet: &nosys,
		Syscalls: []specs.LinuxSyscall{{Names: []string{"getpid"}, Action: specs.ActAllow}},
	}, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if got := actName(run(t, p, call{arch: x8664, nr: nr(t, arch.X86_64, "mount")})); got != "ERRNO(ENOSYS)" {
		t.Errorf("got %s", got)
	}
}

// TestSearchTree covers the number dispatch where it is deepest: every
// second syscall of the table allowed makes hundreds of one-number ranges,
// and every number, the holes and the top of the range must still land on
// its own outcome.
func TestSearchTree(t *testing.T) {
	var allowed []string
	byNr := map[uint32]string{}
	top := uint32(0) // numbers above the highest named one are ENOSYS
	for name, n := range arch.X86_64.SyscallNames {
		byNr[uint32(n)] = name
		if n%2 == 0 {
			allowed = append(allowed, name)
			top = max(top, uint32(n))
		}
	}
	p, err := CompileFor(&specs.LinuxSeccomp{
		DefaultAction: specs.ActKillProcess,
		Syscalls:      []specs.LinuxSyscall{{Names: allowed, Action: specs.ActAllow}},
	}, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) < 150 {
		t.Fatalf("only %d names allowed; the tree is not deep", len(allowed))
	}
	for n := uint32(0); n < 1100; n++ {
		want := "KILL_PROCESS"
		if _, ok := byNr[n]; ok && n%2 == 0 {
			want = "ALLOW"
		} else if n > top {
			want = "ERRNO(ENOSYS)"
		}
		if got := actName(run(t, p, call{arch: x8664, nr: n})); got != want {
			t.Errorf("nr %d (%s): got %s, want %s", n, byNr[n], got, want)
		}
	}
	for n, want := range map[uint32]string{
		x32SyscallBit - 1: "ERRNO(ENOSYS)", x32SyscallBit: "KILL_PROCESS", 0xffffffff: "KILL_PROCESS",
	} {
		if got := actName(run(t, p, call{arch: x8664, nr: n})); got != want {
			t.Errorf("nr %#x: got %s, want %s", n, got, want)
		}
	}
}

// TestMatchesProfileEverywhere checks the compiled Docker profile against a
// direct reading of the profile (reference below) for every syscall number
// of both amd64 ABIs and the edges of every argument condition.
func TestMatchesProfileEverywhere(t *testing.T) {
	for _, caps := range [][]string{dockerCaps, append([]string{"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}, dockerCaps...)} {
		prof := dockerDefault(t, caps)
		prof.Architectures = []specs.Arch{specs.ArchX86_64, specs.ArchX86}
		p, err := CompileFor(prof, "amd64")
		if err != nil {
			t.Fatal(err)
		}
		checked := 0
		for _, info := range []*arch.Info{arch.X86_64, arch.I386} {
			names := map[uint32]string{}
			for name, n := range info.SyscallNames {
				names[uint32(n)] = name
			}
			for n := uint32(0); n < 1100; n++ {
				for _, args := range argSamples(prof, names[n]) {
					c := call{arch: uint32(info.ID), nr: n, args: args}
					want := actName(reference(prof, info, names[n], n, args))
					if got := actName(run(t, p, c)); got != want {
						t.Fatalf("%s nr %d (%s) args %x: got %s, want %s", info.Name, n, names[n], args, got, want)
					}
					checked++
				}
			}
		}
		if checked < 2200 {
			t.Fatalf("only %d calls checked", checked)
		}
	}
}

// argSamples returns argument vectors around every value a rule of name
// compares with (equal, one off, the other word set), plus all zeros.
func argSamples(prof *specs.LinuxSeccomp, name string) [][6]uint64 {
	out := [][6]uint64{{}}
	for _, sc := range prof.Syscalls {
		if !slices.Contains(sc.Names, name) {
			continue
		}
		for _, c := range sc.Args {
			for _, v := range []uint64{c.Value, c.Value - 1, c.Value + 1, c.Value | c.ValueTwo, c.ValueTwo, c.Value | 1<<32, ^uint64(0)} {
				var a [6]uint64
				a[c.Index] = v
				out = append(out, a)
			}
		}
	}
	return out
}

// reference is what the profile says for one call, read straight from it
// with the semantics in the package comment (no BPF involved).
func reference(prof *specs.LinuxSeccomp, info *arch.Info, name string, nr uint32, args [6]uint64) uint32 {
	def, _ := encodeAction(prof.DefaultAction, prof.DefaultErrnoRet)
	if info == arch.X86_64 && nr >= x32SyscallBit {
		return badArchAction
	}
	var maxNr uint32
	for _, sc := range prof.Syscalls {
		for _, n := range sc.Names {
			if v, ok := info.SyscallNames[n]; ok && uint32(v) > maxNr {
				maxNr = uint32(v)
			}
		}
	}
	if denies(def) && nr > maxNr {
		return unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	}
	if name == "" {
		return def
	}
	uncond := def
	for _, sc := range prof.Syscalls { // conditional rules first, in order
		act, _ := encodeAction(sc.Action, sc.ErrnoRet)
		if act == def || !slices.Contains(sc.Names, name) {
			continue
		}
		if len(sc.Args) == 0 {
			uncond = act
			continue
		}
		if sameArgTwice(sc.Args) { // ORed
			for _, c := range sc.Args {
				if holds(c, args[c.Index]) {
					return act
				}
			}
			continue
		}
		all := true
		for _, c := range sc.Args {
			all = all && holds(c, args[c.Index])
		}
		if all {
			return act
		}
	}
	return uncond
}

func holds(c specs.LinuxSeccompArg, v uint64) bool {
	switch c.Op {
	case specs.OpEqualTo:
		return v == c.Value
	case specs.OpNotEqual:
		return v != c.Value
	case specs.OpLessThan:
		return v < c.Value
	case specs.OpLessEqual:
		return v <= c.Value
	case specs.OpGreaterThan:
		return v > c.Value
	case specs.OpGreaterEqual:
		return v >= c.Value
	case specs.OpMaskedEqual:
		return v&c.Value == c.ValueTwo
	}
	panic(c.Op)
}

func TestCompileErrors(t *testing.T) {
	e := uint(1)
	big := uint(0x10000)
	cases := []struct {
		name string
		prof *specs.LinuxSeccomp
		want string
	}{
		{"nil", nil, "nil profile"},
		{"unknown default", &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_NOPE"}, "unknown action"},
		{"notify", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getpid"}, Action: specs.ActNotify}}}, "seccomp agent"},
		{"errnoRet on allow", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getpid"}, Action: specs.ActAllow, ErrnoRet: &e}}}, "only valid"},
		{"errnoRet too big", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &big}, "SECCOMP_RET_DATA"},
		{"arg index 6", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getpid"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}}}}}, "out of range"},
		{"unknown op", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getpid"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_XX"}}}}}, "unknown operator"},
		{"conflict", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getpid"}, Action: specs.ActAllow}, {Names: []string{"getpid"}, Action: specs.ActKill}}}, "conflicting"},
		{"flag", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Flags: []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_TSYNC"}}, "not supported"},
	}
	for _, tc := range cases {
		_, err := CompileFor(tc.prof, "amd64")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := CompileFor(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow}, "riscv64"); err == nil {
		t.Error("riscv64: want unsupported-arch error")
	}
}

func TestFlags(t *testing.T) {
	p, err := CompileFor(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{
		specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow}}, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if want := uint(unix.SECCOMP_FILTER_FLAG_LOG | unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW); p.Flags != want {
		t.Errorf("flags %#x, want %#x", p.Flags, want)
	}
}
