package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen"
)

// packaging is the repository's packaging/ folder (the test runs in
// test/e2e/daemon).
const packaging = "../../../packaging"

type nodeEnv struct {
	t *testing.T
	n *node.Node
}

func (e *nodeEnv) run(args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := e.n.Run(ctx, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *nodeEnv) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return e.n.Run(ctx, args...)
}

func (e *nodeEnv) show(prop string) string {
	e.t.Helper()
	return strings.TrimSpace(e.run("systemctl", "show", "-P", prop, "berthd.service"))
}

// install copies a packaging file into the node, rewritten by edit.
func (e *nodeEnv) install(src, dst string, edit func(string) string) {
	e.t.Helper()
	data, err := os.ReadFile(filepath.Join(packaging, src))
	if err != nil {
		e.t.Fatal(err)
	}
	s := string(data)
	if edit != nil {
		s = edit(s)
	}
	host := e.n.HostPath(dst)
	if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(host, []byte(s), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// waitFor polls cond every 100 ms for up to a minute: a functional wait,
// not a timing assertion.
func (e *nodeEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *nodeEnv) curl(method, path, body string) (string, error) {
	args := []string{"curl", "-sS", "-f", "--unix-socket", "/run/berth/berth.sock", "-X", method}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "--data", body)
	}
	return e.try(append(args, "http://localhost"+path)...)
}

