package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bndl "github.com/berth-dev/berth/agent/bundle"
	"github.com/berth-dev/berth/unitgen"
)

// Lifecycle hooks through the runtime (`berthd pod run`), on a real
// systemd: the units berthd makes run postStart and preStop as the kubelet
// does (docs/berthd.md, "Lifecycle hooks").
func TestHooks(t *testing.T) {
	e := newEnv(t)
	bundle := func(pod string) string {
		return e.host("/var/lib/berth/containers/" + unitgen.ContainerKey("default", pod, "main"))
	}

	// A postStart exec hook writes a file the workload waits for; a preStop
	// exec hook writes one the workload's SIGTERM handler looks for: the
	// hook ran in the container, before the stop signal.
	t.Run("exec", func(t *testing.T) {
		e.mustStartPod("hooked", pod("hooked", `  containers:
  - name: main
    image: busybox:e2e
    command: ["sh", "-c", "until [ -e /tmp/started ]; do sleep 0.1; done; echo saw-poststart; trap '[ -e /tmp/stopping ] && echo term-after-prestop; exit 0' TERM; while :; do sleep 0.1; done"]
    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "touch /tmp/started"]}
      preStop:
        exec: {command: ["sh", "-c", "touch /tmp/stopping"]}
`))
		unit := unitgen.UnitName("default", "hooked", "main")
		if got := e.show(unit, "ExecStartPost"); !strings.Contains(got, "hook poststart") {
			t.Errorf("ExecStartPost = %q", got)
		}
		e.waitFor("the workload to see the postStart hook's file", func() bool { return strings.Contains(e.journal(unit), "saw-poststart") })
		e.run("systemctl", "stop", unit)
		if j := e.journal(unit); !strings.Contains(j, "term-after-prestop") {
			t.Errorf("the workload got SIGTERM without the preStop hook's file:\n%s", j)
		}
		if f, _ := bndl.ReadHookFailure(bundle("hooked")); len(f) != 0 {
			t.Errorf("failures recorded: %+v", f)
		}
	})

	// The kubelet runs preStop only to stop a running container.
	t.Run("preStop skipped after an exit", func(t *testing.T) {
		e.mustStartPod("done", pod("done", `  restartPolicy: Never
  containers:
  - name: main
    image: busybox:e2e
    command: ["sh", "-c", "echo bye"]
    lifecycle:
      preStop:
        exec: {command: ["sh", "-c", "echo never"]}
`))
		unit := unitgen.UnitName("default", "done", "main")
		e.waitFor("the exit record", func() bool { _, err := bndl.ReadExit(bundle("done")); return err == nil })
		if j := e.journal(unit); !strings.Contains(j, "no preStop hook") {
			t.Errorf("preStop not skipped:\n%s", j)
		}
	})

	// A failing postStart hook kills the container, which restarts, and
	// leaves the kubelet's message for berthd. The first run's hook
	// succeeds (a failing one fails the first start job, which RunPod
	// takes for a failed start: pods.PostStartFailedSince is for that);
	// the workload then exits, and the hooks of its restarts fail: the
	// pod's /dev/shm outlives a container's run.
	t.Run("failing postStart restarts", func(t *testing.T) {
		e.mustStartPod("failing", pod("failing", `  containers:
  - name: main
    image: busybox:e2e
    command: ["sh", "-c", "sleep 1; exit 1"]
    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "if [ -e /dev/shm/ran ]; then echo refused; exit 7; fi; touch /dev/shm/ran"]}
`))
		unit := unitgen.UnitName("default", "failing", "main")
		var fs []bndl.HookFailure
		e.waitFor("a failed postStart hook", func() bool {
			fs, _ = bndl.ReadHookFailure(bundle("failing"))
			return len(fs) > 0
		})
		want := `Exec lifecycle hook ([sh -c if [ -e /dev/shm/ran ]; then echo refused; exit 7; fi; touch /dev/shm/ran]) for Container "main" in Pod "failing_default(`
		if fs[0].Kind != bndl.HookPostStart || !strings.HasPrefix(fs[0].Message, want) ||
			!strings.HasSuffix(fs[0].Message, `failed - error: command 'sh -c if [ -e /dev/shm/ran ]; then echo refused; exit 7; fi; touch /dev/shm/ran' exited with 7: , message: "refused\n"`) {
			t.Errorf("failure %+v", fs)
		}
		first, _ := strconv.Atoi(e.show(unit, "NRestarts"))
		e.waitFor("another restart", func() bool {
			n, _ := strconv.Atoi(e.show(unit, "NRestarts"))
			return n > first
		})
		e.run("systemctl", "stop", unit)
	})

	// httpGet hooks go to the pod (here, without a pod network, on its own
	// loopback) with their path and headers.
	t.Run("httpGet", func(t *testing.T) {
		cgi := `mkdir -p /www/cgi-bin; printf '#!/bin/sh\necho \"$HTTP_X_BERTH $REQUEST_URI\" >> /tmp/got\necho Content-Type: text/plain\necho\necho ok\n' > /www/cgi-bin/hook; chmod +x /www/cgi-bin/hook`
		e.mustStartPod("web", pod("web", `  containers:
  - name: main
    image: busybox:e2e
    command: ["sh", "-c", "`+cgi+`; trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
    ports: [{name: http, containerPort: 8080}]
    lifecycle:
      preStop:
        httpGet: {path: "/cgi-bin/hook?stop=1", port: http, httpHeaders: [{name: X-Berth, value: prestop}]}
`))
		unit := unitgen.UnitName("default", "web", "main")
		pid := e.mainPID(unit)
		e.waitFor("the server", func() bool {
			// The container's own nc, in all its namespaces.
			out, _ := e.n.Run(e.ctx(), "nsenter", "-t", strconv.Itoa(pid), "-m", "-p", "-u", "-i", "-n", "--", "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc 127.0.0.1 8080`)
			return strings.Contains(out, "HTTP/")
		})
		e.run("systemctl", "stop", unit)
		if f, _ := bndl.ReadHookFailure(bundle("web")); len(f) != 0 {
			t.Errorf("failures recorded: %+v", f)
		}
		if j := e.journal(unit); strings.Contains(j, "lifecycle hook") {
			t.Errorf("hook failed:\n%s", j)
		}
		// What the server's CGI wrote is in the container's upper dir.
		if got, _ := os.ReadFile(filepath.Join(bundle("web"), bndl.UpperDir, "tmp", "got")); string(got) != "prestop /cgi-bin/hook?stop=1\n" {
			t.Errorf("the server got %q", got)
		}
	})

	// A sleep preStop hook delays the stop signal.
	t.Run("sleep", func(t *testing.T) {
		e.mustStartPod("sleepy", pod("sleepy", `  containers:
  - name: main
    image: busybox:e2e
    command: ["sh", "-c", "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done"]
    lifecycle:
      preStop:
        sleep: {seconds: 3}
`))
		unit := unitgen.UnitName("default", "sleepy", "main")
		e.waitFor(unit+" ready", func() bool { return strings.Contains(e.journal(unit), "ready") })
		ev := e.stopObserved(unit)
		// systemd's own stamps: from the stop job's start to the main
		// process's end, which the hook's sleep comes before.
		if took := ev.ExecMainExit.Sub(ev.ActiveExit); took < 3*time.Second-stampSlack {
			t.Errorf("main process ended %v after the stop began, before the 3 s sleep hook was over", took)
		}
		if !strings.Contains(e.journal(unit), "got-term") {
			t.Error("no SIGTERM after the sleep hook")
		}
	})
}
