package systemd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/godbus/dbus/v5"
)

// Every error this package returns because of what systemd answered carries
// one class of github.com/containerd/errdefs, tested with errors.Is or
// errdefs.IsNotFound and the like (api/server maps them to HTTP statuses):
//   - errdefs.ErrNotFound: systemd does not know the unit (NoSuchUnit,
//     LoadFailed, or LoadState=not-found), or it has no process to signal;
//   - errdefs.ErrAlreadyExists: a unit of that name is loaded and not a failed
//     leftover (UnitExists);
//   - errdefs.ErrInvalidArgument: systemd rejected what we asked for: an
//     unknown or read-only property (PropertyReadOnly), a wrong D-Bus type
//     (ENXIO), an invalid argument or unit name (InvalidArgs), or a Go value
//     this package cannot encode.

// D-Bus error names systemd 252 answers with. systemd's own names are in
// src/libsystemd/sd-bus/bus-common-errors.h; "System.Error.<ERRNO>" is how
// sd-bus names a plain errno (bus-error.c).
const (
	errNoSuchUnit    = "org.freedesktop.systemd1.NoSuchUnit"
	errLoadFailed    = "org.freedesktop.systemd1.LoadFailed"
	errUnitExists    = "org.freedesktop.systemd1.UnitExists"
	errNoSuchProcess = "org.freedesktop.systemd1.NoSuchProcess"
	// Answered to Manager.Subscribe by a client systemd already counts as
	// subscribed: it keeps its bus subscribers across daemon-reexec
	// (docs/systemd.md, "Watching units").
	errAlreadySubscribed = "org.freedesktop.systemd1.AlreadySubscribed"
	errPropertyReadOnly  = "org.freedesktop.DBus.Error.PropertyReadOnly"
	errInvalidArgs       = "org.freedesktop.DBus.Error.InvalidArgs"
	errUnknownProperty   = "org.freedesktop.DBus.Error.UnknownProperty"
	errUnknownObject     = "org.freedesktop.DBus.Error.UnknownObject"
	errENXIO             = "System.Error.ENXIO"
	errEINVAL            = "System.Error.EINVAL"
	errENOENT            = "System.Error.ENOENT"
	errESRCH             = "System.Error.ESRCH"
	// Answered by dbus-daemon while systemd is not on the bus (between a
	// D-Bus restart and systemd reconnecting to it).
	errServiceUnknown = "org.freedesktop.DBus.Error.ServiceUnknown"
	errNameHasNoOwner = "org.freedesktop.DBus.Error.NameHasNoOwner"
)

// Error is a D-Bus error answer from systemd (or the bus), with its class.
// errors.As(err, &dbus.Error{}) still finds the original.
type Error struct {
	Name    string // D-Bus error name, e.g. org.freedesktop.systemd1.UnitExists
	Message string // systemd's text, e.g. "Cannot set property Hostname, or unknown property."
	Hint    string // ours, when systemd's text alone does not say what to fix
	class   error
	orig    dbus.Error
}

func (e *Error) Error() string {
	s := e.Name + ": " + e.Message
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *Error) Unwrap() []error {
	if e.class == nil {
		return []error{e.orig}
	}
	return []error{e.class, e.orig}
}

func classOf(name string) error {
	switch name {
	case errNoSuchUnit, errLoadFailed, errNoSuchProcess, errUnknownObject, errENOENT, errESRCH:
		return errdefs.ErrNotFound
	case errUnitExists:
		return errdefs.ErrAlreadyExists
	case errPropertyReadOnly, errInvalidArgs, errUnknownProperty, errENXIO, errEINVAL:
		return errdefs.ErrInvalidArgument
	}
	return nil
}

// classify turns a D-Bus error answer into an *Error; other errors (I/O,
// context) are returned unchanged.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var de dbus.Error
	if !errors.As(err, &de) {
		var pde *dbus.Error
		if !errors.As(err, &pde) || pde == nil {
			return err
		}
		de = *pde
	}
	return &Error{Name: de.Name, Message: de.Error(), class: classOf(de.Name), orig: de}
}

// dbusName is the D-Bus error name in err, or "".
func dbusName(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Name
	}
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	return ""
}

// JobError reports a systemd job that finished with a result other than
// "done" (JobRemoved results: canceled, timeout, failed, dependency,
// skipped; see org.freedesktop.systemd1(5)).
type JobError struct {
	Unit   string
	Job    string // "start" or "stop"
	Result string
	// Status is the unit as systemd reported it right after the job, before
	// reset-failed unloaded it; nil if it could not be read.
	Status *UnitStatus
	// Cleanup is why reading Status or resetting the failed unit failed;
	// nil when both worked (or the unit was already gone). A unit left
	// failed keeps its name taken until reset-failed; Start retries that.
	// Not unwrapped: the job's failure is the error, not this.
	Cleanup error
}

func (e *JobError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s job for unit %s finished with result %q", e.Job, e.Unit, e.Result)
	if st := e.Status; st != nil && st.Result != "" && st.Result != "success" {
		fmt.Fprintf(&b, " (unit result %s", st.Result)
		switch st.ExecMainCode {
		case CodeExited:
			fmt.Fprintf(&b, ", main process exited with status %d", st.ExecMainStatus)
			if st.ExecMainStatus == 203 {
				// systemd's EXIT_EXEC: execve() of ExecStart= failed (systemd.exec(5), "Process exit codes").
				b.WriteString(" = EXEC, the command could not be executed")
			}
		case CodeKilled, CodeDumped:
			fmt.Fprintf(&b, ", main process killed by signal %d", st.ExecMainStatus)
		}
		b.WriteString(")")
	}
	if e.Cleanup != nil {
		fmt.Fprintf(&b, " (and after it: %v)", e.Cleanup)
	}
	return b.String()
}
