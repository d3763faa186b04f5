package bundle

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestHooksRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if h, err := ReadHooks(dir); h != nil || err != nil {
		t.Fatalf("no file: %+v, %v; want nil, nil", h, err)
	}
	want := &Hooks{
		Pod: "web_default(u1)", Container: "app", GracePeriodSeconds: 7,
		PostStart: &Handler{Exec: &ExecHandler{Command: []string{"sh", "-c", "echo $(X)"}}},
		PreStop: &Handler{HTTPGet: &HTTPHandler{Scheme: "https", Port: 8443, Path: "/stop?now=1",
			Headers: []HTTPHeader{{"X-A", "1"}, {"X-A", "2"}}}},
	}
	if err := WriteHooks(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadHooks(dir)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("read back %+v, %v; want %+v", got, err, want)
	}
	if fi, _ := os.Stat(filepath.Join(dir, HooksFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	// nil removes the file, and removing nothing is no error.
	for i := 0; i < 2; i++ {
		if err := WriteHooks(dir, nil); err != nil {
			t.Fatal(err)
		}
	}
	if h, err := ReadHooks(dir); h != nil || err != nil {
		t.Fatalf("after removal: %+v, %v", h, err)
	}
	if err := os.WriteFile(filepath.Join(dir, HooksFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadHooks(dir); err == nil {
		t.Error("a broken file was read without error")
	}
}

func TestHookFailureRecords(t *testing.T) {
	dir := t.TempDir()
	if fs, err := ReadHookFailure(dir); fs != nil || err != nil {
		t.Fatalf("none yet: %v, %v", fs, err)
	}
	if err := WriteHookFailure(dir, "Other", "x"); err == nil {
		t.Error("an unknown kind was recorded")
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A failed postStart, then the preStop systemd runs after it: both kept,
	// oldest first; a later failure of a kind replaces the earlier one.
	must(WriteHookFailure(dir, HookPostStart, "first"))
	must(WriteHookFailure(dir, HookPostStart, "post"))
	must(WriteHookFailure(dir, HookPreStop, "pre"))
	got, err := ReadHookFailure(dir)
	if err != nil || len(got) != 2 || got[0].Kind != HookPostStart || got[0].Message != "post" ||
		got[1].Kind != HookPreStop || got[1].Message != "pre" || got[0].Time.IsZero() {
		t.Fatalf("read: %+v, %v", got, err)
	}
	// Read leaves them, Take takes them once.
	if again, _ := ReadHookFailure(dir); len(again) != 2 {
		t.Fatalf("read removed records: %+v", again)
	}
	taken, err := TakeHookFailures(dir)
	if err != nil || !reflect.DeepEqual(taken, got) {
		t.Fatalf("take: %+v, %v; want %+v", taken, err, got)
	}
	if again, err := TakeHookFailures(dir); len(again) != 0 || err != nil {
		t.Fatalf("taken twice: %+v, %v", again, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left after take: %v", ents)
	}
	must(WriteHookFailure(dir, HookPreStop, "pre"))
	must(ClearHookFailures(dir))
	must(ClearHookFailures(dir))
	if fs, _ := ReadHookFailure(dir); len(fs) != 0 {
		t.Errorf("after clear: %+v", fs)
	}
}
