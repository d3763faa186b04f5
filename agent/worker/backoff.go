package worker

import "time"

// The kubelet's back-offs, for image pulls (pkg/kubelet/images) and
// container restarts (flowcontrol.NewBackOff(10s, MaxContainerBackOff
// 300s)): 10 s doubling to 5 minutes, forgotten after 10 minutes without a
// failure (flowcontrol's entry GC at 2×max).
const (
	InitialBackoff = 10 * time.Second
	MaxBackoff     = 300 * time.Second
	BackoffReset   = 2 * MaxBackoff
)

// backoff is one key's back-off, as client-go's flowcontrol.Backoff: the
// first failure waits InitialBackoff, each further one twice the last, at
// most MaxBackoff; a failure after BackoffReset without one starts again.
type backoff struct {
	delay time.Duration
	last  time.Time // the last failure
}

// next records a failure at now and returns how long to wait.
func (b *backoff) next(now time.Time) time.Duration {
	switch {
	case b.delay == 0 || now.Sub(b.last) > BackoffReset:
		b.delay = InitialBackoff
	default:
		b.delay = min(2*b.delay, MaxBackoff)
	}
	b.last = now
	return b.delay
}

// inBackoff tells whether now is still within the wait after the last
// failure (flowcontrol's IsInBackOffSinceUpdate).
func (b *backoff) inBackoff(now time.Time) bool {
	return b.delay > 0 && now.Sub(b.last) < b.delay
}

// until is when the current wait ends.
func (b *backoff) until() time.Time { return b.last.Add(b.delay) }

// restartDelay is the crash-loop back-off after the n-th failure in a row
// (10 s, 20 s, … at most 5 min), for the CrashLoopBackOff message.
// berth-init keeps the delay really waited (it also starts over after a
// run of 10 minutes, which a count of restarts cannot tell).
func restartDelay(n int) time.Duration {
	d := InitialBackoff
	for i := 1; i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}
