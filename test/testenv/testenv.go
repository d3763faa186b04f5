// Package testenv gates tests openly: a test that needs root, a real systemd
// node or an external tool says so and skips with the reason, unless
// BERTH_TEST_ALL=1 (set by `make test` and CI), where a missing prerequisite
// fails the test instead, so that no tier can silently not run.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/cgroup/own"
)

// All reports whether every tier must run (BERTH_TEST_ALL=1).
func All() bool { return os.Getenv("BERTH_TEST_ALL") == "1" }

// Require skips the test with reason when ok is false, or fails it under All.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if All() {
		t.Fatalf("prerequisite missing (BERTH_TEST_ALL=1 forbids skipping): %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot gates a test that needs uid 0 (mounts, cgroups, namespaces).
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root (mounts, cgroups, namespaces); run `make test`")
}

// RequireCommand gates a test on an executable and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, name+" not found on PATH; `make test` installs it")
	return p
}

// CgroupTier runs the test only in the tier of its cgroup mode and skips it
// in the other one, even under All: `make test` runs the suite on this
// cgroup v1 hybrid host and the cgroup-dependent packages again on a cgroup
// v2 kernel (hack/v2vm.sh), so a test written for one mode's files runs in
// exactly one of the two tiers. That is not a missing prerequisite.
func CgroupTier(t testing.TB, v2 bool) {
	t.Helper()
	if own.Unified() == v2 {
		return
	}
	if v2 {
		t.Skip("cgroup v2 test: runs in make test's cgroup v2 tier (hack/v2vm.sh)")
	}
	t.Skip("cgroup v1 test: runs in make test's tier on the cgroup v1 hybrid host")
}

// TempDir makes a directory under os.TempDir for a whole test binary (built
// binaries, say), named prefix-<pid>-*: such a directory outlives the tests
// that use it, so its removal is deferred in TestMain, which a -timeout panic
// or a kill skips. TempDir first removes the directories of earlier binaries
// with that prefix whose process is gone.
func TempDir(prefix string) (string, error) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"-*-*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimPrefix(filepath.Base(d), prefix+"-"), "%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
	return os.MkdirTemp("", fmt.Sprintf("%s-%d-", prefix, os.Getpid()))
}

// ModuleRoot is the directory of berth's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// BuildStatic builds each package (a path relative to the module root, like
// ./cmd/berth-init) into dir, named after its last element, with cgo off:
// berth-init must be static (it runs before the workload's root exists and
// uses Go's all-threads syscalls, which cgo forbids), and the others run in
// test nodes the same way.
func BuildStatic(dir string, pkgs ...string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	for _, p := range pkgs {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(p)), p)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", p, err, out)
		}
	}
	return nil
}
