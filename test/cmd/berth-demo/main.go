// Command berth-demo is `make demo`: it boots a disposable systemd node, runs
// a sample container with CPU and memory limits through berth's runtime,
// prints its unit status and the limits the kernel enforces, and tears down.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/unitgen"
)

const manifest = `apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: demo
spec:
  containers:
  - name: web
    image: busybox:demo
    command: ["sh", "-c", "echo hello from a berth container on $(hostname); while :; do sleep 5; done"]
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: 500m, memory: 128Mi}
`

func main() {
	bin := flag.String("bin", "bin", "directory with berthd and berth-init")
	flag.Parse()
	if err := run(*bin); err != nil {
		fmt.Fprintln(os.Stderr, "berth-demo:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func run(bin string) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	step("booting a disposable systemd node")
	t0 := time.Now()
	n, err := node.Start(ctx, node.Options{Name: "demo", BinDir: bin})
	if err != nil {
		return err
	}
	defer func() {
		step("tearing the node down")
		if err := n.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
		}
	}()
	fmt.Printf("node %s up in %v (systemd is PID %d on the host)\n", n.Name, time.Since(t0).Round(time.Millisecond), n.PID())

	step("building an OCI image from Debian's busybox-static")
	img, err := imagetest.BusyboxImage(nil)
	if err != nil {
		return err
	}
	layout := filepath.Join(n.Dir, "var/tmp/images")
	digest, err := imagetest.WriteLayout(layout, "busybox:demo", img)
	if err != nil {
		return err
	}
	fmt.Printf("busybox:demo = %s\n", digest)
	if err := os.WriteFile(filepath.Join(n.Dir, "var/tmp/hello.yaml"), []byte(manifest), 0o644); err != nil {
		return err
	}
	fmt.Print(manifest)

	sh := func(args ...string) (string, error) {
		fmt.Printf("$ %s\n", strings.Join(args, " "))
		out, err := n.Run(ctx, args...)
		fmt.Print(out)
		return out, err
	}
	step("starting the pod through berth's runtime")
	if _, err := sh("berthd", "pod", "run", "-f", "/var/tmp/hello.yaml", "--layout", "/var/tmp/images"); err != nil {
		return err
	}
	unit := unitgen.UnitName("demo", "hello", "web")
	time.Sleep(500 * time.Millisecond)

	step("systemd's view of the container")
	_, _ = sh("systemctl", "status", "--no-pager", "--lines=3", unit)
	if _, err := sh("berthd", "pod", "status", "demo/hello"); err != nil {
		return err
	}

	step("limits in the kernel's cgroup files (read on the host)")
	group, err := n.Run(ctx, "systemctl", "show", "-P", "ControlGroup", unit)
	if err != nil {
		return err
	}
	group = strings.TrimSpace(group)
	for _, f := range []struct{ key, file, why string }{
		{"cpu", "cpu.shares", "requests.cpu 250m"},
		{"cpu", "cpu.cfs_quota_us", "limits.cpu 500m per 100 ms period"},
		{"cpu", "cpu.cfs_period_us", ""},
		{"memory", "memory.limit_in_bytes", "limits.memory 128Mi"},
		{"pids", "pids.max", "berthd --pids-limit"},
	} {
		p := n.CgroupPath(f.key, group, f.file)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Printf("%-22s %-10s %s\n", f.file, strings.TrimSpace(string(b)), f.why)
	}

	step("the container's output, from the journal")
	_, _ = sh("journalctl", "--no-pager", "-o", "cat", "-u", unit)

	step("removing the pod")
	if _, err := sh("berthd", "pod", "rm", "demo/hello"); err != nil {
		return err
	}
	return nil
}
