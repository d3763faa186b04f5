package node

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/cgroup/own"
)

// hierarchy is one mounted cgroup hierarchy of the host: a v1 controller (or
// named) hierarchy, or the cgroup2 tree.
type hierarchy struct {
	Key     string // "memory", "cpu", "name=systemd", … or "unified" for cgroup2
	Mount   string // host mountpoint, e.g. /sys/fs/cgroup/memory
	Options string // v1 super options to mount it again inside the node, e.g. "memory" or "xattr,name=systemd"
	V2      bool
	Own     string // this process's cgroup in that hierarchy (absolute within the mount)
}

// base is the key used in cgroup.Bases for this hierarchy: the v1 controller
// name as containerd/cgroups names subsystems ("systemd" for name=systemd), or
// "unified".
func (h hierarchy) base() string {
	if h.V2 {
		return "unified"
	}
	return strings.TrimPrefix(h.Key, "name=")
}

// Dir returns the host directory of the node's cgroup in this hierarchy.
func (h hierarchy) dir(leaf string) string {
	return filepath.Join(h.Mount, h.Own, leaf)
}

// hierarchies lists the host's cgroup hierarchies and where this process
// sits in each, from /proc/self/mountinfo and /proc/self/cgroup. On the
// hybrid v1 hosts here every controller is its own mount (cpu and cpuacct are
// not co-mounted), name=systemd is v1 and cgroup2 sits at /sys/fs/cgroup/unified
// without controllers; on a pure v2 host there is one cgroup2 mount.
func hierarchies() ([]hierarchy, error) {
	mine := map[string]string{} // controllers field of /proc/self/cgroup → path
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		mine[parts[1]] = parts[2]
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var hs []hierarchy
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+4 {
			continue
		}
		root, mnt, fstype, super := fields[3], fields[4], fields[sep+1], fields[sep+3]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		if root != "/" {
			// A bind of a sub-tree: not a hierarchy root we can create children in.
			continue
		}
		if fstype == "cgroup2" {
			p, ok := mine[""]
			if !ok {
				continue
			}
			// After a first node delegated (makeCgroups), this process sits
			// in a leaf below the group that holds the nodes.
			hs = append(hs, hierarchy{Key: "unified", Mount: mnt, V2: true, Own: own.DelegationParent(p)})
			continue
		}
		var ctrls, opts []string
		for _, o := range strings.Split(super, ",") {
			switch o {
			case "rw", "ro":
				continue
			}
			opts = append(opts, o)
			if o != "xattr" && !strings.HasPrefix(o, "release_agent") && o != "clone_children" && o != "noprefix" && o != "cpuset_v2_mode" {
				ctrls = append(ctrls, o)
			}
		}
		key := strings.Join(ctrls, ",")
		p, ok := mine[key]
		if !ok {
			continue
		}
		hs = append(hs, hierarchy{Key: key, Mount: mnt, Options: strings.Join(opts, ","), Own: p})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, errors.New("no cgroup hierarchies found in /proc/self/mountinfo")
	}
	return hs, nil
}

// makeCgroups creates the node's cgroup in every hierarchy, as a child of this
// process's own cgroup (never elsewhere: the workplace gives us only that).
func makeCgroups(hs []hierarchy, leaf string) ([]string, error) {
	var made []string
	for _, h := range hs {
		d := h.dir(leaf)
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			removeCgroupTrees(made)
			return nil, fmt.Errorf("create cgroup %s: %w", d, err)
		}
		made = append(made, d)
		if h.Key == "cpuset" {
			// v1 cpuset children start with empty cpus/mems and refuse tasks
			// until they are set (Documentation/admin-guide/cgroup-v1/cpusets.rst).
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
				if err == nil {
					_ = os.WriteFile(filepath.Join(d, f), v, 0o644)
				}
			}
		}
		if h.V2 && len(hs) == 1 {
			// Pure v2 host: delegate. The node's cgroup must see the
			// controllers, so its parent (our own cgroup) must enable them in
			// cgroup.subtree_control. The node's own subtree_control stays empty:
			// a cgroup with enabled controllers cannot take processes, and
			// systemd inside enables them itself once it has moved into
			// init.scope (Documentation/admin-guide/cgroup-v2.rst, "Delegation").
			// On the hybrid hosts here the unified tree carries no controllers
			// we need, so nothing is touched there.
			if err := own.Delegate(filepath.Dir(d), h.Own == "/"); err != nil {
				removeCgroupTrees(made)
				return nil, err
			}
		}
	}
	return made, nil
}

// removeCgroupTrees removes every directory under the given cgroup roots,
// deepest first, killing any process still inside. cgroupfs refuses rmdir of
// a group with tasks or children, hence the order and the retries.
func removeCgroupTrees(roots []string) error {
	var errs []error
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool {
			return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/")
		})
		for _, d := range dirs {
			var err error
			for try := 0; try < 100; try++ {
				killProcs(d)
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, fs.ErrNotExist) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

func killProcs(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
