package systemd

import (
	"context"
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// The sd_notify(3) states berthd sends as a Type=notify service.
const (
	NotifyReady    = daemon.SdNotifyReady    // READY=1: the socket listens
	NotifyStopping = daemon.SdNotifyStopping // STOPPING=1: shutdown has begun
	NotifyWatchdog = daemon.SdNotifyWatchdog // WATCHDOG=1: still alive
)

// NotifyStatus is the STATUS= line systemctl status shows under the unit.
func NotifyStatus(s string) string { return "STATUS=" + s }

// Notify sends states (joined by newlines, one datagram, as sd_notify does)
// to the service manager on $NOTIFY_SOCKET. Outside a notify service it
// does nothing and returns false with no error, so that `berthd serve` run
// by hand behaves the same.
func Notify(states ...string) (bool, error) {
	msg := ""
	for i, s := range states {
		if i > 0 {
			msg += "\n"
		}
		msg += s
	}
	ok, err := daemon.SdNotify(false, msg)
	if err != nil {
		return false, fmt.Errorf("sd_notify %q: %w", msg, err)
	}
	return ok, nil
}

// WatchdogInterval is how often to send WATCHDOG=1: half of WatchdogUSec,
// as sd_watchdog_enabled(3) recommends, so one late ping does not get the
// service killed. Zero when the unit has no watchdog (or it is meant for
// another process: WATCHDOG_PID).
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("watchdog settings: %w", err)
	}
	return d / 2, nil
}

// RunWatchdog sends WATCHDOG=1 every interval until ctx ends, calling
// alive first so that a wedged process stops pinging (alive may be nil).
// It returns at once when interval is zero.
func RunWatchdog(ctx context.Context, interval time.Duration, alive func() bool) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if alive == nil || alive() {
				// An error here means the manager's socket went away:
				// nothing to report it to but the log, which the caller has
				// no use for every few seconds.
				_, _ = Notify(NotifyWatchdog)
			}
		}
	}
}
