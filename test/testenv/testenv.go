// Package testenv gates tests openly: a test that needs root, a real systemd
// node or an external tool says so and skips with the reason, unless
// BERTH_TEST_ALL=1 (set by `make test` and CI), where a missing prerequisite
// fails the test instead, so that no tier can silently not run.
package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

// CgroupV2 reports whether the host runs the unified cgroup v2 hierarchy
// only (cgroup.controllers at the top of /sys/fs/cgroup).
func CgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// CgroupTier runs the test only in the tier of its cgroup mode and skips it
// in the other one, even under All: `make test` runs the suite on this
// cgroup v1 hybrid host and the cgroup-dependent packages again on a cgroup
// v2 kernel (hack/v2vm.sh), so a test written for one mode's files runs in
// exactly one of the two tiers. That is not a missing prerequisite.
func CgroupTier(t testing.TB, v2 bool) {
	t.Helper()
	if CgroupV2() == v2 {
		return
	}
	if v2 {
		t.Skip("cgroup v2 test: runs in make test's cgroup v2 tier (hack/v2vm.sh)")
	}
	t.Skip("cgroup v1 test: runs in make test's tier on the cgroup v1 hybrid host")
}

// DelegatedLeaf is the child that DelegateCgroupV2 moves processes into.
const DelegatedLeaf = "berth-leaf"

// DelegationParent is the cgroup2 group own (a path as in /proc/self/cgroup)
// under which to create children: own itself, or its parent once an
// earlier DelegateCgroupV2 has moved this process into DelegatedLeaf.
func DelegationParent(own string) string {
	if filepath.Base(own) == DelegatedLeaf {
		return filepath.Dir(own)
	}
	return own
}

// DelegateCgroupV2 makes the controllers of parent, a cgroup2 directory
// (this process's own cgroup), available to new children of it. The "no
// internal processes" rule forbids that while parent holds processes, so
// they move into a leaf child, DelegatedLeaf, first: the step podman and users
// of systemd's Delegate= take (Documentation/admin-guide/cgroup-v2.rst,
// "Delegation"). The root cgroup is exempt from the rule; nobody moves.
func DelegateCgroupV2(parent string, isRoot bool) error {
	avail, err := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("delegate cgroup %s: %w", parent, err)
	}
	enabled, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("delegate cgroup %s: %w", parent, err)
	}
	if len(strings.Fields(string(avail))) == 0 || strings.TrimSpace(string(enabled)) == strings.TrimSpace(string(avail)) {
		return nil
	}
	if !isRoot {
		leaf := filepath.Join(parent, DelegatedLeaf)
		if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("delegate cgroup %s: %w", parent, err)
		}
		// Processes may exit (ESRCH) or be kernel threads meanwhile; what
		// matters is that the write below succeeds.
		if procs, err := os.ReadFile(filepath.Join(parent, "cgroup.procs")); err == nil {
			for _, p := range strings.Fields(string(procs)) {
				_ = os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(p), 0o644)
			}
		}
	}
	var want []string
	for _, c := range strings.Fields(string(avail)) {
		want = append(want, "+"+c)
	}
	if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte(strings.Join(want, " ")), 0o644); err != nil {
		return fmt.Errorf("enable controllers %v of %s for its children: %w", want, parent, err)
	}
	return nil
}
