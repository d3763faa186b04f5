package node

import (
	"strings"
	"testing"
)

func TestParseMemTotal(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int64
		err      string
	}{
		{"kernel format", "MemTotal:       24595392 kB\nMemFree: 1 kB\n", 24595392 * 1024, ""},
		{"not first", "X: 1 kB\nMemTotal: 2 kB\n", 2048, ""},
		{"missing", "MemFree: 1 kB\n", 0, "no MemTotal line"},
		{"no unit", "MemTotal: 5\n", 0, "malformed"},
		{"zero", "MemTotal: 0 kB\n", 0, "malformed"},
		{"garbage", "MemTotal: lots kB\n", 0, "malformed"},
		{"empty", "", 0, "no MemTotal line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMemTotal("meminfo", strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("= %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	if _, err := MemTotal("/nonexistent/meminfo"); err == nil {
		t.Error("missing file: no error")
	}
	// This host's own file parses.
	if n, err := MemTotal(MeminfoPath); err != nil || n <= 0 {
		t.Errorf("this host: %d, %v", n, err)
	}
}
