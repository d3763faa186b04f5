package systemd

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/berth-dev/berth/unitgen"
)

// These tests need neither root nor systemd.

func TestPropertiesSignatures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value any
		sig   string
	}{
		{"Type", "exec", "s"},
		{"MemoryAccounting", true, "b"},
		{"MemoryMax", uint64(64 << 20), "t"},
		{"OOMScoreAdjust", int32(-500), "i"},
		{"UMask", uint32(0o022), "u"},
		{"Environment", []string{"A=1"}, "as"},
		{"SupplementaryGroups", []string(nil), "as"},
		{"ExecStart", []unitgen.ExecCommand{{Path: "/bin/sleep", Args: []string{"sleep", "1"}}}, "a(sasb)"},
		{"DeviceAllow", []unitgen.DeviceAllow{{Path: "/dev/null", Perm: "rw"}}, "a(ss)"},
		{"LogExtraFields", unitgen.JournalFields{"BERTH_POD_UID=x"}, "aay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := Properties([]unitgen.Property{{Name: tc.name, Value: tc.value}})
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != 1 || ps[0].Name != tc.name {
				t.Fatalf("got %+v", ps)
			}
			if got := ps[0].Value.Signature().String(); got != tc.sig {
				t.Errorf("signature %s, want %s", got, tc.sig)
			}
		})
	}
}

