package unitgen

import (
	"errors"
	"go/parser"
	"go/token"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// The fixture harness must be able to fail: every kind of expectation, when
// wrong, is reported.
func TestHarnessDetectsMismatch(t *testing.T) {
	f := loadFixture(t, "testdata/basic.yaml")
	f.golden = false
	f.asserts = []directive{
		{1, "assert-name", "berth-default_web_other.service"},
		{2, "assert-slice", "berth-other.slice"},
		{3, "assert-property", "KillSignal=9"},
		{4, "assert-property-absent", "Type"},
		{5, "assert-spec", `process.args=["bash"]`},
		{6, "assert-spec-contains", `process.env="NOPE=1"`},
		{7, "assert-spec-lacks", `process.env="HOSTNAME=web"`},
		{8, "assert-spec-absent", "process.cwd"},
	}
	_, fails := f.check()
	if len(fails) != len(f.asserts) {
		t.Fatalf("want %d failures, got %d: %q", len(f.asserts), len(fails), fails)
	}
	for i, msg := range fails {
		if !strings.HasPrefix(msg, "line "+strconv.Itoa(i+1)+":") {
			t.Errorf("failure %d: %q", i, msg)
		}
	}

	f.asserts = []directive{{1, "assert-error", "anything"}}
	if _, fails := f.check(); len(fails) != 1 {
		t.Errorf("assert-error on a valid pod: want 1 failure, got %q", fails)
	}
}

func basicInput(t *testing.T) Input {
	t.Helper()
	return loadFixture(t, "testdata/basic.yaml").in
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "one", "EMPTY": "", "B": "$(A)"}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"$(A)", "one"},
		{"x$(A)y$(A)z", "xoneyonez"},
		{"$(EMPTY)", ""},
		{"$(B)", "$(A)"}, // values are not expanded twice
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"$$(A)", "$(A)"},
		{"$$$(A)", "$one"},
		{"$$$$(A)", "$$(A)"},
		{"$$", "$"},
		{"$", "$"},
		{"a$", "a$"},
		{"$A", "$A"},
		{"$(A", "$(A"},
		{"$(", "$("},
		{"$()", "$()"},
		{"$(A))", "one)"},
		{"${A}", "${A}"},
	} {
		if got := expand(tc.in, lookup); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int32 // 0 = error
	}{
		{"SIGTERM", 15}, {"TERM", 15}, {"15", 15}, {"term", 15}, {"SigTerm", 15}, {" SIGTERM ", 15},
		{"SIGQUIT", 3}, {"SIGKILL", 9}, {"SIGWINCH", 28}, {"SIGUSR1", 10},
		{"0", 0}, {"1", 1}, {"2", 2}, {"63", 63}, {"64", 64}, {"65", 0}, {"-1", 0},
		{"SIGRTMIN", 34}, {"RTMIN+0", 34}, {"RTMIN+1", 35}, {"RTMIN+30", 64}, {"RTMIN+31", 0},
		{"SIGRTMAX", 64}, {"RTMAX-1", 63}, {"RTMAX-30", 34}, {"RTMAX-31", 0}, {"RTMIN+x", 0}, {"RTMIN+-1", 0},
		{"", 0}, {"SIG", 0}, {"SIGBOGUS", 0}, {"15s", 0},
	} {
		got, err := parseSignal(tc.in)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("parseSignal(%q) = %d, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseSignal(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestGracePeriod(t *testing.T) {
	p := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name  string
		grace *int64
		want  uint64
	}{
		{"default", nil, 30_000_000},
		{"negative", p(-1), 2_000_000},
		{"zero", p(0), 2_000_000},
		{"min-1", p(1), 2_000_000},
		{"min", p(2), 2_000_000},
		{"min+1", p(3), 3_000_000},
		{"hour", p(3600), 3_600_000_000},
		{"largest finite", p(math.MaxInt64 / 1_000_000), uint64(math.MaxInt64/1_000_000) * 1_000_000},
		{"overflow", p(math.MaxInt64/1_000_000 + 1), math.MaxUint64},
		{"max", p(math.MaxInt64), math.MaxUint64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := basicInput(t)
			in.Pod.Spec.TerminationGracePeriodSeconds = tc.grace
			u, err := Generate(in)
			if err != nil {
				t.Fatal(err)
			}
			prop, _ := u.Property("TimeoutStopUSec")
			if prop.Value != tc.want {
				t.Errorf("TimeoutStopUSec = %v, want %d", prop.Value, tc.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	if got := UnitName("team-a", "web-0", "app"); got != "berth-team-a_web-0_app.service" {
		t.Errorf("UnitName = %q", got)
	}
	for ns, want := range map[string]string{
		"default": "berth-default.slice",
		"team-a":  "berth-team_a.slice",
		"a-b-c":   "berth-a_b_c.slice",
	} {
		if got := SliceName(ns); got != want {
			t.Errorf("SliceName(%q) = %q, want %q", ns, got, want)
		}
	}

	// Unit names are limited to 255 characters; the pod name is the part
	// that can make them too long (DNS subdomain, up to 253).
	fixed := len(UnitName("default", "", "app"))
	for _, tc := range []struct {
		name string
		len  int
		ok   bool
	}{
		{"max-1", unitNameMax - 1, true},
		{"max", unitNameMax, true},
		{"max+1", unitNameMax + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := basicInput(t)
			// A valid DNS subdomain: labels of at most 63 characters.
			n := tc.len - fixed
			var labels []string
			for n > 0 {
				l := min(n, 63)
				if n-l == 1 { // avoid an empty last label
					l--
				}
				labels = append(labels, strings.Repeat("p", l))
				n -= l + 1
			}
			in.Pod.Name = strings.Join(labels, ".")
			u, err := Generate(in)
			if tc.ok {
				if err != nil {
					t.Fatalf("pod name of %d chars: %v", len(in.Pod.Name), err)
				}
				if len(u.Name) != tc.len {
					t.Fatalf("test built a %d-character name, want %d", len(u.Name), tc.len)
				}
				return
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "systemd allows 255") {
				t.Fatalf("want the unit-name length error, got %v", err)
			}
		})
	}
}

// Docker's profile allows some syscalls only with a capability: the filter
// must be computed from the final capability set.
func TestSeccompFollowsCapabilities(t *testing.T) {
	allowed := func(sc *specs.LinuxSeccomp, name string) bool {
		for _, r := range sc.Syscalls {
			if r.Action == specs.ActAllow && len(r.Args) == 0 && slices.Contains(r.Names, name) {
				return true
			}
		}
		return false
	}
	in := basicInput(t)
	u, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	if sc := u.Spec.Linux.Seccomp; sc == nil || sc.DefaultAction != specs.ActErrno || !allowed(sc, "read") || allowed(sc, "mount") {
		t.Fatalf("default container: want Docker's profile without mount, got %+v", sc)
	}
	in.Pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}},
	}
	if u, err = Generate(in); err != nil {
		t.Fatal(err)
	}
	if !allowed(u.Spec.Linux.Seccomp, "mount") {
		t.Error("CAP_SYS_ADMIN: want mount allowed by the profile")
	}
}

