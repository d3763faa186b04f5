package filter

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRoundTrip(t *testing.T) {
	f := &Filter{Flags: unix.SECCOMP_FILTER_FLAG_LOG, Insns: []unix.SockFilter{
		{Code: 0x20, K: 4},
		{Code: 0x15, Jt: 1, Jf: 0, K: 0xc000003e},
		{Code: 0x06, K: 0x7fff0000},
		{Code: 0x06, K: 0x80000000},
	}}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != len(magic)+8+8*4 || !bytes.HasPrefix(b, []byte(magic)) {
		t.Fatalf("encoding is %d bytes: %x", len(b), b)
	}
	var g Filter
	if err := g.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if g.Flags != f.Flags || len(g.Insns) != len(f.Insns) {
		t.Fatalf("decoded %+v, want %+v", g, *f)
	}
	for i := range f.Insns {
		if g.Insns[i] != f.Insns[i] {
			t.Errorf("instruction %d: %+v, want %+v", i, g.Insns[i], f.Insns[i])
		}
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	good, err := (&Filter{Insns: []unix.SockFilter{{Code: 0x06, K: 0x7fff0000}}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"empty":          {nil, "bad magic"},
		"other format":   {append([]byte("BERTHSC2"), good[8:]...), "bad magic"},
		"truncated":      {good[:len(good)-1], "1 instructions announced, 7 bytes"},
		"padded":         {append(append([]byte(nil), good...), 0), "1 instructions announced, 9 bytes"},
		"no instruction": {append([]byte(magic), 0, 0, 0, 0, 0, 0, 0, 0), "0 instructions announced"},
		"too long":       {append([]byte(magic), 0, 0, 0, 0, 0x01, 0x10, 0, 0), "4097 instructions announced"},
	} {
		var f Filter
		if err := f.UnmarshalBinary(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to say %q", name, err, tc.want)
		}
	}
	if _, err := (&Filter{}).MarshalBinary(); err == nil {
		t.Error("marshal of an empty filter: want an error")
	}
}
