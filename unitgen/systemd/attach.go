package systemd

import (
	"context"
	"fmt"
	"os"
	"runtime"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Attach moves the processes pids (in systemd's PID namespace) into the
// cgroup of the running unit name, with Manager.AttachProcessesToUnit(name,
// "", pids) (systemd >= 238, org.freedesktop.systemd1(5)): the way into a
// unit's cgroup that keeps systemd the only writer of its cgroup tree, as
// `systemd-run --scope` and container runtimes' exec do. Processes the
// moved ones fork later are born in the unit and are killed with it.
//
// systemd accepts it only for a unit with Delegate=yes ("Process migration
// not available on non-delegated units.") that is active or activating
// ("Unit is not active, refusing."); both answers are InvalidArgs, so
// errdefs.ErrInvalidArgument. A unit systemd does not know is
// errdefs.ErrNotFound, a PID that does not exist ESRCH (also
// errdefs.ErrNotFound). systemd reads the caller's credentials: a caller
// in another PID namespace than systemd's gets System.Error.EPROTO
// (observed with 252; berthd runs in systemd's).
func (c *Conn) Attach(ctx context.Context, name string, pids ...uint32) error {
	err := c.call(ctx, func(s *session) error {
		return s.manager().CallWithContext(ctx, managerIF+".AttachProcessesToUnit", 0, name, "", pids).Err
	})
	if err != nil {
		return fmt.Errorf("attach pids %v to unit %s: %w", pids, name, classify(err))
	}
	return nil
}

// StartCommand starts argv as the transient service name (Type=exec,
// collected when it ends) whose standard input is stdin (the D-Bus
// property StandardInputFileDescriptor, as `systemd-run --pipe` passes
// its terminal; systemd >= 236), and waits for the start job. The command
// is a child of systemd, not of the caller: it inherits nothing of the
// caller's own confinement (its seccomp filters, no_new_privs, limits).
// Standard output and error go to the journal.
func (c *Conn) StartCommand(ctx context.Context, name, description string, argv []string, stdin *os.File) error {
	sp := []sd.Property{
		sd.PropDescription(description),
		sd.PropType("exec"),
		sd.PropExecStart(argv, false),
		{Name: "StandardInputFileDescriptor", Value: dbus.MakeVariant(dbus.UnixFD(stdin.Fd()))},
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
		// Not ordered after basic.target: an exec must not wait for boot.
		{Name: "DefaultDependencies", Value: dbus.MakeVariant(false)},
	}
	err := c.startTransient(ctx, name, sp)
	runtime.KeepAlive(stdin)
	return err
}
