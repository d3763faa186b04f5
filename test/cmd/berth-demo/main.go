// Command berth-demo is `make demo`: it boots a disposable systemd node with a
// registry inside, pushes an image built from busybox-static and signs it with
// the cosign CLI, writes a trust policy that trusts only that key, runs the
// signed image as a pod with CPU and memory limits through berth, prints its
// unit status and the limits the kernel enforces, shows an unsigned image
// being refused, and tears down.
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

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/unitgen"
)

const manifest = `apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: demo
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: 127.0.0.1:5000/demo/hello:1
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

	step("building an OCI image from Debian's busybox-static")
	img, err := imagetest.BusyboxImage(nil)
	if err != nil {
		return err
	}
	unsignedImg, err := imagetest.BusyboxImage(func(c *v1.Config) { c.Env = append(c.Env, "UNSIGNED=1") })
	if err != nil {
		return err
	}
	layout := filepath.Join(n.Dir, "var/tmp/images")
	for tag, im := range map[string]v1.Image{"busybox:demo": img, "busybox:unsigned": unsignedImg} {
		if _, err := imagetest.WriteLayout(layout, tag, im); err != nil {
			return err
		}
	}
	sh := func(args ...string) (string, error) {
		fmt.Printf("$ %s\n", strings.Join(args, " "))
		out, err := n.Run(ctx, args...)
		fmt.Print(out)
		return out, err
	}

	step("a registry inside the node; push with skopeo, sign with cosign")
	reg, err := nodereg.Start(ctx, n, 5000)
	if err != nil {
		return err
	}
	digest, err := reg.PushLayout(ctx, "/var/tmp/images", "busybox:demo", "demo/hello", "1")
	if err != nil {
		return err
	}
	if _, err := reg.PushLayout(ctx, "/var/tmp/images", "busybox:unsigned", "demo/unsigned", "1"); err != nil {
		return err
	}
	fmt.Printf("pushed %s/demo/hello:1 = %s\n", reg.Host, digest)
	if err := nodereg.GenerateKey(ctx, n, "/etc/berth/keys"); err != nil {
		return err
	}
	if err := nodereg.Sign(ctx, n, "/etc/berth/keys", reg.Host+"/demo/hello@"+digest); err != nil {
		return err
	}
	fmt.Printf("signed %s/demo/hello@%s with /etc/berth/keys/cosign.key (no transparency log: no network here)\n", reg.Host, digest)
	policy := `{"default": [{"type": "reject"}],
 "transports": {"docker": {"` + reg.Host + `/demo": [{"type": "sigstoreSigned", "keyPath": "/etc/berth/keys/cosign.pub"}]}}}
`
	if _, err := n.Run(ctx, "sh", "-c", "cat > /etc/berth/policy.json <<'EOF'\n"+policy+"EOF"); err != nil {
		return err
	}
	fmt.Printf("/etc/berth/policy.json:\n%s", policy)
	if err := os.WriteFile(filepath.Join(n.Dir, "var/tmp/hello.yaml"), []byte(manifest), 0o644); err != nil {
		return err
	}
	fmt.Print(manifest)

	step("starting the pod: berth pulls by digest after the policy accepted the signature")
	if _, err := sh("berthd", "pod", "run", "-f", "/var/tmp/hello.yaml"); err != nil {
		return err
	}
	unit := unitgen.UnitName("demo", "hello", "web")
	// systemctl status below shows the container's greeting: wait for it to
	// reach the journal (bounded; the demo goes on without it).
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if out, _ := n.Run(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", unit); strings.Contains(out, "hello from") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

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

	step("an unsigned image is refused before any layer is fetched")
	_, err = sh("berthd", "image", "pull", reg.Host+"/demo/unsigned:1")
	if err == nil {
		return fmt.Errorf("the unsigned image was accepted")
	}
	fmt.Println(err)

	step("removing the pod")
	if _, err := sh("berthd", "pod", "rm", "demo/hello"); err != nil {
		return err
	}
	return nil
}
