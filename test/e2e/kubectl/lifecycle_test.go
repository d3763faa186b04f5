package kubectl

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// The pods of the lifecycle scenario.
//
//   - hooked: its postStart exec hook writes the file the workload waits
//     for; its preStop exec hook writes the file the workload's TERM trap
//     looks for.
//   - badhook: its postStart hook fails: the kubelet's event, and the
//     container is killed and restarted.
//   - httphook: its postStart httpGet hook (a named port, the pod's
//     address) calls a CGI script of the pod's httpd, a sidecar whose
//     startup probe holds the container back until it listens (a server
//     the container starts itself races its own postStart hook, on a
//     cluster too: CI lost that race under load), which touches a file
//     of their shared emptyDir.
//   - livehook: fails its liveness probe; berthd runs its preStop hook
//     before the stop signal, as the kubelet does for that kill too.
//   - shared: shareProcessNamespace: each container sees the other's
//     processes, and PID 1 is the pod's pause.
const lifecyclePods = `apiVersion: v1
kind: Pod
metadata:
  name: hooked
  namespace: life
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'trap "[ -f /tmp/prestop ] && echo saw prestop; exit 0" TERM; while [ ! -f /tmp/poststart ]; do sleep 0.1; done; echo saw poststart; while :; do sleep 0.2; done']
    lifecycle:
      postStart:
        exec:
          command: [sh, -c, 'echo hi > /tmp/poststart']
      preStop:
        exec:
          command: [sh, -c, 'touch /tmp/prestop']
---
apiVersion: v1
kind: Pod
metadata:
  name: badhook
  namespace: life
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'exec sleep 3600']
    lifecycle:
      postStart:
        exec:
          command: [sh, -c, 'echo nope; exit 7']
---
apiVersion: v1
kind: Pod
metadata:
  name: httphook
  namespace: life
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{name: shared, emptyDir: {}}]
  initContainers:
  - name: web
    image: %[1]s
    restartPolicy: Always
    ports:
    - name: web
      containerPort: 8080
    startupProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
    volumeMounts: [{name: shared, mountPath: /shared}]
    command:
    - sh
    - -c
    - |
      mkdir -p /tmp/www/cgi-bin
      printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\ntouch /shared/hooked\necho ok\n' > /tmp/www/cgi-bin/hook
      chmod 755 /tmp/www/cgi-bin/hook
      exec httpd -f -p 8080 -h /tmp/www
  containers:
  - name: c
    image: %[1]s
    ports:
    - name: web
      containerPort: 8080
    volumeMounts: [{name: shared, mountPath: /shared}]
    command: [sh, -c, 'while [ ! -f /shared/hooked ]; do sleep 0.1; done; echo saw http hook; exec sleep 3600']
    lifecycle:
      postStart:
        httpGet:
          path: /cgi-bin/hook
          port: web
      preStop:
        sleep:
          seconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: livehook
  namespace: life
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'rm -f /tmp/prestop; trap "[ -f /tmp/prestop ] && echo saw prestop; exit 0" TERM; while :; do sleep 0.2; done']
    livenessProbe:
      exec:
        command: ["false"]
      initialDelaySeconds: 2
      periodSeconds: 1
      failureThreshold: 1
    lifecycle:
      preStop:
        exec:
          command: [sh, -c, 'touch /tmp/prestop']
---
apiVersion: v1
kind: Pod
metadata:
  name: shared
  namespace: life
spec:
  terminationGracePeriodSeconds: 2
  shareProcessNamespace: true
  containers:
  - name: a
    image: %[1]s
    command: [sleep, "1234"]
  - name: b
    image: %[1]s
    command: [sleep, "3600"]
`

// TestLifecycle runs postStart and preStop hooks (exec, httpGet, sleep)
// and a shared process namespace on a real node with the stock kubectl.
func TestLifecycle(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	k.must("create", "namespace", "life")
	e.write("/var/tmp/life.yaml", fmt.Sprintf(lifecyclePods, e.signed.Ref))
	e.apply(k, "/namespaces/life/pods/", "/var/tmp/life.yaml")

	// postStart ran in the container (its file is there) before Running.
	k.eventually("hooked saw its postStart hook", contains("saw poststart"), "logs", "hooked", "-n", "life")
	if out := k.must("get", "pod", "hooked", "-n", "life"); !regexp.MustCompile(`(?m)^hooked\s+1/1\s+Running\s+0\s`).MatchString(out) {
		t.Errorf("hooked:\n%s", out)
	}
	k.eventually("httphook's httpGet hook reached the workload", contains("saw http hook"), "logs", "httphook", "-n", "life")

	// A failing postStart hook: the kubelet's event (without the hook's
	// output), and the container is restarted.
	k.eventually("badhook's FailedPostStartHook", contains("Warning FailedPostStartHook: PostStartHook failed"),
		"get", "events", "-n", "life", "--field-selector", "involvedObject.name=badhook", "-o", eventLines)
	k.eventually("badhook restarted", func(s string) bool { return s != "" && s != "0" },
		"get", "pod", "badhook", "-n", "life", "-o", "jsonpath={.status.containerStatuses[0].restartCount}")

	// A liveness kill runs the preStop hook first: the run that ended saw
	// its file.
	k.eventually("livehook's preStop before its liveness kill", contains("saw prestop"),
		"logs", "livehook", "-n", "life", "--previous")

	// Shared process namespace: b sees a's sleep, PID 1 is the pause.
	k.eventually("shared running", func(s string) bool { return regexp.MustCompile(`(?m)^shared\s+2/2\s+Running\s`).MatchString(s) },
		"get", "pod", "shared", "-n", "life")
	out := k.must("exec", "shared", "-n", "life", "-c", "b", "--", "sh", "-c", "cat /proc/1/comm; ps -o pid,args")
	if !strings.HasPrefix(out, "pause\n") || !strings.Contains(out, "sleep 1234") || !strings.Contains(out, "sleep 3600") {
		t.Errorf("the shared namespace seen from b:\n%s", out)
	}
	if out := k.must("exec", "shared", "-n", "life", "-c", "a", "--", "sh", "-c", "echo $$; cat /proc/1/comm"); strings.HasPrefix(out, "1\n") {
		t.Errorf("a process of a is PID 1 in a shared namespace:\n%s", out)
	}

	// preStop runs before SIGTERM: the workload's trap sees its file.
	k.must("delete", "pod", "hooked", "-n", "life", "--wait=true")
	e.journal("hooked/c", "saw prestop")

	k.must("delete", "namespace", "life", "--wait=true", "--timeout=120s")
	if out := e.run("sh", "-c", "systemctl list-units --all --no-legend 'berth-life_*' | wc -l"); strings.TrimSpace(out) != "0" {
		t.Errorf("units left after the namespace's deletion: %s", out)
	}
}
