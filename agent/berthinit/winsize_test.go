package berthinit

import "testing"

// The terminal size of a "go" message: rows and columns, 16 bits each.
func TestParseWinsize(t *testing.T) {
	for _, tc := range []struct {
		in         string
		rows, cols uint16
		ok         bool
	}{
		{"40 100", 40, 100, true},
		{"0 0", 0, 0, true},
		{"65535 65535", 65535, 65535, true},
		{"65536 80", 0, 0, false},
		{"40", 0, 0, false},
		{"40 x", 0, 0, false},
		{"-1 80", 0, 0, false},
		{"", 0, 0, false},
	} {
		ws, err := parseWinsize(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (ws.Row != tc.rows || ws.Col != tc.cols)) {
			t.Errorf("parseWinsize(%q) = %+v, %v", tc.in, ws, err)
		}
	}
}
