package systemd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/berth-dev/berth/unitgen"
)

// ExecMainCode values: the si_code of waitid(2) for the main process.
const (
	CodeExited int32 = 1 // CLD_EXITED: ExecMainStatus is the exit status
	CodeKilled int32 = 2 // CLD_KILLED: ExecMainStatus is the signal
	CodeDumped int32 = 3 // CLD_DUMPED: killed by ExecMainStatus, core dumped
)

// cleanupTimeout bounds clean-up that runs after ctx failed: it runs under
// context.WithoutCancel(ctx), since ctx may be what failed, with this
// timeout of its own (containerd's task manager does the same).
const cleanupTimeout = 10 * time.Second

// Start creates and starts the transient unit name with props (mode
// "replace") and waits, bounded by ctx, for systemd's start job. A job
// result other than "done" is a *JobError; the failed unit is then
// reset-failed so that systemd unloads it (runc's startUnit does the same).
// Use Type=exec: with Type=simple the job is "done" even when the binary
// cannot be executed (systemd.service(5)). With Type=exec, a process that
// exits non-zero before systemd has noticed its exec can fail the job too
// (observed on 252 with `sh -c 'exit 3'`); JobError.Status then carries the
// exit status.
//
// A unit of the same name that systemd still holds (a failed leftover) is
// reset and the start retried once; if it is still there (active), the error
// is errdefs.ErrAlreadyExists. Properties systemd refuses are errdefs.ErrInvalidArgument naming the
// property when systemd does.
//
// If the connection breaks during the call, Start re-dials and asks again;
// should the first request have reached systemd, the second answers
// errdefs.ErrAlreadyExists, and the caller finds the unit with Status.
func (c *Conn) Start(ctx context.Context, name string, props []unitgen.Property) error {
	sp, err := Properties(props)
	if err != nil {
		return fmt.Errorf("start unit %s: %w", name, err)
	}
	err = c.startTransient(ctx, name, sp)
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		return err
	}
	// A unit that failed stays loaded until reset-failed; then systemd
	// garbage-collects it and the name is free again.
	if rerr := c.ResetFailed(ctx, name); rerr != nil && !errors.Is(rerr, errdefs.ErrNotFound) {
		return fmt.Errorf("%w (freeing the name of a failed leftover: %w)", err, rerr)
	}
	err = c.startTransient(ctx, name, sp)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		if st, serr := c.Status(ctx, name); serr == nil {
			err = fmt.Errorf("%w (unit is %s/%s)", err, st.ActiveState, st.SubState)
		}
	}
	return err
}

// startTransient is one StartTransientUnit plus the wait for its job.
func (c *Conn) startTransient(ctx context.Context, name string, sp []sd.Property) error {
	// Buffered: go-systemd's signal dispatcher blocks writing the job result
	// (methods.go doc comment), and nobody reads it if ctx ends first.
	ch := make(chan string, 1)
	var used *session
	err := c.call(ctx, func(s *session) error {
		used = s
		_, err := s.sd.StartTransientUnitContext(ctx, name, "replace", sp, ch)
		return err
	})
	if err != nil {
		return fmt.Errorf("start unit %s: %w", name, withPropHint(classify(err), sp))
	}
	return c.finishJob(ctx, used, name, "start", ch)
}