// berthd.service on a real systemd: installed from packaging/, it reaches
// active through READY, serves the socket with its mode and group, logs
// for journald, stops cleanly on `systemctl stop`, is restarted after a
// SIGKILL, and keeps its state across both.
func TestService(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "curl")
	bin := binaries(t)
	e := &nodeEnv{t: t, n: nodetest.New(t, node.Options{Name: "daemon", BinDir: bin})}

	// What a package will do: sysusers, tmpfiles, the unit, the example
	// configuration. Only ExecStart's path differs (binaries are mounted at
	// /opt/berth/bin in the node).
	e.install("sysusers.d/berth.conf", "/etc/sysusers.d/berth.conf", nil)
	e.install("tmpfiles.d/berth.conf", "/etc/tmpfiles.d/berth.conf", nil)
	e.install("berthd.yaml", "/etc/berth/berthd.yaml", nil)
	e.install("berthd.service", "/etc/systemd/system/berthd.service", func(s string) string {
		if !strings.Contains(s, "ExecStart=/usr/bin/berthd serve\n") {
			t.Fatalf("berthd.service: ExecStart is not /usr/bin/berthd serve")
		}
		return strings.Replace(s, "ExecStart=/usr/bin/berthd", "ExecStart="+node.BinMount+"/berthd", 1)
	})
	e.run("systemd-sysusers", "/etc/sysusers.d/berth.conf")
	e.run("systemd-tmpfiles", "--create", "/etc/tmpfiles.d/berth.conf")
	if got := strings.TrimSpace(e.run("stat", "-c", "%a %U %G", "/run/berth", "/var/lib/berth")); got != "755 root root\n700 root root" {
		t.Errorf("tmpfiles: %q", got)
	}
	e.run("systemctl", "daemon-reload")
	// systemd's own lint of the unit: unknown keys, bad values.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := e.n.Command(ctx, "systemd-analyze", "verify", "/etc/systemd/system/berthd.service").CombinedOutput(); err != nil || strings.Contains(string(out), "berthd.service") {
		t.Errorf("systemd-analyze verify berthd.service: %v\n%s", err, out)
	}

	// Type=notify: start returns once berthd sent READY=1, which it
	// sends after the socket listens, so the socket answers at once.
	e.run("systemctl", "start", "berthd.service")
	if s := e.show("ActiveState") + "/" + e.show("SubState"); s != "active/running" {
		t.Fatalf("berthd.service %s", s)
	}
	if st := e.show("StatusText"); st != "serving on /run/berth/berth.sock" {
		t.Errorf("StatusText %q", st)
	}
	if w := e.show("WatchdogUSec"); w != "30s" {
		t.Errorf("WatchdogUSec %q", w)
	}
	if out, err := e.curl("GET", "/readyz", ""); err != nil || out != "ok" {
		t.Fatalf("/readyz: %q %v", out, err)
	}
	// WATCHDOG=1 arrives: systemd moves the unit's watchdog timestamp on
	// each ping (every 15 s with WatchdogSec=30s).
	wd := e.show("WatchdogTimestampMonotonic")
	e.waitFor("a watchdog ping", func() bool { return e.show("WatchdogTimestampMonotonic") != wd })
	if got := strings.TrimSpace(e.run("stat", "-c", "%a %U %G %F", "/run/berth/berth.sock")); got != "666 root berth socket" {
		t.Errorf("socket: %q, want 666 root berth socket", got)
	}
	if _, err := e.curl("POST", "/api/v1/namespaces", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"persist"}}`); err != nil {
		t.Fatal(err)
	}

	// A container is its own transient unit in berth.slice, outside berthd.service's
	// cgroup: what makes the default KillMode safe.
	unit := e.startPod()
	cg := e.run("systemctl", "show", "-P", "ControlGroup", unit)
	if !strings.HasPrefix(cg, "/berth.slice/") {
		t.Errorf("container unit %s in cgroup %q, want under /berth.slice", unit, cg)
	}
	podPID := strings.TrimSpace(e.run("systemctl", "show", "-P", "MainPID", unit))
	containerAlive := func(when string) {
		t.Helper()
		st := strings.TrimSpace(e.run("systemctl", "show", "-P", "ActiveState", unit))
		pid := strings.TrimSpace(e.run("systemctl", "show", "-P", "MainPID", unit))
		if st != "active" || pid != podPID {
			t.Errorf("container %s %s: %s, MainPID %s (was %s)", unit, when, st, pid, podPID)
		}
	}

	// journald-friendly: no timestamp of berthd's own, level= and the
	// priority journald parsed from the <N> prefix.
	line := strings.TrimSpace(e.run("journalctl", "-u", "berthd.service", "-o", "cat", "-p", "info", "-g", "serving"))
	if !strings.HasPrefix(line, "level=info berthd: serving:") {
		t.Errorf("journal line %q", line)
	}
	if out := strings.TrimSpace(e.run("journalctl", "-u", "berthd.service", "-o", "json", "-g", "serving", "--output-fields=PRIORITY")); !strings.Contains(out, `"PRIORITY":"6"`) {
		t.Errorf("journal priority: %s", out)
	}

	// SIGKILL: Restart=on-failure brings it back; the state file keeps
	// what was created (bbolt commits before the API answers).
	pid := e.show("MainPID")
	e.run("systemctl", "kill", "--signal=SIGKILL", "berthd.service")
	e.waitFor("berthd restarted", func() bool {
		p := e.show("MainPID")
		return p != "0" && p != pid && e.show("ActiveState") == "active" && e.show("NRestarts") == "1"
	})
	e.waitFor("the socket of the restarted berthd", func() bool {
		out, err := e.curl("GET", "/readyz", "")
		return err == nil && out == "ok"
	})
	if out, err := e.curl("GET", "/api/v1/namespaces/persist", ""); err != nil || !strings.Contains(out, `"name":"persist"`) {
		t.Errorf("namespace after SIGKILL and restart: %q %v", out, err)
	}
	containerAlive("after berthd was SIGKILLed and restarted")
	if j := e.run("journalctl", "-u", "berthd.service", "-o", "cat"); !strings.Contains(j, "replacing stale socket") {
		t.Errorf("the killed berthd's socket was not replaced:\n%s", j)
	}

	// systemctl stop: SIGTERM, STOPPING=1, graceful shutdown, exit 0, the
	// socket gone.
	e.run("systemctl", "stop", "berthd.service")
	if r, code := e.show("Result"), e.show("ExecMainStatus"); r != "success" || code != "0" {
		t.Errorf("after stop: Result=%s ExecMainStatus=%s", r, code)
	}
	j := e.run("journalctl", "-u", "berthd.service", "-o", "cat")
	if !strings.Contains(j, "stopping: signal=terminated") || !strings.Contains(j, "level=info berthd: stopped") {
		t.Errorf("no graceful stop in the journal:\n%s", j)
	}
	containerAlive("after systemctl stop berthd")
	if _, err := e.try("test", "-e", "/run/berth/berth.sock"); err == nil {
		t.Error("socket left behind after a clean stop")
	}

	// And up again with the same state.
	e.run("systemctl", "start", "berthd.service")
	if out, err := e.curl("GET", "/api/v1/namespaces/persist", ""); err != nil || !strings.Contains(out, `"name":"persist"`) {
		t.Errorf("namespace after stop and start: %q %v", out, err)
	}
	containerAlive("after berthd started again")
	// Deleted through the API: the worker stops the container.
	if _, err := e.curl("DELETE", "/api/v1/namespaces/default/pods/web", ""); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the deleted pod's unit to go", func() bool {
		out, _ := e.try("systemctl", "show", "-P", "LoadState", unit)
		return strings.TrimSpace(out) == "not-found"
	})
}

// startPod runs a sleeping busybox pod with `berthd pod run` from a test
// layout and returns its container's unit.
func (e *nodeEnv) startPod() string {
	e.t.Helper()
	_, err := os.Stat(imagetest.Busybox)
	testenv.Require(e.t, err == nil, "needs busybox-static (/bin/busybox); `make test` installs it")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A stored pod, as an operator creates one: a signed image in a
	// registry in the node, the pod through the API, the worker starts it.
	signed, err := nodereg.SignedImages(ctx, e.n, 5000)
	if err != nil {
		e.t.Fatal(err)
	}
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default"},"spec":{"containers":[{"name":"main","image":"` +
		signed.Ref + `","command":["sleep","3600"]}]}}`
	if _, err := e.curl("POST", "/api/v1/namespaces/default/pods", pod); err != nil {
		e.t.Fatal(err)
	}
	unit := unitgen.UnitName("default", "web", "main")
	e.waitFor("the pod's container to run", func() bool {
		out, _ := e.try("systemctl", "show", "-P", "ActiveState", unit)
		return strings.TrimSpace(out) == "active"
	})
	return unit
}
