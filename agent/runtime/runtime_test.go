package runtime

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/agent/runtime/seccomp/filter"
)

func TestWriteFilter(t *testing.T) {
	bundle := t.TempDir()
	path := filepath.Join(bundle, filter.File)
	if err := writeFilter(bundle, []byte("BERTHSC1 filter")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "BERTHSC1 filter" {
		t.Fatalf("written filter: %q, %v", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("filter mode %v, want 0600", fi.Mode().Perm())
	}
	// A container without a profile (Unconfined): the old filter goes.
	if err := writeFilter(bundle, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("old %s left for an unconfined container: %v", filter.File, err)
	}
	if err := writeFilter(bundle, nil); err != nil {
		t.Errorf("nothing to remove: %v", err)
	}
}
