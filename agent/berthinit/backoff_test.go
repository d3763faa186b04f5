package berthinit

import (
	"testing"
	"time"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// The kubelet's sequence: 10 s, 20 s, 40 s … 300 s; a run of 10 minutes
// starts it over; a start cut short resumes the same wait.
func TestNextBackoff(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var st backoffState
	st, wait := nextBackoff(st, time.Time{}, t0)
	if wait != 0 {
		t.Fatalf("first start waits %s", wait)
	}
	st.LastStart = t0
	now := t0
	for i, want := range []time.Duration{10, 20, 40, 80, 160, 300, 300} {
		exit := now.Add(time.Second) // ran one second
		start := exit.Add(10 * time.Second)
		var w time.Duration
		st, w = nextBackoff(st, exit, start) // systemd's RestartUSec has passed
		if st.Delay != want*time.Second || w != st.Delay-10*time.Second {
			t.Fatalf("failure %d: delay %s wait %s, want %ds", i+1, st.Delay, w, want)
		}
		// Stopped during the wait and started again 5 s later: the same
		// delay, 5 s less to wait.
		if again, w2 := nextBackoff(st, exit, start.Add(5*time.Second)); again.Delay != st.Delay || w2 != max(w-5*time.Second, 0) {
			t.Fatalf("failure %d resumed: delay %s wait %s", i+1, again.Delay, w2)
		}
		now = exit.Add(st.Delay)
		st.LastStart = now
	}
	exit := now.Add(backoffReset)
	if st, _ = nextBackoff(st, exit, exit.Add(10*time.Second)); st.Delay != backoffInitial {
		t.Errorf("after a 10-minute run: delay %s", st.Delay)
	}
}

// RestartBackoff reads the exit record poststop wrote and keeps its own.
func TestRestartBackoffRecords(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := t0
	now := func() time.Time { return clock }
	var slept []time.Duration
	sleep := func(d time.Duration) { slept = append(slept, d); clock = clock.Add(d) }
	if err := RestartBackoff(dir, now, sleep); err != nil || len(slept) != 0 {
		t.Fatalf("first start: %v, slept %v", err, slept)
	}
	for i, want := range []time.Duration{0, 10 * time.Second} {
		clock = clock.Add(time.Second)
		if err := bndl.WriteExit(dir, bndl.ExitStatus{ExitCode: 1, Reason: bndl.ReasonError, FinishedAt: clock}); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(10 * time.Second) // RestartUSec
		slept = nil
		if err := RestartBackoff(dir, now, sleep); err != nil {
			t.Fatal(err)
		}
		var got time.Duration
		for _, d := range slept {
			got += d
		}
		if got != want {
			t.Errorf("restart %d slept %s, want %s", i+1, got, want)
		}
	}
}
