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
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// that can make them too long (DNS subdomain, up to 253). Past the
	// limit the pod part is shortened with a hash of the full names.
	fixed := len(UnitName("default", "", "app"))
	podName := func(n int) string {
		// A valid DNS subdomain of n characters: labels of at most 63.
		var labels []string
		for n > 0 {
			l := min(n, 63)
			if n-l == 1 { // avoid an empty last label
				l--
			}
			labels = append(labels, strings.Repeat("p", l))
			n -= l + 1
		}
		return strings.Join(labels, ".")
	}
	for _, tc := range []struct {
		name      string
		len       int
		shortened bool
	}{
		{"max-1", unitNameMax - 1, false},
		{"max", unitNameMax, false},
		{"max+1", unitNameMax + 1, true},
		{"longest pod name", fixed + 253, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := basicInput(t)
			in.Pod.Name = podName(tc.len - fixed)
			u, err := Generate(in)
			if err != nil {
				t.Fatalf("pod name of %d chars: %v", len(in.Pod.Name), err)
			}
			if tc.shortened != (strings.Count(u.Name, "_") == 3) || len(u.Name) > unitNameMax {
				t.Fatalf("%d-character unit name %s: want shortened=%v and at most %d", len(u.Name), u.Name, tc.shortened, unitNameMax)
			}
			if !tc.shortened && len(u.Name) != tc.len {
				t.Fatalf("test built a %d-character name, want %d", len(u.Name), tc.len)
			}
		})
	}
	// Two long pod names that share the kept prefix still get two units.
	long := podName(250)
	a, b := UnitName("default", long+"a", "app"), UnitName("default", long+"b", "app")
	if a == b || len(a) > unitNameMax {
		t.Errorf("long names collide or overflow: %s, %s", a, b)
	}
	if k := PodKey("ns-63-"+strings.Repeat("n", 57), podName(253)); len(k) > 255-14 {
		t.Errorf("PodKey of the longest names is %d characters", len(k))
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
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tc.name, Namespace: "default"}, Spec: corev1.PodSpec{Hostname: tc.spec}}
		if got, fqdn, err := PodHostname(pod); err != nil || got != tc.want || fqdn != "" {
			t.Errorf("PodHostname(%q, %q) = %q, %q, %v; want %q", tc.name, tc.spec, got, fqdn, err, tc.want)
		}
	}
	yes := true
	for _, tc := range []struct {
		name                    string
		spec                    corev1.PodSpec
		wantHost, wantFQDN, err string
	}{
		{"subdomain", corev1.PodSpec{Hostname: "db-0", Subdomain: "db"}, "db-0", "db-0.db.default.svc.cluster.local", ""},
		{"subdomain without hostname: the pod name", corev1.PodSpec{Subdomain: "db"}, "web.v1", "web.v1.db.default.svc.cluster.local", ""},
		{"setHostnameAsFQDN", corev1.PodSpec{Hostname: "db-0", Subdomain: "db", SetHostnameAsFQDN: &yes}, "db-0.db.default.svc.cluster.local", "db-0.db.default.svc.cluster.local", ""},
		{"setHostnameAsFQDN without subdomain: no FQDN", corev1.PodSpec{Hostname: "db-0", SetHostnameAsFQDN: &yes}, "db-0", "", ""},
		{"FQDN of 64 (max)", corev1.PodSpec{Hostname: strings.Repeat("h", 64-len(".s.default.svc.cluster.local")), Subdomain: "s", SetHostnameAsFQDN: &yes}, strings.Repeat("h", 36) + ".s.default.svc.cluster.local", strings.Repeat("h", 36) + ".s.default.svc.cluster.local", ""},
		{"FQDN of 65 (max+1)", corev1.PodSpec{Hostname: strings.Repeat("h", 65-len(".s.default.svc.cluster.local")), Subdomain: "s", SetHostnameAsFQDN: &yes}, "", "", "is too long (64 characters is the max, 65 characters requested)"},
		{"bad hostname", corev1.PodSpec{Hostname: "Web_1"}, "", "", "spec.hostname"},
		{"bad subdomain", corev1.PodSpec{Subdomain: "a.b"}, "", "", "spec.subdomain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web.v1", Namespace: "default"}, Spec: tc.spec}
			host, fqdn, err := PodHostname(pod)
			if tc.err != "" {
				if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want invalid with %q", err, tc.err)
				}
				return
			}
			if err != nil || host != tc.wantHost || fqdn != tc.wantFQDN {
				t.Fatalf("= %q, %q, %v; want %q, %q", host, fqdn, err, tc.wantHost, tc.wantFQDN)
			}
		})
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

