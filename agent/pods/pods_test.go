package pods

import (
	"os"
	"path/filepath"
	"testing"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

func TestWriteFilter(t *testing.T) {
	bundle := t.TempDir()
	path := filepath.Join(bundle, bndl.SeccompFile)
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
		t.Errorf("old %s left for an unconfined container: %v", bndl.SeccompFile, err)
	}
	if err := writeFilter(bundle, nil); err != nil {
		t.Errorf("nothing to remove: %v", err)
	}
}
