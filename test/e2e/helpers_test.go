// Package e2e runs berth's runtime on a real systemd PID 1 (test/node) with
// real kernel cgroups, from an image the tests build out of Debian's
// busybox-static, and checks what the issue promises: containers are systemd
// units, limits reach the kernel, OOM, throttling, grace periods, isolation,
// survival of the starting process, refusal of hostile layers.
package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen/systemd"
)

// Paths inside the node.
const (
	layoutDir = "/var/tmp/images"
	policy    = "/var/tmp/policy.json"
	podDir    = "/var/tmp/pods"
	imageRef  = "busybox:e2e"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds berthd and berth-init once per test binary.
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = testenv.TempDir("berth-e2e-bin")
		if buildErr != nil {
			return
		}
		buildErr = testenv.BuildStatic(binDir, "./cmd/berthd", "./cmd/berth-init", "./cmd/berth-hook", "./cmd/berth-verify")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// env is a booted node with berth's binaries and the busybox image.
type env struct {
	t *testing.T
	n *node.Node
}

func newEnv(t *testing.T, imgs ...func(*v1.Config)) *env {
	t.Helper()
	testenv.RequireRoot(t)
	_, err := os.Stat(imagetest.Busybox)
	testenv.Require(t, err == nil, "needs busybox-static (/bin/busybox); `make test` installs it")
	bin := binaries(t)
	n := nodetest.New(t, node.Options{Name: "e2e", BinDir: bin})
	e := &env{t: t, n: n}
	img, err := imagetest.BusyboxImage(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagetest.WriteLayout(e.host(layoutDir), imageRef, img); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(e.host(podDir), 0o755); err != nil {
		t.Fatal(err)
	}
	// The trust policy rejects everything but the test layout.
	e.writePolicy(`{"default": [{"type": "reject"}], "transports": {"oci": {"` + layoutDir + `": [{"type": "insecureAcceptAnything"}]}}}`)
	return e
}

// host is the host path of a path under the node's /var.
func (e *env) host(p string) string {
	return filepath.Join(e.n.Dir, "var", strings.TrimPrefix(p, "/var/"))
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) run(args ...string) string {
	e.t.Helper()
	out, err := e.n.Run(e.ctx(), args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// startPod writes the manifest into the node and runs `berthd pod run`
// with the images from the test layout.
func (e *env) startPod(name, manifest string) (string, error) {
	e.t.Helper()
	return e.runPod(name, manifest, "--layout", layoutDir)
}

// startRegistryPod is startPod for images pulled from a registry.
func (e *env) startRegistryPod(name, manifest string) (string, error) {
	e.t.Helper()
	return e.runPod(name, manifest)
}

func (e *env) runPod(name, manifest string, extra ...string) (string, error) {
	e.t.Helper()
	p := filepath.Join(podDir, name+".yaml")
	if err := os.WriteFile(e.host(p), []byte(manifest), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return e.n.Run(e.ctx(), append([]string{"berthd", "--policy", policy, "pod", "run", "-f", p}, extra...)...)
}

// writePolicy replaces the node's trust policy file.
func (e *env) writePolicy(doc string) {
	e.t.Helper()
	if err := os.WriteFile(e.host(policy), []byte(doc), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) mustStartPod(name, manifest string) {
	e.t.Helper()
	if _, err := e.startPod(name, manifest); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) status(pod string) []pods.ContainerStatus {
	e.t.Helper()
	out := e.run("berthd", "--policy", policy, "pod", "status", "-o", "json", "default/"+pod)
	var sts []pods.ContainerStatus
	if err := json.Unmarshal([]byte(out), &sts); err != nil {
		e.t.Fatalf("status of %s: %v\n%s", pod, err, out)
	}
	return sts
}

// waitFor polls cond (every 100 ms, up to a minute); a functional wait, not
// a timing assertion.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) show(unit, prop string) string {
	e.t.Helper()
	return strings.TrimSpace(e.run("systemctl", "show", "-P", prop, unit))
}

func (e *env) mainPID(unit string) int {
	e.t.Helper()
	pid, err := strconv.Atoi(e.show(unit, "MainPID"))
	if err != nil || pid == 0 {
		e.t.Fatalf("MainPID of %s: %q %v", unit, e.show(unit, "MainPID"), err)
	}
	return pid
}

// inContainer runs a command in the namespaces of the container whose PID
// (in the node) is pid, with the container's root. Privileges are the
// node's: use it to look, not to test the sandbox.
func (e *env) inContainer(pid int, args ...string) string {
	e.t.Helper()
	a := append([]string{"nsenter", "-t", strconv.Itoa(pid), "-m", "-p", "-u", "-i", "-n", "--"}, args...)
	return e.run(a...)
}

func (e *env) journal(unit string) string {
	return e.run("journalctl", "--no-pager", "-o", "cat", "-u", unit)
}

// stopObserved stops unit with systemctl, as an operator would, and returns
// systemd's event for the end of its main process, watched over the node's
// system bus from the host: berth's units unload as soon as they are dead
// (CollectMode=inactive-or-failed), so what systemd knew of the stop can only
// be caught on its way out. The event carries systemd's own timestamps
// (ActiveExit, ExecMainExit).
func (e *env) stopObserved(unit string) systemd.Event {
	e.t.Helper()
	ctx := e.ctx()
	c, err := systemd.Dial(ctx, systemd.WithBusAddress("unix:path="+e.n.HostPath("/run/dbus/system_bus_socket")),
		systemd.WithPrivateAddress(""))
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := c.Watch(wctx, unit) // subscribed when it returns: nothing of the stop can be missed
	if err != nil {
		e.t.Fatal(err)
	}
	e.run("systemctl", "stop", unit)
	var seen []systemd.Event
	for {
		select {
		case ev, ok := <-events:
			switch {
			case !ok:
				e.t.Fatalf("watch of %s closed; saw %+v", unit, seen)
			case ev.Err != nil:
				e.t.Logf("watch of %s: %v", unit, ev.Err)
			case ev.Overflow:
				e.t.Fatalf("watch of %s overflowed: %d events dropped", unit, ev.Dropped)
			case ev.Unit == unit && ev.JobResult == "":
				seen = append(seen, ev)
				if ev.Exited() {
					return ev
				}
			}
		case <-ctx.Done():
			e.t.Fatalf("no exit event for %s after systemctl stop; saw %+v", unit, seen)
		}
	}
}

func (e *env) readCgroup(key, group, file string) string {
	e.t.Helper()
	b, err := os.ReadFile(e.n.CgroupPath(key, group, file))
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func pod(name, body string) string {
	return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: default\nspec:\n" + body
}