// Mistakes of the caller are not the pod's fault and must not be invalid-argument errors.
func TestCallerErrors(t *testing.T) {
	for name, mutate := range map[string]func(*Input){
		"nil pod":           func(in *Input) { in.Pod = nil },
		"relative bundle":   func(in *Input) { in.Paths.Bundle = "bundle" },
		"no init":           func(in *Input) { in.Paths.Init = "" },
		"no layers":         func(in *Input) { in.Paths.Lowers = nil },
		"colon in layer":    func(in *Input) { in.Paths.Lowers = []string{"/a:b"} },
		"comma in upper":    func(in *Input) { in.Paths.Upper = "/u,x" },
		"oom score too low": func(in *Input) { in.Limits.OOMScoreAdjust = -1001 },
	} {
		t.Run(name, func(t *testing.T) {
			in := basicInput(t)
			mutate(&in)
			_, err := Generate(in)
			if err == nil || errdefs.IsInvalidArgument(err) {
				t.Fatalf("want a non-invalid-argument error, got %v", err)
			}
		})
	}
	in := basicInput(t)
	in.Limits.OOMScoreAdjust = -1000
	if _, err := Generate(in); err != nil {
		t.Errorf("OOMScoreAdjust -1000 is valid: %v", err)
	}
}

func TestInvalidError(t *testing.T) {
	var err error = &InvalidError{Field: "spec.x", Detail: "bad"}
	if err.Error() != "spec.x: bad" || !errdefs.IsInvalidArgument(err) {
		t.Errorf("%v", err)
	}
	var ie *InvalidError
	if !errors.As(errors.Join(errors.New("context"), err), &ie) || ie.Field != "spec.x" {
		t.Error("errors.As through a wrapper")
	}
}

