package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestTempDirReapsDeadOwners(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	// A PID that is gone: a child that has been waited for.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(os.TempDir(), fmt.Sprintf("x-bin-%d-1", cmd.Process.Pid))
	live := filepath.Join(os.TempDir(), fmt.Sprintf("x-bin-%d-2", os.Getppid()))
	other := filepath.Join(os.TempDir(), fmt.Sprintf("y-bin-%d-3", cmd.Process.Pid))
	for _, d := range []string{dead, live, other} {
		if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d, err := TempDir("x-bin")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(d), fmt.Sprintf("x-bin-%d-", os.Getpid())) {
		t.Errorf("TempDir = %s, want x-bin-%d-*", d, os.Getpid())
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("directory of a dead owner still there: %v", err)
	}
	for _, keep := range []string{live, other, d} {
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("%s: %v", keep, err)
		}
	}
}
