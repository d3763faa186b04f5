// Command berth-demo is `make demo`: it boots a disposable systemd node,
// installs berthd in it as a service from packaging/, starts a registry
// inside with an image signed by the real cosign CLI and a trust policy that
// trusts only that key, then does what an operator does with berth (which is
// kubectl, talking to berthd's socket): apply a manifest, see the pod
// Running, describe it, read the limits the kernel enforces, watch an
// unsigned image being refused (status and event), and clean up.
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

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/unitgen"
)

const manifest = `apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: demo
  labels: {app: hello}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: %s
    command: ["sh", "-c", "echo hello from a berth container on $(hostname); while :; do sleep 5; done"]
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: 500m, memory: 128Mi}
`

const unsignedManifest = `apiVersion: v1
kind: Pod
metadata:
  name: unsigned
  namespace: demo
spec:
  containers:
  - name: app
    image: %s
`

func main() {
	bin := flag.String("bin", "bin", "directory with berthd, berth, berth-init, berth-hook and berth-verify")
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
	if err := nodereg.CopyCosign(bin); err != nil {
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
	sh := func(args ...string) (string, error) {
		fmt.Printf("$ %s\n", strings.Join(args, " "))
		out, err := n.Run(ctx, args...)
		fmt.Print(out)
		return out, err
	}

	step("a registry inside the node with an image signed by cosign, and one unsigned")
	signed, err := nodereg.SignedImages(ctx, n, 5000)
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s = %s, signed with /etc/berth/keys/cosign.key (no transparency log: no network here)\n", signed.Ref, signed.Digest)
	fmt.Printf("pushed %s, unsigned\n/etc/berth/policy.json:\n%s", signed.Unsigned, signed.Policy)

	step("berthd as a systemd service (packaging/berthd.service, Type=notify)")
	if err := nodeberthd.Install(ctx, n, ""); err != nil {
		return err
	}
	_, _ = sh("systemctl", "status", "--no-pager", "--lines=5", "berthd.service")

	step("berth is kubectl, talking to berthd's socket")
	if err := os.WriteFile(n.HostPath("/root/hello.yaml"), []byte(fmt.Sprintf(manifest, signed.Ref)), 0o644); err != nil {
		return err
	}
	_, _ = sh("cat", "/root/hello.yaml")
	if _, err := sh("berth", "apply", "-f", "/root/hello.yaml"); err != nil {
		return err
	}
	if _, err := sh("berth", "wait", "--for=condition=Ready", "pod/hello", "-n", "demo", "--timeout=120s"); err != nil {
		_, _ = sh("berth", "describe", "pod", "hello", "-n", "demo")
		return err
	}
	if _, err := sh("berth", "get", "pods", "-n", "demo", "-o", "wide"); err != nil {
		return err
	}
	if _, err := sh("berth", "describe", "pod", "hello", "-n", "demo"); err != nil {
		return err
	}

	step("what a node gives a pod: its output in the journal, a way in, an address")
	if _, err := sh("berth", "logs", "hello", "-n", "demo"); err != nil {
		return err
	}
	if _, err := sh("berth", "exec", "hello", "-n", "demo", "--", "sh", "-c", "id; ip -4 -o addr show eth0 | awk '{print $2, $4}'; grep -E 'NoNewPrivs|Seccomp:' /proc/self/status"); err != nil {
		return err
	}

	step("berth's own verbs: the node's images (pulled after the policy accepted the signature), and the unit a manifest gets")
	if _, err := sh("berth", "image", "ls"); err != nil {
		return err
	}
	plan, err := n.Run(ctx, "berth", "plan", "-f", "/root/hello.yaml")
	if err != nil {
		return err
	}
	lines := strings.Split(plan, "\n")
	fmt.Printf("$ berth plan -f /root/hello.yaml   (the first 25 of %d lines)\n%s\n", len(lines), strings.Join(lines[:min(25, len(lines))], "\n"))

	unit := unitgen.UnitName("demo", "hello", "web")
	step("the container is a systemd unit; its limits are in the kernel's cgroup files")
	_, _ = sh("systemctl", "status", "--no-pager", "--lines=3", unit)
	group, err := n.Run(ctx, "systemctl", "show", "-P", "ControlGroup", unit)
	if err != nil {
		return err
	}
	group = strings.TrimSpace(group)
	for _, f := range []struct{ key, file, why string }{
		{"cpu", "cpu.shares", "requests.cpu 250m"},
		{"cpu", "cpu.cfs_quota_us", "limits.cpu 500m per 100 ms period"},
		{"memory", "memory.limit_in_bytes", "limits.memory 128Mi"},
		{"pids", "pids.max", "berthd's pids limit"},
	} {
		b, err := os.ReadFile(n.CgroupPath(f.key, group, f.file))
		if err != nil {
			return err
		}
		fmt.Printf("%-22s %-10s %s\n", f.file, strings.TrimSpace(string(b)), f.why)
	}

	step("an unsigned image is refused: the pod says why, and so do its events")
	if err := os.WriteFile(n.HostPath("/root/unsigned.yaml"), []byte(fmt.Sprintf(unsignedManifest, signed.Unsigned)), 0o644); err != nil {
		return err
	}
	if _, err := sh("berth", "apply", "-f", "/root/unsigned.yaml"); err != nil {
		return err
	}
	refused := false
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && !refused; time.Sleep(250 * time.Millisecond) {
		out, _ := n.Run(ctx, "berth", "get", "pod", "unsigned", "-n", "demo", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}")
		refused = out == "SignatureValidationFailed"
	}
	_, _ = sh("berth", "get", "pods", "-n", "demo")
	_, _ = sh("berth", "get", "events", "-n", "demo", "--field-selector", "involvedObject.name=unsigned")
	if !refused {
		return fmt.Errorf("the unsigned image was not refused with SignatureValidationFailed")
	}

	step("cleaning up: deleting the namespace stops and removes its pods")
	if _, err := sh("berth", "delete", "namespace", "demo"); err != nil {
		return err
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		out, _ := n.Run(ctx, "systemctl", "list-units", "--all", "--no-legend", "--plain", "berth-*.service")
		if strings.TrimSpace(out) == "" {
			fmt.Println("no berth units left")
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("units left after the namespace was deleted:\n%s", out)
		}
	}
	return nil
}
