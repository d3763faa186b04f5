package systemd

import (
	"context"
	"fmt"
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
// errdefs.ErrNotFound).
func (c *Conn) Attach(ctx context.Context, name string, pids ...uint32) error {
	err := c.call(ctx, func(s *session) error {
		return s.manager().CallWithContext(ctx, managerIF+".AttachProcessesToUnit", 0, name, "", pids).Err
	})
	if err != nil {
		return fmt.Errorf("attach pids %v to unit %s: %w", pids, name, classify(err))
	}
	return nil
}