// finishJob waits for a job's result and turns a failure into a *JobError,
// resetting a unit its start job left failed.
func (c *Conn) finishJob(ctx context.Context, s *session, name, job string, ch <-chan string) error {
	result, err := c.waitJob(ctx, s, name, job, ch)
	if err != nil {
		return fmt.Errorf("%s unit %s: waiting for the job: %w", job, name, err)
	}
	if result == "done" {
		return nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	jerr := &JobError{Unit: name, Job: job, Result: result}
	// A unit already gone (CollectMode=inactive-or-failed) is no failure
	// of either clean-up step.
	var cleanup []error
	if st, err := c.Status(cctx, name); err == nil {
		jerr.Status = st
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		cleanup = append(cleanup, err)
	}
	if job == "start" {
		if err := c.ResetFailed(cctx, name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			cleanup = append(cleanup, err)
		}
	}
	jerr.Cleanup = errors.Join(cleanup...)
	return jerr
}

// waitJob waits for the JobRemoved result go-systemd routes to ch. When the
// connection breaks meanwhile (the signal would be lost), it re-dials and
// polls the unit until no job is pending, and derives the result.
func (c *Conn) waitJob(ctx context.Context, s *session, name, job string, ch <-chan string) (string, error) {
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return "", ctx.Err()
	case <-s.sig.Context().Done():
	}
	select { // it may have arrived just before the connection went
	case r := <-ch:
		return r, nil
	default:
	}
	for {
		st, err := c.Status(ctx, name)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			if job == "stop" {
				return "done", nil
			}
			return "failed", nil
		case err != nil:
			return "", err
		case st.JobID == 0:
			return settledResult(job, st), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settledResult is the job result implied by a unit with no pending job.
func settledResult(job string, st *UnitStatus) string {
	switch job {
	case "stop":
		if st.ActiveState == "inactive" || st.ActiveState == "failed" {
			return "done"
		}
	default:
		if st.ActiveState == "active" || st.ActiveState == "reloading" ||
			(st.ActiveState == "inactive" && (st.Result == "" || st.Result == "success")) {
			return "done"
		}
	}
	return "failed"
}

// EnsureSlice starts the transient slice name with props, or, when it
// already exists (a transient slice stays active until stopped, even with no
// children), applies props to it live (SetUnitProperties, runtime) as runc's
// Set does, leaving out those systemd accepts only at creation.
func (c *Conn) EnsureSlice(ctx context.Context, name string, props []unitgen.Property) error {
	if !strings.HasSuffix(name, ".slice") {
		return fmt.Errorf("ensure slice %s: not a .slice name: %w", name, errdefs.ErrInvalidArgument)
	}
	sp, err := Properties(props)
	if err != nil {
		return fmt.Errorf("ensure slice %s: %w", name, err)
	}
	err = c.startTransient(ctx, name, sp)
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		return err
	}
	if live := liveProps(sp); len(live) > 0 {
		err := c.call(ctx, func(s *session) error {
			return s.sd.SetUnitPropertiesContext(ctx, name, true, live...)
		})
		if err != nil {
			return fmt.Errorf("set properties of slice %s: %w", name, withPropHint(classify(err), live))
		}
	}
	st, err := c.Status(ctx, name)
	if err != nil {
		return fmt.Errorf("ensure slice %s: %w", name, err)
	}
	if st.ActiveState == "active" {
		return nil
	}
	// Loaded but stopped (not yet garbage-collected): start it again.
	ch := make(chan string, 1)
	var used *session
	err = c.call(ctx, func(s *session) error {
		used = s
		_, err := s.sd.StartUnitContext(ctx, name, "replace", ch)
		return err
	})
	if err != nil {
		return fmt.Errorf("start slice %s: %w", name, classify(err))
	}
	return c.finishJob(ctx, used, name, "start", ch)
}

// Stop stops the unit (mode "replace": systemd sends KillSignal=, waits
// TimeoutStopUSec=, then SIGKILL) and waits for the stop job. A unit systemd
// does not have loaded is already stopped: nil. A unit that ends failed
// (e.g. Result=timeout after SIGKILL) stays loaded for its status to be read;
// ResetFailed unloads it.
func (c *Conn) Stop(ctx context.Context, name string) error {
	ch := make(chan string, 1)
	var used *session
	err := c.call(ctx, func(s *session) error {
		used = s
		_, err := s.sd.StopUnitContext(ctx, name, "replace", ch)
		return err
	})
	if err != nil {
		err = classify(err)
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("stop unit %s: %w", name, err)
	}
	return c.finishJob(ctx, used, name, "stop", ch)
}

// ResetFailed resets a failed unit, which lets systemd unload a transient
// one. errdefs.ErrNotFound if systemd does not have it loaded.
func (c *Conn) ResetFailed(ctx context.Context, name string) error {
	err := c.call(ctx, func(s *session) error { return s.sd.ResetFailedUnitContext(ctx, name) })
	if err != nil {
		return fmt.Errorf("reset-failed unit %s: %w", name, classify(err))
	}
	return nil
}

// Who selects the processes Kill signals.
type Who string

const (
	KillMain    Who = "main"    // the main process
	KillControl Who = "control" // the control process (ExecStop= etc.)
	KillAll     Who = "all"     // every process in the unit's cgroup
)

// Kill sends sig to the unit's processes without stopping the unit.
// errdefs.ErrNotFound when the unit is not loaded or has no such process.
func (c *Conn) Kill(ctx context.Context, name string, who Who, sig syscall.Signal) error {
	err := c.call(ctx, func(s *session) error {
		return s.sd.KillUnitWithTarget(ctx, name, sd.Who(who), int32(sig))
	})
	if err != nil {
		return fmt.Errorf("kill %s of unit %s with %v: %w", who, name, sig, classify(err))
	}
	return nil
}

// UnitStatus is what systemd reports about a unit. Service-only fields are
// zero for other unit types.
type UnitStatus struct {
	Name        string
	Description string
	LoadState   string // loaded, not-found, bad-setting, error, masked
	ActiveState string // active, reloading, inactive, failed, activating, deactivating
	SubState    string // per type, e.g. running, exited, dead, failed, stop-sigterm
	// Result of the last run: success, exit-code, signal, core-dump,
	// timeout, watchdog, start-limit-hit, resources, oom-kill (v2 only),
	// protocol, exec-condition.
	Result         string
	MainPID        uint32 // in systemd's PID namespace; 0 when none
	ControlGroup   string // relative to each hierarchy root, e.g. /system.slice/x.service
	ExecMainCode   int32  // CodeExited, CodeKilled, CodeDumped; 0 if not exited
	ExecMainStatus int32  // exit status or signal number, per ExecMainCode
	NRestarts      uint32
	InvocationID   string // hex; new for every start
	JobID          uint32 // pending job, 0 if none

	ActiveEnter   time.Time // last entered active
	ActiveExit    time.Time // last left active (a stop began)
	InactiveEnter time.Time // last entered inactive or failed
	ExecMainStart time.Time // main process started
	ExecMainExit  time.Time // main process exited
}

// Status reads the unit's state. A unit systemd does not know is errdefs.ErrNotFound
// (asking loads it as LoadState=not-found for a moment; systemd drops it
// again).
func (c *Conn) Status(ctx context.Context, name string) (*UnitStatus, error) {
	var st *UnitStatus
	err := c.call(ctx, func(s *session) error {
		var err error
		st, err = readStatus(ctx, s.sys, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("status of unit %s: %w", name, classify(err))
	}
	return st, nil
}

func unitPath(name string) dbus.ObjectPath {
	return dbus.ObjectPath(unitPathNS + "/" + sd.PathBusEscape(name))
}

// typeInterface is the D-Bus interface of the unit's type, which carries
// ControlGroup and, for services, the main process's fate.
func typeInterface(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return ""
	}
	switch t := name[i+1:]; t {
	case "service", "slice", "scope", "socket", "mount", "swap":
		return "org.freedesktop.systemd1." + strings.ToUpper(t[:1]) + t[1:]
	}
	return ""
}

func getAll(ctx context.Context, conn *dbus.Conn, path dbus.ObjectPath, iface string) (map[string]dbus.Variant, error) {
	var m map[string]dbus.Variant
	err := conn.Object(systemdDest, path).CallWithContext(ctx, propsIF+".GetAll", 0, iface).Store(&m)
	return m, err
}

func readStatus(ctx context.Context, conn *dbus.Conn, name string) (*UnitStatus, error) {
	path := unitPath(name)
	u, err := getAll(ctx, conn, path, unitIF)
	if err != nil {
		return nil, err
	}
	st := &UnitStatus{Name: name}
	st.fromUnit(u)
	if st.LoadState == "not-found" && st.ActiveState == "inactive" {
		return nil, fmt.Errorf("unit %s is not loaded: %w", name, errdefs.ErrNotFound)
	}
	if iface := typeInterface(name); iface != "" {
		t, err := getAll(ctx, conn, path, iface)
		if err != nil {
			return nil, err
		}
		st.fromType(t)
	}
	return st, nil
}

func (st *UnitStatus) fromUnit(m map[string]dbus.Variant) {
	st.Description = str(m, "Description")
	st.LoadState = str(m, "LoadState")
	st.ActiveState = str(m, "ActiveState")
	st.SubState = str(m, "SubState")
	st.InvocationID = hexBytes(m, "InvocationID")
	st.ActiveEnter = usec(m, "ActiveEnterTimestamp")
	st.ActiveExit = usec(m, "ActiveExitTimestamp")
	st.InactiveEnter = usec(m, "InactiveEnterTimestamp")
	if v, ok := m["Job"]; ok { // (uo): id and path, 0 and "/" for none
		if s, ok := v.Value().([]any); ok && len(s) == 2 {
			st.JobID, _ = s[0].(uint32)
		}
	}
}

func (st *UnitStatus) fromType(m map[string]dbus.Variant) {
	st.Result = str(m, "Result")
	st.MainPID, _ = m["MainPID"].Value().(uint32)
	st.ControlGroup = str(m, "ControlGroup")
	st.ExecMainCode, _ = m["ExecMainCode"].Value().(int32)
	st.ExecMainStatus, _ = m["ExecMainStatus"].Value().(int32)
	st.NRestarts, _ = m["NRestarts"].Value().(uint32)
	st.ExecMainStart = usec(m, "ExecMainStartTimestamp")
	st.ExecMainExit = usec(m, "ExecMainExitTimestamp")
}

func str(m map[string]dbus.Variant, k string) string {
	s, _ := m[k].Value().(string)
	return s
}

func hexBytes(m map[string]dbus.Variant, k string) string {
	b, _ := m[k].Value().([]byte)
	return hex.EncodeToString(b)
}

// usec converts systemd's µs-since-epoch timestamps; 0 (never) and
// UINT64_MAX (infinity) are the zero time.
func usec(m map[string]dbus.Variant, k string) time.Time {
	v, _ := m[k].Value().(uint64)
	if v == 0 || v == math.MaxUint64 {
		return time.Time{}
	}
	return time.UnixMicro(int64(v))
}

// UnitSummary is one unit as ListUnitsByPatterns reports it.
type UnitSummary struct {
	Name, Description                string
	LoadState, ActiveState, SubState string
	JobType                          string // pending job's type, "" if none
}

// List lists the units systemd has loaded whose names start with prefix
// (berth's are "berth-…"), sorted by name. prefix must not contain glob
// characters.
func (c *Conn) List(ctx context.Context, prefix string) ([]UnitSummary, error) {
	var us []UnitSummary
	err := c.call(ctx, func(s *session) error {
		var err error
		us, err = listUnits(ctx, s.sys, prefix)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list units %s*: %w", prefix, classify(err))
	}
	return us, nil
}

func listUnits(ctx context.Context, conn *dbus.Conn, prefix string) ([]UnitSummary, error) {
	// a(ssssssouso): name, description, load, active, sub, following, unit
	// path, job id, job type, job path (org.freedesktop.systemd1(5)).
	var raw []struct {
		Name, Description, LoadState, ActiveState, SubState, Followed string
		Path                                                          dbus.ObjectPath
		JobID                                                         uint32
		JobType                                                       string
		JobPath                                                       dbus.ObjectPath
	}
	err := conn.Object(systemdDest, systemdPath).CallWithContext(ctx, managerIF+".ListUnitsByPatterns", 0,
		[]string{}, []string{prefix + "*"}).Store(&raw)
	if err != nil {
		return nil, err
	}
	out := make([]UnitSummary, 0, len(raw))
	for _, r := range raw {
		out = append(out, UnitSummary{Name: r.Name, Description: r.Description, LoadState: r.LoadState,
			ActiveState: r.ActiveState, SubState: r.SubState, JobType: r.JobType})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Version is systemd's major version, from Manager.Version
// ("252.39-1~deb12u2"), to gate properties newer than the oldest systemd
// berth supports (e.g. CPUWeight=0 means idle only on ≥ 252).
func (c *Conn) Version(ctx context.Context) (int, error) {
	var v dbus.Variant
	err := c.call(ctx, func(s *session) error {
		return s.manager().CallWithContext(ctx, propsIF+".Get", 0, managerIF, "Version").Store(&v)
	})
	if err != nil {
		return 0, fmt.Errorf("systemd version: %w", classify(err))
	}
	s, _ := v.Value().(string)
	return parseVersion(s)
}

// parseVersion takes the leading number of a systemd version string, which
// distributions decorate: "252.39-1~deb12u2", "v245.4-4ubuntu3", and the
// GVariant text form "\"252\"" go-systemd's GetManagerProperty returns (runc
// systemdVersionAtoi does the same).
func parseVersion(s string) (int, error) {
	t := strings.TrimLeft(strings.TrimSpace(s), "\"v")
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(t[:i])
	if err != nil {
		return 0, fmt.Errorf("systemd version %q: no leading number", s)
	}
	return n, nil
}

// UnitOrigin is what a loaded unit says of who made it: its Documentation=
// (where berth marks the state directory of the berth that made a
// container unit, unitgen.InstanceDoc) and the argv of its ExecStart=
// commands (a container unit's names its bundle), read only when
// Documentation carries no berth mark (a unit of a berth from before the
// mark). Neither is in ListUnits' answer, so reading them is a call per
// unit.
type UnitOrigin struct {
	Documentation []string
	ExecStart     [][]string // argv of each command, argv[0] included; none for a non-service
}

// Origin reads a unit's UnitOrigin. errdefs.ErrNotFound when systemd does
// not have it loaded (it may have gone since it was listed).
func (c *Conn) Origin(ctx context.Context, name string) (*UnitOrigin, error) {
	var o *UnitOrigin
	err := c.call(ctx, func(s *session) error {
		var err error
		o, err = readOrigin(ctx, s.sys, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("origin of unit %s: %w", name, classify(err))
	}
	return o, nil
}

// execCommandOut is one entry of a service's ExecStart property as systemd
// reads it out: a(sasbttttuii), path, argv, ignore-failure, the last run's
// start and exit timestamps (realtime and monotonic), its PID, code and
// status (org.freedesktop.systemd1(5)).
type execCommandOut struct {
	Path                                                       string
	Args                                                       []string
	IgnoreFailure                                              bool
	StartRealtime, StartMonotonic, ExitRealtime, ExitMonotonic uint64
	PID                                                        uint32
	Code, Status                                               int32
}

func readOrigin(ctx context.Context, conn *dbus.Conn, name string) (*UnitOrigin, error) {
	path := unitPath(name)
	// One property first: a marked unit (every unit berth makes now) needs
	// nothing else, and reconcile asks this of every container unit at
	// start (GetAll on 500 units took a second; this takes a tenth).
	var doc dbus.Variant
	if err := conn.Object(systemdDest, path).CallWithContext(ctx, propsIF+".Get", 0, unitIF, "Documentation").Store(&doc); err == nil {
		if docs, ok := doc.Value().([]string); ok {
			if _, marked := unitgen.UnitInstance(docs); marked {
				return &UnitOrigin{Documentation: docs}, nil
			}
		}
	}
	u, err := getAll(ctx, conn, path, unitIF)
	if err != nil {
		return nil, err
	}
	if str(u, "LoadState") == "not-found" && str(u, "ActiveState") == "inactive" {
		return nil, fmt.Errorf("unit %s is not loaded: %w", name, errdefs.ErrNotFound)
	}
	o := &UnitOrigin{}
	o.Documentation, _ = u["Documentation"].Value().([]string)
	if typeInterface(name) != serviceIF {
		return o, nil
	}
	var v dbus.Variant
	if err := conn.Object(systemdDest, path).CallWithContext(ctx, propsIF+".Get", 0, serviceIF, "ExecStart").Store(&v); err != nil {
		return nil, err
	}
	var cmds []execCommandOut
	if err := v.Store(&cmds); err != nil {
		return nil, fmt.Errorf("unit %s: ExecStart of signature %s: %w", name, v.Signature(), err)
	}
	for _, c := range cmds {
		o.ExecStart = append(o.ExecStart, c.Args)
	}
	return o, nil
}
