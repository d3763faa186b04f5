package own

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DelegatedLeaf is the child that Delegate moves processes into.
const DelegatedLeaf = "berth-leaf"

// DelegationParent is the cgroup2 group (a path as in /proc/self/cgroup)
// under which to create children: the group itself, or its parent once an
// earlier Delegate has moved this process into DelegatedLeaf.
func DelegationParent(group string) string {
	if filepath.Base(group) == DelegatedLeaf {
		return filepath.Dir(group)
	}
	return group
}

// Delegate makes the controllers of parent, a cgroup2 directory
// (this process's own cgroup), available to new children of it. The "no
// internal processes" rule forbids that while parent holds processes, so
// they move into a leaf child, DelegatedLeaf, first: the step podman and users
// of systemd's Delegate= take (Documentation/admin-guide/cgroup-v2.rst,
// "Delegation"). The root cgroup is exempt from the rule; nobody moves.
func Delegate(parent string, isRoot bool) error {
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
