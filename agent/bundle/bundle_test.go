package bundle

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, content := range []string{"first", "second, longer"} {
		if err := WriteFileAtomic(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("read back %q, %v; want %q", b, err, content)
		}
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil || !strings.Contains(err.Error(), "missing/f") {
		t.Errorf("write into a missing directory: %v", err)
	}
}

func TestExitRecord(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadExit(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no record yet: %v, want fs.ErrNotExist", err)
	}
	want := ExitStatus{Result: "exit-code", ExitCode: 3, Reason: ReasonError, FinishedAt: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)}
	if err := WriteExit(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadExit(dir)
	if err != nil || *got != want {
		t.Fatalf("= %+v, %v", got, err)
	}
	// Corrupt and oversized records are errors, not absence.
	if err := os.WriteFile(filepath.Join(dir, ExitFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadExit(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("corrupt record: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ExitFile), make([]byte, maxRecord+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadExit(dir); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("oversized record: %v", err)
	}
}

func TestSourceRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := Source{Ref: "app", Layout: "/srv/layout", Digest: "sha256:ab", Store: "/var/lib/berth/store", Policy: "/etc/berth/policy.json"}
	if err := WriteSource(dir, src); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadSource(dir); err != nil || got != src {
		t.Fatalf("= %+v, %v", got, err)
	}
}

func TestSums(t *testing.T) {
	if Sum(nil) != Absent {
		t.Errorf("Sum(nil) = %q, want %q", Sum(nil), Absent)
	}
	if Sum([]byte{}) == Absent || Sum([]byte{}) != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("an empty file is not an absent one: %q", Sum([]byte{}))
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if s, err := SumFile(p); err != nil || s != Absent {
		t.Errorf("missing file: %q, %v", s, err)
	}
	if err := os.WriteFile(p, []byte{}, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, _ := SumFile(p); s != Sum([]byte{}) {
		t.Errorf("empty file: %q", s)
	}
}

// The record answers only while every file it depended on still has the
// fingerprinted content; otherwise it is stale and berth-verify judges.
func TestCheckRecord(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"reject"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	sigs := filepath.Join(dir, "signatures.json") // absent when judged
	write := func(allowed bool, msg string, deps ...Fingerprint) {
		t.Helper()
		if err := WriteRecord(dir, Record{Allowed: allowed, Message: msg, Depends: deps}); err != nil {
			t.Fatal(err)
		}
	}
	policySum, _ := SumFile(policy)
	deps := []Fingerprint{{Path: policy, SHA256: policySum}, {Path: sigs, SHA256: Absent}}

	if err := CheckRecord(dir + "/none"); !errors.Is(err, ErrStale) {
		t.Errorf("no record: %v, want stale", err)
	}
	write(true, "", deps...)
	if err := CheckRecord(dir); err != nil {
		t.Errorf("fresh allowing record: %v", err)
	}
	write(false, "image x rejected by policy", deps...)
	if err := CheckRecord(dir); err == nil || errors.Is(err, ErrStale) || err.Error() != "image x rejected by policy" {
		t.Errorf("fresh refusing record: %v", err)
	}
	write(true, "")
	if err := CheckRecord(dir); !errors.Is(err, ErrStale) {
		t.Errorf("record without fingerprints: %v, want stale", err)
	}
	write(true, "", deps...)
	if err := os.WriteFile(sigs, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckRecord(dir); !errors.Is(err, ErrStale) || !strings.Contains(err.Error(), sigs) {
		t.Errorf("signatures appeared since: %v, want stale naming them", err)
	}
	os.Remove(sigs)
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckRecord(dir); !errors.Is(err, ErrStale) {
		t.Errorf("policy changed since: %v, want stale", err)
	}
	if err := os.WriteFile(filepath.Join(dir, RecordFile), []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckRecord(dir); !errors.Is(err, ErrStale) {
		t.Errorf("corrupt record: %v, want stale", err)
	}
}

func TestSumFileRefusesWhatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := SumFile(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO: %v", err)
	}
	if _, err := SumFile(dir); err == nil {
		t.Error("directory: no error")
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, maxDepend+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := SumFile(big); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("oversized: %v", err)
	}
}
