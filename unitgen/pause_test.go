package unitgen

import (
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

func sharingPod() *corev1.Pod {
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec:       corev1.PodSpec{ShareProcessNamespace: &yes, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

func TestPauseUnit(t *testing.T) {
	pod := sharingPod()
	pod.UID = "1234"
	u, err := PauseUnit(PauseInput{Pod: pod, Init: "/usr/libexec/berth/berth-init", Dir: "/run/berth/pods/default_web", StateDir: "/var/lib/berth"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "berth-default_web_POD.service" || u.Name != PauseUnitName("default", "web") || u.Slice != "berth-default-besteffort-pod1234.slice" {
		t.Errorf("name %s, slice %s", u.Name, u.Slice)
	}
	if u.Spec != nil {
		t.Errorf("the pause has no bundle, Spec = %+v", u.Spec)
	}
	want := map[string]any{
		"Documentation":         []string{"file:///var/lib/berth"},
		"Slice":                 "berth-default-besteffort-pod1234.slice",
		"Type":                  "forking",
		"PIDFile":               "/run/berth/pods/default_web/pause.pid",
		"ExecStart":             []ExecCommand{{Path: "/usr/libexec/berth/berth-init", Args: []string{"/usr/libexec/berth/berth-init", "pause", "/run/berth/pods/default_web"}}},
		"Restart":               "no",
		"CollectMode":           "inactive-or-failed",
		"NoNewPrivileges":       true,
		"CapabilityBoundingSet": uint64(1<<6 | 1<<7 | 1<<21),
		"OOMScoreAdjust":        int32(-998),
		"LogExtraFields":        JournalFields{"BERTH_POD_UID=1234"},
	}
	for name, v := range want {
		p, ok := u.Property(name)
		if !ok {
			t.Errorf("no %s", name)
			continue
		}
		if !reflect.DeepEqual(p.Value, v) {
			t.Errorf("%s = %#v, want %#v", name, p.Value, v)
		}
		if p.Why == "" {
			t.Errorf("%s has no Why", name)
		}
	}
	// Every value has the D-Bus type systemd expects, as Generate's.
	for _, e := range dbusTypeErrors(u) {
		t.Error(e)
	}
	r := u.Render()
	for _, line := range []string{"CapabilityBoundingSet=2097344", "ExecStart=/usr/libexec/berth/berth-init pause /run/berth/pods/default_web", "Restart=no"} {
		if !strings.Contains(r, "\n"+line+"\n") {
			t.Errorf("Render lacks %q:\n%s", line, r)
		}
	}
	// The pause's state directory mark reads back as container units' does.
	doc, _ := u.Property("Documentation")
	if dir, ok := UnitInstance(doc.Value.([]string)); !ok || dir != "/var/lib/berth" {
		t.Errorf("UnitInstance = %q, %v", dir, ok)
	}
}

func TestPauseUnitRefuses(t *testing.T) {
	ok := PauseInput{Pod: sharingPod(), Init: "/bin/berth-init", Dir: "/run/p", StateDir: "/var/lib/berth"}
	notShared := ok
	notShared.Pod = sharingPod()
	notShared.Pod.Spec.ShareProcessNamespace = nil
	relative := ok
	relative.Dir = "run/p"
	badName := ok
	badName.Pod = sharingPod()
	badName.Pod.Name = "Web_1"
	for name, in := range map[string]PauseInput{"not shared": notShared, "relative dir": relative, "bad name": badName, "no pod": {}} {
		if _, err := PauseUnit(in); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := PauseUnit(badName); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad name: %v, want invalid argument", err)
	}
}

// No container can take the pause's unit name: container names are DNS
// labels, lower case.
func TestPauseNameCannotBeAContainer(t *testing.T) {
	if errs := validation.IsDNS1123Label(PauseContainer); len(errs) == 0 {
		t.Fatalf("%q is a valid container name", PauseContainer)
	}
}

// A container of a sharing pod joins the pause's namespace and is bound to
// its unit; one of a pod that does not share gets its own namespace and no
// binding.
func TestSharedPIDNamespace(t *testing.T) {
	in := basicInput(t)
	in.Paths.PIDNS = "/run/berth/pods/default_web/ns/pid"
	yes := true
	in.Pod.Spec.ShareProcessNamespace = &yes
	u, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	pause := PauseUnitName(in.Pod.Namespace, in.Pod.Name)
	for _, name := range []string{"After", "BindsTo"} {
		p, ok := u.Property(name)
		if !ok || !reflect.DeepEqual(p.Value, []string{pause}) {
			t.Errorf("%s = %#v, want [%s]", name, p.Value, pause)
		}
	}
	if ns := nsOf(u.Spec, specs.PIDNamespace); ns == nil || ns.Path != in.Paths.PIDNS {
		t.Errorf("pid namespace %+v, want path %s", ns, in.Paths.PIDNS)
	}

	plain := basicInput(t)
	u, err = Generate(plain)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"After", "BindsTo"} {
		if p, ok := u.Property(name); ok {
			t.Errorf("pod without shareProcessNamespace has %s=%v", name, p.Value)
		}
	}
	if ns := nsOf(u.Spec, specs.PIDNamespace); ns == nil || ns.Path != "" {
		t.Errorf("pid namespace %+v, want a new one", ns)
	}
	no := false
	plain.Pod.Spec.ShareProcessNamespace = &no
	if _, err := Generate(plain); err != nil {
		t.Errorf("shareProcessNamespace: false refused: %v", err)
	}

	// Caller mistakes: the namespace path without sharing, sharing without it.
	plain.Paths.PIDNS = "/run/x/ns/pid"
	if _, err := Generate(plain); err == nil || errdefs.IsInvalidArgument(err) {
		t.Errorf("PIDNS for a pod that does not share: %v, want a plain error", err)
	}
	in.Paths.PIDNS = ""
	if _, err := Generate(in); err == nil || errdefs.IsInvalidArgument(err) {
		t.Errorf("sharing pod without PIDNS: %v, want a plain error", err)
	}
	in.Paths.PIDNS = "run/x"
	if _, err := Generate(in); err == nil {
		t.Error("relative PIDNS accepted")
	}
	// hostPID stays refused, shared or not.
	in.Paths.PIDNS = "/run/berth/pods/default_web/ns/pid"
	in.Pod.Spec.HostPID = true
	if _, err := Generate(in); !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), "spec.hostPID: ") {
		t.Errorf("hostPID: %v", err)
	}
}

func nsOf(s *specs.Spec, typ specs.LinuxNamespaceType) *specs.LinuxNamespace {
	for i := range s.Linux.Namespaces {
		if s.Linux.Namespaces[i].Type == typ {
			return &s.Linux.Namespaces[i]
		}
	}
	return nil
}
