package volumes

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// memoryCgroup makes a child memory cgroup of the test's own with the
// given limit and returns its directory and the names of its limit and
// usage files; it is removed when the test ends.
func memoryCgroup(t *testing.T, name string, limit int64) (dir, usage string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var base, own, limitFile string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				base, own, limitFile, usage = "/sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes", "memory.usage_in_bytes"
			}
		}
	}
	if base == "" { // cgroup v2
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "0::") {
				base, own, limitFile, usage = "/sys/fs/cgroup", strings.TrimPrefix(l, "0::"), "memory.max", "memory.current"
			}
		}
	}
	if base == "" {
		t.Fatal("no memory cgroup controller found in /proc/self/cgroup")
	}
	dir = filepath.Join(base, own, fmt.Sprintf("berth-volumes-test-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("make memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		// The writers have exited; charges left by tmpfs pages move to
		// the parent when the group goes.
		if err := unix.Rmdir(dir); err != nil {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Fatalf("set memory limit: %v", err)
	}
	return dir, filepath.Join(dir, usage)
}

// writeIn runs a shell in cgroup dir (it joins, then execs) writing n MiB
// into file, as a container's process would; the child forks from the
// test's thread and so shares its mount namespace.
func writeIn(cg, file string, n int) error {
	cmd := exec.Command("/bin/sh", "-c",
		`echo $$ > "$1/cgroup.procs" && exec head -c "$2" /dev/zero > "$3"`,
		"sh", cg, strconv.Itoa(n<<20), file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// A container's writes to an emptyDir of medium Memory are charged to the
// container's memory cgroup, not to berthd (which mounted the tmpfs), and
// count against its limit: past it the kernel kills the writer.
func TestMemoryEmptyDirCharged(t *testing.T) {
	privateNS(t)
	dir := podDir(t)
	v := emptyDirVol("mem")
	v.EmptyDir.Medium = corev1.StorageMediumMemory
	set, err := New(Config{}, nil).Setup(newPod(v), dir, nil) // no size bound but the kernel's
	if err != nil {
		t.Fatal(err)
	}
	mp := set.Volumes["mem"].Path

	cg, usage := memoryCgroup(t, "a", 64<<20)
	if err := writeIn(cg, filepath.Join(mp, "a"), 16); err != nil {
		t.Fatal(err)
	}
	// The writer has exited; its tmpfs pages stay charged to its group.
	b, err := os.ReadFile(usage)
	if err != nil {
		t.Fatal(err)
	}
	used, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if used < 16<<20 {
		t.Errorf("cgroup charged %d bytes after writing 16 MiB into the emptyDir", used)
	}

	cg2, _ := memoryCgroup(t, "b", 8<<20)
	err = writeIn(cg2, filepath.Join(mp, "b"), 32)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("writing 32 MiB under an 8 MiB limit: %v, want the writer killed", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("writer ended with %v, want SIGKILL from the OOM killer", ee)
	}
	// Free the pages before the groups go.
	os.Remove(filepath.Join(mp, "a"))
	os.Remove(filepath.Join(mp, "b"))
}
