package node_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
)

func TestNodeBootsSystemdWithWritableCgroups(t *testing.T) {
	n := nodetest.New(t, node.Options{Name: "nodetest"})
	ctx := context.Background()

	out, err := n.Run(ctx, "systemctl", "is-system-running")
	if s := strings.TrimSpace(out); s != "running" && s != "degraded" {
		t.Fatalf("is-system-running = %q (%v)", s, err)
	}
	if out, _ := n.Run(ctx, "cat", "/proc/1/comm"); strings.TrimSpace(out) != "systemd" {
		t.Fatalf("PID 1 inside is %q, want systemd", out)
	}
	if out, _ := n.Run(ctx, "hostname"); strings.TrimSpace(out) != n.Name {
		t.Errorf("hostname = %q, want %q", out, n.Name)
	}
	// The system bus is up: busctl talks to it.
	if _, err := n.Run(ctx, "busctl", "--system", "status", "org.freedesktop.systemd1"); err != nil {
		t.Errorf("system D-Bus: %v", err)
	}
	// Private network: only loopback.
	if out, _ := n.Run(ctx, "ls", "/sys/class/net"); strings.TrimSpace(out) != "lo" {
		t.Errorf("node interfaces = %q, want only lo", out)
	}
	// /usr is the host's, read-only.
	if _, err := n.Run(ctx, "touch", "/usr/berth-should-fail"); err == nil {
		t.Errorf("/usr is writable inside the node")
	}
	// Limits set by systemd inside land in real kernel cgroups on the host.
	if _, err := n.Run(ctx, "systemd-run", "--unit=probe", "-p", "MemoryMax=50M", "-p", "CPUQuota=20%",
		"-p", "TasksMax=10", "/bin/sleep", "60"); err != nil {
		t.Fatal(err)
	}
	group, err := n.Run(ctx, "systemctl", "show", "-P", "ControlGroup", "probe.service")
	if err != nil {
		t.Fatal(err)
	}
	group = strings.TrimSpace(group)
	files := []struct{ key, file, want string }{
		{"memory", "memory.limit_in_bytes", "52428800"},
		{"cpu", "cpu.cfs_quota_us", "20000"},
		{"pids", "pids.max", "10"},
	}
	if cgroup.IsV2() {
		// Pure v2 host: the controllers were delegated to the node.
		files = []struct{ key, file, want string }{
			{"unified", "memory.max", "52428800"},
			{"unified", "cpu.max", "20000 100000"},
			{"unified", "pids.max", "10"},
		}
	}
	for _, c := range files {
		p := n.CgroupPath(c.key, group, c.file)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			// Which cgroup on the way down lacks the controller?
			for d := filepath.Dir(p); strings.HasPrefix(d, "/sys/fs/cgroup/"); d = filepath.Dir(d) {
				avail, _ := os.ReadFile(filepath.Join(d, "cgroup.controllers"))
				enabled, _ := os.ReadFile(filepath.Join(d, "cgroup.subtree_control"))
				t.Logf("%s: controllers %q, subtree_control %q", d, strings.TrimSpace(string(avail)), strings.TrimSpace(string(enabled)))
			}
			continue
		}
		if got := strings.TrimSpace(string(b)); got != c.want {
			t.Errorf("%s = %s, want %s", p, got, c.want)
		}
	}
	// /var survives inside the node and is the node's own.
	if _, err := n.Run(ctx, "sh", "-c", "mkdir -p /var/lib/berth && echo x > /var/lib/berth/probe"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(n.Dir, "var/lib/berth/probe")); err != nil || string(b) != "x\n" {
		t.Errorf("node /var not at %s/var: %q %v", n.Dir, b, err)
	}
}

func TestNodeTeardownRemovesEverything(t *testing.T) {
	n := nodetest.New(t, node.Options{Name: "teardown"})
	cgs := append([]string(nil), node.Cgroups(n)...)
	dir := n.Dir
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, d := range cgs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left behind (%v)", d, err)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("node dir %s left behind", dir)
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(b), dir) {
		t.Errorf("mounts of %s left in the host namespace", dir)
	}
}

func TestTwoNodesAtOnce(t *testing.T) {
	a := nodetest.New(t, node.Options{Name: "twin"})
	b := nodetest.New(t, node.Options{Name: "twin"})
	if a.Name == b.Name || a.PID() == b.PID() {
		t.Fatalf("nodes collide: %s/%d and %s/%d", a.Name, a.PID(), b.Name, b.PID())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.Run(ctx, "systemd-run", "--unit=only-in-a", "/bin/sleep", "30"); err != nil {
		t.Fatal(err)
	}
	if out, _ := b.Run(ctx, "systemctl", "is-active", "only-in-a"); strings.TrimSpace(out) == "active" {
		t.Fatalf("unit of node a visible in node b")
	}
}

// A test binary killed outright (as -timeout or ^C can do) cannot run its
// cleanups; the launcher notices its parent's death and tears the node down.
func TestNodeOfKilledRunIsTornDown(t *testing.T) {
	if os.Getenv("_BERTH_NODE_TEST_CHILD") == "1" {
		n, err := node.Start(context.Background(), node.Options{Name: "orphan"})
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString(n.Dir + "\n" + strings.Join(node.Cgroups(n), "\n") + "\nEND\n")
		// Stay until the parent kills this process (SIGKILL: no handler runs).
		never := make(chan os.Signal, 1)
		signal.Notify(never, syscall.SIGUSR2)
		<-never
		return
	}
	nodetest.New(t, node.Options{Name: "gate"}).Stop() // skips or fails early when a node cannot boot
	cmd := exec.Command(os.Args[0], "-test.run=^TestNodeOfKilledRunIsTornDown$", "-test.v=false")
	cmd.Env = append(os.Environ(), "_BERTH_NODE_TEST_CHILD=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var paths []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "END" { // one cgroup on v2, one per hierarchy on v1
		if l := sc.Text(); strings.HasPrefix(l, "/") {
			paths = append(paths, l)
		}
	}
	if len(paths) < 2 {
		_ = cmd.Process.Kill()
		t.Fatalf("child did not report its node: %v", paths)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for _, p := range paths {
		for {
			if _, err := os.Stat(p); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				node.Reap()
				t.Fatalf("%s still there 20s after its test process was killed", p)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
