package berthinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// The kubelet's crash-loop back-off (kubelet.go: flowcontrol.NewBackOff
// with 10 s and MaxContainerBackOff 300 s): the first restart after 10 s,
// each further one after twice the last delay, at most 5 minutes; a
// container that ran for 10 minutes before it failed starts again from
// 10 s. systemd 252 restarts a unit after a fixed RestartUSec (10 s) and
// has no RestartSteps= (254), so berth-init start waits out the rest of the
// delay itself, before anything of the container is touched: systemd
// supervises, no berth process stays resident between runs, and it works
// while berthd is down (docs/systemd.md, "Restart back-off").
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 300 * time.Second
	backoffReset   = 10 * time.Minute
)

// BackoffFile is berth-init's record of the crash-loop back-off in the
// bundle: the delay in force and what it was computed from.
const BackoffFile = "backoff.json"

// backoffState is BackoffFile.
type backoffState struct {
	Delay     time.Duration `json:"delay"`     // the wait after LastExit
	LastExit  time.Time     `json:"lastExit"`  // the exit Delay follows (exit.json's finishedAt)
	LastStart time.Time     `json:"lastStart"` // when the run that ended at the next exit began
}

// nextBackoff returns the state after the exit recorded at exit (zero: no
// exit yet, a first start) for a start at now, and how long to wait.
func nextBackoff(st backoffState, exit, now time.Time) (backoffState, time.Duration) {
	if exit.IsZero() {
		return st, 0
	}
	if !exit.Equal(st.LastExit) {
		// A new failure: the run from LastStart to exit decides whether the
		// back-off grows or starts over.
		switch {
		case st.Delay == 0, !st.LastStart.IsZero() && exit.Sub(st.LastStart) >= backoffReset:
			st.Delay = backoffInitial
		default:
			st.Delay = min(2*st.Delay, backoffMax)
		}
		st.LastExit = exit
	}
	// The same exit again: a start that was cut short (stopped, timed out)
	// resumes the wait instead of starting it over.
	return st, max(exit.Add(st.Delay).Sub(now), 0)
}

// RestartBackoff waits, when the bundle's workload has ended before, for
// what remains of the kubelet's back-off after that exit, then records the
// start. A bundle whose records cannot be read is started at once: the
// back-off never keeps a container from running.
func RestartBackoff(bundle string, now func() time.Time, sleep func(time.Duration)) error {
	var exitAt time.Time
	exit, err := bndl.ReadExit(bundle)
	switch {
	case err == nil:
		exitAt = exit.FinishedAt
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	var st backoffState
	p := filepath.Join(bundle, BackoffFile)
	if b, err := os.ReadFile(p); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			st = backoffState{} // corrupt: start over rather than guess
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	st, wait := nextBackoff(st, exitAt, now())
	if wait > 0 {
		// Recorded first, so that a start stopped during the wait resumes it.
		if err := writeBackoff(p, st); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "berth-init: back-off %s restarting failed container\n", st.Delay)
		sleep(wait)
	}
	st.LastStart = now()
	return writeBackoff(p, st)
}

func writeBackoff(p string, st backoffState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return bndl.WriteFileAtomic(p, b, 0o600)
}
