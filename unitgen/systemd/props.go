package systemd

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/berth-dev/berth/unitgen"
)

// execCommand is one ExecStart=-style entry, D-Bus (sasb). The bool is
// "ignore failure" (systemd 252 src/core/dbus-execute.c:
// c->flags = b ? EXEC_COMMAND_IGNORE_FAILURE : 0), although go-systemd calls
// it uncleanIsFailure (docs/systemd.md, "Properties").
type execCommand struct {
	Path          string
	Args          []string // argv including argv[0]
	IgnoreFailure bool
}

// deviceAllow is one DeviceAllow= entry, D-Bus (ss).
// exitStatusSet is (aiai): RestartPreventExitStatus= and its kin.
type exitStatusSet struct {
	Codes   []int32
	Signals []int32
}

type deviceAllow struct {
	Path string
	Perm string
}

// Properties converts unitgen properties into go-systemd properties. The Go
// type of a dbus.Variant decides its D-Bus signature, and systemd 252 rejects
// a known property of the wrong signature with a bare ENXIO ("Unexpected
// message contents") that names nothing, so every unitgen value type maps to
// exactly one signature here and anything else is refused up front, naming
// the property:
//
//	string s, bool b, uint64 t, int32 i, uint32 u, []string as,
//	[]unitgen.ExecCommand a(sasb), []unitgen.DeviceAllow a(ss),
//	unitgen.JournalFields aay (LogExtraFields: each KEY=VALUE as bytes),
//	unitgen.ExitStatusSet (aiai) (RestartPreventExitStatus=).
func Properties(props []unitgen.Property) ([]sd.Property, error) {
	out := make([]sd.Property, 0, len(props))
	for _, p := range props {
		if p.Name == "" {
			return nil, fmt.Errorf("property with value %v has no name: %w", p.Value, errdefs.ErrInvalidArgument)
		}
		v, err := variant(p.Value)
		if err != nil {
			return nil, fmt.Errorf("property %s: %w", p.Name, err)
		}
		out = append(out, sd.Property{Name: p.Name, Value: v})
	}
	return out, nil
}

func variant(v any) (dbus.Variant, error) {
	switch x := v.(type) {
	case string, bool, uint64, int32, uint32:
		return dbus.MakeVariant(x), nil
	case []string:
		if x == nil {
			x = []string{}
		}
		return dbus.MakeVariant(x), nil
	case []unitgen.ExecCommand:
		cmds := make([]execCommand, 0, len(x))
		for _, c := range x {
			if c.Path == "" {
				return dbus.Variant{}, fmt.Errorf("command with empty path: %w", errdefs.ErrInvalidArgument)
			}
			args := c.Args
			if len(args) == 0 {
				// systemd wants argv[0] in the array; a unit file's "ExecStart=/bin/x" means argv ["/bin/x"].
				args = []string{c.Path}
			}
			cmds = append(cmds, execCommand{Path: c.Path, Args: args, IgnoreFailure: c.IgnoreFailure})
		}
		return dbus.MakeVariant(cmds), nil
	case []unitgen.DeviceAllow:
		devs := make([]deviceAllow, 0, len(x))
		for _, d := range x {
			devs = append(devs, deviceAllow{Path: d.Path, Perm: d.Perm})
		}
		return dbus.MakeVariant(devs), nil
	case unitgen.ExitStatusSet:
		set := exitStatusSet{Codes: x.Codes, Signals: []int32{}}
		if set.Codes == nil {
			set.Codes = []int32{}
		}
		return dbus.MakeVariant(set), nil
	case unitgen.JournalFields:
		fields := make([][]byte, 0, len(x))
		for _, f := range x {
			fields = append(fields, []byte(f))
		}
		return dbus.MakeVariant(fields), nil
	}
	return dbus.Variant{}, fmt.Errorf("value %v of Go type %T has no D-Bus signature systemd accepts here (want string, bool, uint64, int32, uint32, []string, []unitgen.ExecCommand, []unitgen.DeviceAllow, unitgen.JournalFields or unitgen.ExitStatusSet): %w", v, v, errdefs.ErrInvalidArgument)
}

// signatures lists "Name=sig" of props, for an ENXIO hint.
func signatures(props []sd.Property) string {
	s := make([]string, 0, len(props))
	for _, p := range props {
		s = append(s, p.Name+"="+p.Value.Signature().String())
	}
	return strings.Join(s, " ")
}

// withPropHint adds what systemd's ENXIO does not say: which signatures were
// sent, so the wrong one can be found against org.freedesktop.systemd1(5).
func withPropHint(err error, props []sd.Property) error {
	if e, ok := err.(*Error); ok && e.Name == errENXIO {
		e.Hint = "a property has a D-Bus type systemd does not accept for it; sent " + signatures(props)
	}
	return err
}

// creationOnly are properties systemd accepts only while it creates a
// transient unit: systemd 252 src/core/dbus-unit.c runs
// bus_unit_set_transient_property only for a transient unit still in
// UNIT_STUB; on a loaded unit only the live ones (Description, Markers and
// the cgroup settings of dbus-cgroup.c) are settable, the rest answer
// PropertyReadOnly. EnsureSlice drops these when the slice already exists.
var creationOnly = map[string]bool{
	"DefaultDependencies": true, "Slice": true, "CollectMode": true, "AddRef": true,
	"Documentation": true, "SourcePath": true, "StopWhenUnneeded": true,
	"RefuseManualStart": true, "RefuseManualStop": true, "AllowIsolate": true, "IgnoreOnIsolate": true,
	"Wants": true, "Requires": true, "Requisite": true, "BindsTo": true, "PartOf": true, "Upholds": true,
	"Conflicts": true, "Before": true, "After": true, "OnFailure": true, "OnSuccess": true,
	"PropagatesReloadTo": true, "ReloadPropagatedFrom": true, "PropagatesStopTo": true,
	"StopPropagatedFrom": true, "JoinsNamespaceOf": true, "RequiresMountsFor": true,
}

func liveProps(props []sd.Property) []sd.Property {
	var out []sd.Property
	for _, p := range props {
		if !creationOnly[p.Name] {
			out = append(out, p)
		}
	}
	return out
}