// Pod features berth does not implement are refused naming the field, never
// ignored: each case fails if its check is missing.
func TestUnsupportedRefusedNamingTheField(t *testing.T) {
	no := false
	rc := "gvisor"
	for _, tc := range []struct {
		field string
		set   func(s *corev1.PodSpec, c *corev1.Container)
	}{
		{"spec.hostIPC", func(s *corev1.PodSpec, _ *corev1.Container) { s.HostIPC = true }},
		{"spec.hostPID", func(s *corev1.PodSpec, _ *corev1.Container) { s.HostPID = true }},
		{"spec.hostUsers", func(s *corev1.PodSpec, _ *corev1.Container) { s.HostUsers = &no }},
		{"spec.ephemeralContainers", func(s *corev1.PodSpec, _ *corev1.Container) {
			s.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug"}}}
		}},
		{"spec.readinessGates", func(s *corev1.PodSpec, _ *corev1.Container) {
			s.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "x"}}
		}},
		{"spec.runtimeClassName", func(s *corev1.PodSpec, _ *corev1.Container) { s.RuntimeClassName = &rc }},
		{"spec.os.name", func(s *corev1.PodSpec, _ *corev1.Container) { s.OS = &corev1.PodOS{Name: corev1.Windows} }},
		{"spec.resourceClaims", func(s *corev1.PodSpec, _ *corev1.Container) {
			s.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu"}}
		}},
		{"spec.containers[0].resizePolicy", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.ResizePolicy = []corev1.ContainerResizePolicy{{ResourceName: corev1.ResourceCPU, RestartPolicy: corev1.NotRequired}}
		}},
		{"spec.hostnameOverride", func(s *corev1.PodSpec, _ *corev1.Container) { h := "x"; s.HostnameOverride = &h }},
		{"spec.resources", func(s *corev1.PodSpec, _ *corev1.Container) {
			s.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}
		}},
		{"spec.activeDeadlineSeconds", func(s *corev1.PodSpec, _ *corev1.Container) { d := int64(5); s.ActiveDeadlineSeconds = &d }},
		{"spec.schedulingGates", func(s *corev1.PodSpec, _ *corev1.Container) {
			s.SchedulingGates = []corev1.PodSchedulingGate{{Name: "g"}}
		}},
		{"spec.securityContext.seLinuxOptions", func(s *corev1.PodSpec, _ *corev1.Container) {
			s.SecurityContext = &corev1.PodSecurityContext{SELinuxOptions: &corev1.SELinuxOptions{Level: "s0"}}
		}},
		{"spec.securityContext.appArmorProfile", func(s *corev1.PodSpec, _ *corev1.Container) {
			s.SecurityContext = &corev1.PodSecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}}
		}},
		{"spec.containers[0].securityContext.seLinuxOptions", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{SELinuxOptions: &corev1.SELinuxOptions{Level: "s0"}}
		}},
		{"spec.containers[0].securityContext.appArmorProfile", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}}
		}},
		{"spec.containers[0].tty", func(_ *corev1.PodSpec, c *corev1.Container) { c.TTY = true }},
		{"spec.containers[0].stdin", func(_ *corev1.PodSpec, c *corev1.Container) { c.Stdin = true }},
		{"spec.containers[0].restartPolicyRules", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.RestartPolicyRules = []corev1.ContainerRestartRule{{Action: corev1.ContainerRestartRuleActionRestart}}
		}},
		{"spec.containers[0].envFrom", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.EnvFrom = []corev1.EnvFromSource{{Prefix: "X"}}
		}},
	} {
		t.Run(tc.field, func(t *testing.T) {
			in := basicInput(t)
			tc.set(&in.Pod.Spec, &in.Pod.Spec.Containers[0])
			_, err := Generate(in)
			if !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), tc.field+": ") {
				t.Fatalf("err = %v, want an invalid-argument error naming %s", err, tc.field)
			}
		})
	}
	// What berth does implement stays accepted: a plain containerPort, the
	// default DNS policies, stopSignal.
	in := basicInput(t)
	in.Pod.Spec.DNSPolicy = corev1.DNSClusterFirst
	in.Pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}
	if _, err := Generate(in); err != nil {
		t.Fatalf("supported pod refused: %v", err)
	}
}