// The wire value of ExecStart must be what go-systemd's PropExecStart sends,
// with the bool meaning "ignore failure" (docs/systemd.md, "Properties").
func TestPropertiesExecCommand(t *testing.T) {
	ps, err := Properties([]unitgen.Property{
		{Name: "ExecStart", Value: []unitgen.ExecCommand{{Path: "/bin/sh", Args: []string{"/bin/sh", "-c", "exit 3"}, IgnoreFailure: true}}},
		{Name: "ExecStopPost", Value: []unitgen.ExecCommand{{Path: "/bin/true"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := sd.PropExecStart([]string{"/bin/sh", "-c", "exit 3"}, true)
	if got, w := ps[0].Value.String(), want.Value.String(); got != w {
		t.Errorf("ExecStart %s, want (as go-systemd) %s", got, w)
	}
	// An empty Args means argv = [Path], as "ExecStopPost=/bin/true" would.
	cmds := ps[1].Value.Value().([]execCommand)
	if len(cmds) != 1 || len(cmds[0].Args) != 1 || cmds[0].Args[0] != "/bin/true" || cmds[0].IgnoreFailure {
		t.Errorf("ExecStopPost = %+v", cmds)
	}
}

func TestPropertiesRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		prop unitgen.Property
		want string
	}{
		{"int is not uint64", unitgen.Property{Name: "MemoryMax", Value: 5}, "MemoryMax"},
		{"int64 is not uint64", unitgen.Property{Name: "TasksMax", Value: int64(5)}, "TasksMax"},
		{"uint32 slice", unitgen.Property{Name: "CPUAffinity", Value: []uint32{1}}, "CPUAffinity"},
		{"nil value", unitgen.Property{Name: "Description", Value: nil}, "Description"},
		{"no name", unitgen.Property{Value: "x"}, "no name"},
		{"command without path", unitgen.Property{Name: "ExecStart", Value: []unitgen.ExecCommand{{Args: []string{"x"}}}}, "ExecStart"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Properties([]unitgen.Property{{Name: "Type", Value: "exec"}, tc.prop})
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want errdefs.ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %q does not name %q", err, tc.want)
			}
		})
	}
}

func TestLiveProps(t *testing.T) {
	ps, err := Properties([]unitgen.Property{
		{Name: "Description", Value: "ns"}, {Name: "DefaultDependencies", Value: false},
		{Name: "MemoryMax", Value: uint64(1)}, {Name: "Wants", Value: []string{"x.slice"}},
		{Name: "TasksMax", Value: uint64(2)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range liveProps(ps) {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, ","); got != "Description,MemoryMax,TasksMax" {
		t.Errorf("live properties %s", got)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name  string
		class error
	}{
		{"org.freedesktop.systemd1.NoSuchUnit", errdefs.ErrNotFound},
		{"org.freedesktop.systemd1.LoadFailed", errdefs.ErrNotFound},
		{"org.freedesktop.systemd1.NoSuchProcess", errdefs.ErrNotFound},
		{"org.freedesktop.systemd1.UnitExists", errdefs.ErrAlreadyExists},
		{"org.freedesktop.DBus.Error.PropertyReadOnly", errdefs.ErrInvalidArgument},
		{"org.freedesktop.DBus.Error.InvalidArgs", errdefs.ErrInvalidArgument},
		{"System.Error.ENXIO", errdefs.ErrInvalidArgument},
		{"org.freedesktop.DBus.Error.AccessDenied", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := dbus.Error{Name: tc.name, Body: []any{"systemd says why"}}
			err := classify(orig)
			for _, c := range []error{errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrInvalidArgument} {
				if got := errors.Is(err, c); got != (c == tc.class) {
					t.Errorf("errors.Is(%v, %v) = %v", err, c, got)
				}
			}
			var de dbus.Error
			if !errors.As(err, &de) || de.Name != tc.name {
				t.Errorf("errors.As dbus.Error lost: %v", err)
			}
			if s := err.Error(); !strings.Contains(s, tc.name) || !strings.Contains(s, "systemd says why") {
				t.Errorf("message %q lacks name or text", s)
			}
		})
	}
	plain := errors.New("read: connection reset by peer")
	if classify(plain) != plain {
		t.Error("non-D-Bus error changed by classify")
	}
	if classify(nil) != nil {
		t.Error("classify(nil) != nil")
	}
}

func TestENXIOHintNamesSignatures(t *testing.T) {
	ps, _ := Properties([]unitgen.Property{{Name: "ProtectSystem", Value: true}})
	err := withPropHint(classify(dbus.Error{Name: "System.Error.ENXIO", Body: []any{"Failed to set unit properties: Unexpected message contents"}}), ps)
	if !strings.Contains(err.Error(), "ProtectSystem=b") {
		t.Errorf("hint missing: %v", err)
	}
}

func TestJobErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *JobError
		want []string
	}{
		{"exec failed", &JobError{Unit: "berth-x.service", Job: "start", Result: "failed",
			Status: &UnitStatus{Result: "exit-code", ExecMainCode: CodeExited, ExecMainStatus: 203}},
			[]string{"berth-x.service", `"failed"`, "exit-code", "status 203", "EXEC"}},
		{"clean-up failed too", &JobError{Unit: "berth-x.service", Job: "start", Result: "failed",
			Cleanup: errors.New("reset-failed unit berth-x.service: connection reset")},
			[]string{"berth-x.service", `"failed"`, "and after it: reset-failed unit berth-x.service: connection reset"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, want := range tc.want {
				if !strings.Contains(tc.err.Error(), want) {
					t.Errorf("%q lacks %q", tc.err.Error(), want)
				}
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"252.39-1~deb12u2", 252, true},
		{`"252.39-1~deb12u2"`, 252, true}, // GVariant text form
		{"v245.4-4ubuntu3", 245, true},
		{"219", 219, true},
		{"256~rc1", 256, true},
		{"", 0, false},
		{"unknown", 0, false},
	} {
		got, err := parseVersion(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseVersion(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestUnitFromPath(t *testing.T) {
	for _, name := range []string{"berth-ns1.slice", "berth-web-0-app.service", "a_b@1.service", "1x.service"} {
		got, ok := unitFromPath(unitPath(name))
		if !ok || got != name {
			t.Errorf("unitFromPath(%s) = %q, %v", unitPath(name), got, ok)
		}
	}
	if _, ok := unitFromPath("/org/freedesktop/systemd1/job/12"); ok {
		t.Error("job path taken for a unit")
	}
}

func TestEventExited(t *testing.T) {
	exit := time.Unix(1, 0)
	for _, tc := range []struct {
		name string
		ev   Event
		want bool
	}{
		{"freshly loaded, before activating", Event{ActiveState: "inactive", SubState: "dead", MainPID: 166}, false},
		{"activating", Event{ActiveState: "activating"}, false},
		{"running", Event{ActiveState: "active", SubState: "running"}, false},
		{"deactivating", Event{ActiveState: "deactivating", ExecMainExit: exit}, false},
		{"exited clean", Event{ActiveState: "inactive", SubState: "dead", ExecMainExit: exit}, true},
		{"failed", Event{ActiveState: "failed", SubState: "failed"}, true},
		{"gone while disconnected", Event{ActiveState: "inactive", Gone: true}, true},
	} {
		if got := tc.ev.Exited(); got != tc.want {
			t.Errorf("%s: Exited() = %v", tc.name, got)
		}
	}
}

func TestSettledResult(t *testing.T) {
	for _, tc := range []struct {
		job, active, result, want string
	}{
		{"start", "active", "success", "done"},
		{"start", "inactive", "success", "done"},
		{"start", "failed", "exit-code", "failed"},
		{"start", "inactive", "exit-code", "failed"},
		{"stop", "inactive", "success", "done"},
		{"stop", "failed", "timeout", "done"},
		{"stop", "active", "success", "failed"},
	} {
		if got := settledResult(tc.job, &UnitStatus{ActiveState: tc.active, Result: tc.result}); got != tc.want {
			t.Errorf("%s with %s/%s: %s, want %s", tc.job, tc.active, tc.result, got, tc.want)
		}
	}
}

func TestDialNothingThere(t *testing.T) {
	dir := t.TempDir()
	bus := "unix:path=" + filepath.Join(dir, "bus")
	priv := "unix:path=" + filepath.Join(dir, "private")
	_, err := Dial(context.Background(), WithBusAddress(bus), WithPrivateAddress(priv))
	if err == nil || !strings.Contains(err.Error(), bus) || !strings.Contains(err.Error(), priv) {
		t.Errorf("Dial err = %v, want both addresses named", err)
	}
	if _, err := Dial(context.Background(), WithBusAddress(""), WithPrivateAddress("")); err == nil {
		t.Error("Dial with no address succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Dial(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with a cancelled ctx: %v", err)
	}
}

func TestEnsureSliceNeedsSliceName(t *testing.T) {
	err := (&Conn{}).EnsureSlice(context.Background(), "berth-x.service", nil)
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("err = %v, want errdefs.ErrInvalidArgument", err)
	}
}
