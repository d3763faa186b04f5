package throttle

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	const quota, period = 20 * time.Millisecond, 100 * time.Millisecond
	window := time.Second
	// Bound(1 s) = 1 s × 20 % × 1.1 + 2 × 20 ms = 260 ms.
	for _, tc := range []struct {
		name        string
		first, last Sample
		want        string // "" for no error
	}{
		{"held to the quota", Sample{0, 1}, Sample{uint64(200 * time.Millisecond), 11}, ""},
		{"at the bound", Sample{0, 1}, Sample{uint64(260 * time.Millisecond), 11}, ""},
		{"over the bound", Sample{0, 1}, Sample{uint64(261 * time.Millisecond), 11}, "above"},
		{"unthrottled loop", Sample{0, 1}, Sample{uint64(time.Second), 11}, "above"},
		{"no throttling", Sample{0, 5}, Sample{uint64(100 * time.Millisecond), 5}, "did not grow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.first, tc.last, window, quota, period)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Check = %v, want %q", err, tc.want)
			}
		})
	}
}

// Measure waits for throttling to start, then for minThrottled more
// throttled periods, and fails when throttling never comes.
func TestMeasure(t *testing.T) {
	readings := func(ss ...Sample) func() (Sample, error) {
		return func() (Sample, error) {
			s := ss[0]
			if len(ss) > 1 {
				ss = ss[1:]
			}
			return s, nil
		}
	}
	for _, tc := range []struct {
		name        string
		read        func() (Sample, error)
		first, last Sample
		err         string
	}{
		{"starts at the first throttling", readings(Sample{1, 0}, Sample{2, 0}, Sample{3, 2}, Sample{4, 3}, Sample{5, 5}, Sample{6, 9}),
			Sample{3, 2}, Sample{6, 9}, ""},
		{"never throttled", readings(Sample{1, 0}), Sample{}, Sample{}, "never throttled"},
		{"throttling stops", readings(Sample{1, 1}, Sample{2, 2}), Sample{}, Sample{}, "more periods"},
		{"read fails", func() (Sample, error) { return Sample{}, errors.New("cgroup gone") }, Sample{}, Sample{}, "cgroup gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			first, last, window, err := Measure(ctx, time.Millisecond, 5, tc.read)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || first != tc.first || last != tc.last || window <= 0 {
				t.Errorf("Measure = %+v, %+v, %v, %v; want %+v, %+v", first, last, window, err, tc.first, tc.last)
			}
		})
	}
}
