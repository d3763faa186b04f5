package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
)

// Sparse entries are crafted block by block: archive/tar's Writer writes no
// sparse form, and refuses a hand-made PAX header.

// rawHeader is one 512-byte tar header; gnu selects the old GNU magic
// (needed by TypeGNUSparse) instead of ustar's.
func rawHeader(name string, typ byte, size int64, gnu bool) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], fmt.Sprintf("%07o\x00", 0o644))
	copy(b[108:116], fmt.Sprintf("%07o\x00", os.Getuid()))
	copy(b[116:124], fmt.Sprintf("%07o\x00", os.Getgid()))
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", mtime.Unix()))
	b[156] = typ
	if gnu {
		copy(b[257:265], "ustar  \x00")
	} else {
		copy(b[257:265], "ustar\x0000")
	}
	return b
}

// sealHeader writes the header checksum (computed with the field as spaces).
func sealHeader(b []byte) []byte {
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// paxRecord is "<len> key=value\n", len counting itself.
func paxRecord(k, v string) string {
	body := " " + k + "=" + v + "\n"
	n := len(body) + 1
	for len(fmt.Sprint(n))+len(body) != n {
		n++
	}
	return fmt.Sprint(n) + body
}

func paxHeader(records ...string) []byte {
	data := strings.Join(records, "")
	out := sealHeader(rawHeader("PaxHeaders/x", tar.TypeXHeader, int64(len(data)), false))
	return append(out, pad512([]byte(data))...)
}

// sparseData is the stored part of every crafted sparse file: one region
// at offset 0, the rest of the logical size is holes.
var sparseData = bytes.Repeat([]byte("D"), 512)

// sparseEntry returns the blocks of one sparse file in the given form
// with the given logical size.
func sparseEntry(t *testing.T, form, name string, logical int64) []byte {
	t.Helper()
	var out []byte
	switch form {
	case "pax-1.0": // GNU tar --sparse --format=posix: the map leads the data
		out = paxHeader(paxRecord("GNU.sparse.major", "1"), paxRecord("GNU.sparse.minor", "0"),
			paxRecord("GNU.sparse.name", name), paxRecord("GNU.sparse.realsize", fmt.Sprint(logical)))
		sparseMap := pad512([]byte(fmt.Sprintf("1\n0\n%d\n", len(sparseData))))
		out = append(out, sealHeader(rawHeader("GNUSparseFile.0/"+name, tar.TypeReg, int64(len(sparseMap)+len(sparseData)), false))...)
		out = append(out, sparseMap...)
		out = append(out, sparseData...)
	case "pax-0.1": // the map in a PAX record
		out = paxHeader(paxRecord("GNU.sparse.size", fmt.Sprint(logical)), paxRecord("GNU.sparse.numblocks", "1"),
			paxRecord("GNU.sparse.map", fmt.Sprintf("0,%d", len(sparseData))), paxRecord("GNU.sparse.name", name))
		out = append(out, sealHeader(rawHeader("GNUSparseFile.0/"+name, tar.TypeReg, int64(len(sparseData)), false))...)
		out = append(out, sparseData...)
	case "gnu-old": // TypeGNUSparse, the map in the header
		h := rawHeader(name, tar.TypeGNUSparse, int64(len(sparseData)), true)
		copy(h[386:398], fmt.Sprintf("%011o\x00", 0))
		copy(h[398:410], fmt.Sprintf("%011o\x00", len(sparseData)))
		h[483] = 0x80 // base-256: a terabyte does not fit 11 octal digits
		binary.BigEndian.PutUint64(h[487:495], uint64(logical))
		out = append(sealHeader(h), sparseData...)
	default:
		t.Fatalf("unknown sparse form %q", form)
	}
	return out
}

// sparseTar is an archive of one sparse file "sparse".
func sparseTar(t *testing.T, form string, logical int64) []byte {
	return append(sparseEntry(t, form, "sparse", logical), make([]byte, 1024)...)
}

// TestUnpackSparseEntriesBounded: the logical size of a sparse file counts
// against Limits.MaxBytes (the stream of a terabyte of holes is 2 KiB), per
// file and summed over the layer, and is refused before anything is
// written; within the limit, the file is unpacked with its holes as zeros.
func TestUnpackSparseEntriesBounded(t *testing.T) {
	const limit = 64 << 10
	twoFiles := func(t *testing.T, a, b int64) []byte {
		raw := append(sparseEntry(t, "pax-1.0", "sparse", a), sparseEntry(t, "pax-1.0", "second", b)...)
		return append(raw, make([]byte, 1024)...)
	}
	cases := []struct {
		name      string
		raw       func(t *testing.T) []byte
		limits    Limits
		wantEntry string // "" = success
		size      int64  // on success, the size of "sparse"
	}{
		{"pax 1.0: a terabyte of holes, default limits", func(t *testing.T) []byte { return sparseTar(t, "pax-1.0", 1<<40) }, Limits{}, "sparse", 0},
		{"pax 0.1: a terabyte of holes, default limits", func(t *testing.T) []byte { return sparseTar(t, "pax-0.1", 1<<40) }, Limits{}, "sparse", 0},
		{"old GNU: a terabyte of holes, default limits", func(t *testing.T) []byte { return sparseTar(t, "gnu-old", 1<<40) }, Limits{}, "sparse", 0},
		{"pax 1.0: logical size at the limit", func(t *testing.T) []byte { return sparseTar(t, "pax-1.0", limit) }, Limits{MaxBytes: limit}, "", limit},
		{"pax 0.1: logical size at the limit", func(t *testing.T) []byte { return sparseTar(t, "pax-0.1", limit) }, Limits{MaxBytes: limit}, "", limit},
		{"pax 1.0: logical size one over the limit", func(t *testing.T) []byte { return sparseTar(t, "pax-1.0", limit+1) }, Limits{MaxBytes: limit}, "sparse", 0},
		{"pax 0.1: logical size one over the limit", func(t *testing.T) []byte { return sparseTar(t, "pax-0.1", limit+1) }, Limits{MaxBytes: limit}, "sparse", 0},
		{"old GNU: logical size at the limit", func(t *testing.T) []byte { return sparseTar(t, "gnu-old", limit) }, Limits{MaxBytes: limit}, "", limit},
		{"old GNU: logical size one over the limit", func(t *testing.T) []byte { return sparseTar(t, "gnu-old", limit+1) }, Limits{MaxBytes: limit}, "sparse", 0},
		{"two files summing to the limit", func(t *testing.T) []byte { return twoFiles(t, limit/2, limit/2) }, Limits{MaxBytes: limit}, "", limit / 2},
		{"two files summing to one over the limit", func(t *testing.T) []byte { return twoFiles(t, limit/2, limit/2+1) }, Limits{MaxBytes: limit}, "second", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := c.raw(t)
			if max := c.limits.withDefaults().MaxBytes; int64(len(raw)) > max {
				t.Fatalf("the stream (%d bytes) is over the limit by itself", len(raw))
			}
			dir := t.TempDir()
			err := Unpack(context.Background(), bytes.NewReader(raw), dir, c.limits)
			if c.wantEntry != "" {
				var re *RefusedError
				if !errors.As(err, &re) || re.Rule != RuleMaxBytes || re.Entry != c.wantEntry {
					t.Fatalf("Unpack = %v, want a %s refusal of %q", err, RuleMaxBytes, c.wantEntry)
				}
				if _, err := os.Lstat(filepath.Join(dir, c.wantEntry)); err == nil {
					t.Errorf("the refused file %s was created", c.wantEntry)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unpack = %v, want success", err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "sparse"))
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != c.size || !bytes.HasPrefix(b, sparseData) || len(bytes.Trim(b[len(sparseData):], "\x00")) != 0 {
				t.Errorf("sparse file: %d bytes, want %d: the data, then zeros", len(b), c.size)
			}
		})
	}
}

// countdownCtx reports itself cancelled from its n-th Err() on: a
// deterministic way to cancel an Unpack part-way, since it checks the
// context as it reads and as it writes.
type countdownCtx struct {
	context.Context
	n atomic.Int64
}

func (c *countdownCtx) Err() error {
	if c.n.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// TestUnpackCancelInsideSparseEntry: cancelling stops an unpack in the
// middle of one entry whose content archive/tar makes up (holes) without
// reading the layer stream, where the stream reader never sees the context.
func TestUnpackCancelInsideSparseEntry(t *testing.T) {
	const logical = 256 << 20
	raw := sparseTar(t, "pax-1.0", logical)
	ctx := &countdownCtx{Context: context.Background()}
	// Enough for the few reads of the headers and the first buffers of
	// content; far fewer than the 2048 buffers of 128 KiB the file takes.
	ctx.n.Store(64)
	dir := t.TempDir()
	err := Unpack(ctx, bytes.NewReader(raw), dir, Limits{MaxBytes: 1 << 30})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Unpack = %v, want context.Canceled", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "sparse")); err == nil && fi.Size() >= logical/4 {
		t.Errorf("%d of %d bytes written before the cancellation was seen", fi.Size(), logical)
	}
}

// deepSize is the number of bytes v refers to beyond its own inline size:
// string bytes, slice backing arrays, map entries and pointees, each
// pointer followed once.
func deepSize(v reflect.Value, seen map[uintptr]bool) int {
	switch v.Kind() {
	case reflect.String:
		return v.Len()
	case reflect.Pointer:
		if v.IsNil() || seen[v.Pointer()] {
			return 0
		}
		seen[v.Pointer()] = true
		return int(v.Type().Elem().Size()) + deepSize(v.Elem(), seen)
	case reflect.Interface:
		if v.IsNil() {
			return 0
		}
		return int(v.Elem().Type().Size()) + deepSize(v.Elem(), seen)
	case reflect.Slice:
		if v.IsNil() {
			return 0
		}
		n := v.Cap() * int(v.Type().Elem().Size())
		for i := range v.Len() {
			n += deepSize(v.Index(i), seen)
		}
		return n
	case reflect.Array:
		n := 0
		for i := range v.Len() {
			n += deepSize(v.Index(i), seen)
		}
		return n
	case reflect.Struct:
		n := 0
		for i := range v.NumField() {
			n += deepSize(v.Field(i), seen)
		}
		return n
	case reflect.Map:
		if v.IsNil() {
			return 0
		}
		n := 0
		it := v.MapRange()
		for it.Next() {
			n += int(v.Type().Key().Size()+v.Type().Elem().Size()) + deepSize(it.Key(), seen) + deepSize(it.Value(), seen)
		}
		return n
	}
	return 0
}

// TestUnpackRetainsOnlyDirAttrs: what a layer's directories leave in memory
// until its end (their modes and times, applied last) does not grow with
// their PAX records.
func TestUnpackRetainsOnlyDirAttrs(t *testing.T) {
	const dirs, padding = 100, 32 << 10
	pad := strings.Repeat("p", padding)
	var ents []ent
	names := 0
	for i := range dirs {
		name := fmt.Sprintf("d%03d/", i)
		names += len(name) - 1 // retained cleaned, without the slash
		ents = append(ents, tDir(name, 0o755).with(func(h *tar.Header) {
			h.PAXRecords = map[string]string{"BERTH.padding": pad, "comment": pad}
		}))
	}
	raw := mkTar(t, ents...)
	var retained, entries int
	err := unpack(context.Background(), bytes.NewReader(raw), t.TempDir(), Limits{}, func(u *unpacker) {
		retained = deepSize(reflect.ValueOf(u.dirMeta), map[uintptr]bool{})
		entries = reflect.ValueOf(u.dirMeta).Len()
	})
	if err != nil {
		t.Fatal(err)
	}
	if entries != dirs {
		t.Fatalf("%d directories retained, want %d", entries, dirs)
	}
	// A path and a few words per directory; the PAX records (64 KiB per
	// directory here) must not be among them.
	if limit := names + dirs*128; retained > limit {
		t.Errorf("%d bytes retained for %d directories (%d bytes of names), want at most %d", retained, dirs, names, limit)
	}
}
