package worker

import (
	"testing"
	"time"
)

// The Pulled event reads as the kubelet's since 1.30.
func TestPulledMessage(t *testing.T) {
	for _, tc := range []struct {
		pull, total time.Duration
		size        int64
		want        string
	}{
		{1234567 * time.Microsecond, 1234567 * time.Microsecond, 12345678,
			`Successfully pulled image "nginx:1.27" in 1.234s (1.234s including waiting). Image size: 12345678 bytes.`},
		{450 * time.Millisecond, 2*time.Minute + 3500*time.Millisecond + 999*time.Microsecond, 0,
			`Successfully pulled image "nginx:1.27" in 450ms (2m3.5s including waiting). Image size: 0 bytes.`},
	} {
		if got := pulledMessage("nginx:1.27", tc.pull, tc.total, tc.size); got != tc.want {
			t.Errorf("pulledMessage = %s\nwant            %s", got, tc.want)
		}
	}
}