// The unit names the state directory of its berth in Documentation=, and
// reading it back gives that directory, also for paths that need escaping
// (systemd 252 takes only ASCII URLs).
func TestInstanceDoc(t *testing.T) {
	in := basicInput(t)
	in.Paths.Bundle = "/srv/berth two/ü/containers/" + ContainerKey("default", "web", "app")
	u, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := u.Property("Documentation")
	if !ok {
		t.Fatal("no Documentation property")
	}
	docs, _ := p.Value.([]string)
	if len(docs) != 1 || docs[0] != "file:///srv/berth%20two/%C3%BC" {
		t.Fatalf("Documentation = %q", docs)
	}
	if got, ok := UnitInstance(docs); !ok || got != "/srv/berth two/ü" {
		t.Errorf("UnitInstance(%q) = %q, %v", docs, got, ok)
	}
	for _, tc := range []struct {
		docs []string
		want string
	}{
		{[]string{InstanceDoc("/var/lib/berth/")}, "/var/lib/berth"},
		{[]string{"man:berthd(8)", "https://example.org/x", "file:///var/lib/b2"}, "/var/lib/b2"},
		{nil, ""},
		{[]string{"man:systemd(1)", "file:relative", "file://host/var/lib/berth"}, ""},
	} {
		got, ok := UnitInstance(tc.docs)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("UnitInstance(%q) = %q, %v; want %q", tc.docs, got, ok, tc.want)
		}
	}
	if got := BundleStateDir("/var/lib/berth/containers/default_web_app"); got != "/var/lib/berth" {
		t.Errorf("BundleStateDir = %q", got)
	}
}

// A host-network pod's containers stay in the node's network and UTS
// namespaces (no entry at all), set no hostname, and see the node's
// name as HOSTNAME; other pods join the pod's namespace files.
func TestHostNetworkNamespaces(t *testing.T) {
	in := basicInput(t)
	in.Paths.NetNS, in.Paths.UTSNS = "/run/berth/pods/x/ns/net", "/run/berth/pods/x/ns/uts"
	in.Options.NodeHostname = "node-7"
	types := func(u *Unit) map[specs.LinuxNamespaceType]string {
		m := map[specs.LinuxNamespaceType]string{}
		for _, ns := range u.Spec.Linux.Namespaces {
			m[ns.Type] = ns.Path
		}
		return m
	}
	u, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	if m := types(u); m[specs.NetworkNamespace] != in.Paths.NetNS || m[specs.UTSNamespace] != in.Paths.UTSNS || u.Spec.Hostname == "" {
		t.Errorf("pod network: namespaces %v, hostname %q", m, u.Spec.Hostname)
	}
	in.Pod.Spec.HostNetwork = true
	if u, err = Generate(in); err != nil {
		t.Fatal(err)
	}
	m := types(u)
	_, net := m[specs.NetworkNamespace]
	_, uts := m[specs.UTSNamespace]
	if net || uts || u.Spec.Hostname != "" {
		t.Errorf("host network: namespaces %v, hostname %q", m, u.Spec.Hostname)
	}
	if _, ipc := m[specs.IPCNamespace]; !ipc {
		t.Errorf("host network: the pod's IPC namespace is gone: %v", m)
	}
	if !slices.Contains(u.Spec.Process.Env, "HOSTNAME=node-7") {
		t.Errorf("host network: env %v lacks HOSTNAME=node-7", u.Spec.Process.Env)
	}
}

// Volume mounts come after the pod's files, parents before children; a
// volume on /etc/hosts replaces the pod's file; the pod's /dev/shm is
// bound instead of a tmpfs of the container's own.
func TestVolumeMounts(t *testing.T) {
	in := basicInput(t)
	in.Paths.Shm = "/var/lib/berth/pods/x/volumes/shm"
	bind := func(dst, src string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", "ro"}}
	}
	in.Volumes = []specs.Mount{bind("/data/cache", "/v/cache"), bind("/etc/hosts", "/v/hosts"), bind("/data", "/v/data")}
	u, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	var dsts []string
	for _, m := range u.Spec.Mounts {
		dsts = append(dsts, m.Destination)
		switch m.Destination {
		case "/dev/shm":
			if m.Type != "bind" || m.Source != in.Paths.Shm {
				t.Errorf("/dev/shm is %+v, want a bind of the pod's %s", m, in.Paths.Shm)
			}
		case "/etc/hosts":
			if m.Source != "/v/hosts" {
				t.Errorf("/etc/hosts from %s, want the volume", m.Source)
			}
		}
	}
	n := len(dsts)
	if got := dsts[n-3:]; !slices.Equal(got, []string{"/data", "/data/cache", "/etc/hosts"}) {
		t.Errorf("last mounts %v, want the volumes by depth, else in order", got)
	}
	if slices.Index(dsts, "/etc/hosts") != n-1 {
		t.Errorf("/etc/hosts mounted twice or early: %v", dsts)
	}
}
