package berthinit

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

func TestUnitOf(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0::/berth.slice/berth-shop.slice/berth-shop_web_app.service/.control\n", "berth-shop_web_app.service"},
		{"12:pids:/x.service\n1:name=systemd:/berth.slice/a.service/.control\n0::/\n", "a.service"},
		{"0::/user.slice/user-0.slice/session-1.scope\n", ""},
	} {
		got, err := unitOf([]byte(tc.in))
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("unitOf(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestHookUsage(t *testing.T) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	must(t, err)
	stderr := os.Stderr
	os.Stderr = devnull
	t.Cleanup(func() { os.Stderr = stderr; devnull.Close() })
	for _, args := range [][]string{nil, {"poststart"}, {"prestart", "/b"}, {"prestop", "/b", "x"}} {
		if code := HookMain(args); code != 2 {
			t.Errorf("HookMain(%q) = %d, want 2", args, code)
		}
	}
	// A bundle without hooks.json: nothing to run.
	if code := HookMain([]string{"poststart", t.TempDir()}); code != 0 {
		t.Errorf("no hooks: exit %d", code)
	}
}

// TestHooksUnderSystemd runs containers as unitgen makes their units with
// hooks (ExecStartPost=/ExecStop= `berth-init hook …`, Delegate=yes) under a
// real systemd, and checks what the kubelet promises of hooks: a postStart
// exec runs in the running container exactly as confined as the workload
// and in its unit's cgroup; preStop runs before the stop signal, while the
// workload still runs, and not when it ended on its own; a failing
// postStart fails the start, runs preStop, is recorded with the kubelet's
// message, and the unit restarts; an httpGet hook reaches a server of the
// pod with its path and headers; a sleep hook delays the stop.
func TestHooksUnderSystemd(t *testing.T) {
	bin := requireBerthInit(t)
	const inNode = "/srv/hooks"
	statusLines := `grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):'`
	exec := func(script string) *bndl.Handler {
		return &bndl.Handler{Exec: &bndl.ExecHandler{Command: []string{"sh", "-c", script}}}
	}
	type tcase struct {
		b     *testBundle
		hooks *bndl.Hooks
	}
	// PID 1 of a PID namespace ignores SIGTERM without a handler: the
	// workloads trap it, as a container's init has to.
	termable := func(cmd string) *testBundle { return newBundle(t, "sh", "-c", `trap "exit 0" TERM; `+cmd+` & wait`) }
	cases := map[string]*tcase{
		"hooks": {termable("sleep 3600"), &bndl.Hooks{
			PostStart: exec(statusLines + " /proc/self/status > /post.self; " + statusLines + " /proc/1/status > /post.main; cat /proc/self/cgroup > /post.cgroup"),
			PreStop:   exec("cat /proc/1/cmdline > /pre"),
		}},
		"fail": {termable("sleep 3600"), &bndl.Hooks{
			PostStart: exec("echo out; echo err >&2; exit 3"),
			PreStop:   exec("echo ran >> /pre"),
		}},
		"ended": {newBundle(t, "true"), &bndl.Hooks{PreStop: exec("echo ran > /pre")}},
		// The server is a sidecar of the pod (its network namespace),
		// listening before the container starts: a server the container
		// starts itself races its own postStart hook, as on a cluster.
		"http": {termable("sleep 3600"), &bndl.Hooks{
			PostStart: &bndl.Handler{HTTPGet: &bndl.HTTPHandler{Scheme: "http", Port: 8080, Path: "/cgi-bin/hook?from=poststart",
				Headers: []bndl.HTTPHeader{{Name: "X-Berth", Value: "hooked"}}}},
			PreStop: &bndl.Handler{HTTPGet: &bndl.HTTPHandler{Scheme: "http", Port: 8081, Path: "/nobody"}},
		}},
		"sleep": {termable("sleep 3600"), &bndl.Hooks{PreStop: &bndl.Handler{Sleep: &bndl.SleepHandler{Seconds: 3}}}},
	}
	// The pod's network namespace, made as berthd makes one: loopback up
	// (no pod network here, so the hook reaches the pod on it).
	for i, ns := range cases["http"].b.spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			cases["http"].b.spec.Linux.Namespaces[i].Path = "/run/netns/hookpod"
		}
	}
	var binds []node.Bind
	for name, c := range cases {
		c.hooks.Pod, c.hooks.Container, c.hooks.GracePeriodSeconds = name+"_default(uid-1)", "app", 30
		dir := filepath.Join(inNode, name)
		c.b.relocate(dir)
		c.b.write(t)
		must(t, bndl.WriteHooks(c.b.dir, c.hooks))
		binds = append(binds, node.Bind{Source: c.b.dir, Target: dir})
	}
	n := nodetest.New(t, node.Options{Name: "hooks", BinDir: filepath.Dir(bin), Binds: binds})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	initBin := filepath.Join(node.BinMount, "berth-init")
	hookBin := filepath.Join(node.BinMount, "berth-hook")
	run(t, ctx, n, "ip", "netns", "add", "hookpod")
	run(t, ctx, n, "ip", "-n", "hookpod", "link", "set", "lo", "up")
	start := func(name string, extra ...string) {
		t.Helper()
		b := filepath.Join(inNode, name)
		args := []string{"systemd-run", "--unit=" + name, "-p", "Type=forking", "-p", "PIDFile=" + b + "/pid",
			"-p", "ExecStopPost=-" + initBin + " poststop " + b, "-p", "KillMode=mixed", "-p", "Delegate=yes"}
		if cases[name].hooks.PostStart != nil {
			args = append(args, "-p", "ExecStartPost="+hookBin+" poststart "+b)
		}
		if cases[name].hooks.PreStop != nil {
			args = append(args, "-p", "ExecStop=-"+hookBin+" prestop "+b)
		}
		args = append(append(args, extra...), "--", initBin, "start", b)
		if out, err := n.Run(ctx, args...); err != nil {
			t.Fatalf("systemd-run %s: %v\n%s", name, err, out)
		}
		t.Cleanup(func() { _, _ = n.Run(context.Background(), "systemctl", "kill", "-s", "KILL", name+".service") })
	}
	show := func(unit, prop string) string {
		t.Helper()
		return strings.TrimSpace(run(t, ctx, n, "systemctl", "show", "-P", prop, unit))
	}
	// What the container wrote to its root lands in the overlay's upper dir.
	file := func(name, p string) string {
		b, _ := os.ReadFile(filepath.Join(cases[name].b.upper, p))
		return string(b)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	defer func() {
		if t.Failed() {
			out, _ := n.Run(context.Background(), "journalctl", "--no-pager", "-u", "hooks", "-u", "fail", "-u", "ended", "-u", "http", "-u", "sleep")
			t.Logf("journal:\n%s", out)
		}
	}()

	t.Run("postStart and preStop exec", func(t *testing.T) {
		start("hooks") // returns once ExecStartPost has run: the unit is active
		self, main := file("hooks", "post.self"), file("hooks", "post.main")
		if self == "" || self != main {
			t.Errorf("the postStart hook is confined otherwise than the workload:\nhook:\n%s\nworkload:\n%s", self, main)
		}
		for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2"} {
			if !strings.Contains(self, want) {
				t.Errorf("hook lacks %q:\n%s", want, self)
			}
		}
		if cg := file("hooks", "post.cgroup"); !strings.Contains(cg, "/hooks.service") {
			t.Errorf("the hook ran outside the unit's cgroup: %s", cg)
		}
		if f, _ := bndl.ReadHookFailure(cases["hooks"].b.dir); len(f) != 0 {
			t.Errorf("failures recorded: %+v", f)
		}
		run(t, ctx, n, "systemctl", "stop", "hooks.service")
		// The preStop hook saw the workload still running: before SIGTERM.
		if got := file("hooks", "pre"); !strings.Contains(got, "sleep 3600 & wait") {
			t.Errorf("preStop saw PID 1 %q, want the running workload", got)
		}
	})

	t.Run("failing postStart", func(t *testing.T) {
		// The start job fails (systemd-run would report it): --no-block.
		start("fail", "--no-block", "-p", "Restart=always", "-p", "RestartSec=100ms")
		waitFor("a restart", func() bool {
			nr, _ := strconv.Atoi(show("fail.service", "NRestarts"))
			return nr >= 1
		})
		fs, err := bndl.ReadHookFailure(cases["fail"].b.dir)
		if err != nil || len(fs) != 1 || fs[0].Kind != bndl.HookPostStart {
			t.Fatalf("failure records %+v, %v", fs, err)
		}
		want := `Exec lifecycle hook ([sh -c echo out; echo err >&2; exit 3]) for Container "app" in Pod "fail_default(uid-1)" failed - error: command 'sh -c echo out; echo err >&2; exit 3' exited with 3: err
, message: "out\nerr\n"`
		if fs[0].Message != want {
			t.Errorf("message\n%s\nwant\n%s", fs[0].Message, want)
		}
		// As the kubelet's killContainer after a failed postStart hook.
		if !strings.Contains(file("fail", "pre"), "ran") {
			t.Error("no preStop hook after the failed postStart hook")
		}
		run(t, ctx, n, "systemctl", "stop", "fail.service")
	})

	t.Run("preStop skipped after the workload ended", func(t *testing.T) {
		start("ended")
		waitFor("the exit record", func() bool { _, err := bndl.ReadExit(cases["ended"].b.dir); return err == nil })
		if j := run(t, ctx, n, "journalctl", "--no-pager", "-o", "cat", "-u", "ended"); !strings.Contains(j, "no preStop hook") {
			t.Errorf("preStop not skipped:\n%s", j)
		}
		if f, _ := bndl.ReadHookFailure(cases["ended"].b.dir); len(f) != 0 || file("ended", "pre") != "" {
			t.Errorf("a preStop hook ran: %+v %q", f, file("ended", "pre"))
		}
	})

	t.Run("httpGet", func(t *testing.T) {
		// The sidecar's httpd: its CGI writes what reached it.
		www := n.HostPath("/srv/hookweb/cgi-bin")
		must(t, os.MkdirAll(www, 0o755))
		must(t, os.WriteFile(filepath.Join(www, "hook"), []byte("#!/bin/sh\necho \"$HTTP_X_BERTH $REQUEST_URI\" >> /srv/hookweb/got\necho 'Content-Type: text/plain'\necho\necho ok\n"), 0o755))
		must(t, os.WriteFile(filepath.Join(www, "ping"), []byte("#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho pong\n"), 0o755))
		run(t, ctx, n, "systemd-run", "--unit=hookweb", "-p", "NetworkNamespacePath=/run/netns/hookpod", "busybox", "httpd", "-f", "-p", "8080", "-h", "/srv/hookweb")
		t.Cleanup(func() { _, _ = n.Run(context.Background(), "systemctl", "stop", "hookweb.service") })
		waitFor("the sidecar's httpd", func() bool {
			_, err := n.Run(ctx, "ip", "netns", "exec", "hookpod", "busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/cgi-bin/ping")
			return err == nil
		})
		start("http")
		// The pod has loopback only (no pod network here): its own.
		got, _ := os.ReadFile(n.HostPath("/srv/hookweb/got"))
		if string(got) != "hooked /cgi-bin/hook?from=poststart\n" {
			t.Errorf("the server got %q", got)
		}
		run(t, ctx, n, "systemctl", "stop", "http.service")
		// Nobody listens on 8081: the preStop hook failed with the
		// kubelet's message, and the stop went on.
		fs, _ := bndl.ReadHookFailure(cases["http"].b.dir)
		if len(fs) != 1 || fs[0].Kind != bndl.HookPreStop ||
			!strings.HasPrefix(fs[0].Message, `HTTP lifecycle hook (/nobody) for Container "app" in Pod "http_default(uid-1)" failed - error: Get "http://127.0.0.1:8081/nobody": `) ||
			!strings.Contains(fs[0].Message, "connection refused") {
			t.Errorf("preStop failure %+v", fs)
		}
	})

	t.Run("sleep delays the stop", func(t *testing.T) {
		start("sleep")
		ev := time.Now()
		run(t, ctx, n, "systemctl", "stop", "sleep.service")
		// Not a timing assertion: a lower bound the hook guarantees.
		if took := time.Since(ev); took < 3*time.Second {
			t.Errorf("stop took %v, less than the 3 s sleep hook", took)
		}
	})
}
