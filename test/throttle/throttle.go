// Package throttle checks that a busy loop under a CFS quota was held to
// it, from the kernel's own counters (cgroup v1 cpu.stat nr_throttled with
// cpuacct or the unified tree's usage, cgroup v2 cpu.stat usage_usec and
// nr_throttled) rather than from how long anything took: the test waits for
// throttling to happen, then bounds the usage over the window it measured.
// docs/cgroups.md, "CPU quota", has the kernel facts behind the bound.
package throttle

import (
	"context"
	"fmt"
	"time"
)

// Sample is one reading of a cgroup's CPU counters.
type Sample struct {
	UsageNSec uint64 // CPU time used, all CPUs
	Throttled uint64 // CFS periods in which the group was throttled
}

// Tolerance and EdgePeriods make the upper bound on usage: a CPU may run
// past the group's quota by what it holds of its current slice of runtime
// (sched_cfs_bandwidth_slice_us, 5 ms by default, Documentation/scheduler/
// sched-bwc.rst) before it is throttled, and the usage and throttling
// counters are read a moment apart, so usage is allowed 10 % over
// quota/period × window, plus the whole quota of the two periods cut by
// the window's ends. Unthrottled, a busy loop would use the whole window
// (of each CPU it runs on), far above that for the quotas tested (≤ 50 %).
const (
	Tolerance   = 1.10
	EdgePeriods = 2
)

// Bound is the most CPU time a group held to quota per period may use in
// window.
func Bound(window, quota, period time.Duration) time.Duration {
	perWindow := float64(window) * float64(quota) / float64(period) * Tolerance
	return time.Duration(perWindow) + EdgePeriods*quota
}

// Measure samples a group whose busy loop has been started, with read, once
// per period until ctx ends:
//   - first until the group has been throttled at all: the loop runs and the
//     quota bites (no guess at how long the loop takes to start);
//   - then until it has been throttled in minThrottled more periods: the
//     window.
//
// It returns the samples at both ends of the window and its length, measured
// from before the first read to after the last, so never shorter than the
// span the counters cover: a slow or busy test machine makes the bound
// looser, never the check flaky. The error says when throttling did not
// happen, which is itself the failure of a quota that is not enforced.
func Measure(ctx context.Context, period time.Duration, minThrottled uint64, read func() (Sample, error)) (first, last Sample, window time.Duration, err error) {
	poll := time.NewTicker(period)
	defer poll.Stop()
	wait := func(what string, cond func(Sample) bool) (Sample, time.Time, error) {
		for {
			began := time.Now()
			s, err := read()
			if err != nil || cond(s) {
				return s, began, err
			}
			select {
			case <-ctx.Done():
				return s, began, fmt.Errorf("%s: %w (last reading: usage %v, throttled in %d periods)", what, ctx.Err(), time.Duration(s.UsageNSec), s.Throttled)
			case <-poll.C:
			}
		}
	}
	first, t0, err := wait("the busy loop was never throttled", func(s Sample) bool { return s.Throttled > 0 })
	if err != nil {
		return first, first, 0, err
	}
	last, _, err = wait(fmt.Sprintf("not throttled in %d more periods", minThrottled), func(s Sample) bool {
		return s.Throttled >= first.Throttled+minThrottled
	})
	window = time.Since(t0)
	return first, last, window, err
}

// Check says what is wrong with a window measured by Measure for a group
// held to quota per period: usage above Bound, or no throttling.
func Check(first, last Sample, window, quota, period time.Duration) error {
	if last.Throttled <= first.Throttled {
		return fmt.Errorf("throttled periods did not grow: %d → %d", first.Throttled, last.Throttled)
	}
	used := time.Duration(last.UsageNSec - first.UsageNSec)
	if bound := Bound(window, quota, period); used > bound {
		return fmt.Errorf("used %v of CPU in %v, above %v per %v (bound %v: ×%.2f plus %d periods' quota)",
			used, window, quota, period, bound, Tolerance, EdgePeriods)
	}
	return nil
}