func TestGenerateLeavesInputAlone(t *testing.T) {
	in := basicInput(t)
	in.Pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "$(B)"}}
	in.Pod.Spec.Containers[0].Command = []string{"/bin/$(A)"}
	before := in.Pod.DeepCopy()
	imgCmd := slices.Clone(in.Image.Config.Cmd)
	u1, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(before, in.Pod) || !slices.Equal(imgCmd, in.Image.Config.Cmd) {
		t.Error("Generate modified its input")
	}
	u2, _ := Generate(in)
	if u1.Render() != u2.Render() {
		t.Error("Generate is not deterministic")
	}
	// The spec does not alias the input.
	u1.Spec.Process.Args[0] = "changed"
	if in.Pod.Spec.Containers[0].Command[0] != "/bin/$(A)" {
		t.Error("spec aliases the pod's command")
	}
}

func TestRenderExec(t *testing.T) {
	for _, tc := range []struct {
		c    ExecCommand
		want string
	}{
		{ExecCommand{Path: "/bin/x", Args: []string{"/bin/x", "a"}}, "/bin/x a"},
		{ExecCommand{Path: "/bin/x", Args: []string{"/bin/x"}, IgnoreFailure: true}, "-/bin/x"},
		{ExecCommand{Path: "/bin/x", Args: []string{"x", "a b"}}, `@/bin/x x "a b"`},
		{ExecCommand{Path: "/bin/x", Args: nil}, "@/bin/x"},
		{ExecCommand{Path: "/bin/x", Args: []string{"/bin/x", ""}}, `/bin/x ""`},
	} {
		if got := renderExec(tc.c); got != tc.want {
			t.Errorf("renderExec(%+v) = %q, want %q", tc.c, got, tc.want)
		}
	}
}

func TestPodHostname(t *testing.T) {
	for _, tc := range []struct{ name, spec, want string }{
		{"web", "", "web"},
		{"web", "db-0", "db-0"},
		{strings.Repeat("a", 62), "", strings.Repeat("a", 62)},
		{strings.Repeat("a", 63), "", strings.Repeat("a", 63)},
		{strings.Repeat("a", 64), "", strings.Repeat("a", 63)},
		{strings.Repeat("a", 62) + ".b", "", strings.Repeat("a", 62)},
		{strings.Repeat("a", 61) + "-.b", "", strings.Repeat("a", 61)},
	} {
		if got := podHostname(tc.name, tc.spec); got != tc.want {
			t.Errorf("podHostname(%q, %q) = %q, want %q", tc.name, tc.spec, got, tc.want)
		}
	}
}

// unitgen is the pure core: no file system, network or process access
// outside tests (architecture.md, "pure core, effects at the edges").
func TestPure(t *testing.T) {
	forbidden := []string{"os", "os/exec", "os/user", "io/ioutil", "net", "net/http", "syscall", "github.com/godbus/dbus/v5", "github.com/coreos/go-systemd/v22/dbus"}
	files, _ := filepath.Glob("*.go")
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if slices.Contains(forbidden, p) {
				t.Errorf("%s imports %s", f, p)
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no source files checked")
	}
}

// Every container of a pod is generated on its own, with its own unit name in
// the namespace's slice.
func TestTwoContainersShareThePod(t *testing.T) {
	in := basicInput(t)
	in.Pod.Spec.Containers = append(in.Pod.Spec.Containers, corev1.Container{Name: "sidecar", Image: "busybox", Command: []string{"sleep", "1d"}})
	a, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	in.Container = "sidecar"
	b, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name == b.Name || a.Slice != b.Slice {
		t.Errorf("names %s %s, slices %s %s", a.Name, b.Name, a.Slice, b.Slice)
	}
	if !slices.Equal(b.Spec.Process.Args, []string{"sleep", "1d"}) || b.Spec.Annotations[annotationContainer] != "sidecar" {
		t.Errorf("sidecar spec: %v %v", b.Spec.Process.Args, b.Spec.Annotations)
	}
}
