package kubectl

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// The pods of the init scenario, sharing an emptyDir "work" whose file
// log records the order things ran in.
//
//   - seq: two init containers (the first outlives a SIGKILL of berthd),
//     a sidecar, and the app, which prints the log it finds.
//   - fails: restartPolicy Never, its init container exits 3: the pod
//     fails and its app container never starts.
//   - retry: restartPolicy OnFailure, its init container fails once and is
//     run again by systemd; then the app container completes the pod.
//   - job: restartPolicy Never with a sidecar: once the app container is
//     done the sidecar is stopped and the pod Succeeded.
const initPods = `apiVersion: v1
kind: Pod
metadata:
  name: seq
  namespace: init
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: work
    emptyDir: {}
  initContainers:
  - name: first
    image: %[1]s
    command: [sh, -c, 'while [ ! -f /work/go ]; do sleep 0.2; done; echo one >> /work/log']
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: %[1]s
    command: [sh, -c, 'cat /work/log; echo two >> /work/log']
    volumeMounts: [{name: work, mountPath: /work}]
  - name: side
    image: %[1]s
    restartPolicy: Always
    command: [sh, -c, 'echo side >> /work/log; exec sleep 3600']
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: app
    image: %[1]s
    command: [sh, -c, 'cat /work/log; exec sleep 3600']
    volumeMounts: [{name: work, mountPath: /work}]
---
apiVersion: v1
kind: Pod
metadata:
  name: fails
  namespace: init
spec:
  restartPolicy: Never
  initContainers:
  - name: bad
    image: %[1]s
    command: [sh, -c, 'echo giving up; exit 3']
  containers:
  - name: never
    image: %[1]s
    command: [sh, -c, 'echo should not run']
---
apiVersion: v1
kind: Pod
metadata:
  name: retry
  namespace: init
spec:
  restartPolicy: OnFailure
  volumes:
  - name: work
    emptyDir: {}
  initContainers:
  - name: flaky
    image: %[1]s
    command: [sh, -c, 'if [ -f /work/tried ]; then echo ok; exit 0; fi; touch /work/tried; echo not yet; exit 1']
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: done
    image: %[1]s
    command: [sh, -c, 'echo finished']
---
apiVersion: v1
kind: Pod
metadata:
  name: job
  namespace: init
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: helper
    image: %[1]s
    restartPolicy: Always
    command: [sh, -c, 'trap "echo helper stopped; exit 0" TERM; while :; do sleep 0.2; done']
  containers:
  - name: task
    image: %[1]s
    command: [sh, -c, 'sleep 1; echo task done']
`

// initState is kubectl's view of a pod's init sequence.
const initState = `jsonpath={.status.phase} {range .status.initContainerStatuses[*]}{.name}={.state.*.reason}{.state.running.startedAt}{","}{end} {.status.conditions[?(@.type=="Initialized")].status}`

// TestInitContainers runs init containers and sidecars on a real node with
// the stock kubectl: the sequence in order (each after the one before
// completed, the sidecar before the app, through a SIGKILL of berthd), the
// kubelet's Init:N/M, PodInitializing and Init:Error, a failed init
// container failing a restartPolicy Never pod, one retried under OnFailure,
// and a pod whose app container is done stopping its sidecar.
func TestInitContainers(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	k.must("create", "namespace", "init")
	e.write("/var/tmp/init.yaml", fmt.Sprintf(initPods, e.signed.Ref))
	e.apply(k, "/namespaces/init/pods/", "/var/tmp/init.yaml")

	// first waits for /work/go: the pod shows Init:0/3, everything after
	// first waits with PodInitializing, and nothing after it has begun.
	k.eventually("seq initializing", func(s string) bool {
		return regexp.MustCompile(`(?m)^seq\s+0/2\s+Init:0/3\s+0\s`).MatchString(s)
	}, "get", "pod", "seq", "-n", "init")
	k.eventually("first running", func(s string) bool { return strings.HasPrefix(s, "Pending first=20") },
		"get", "pod", "seq", "-n", "init", "-o", initState)
	st := k.must("get", "pod", "seq", "-n", "init", "-o", initState+` {.status.containerStatuses[0].state.waiting.reason} {.status.conditions[?(@.type=="Initialized")].message}`)
	if !strings.Contains(st, ",second=PodInitializing,side=PodInitializing, False PodInitializing containers with incomplete status: [first second side]") {
		t.Errorf("seq while first runs: %q", st)
	}

	// berthd is SIGKILLed while first runs: the pod is adopted as it is
	// (not removed as half-started), and the sequence goes on.
	e.kill()
	e.waitBerthd()
	// The emptyDir as berthd keeps it (agent/volumes).
	e.run("touch", "/var/lib/berth/pods/init_seq/volumes/empty-dir/work/go")
	k.eventually("seq running", func(s string) bool {
		return regexp.MustCompile(`(?m)^seq\s+2/2\s+Running\s+0\s`).MatchString(s)
	}, "get", "pod", "seq", "-n", "init")
	st = k.must("get", "pod", "seq", "-n", "init", "-o",
		`jsonpath={range .status.initContainerStatuses[*]}{.name}:{.state.terminated.reason}/{.state.terminated.exitCode}/{.ready}/{.started}/{.restartCount} {end}{.status.conditions[?(@.type=="Initialized")].status}`)
	if !strings.HasPrefix(st, "first:Completed/0/true/false/0 second:Completed/0/true/false/0 side://true/true/0 True") {
		t.Errorf("seq's init containers: %q", st)
	}
	if out := k.must("logs", "seq", "-n", "init", "-c", "second"); out != "one\n" {
		t.Errorf("second saw %q", out)
	}
	if out := k.must("logs", "seq", "-n", "init", "-c", "app"); out != "one\ntwo\nside\n" {
		t.Errorf("app saw %q: the init containers did not run in order before it", out)
	}
	ev := k.must("get", "events", "-n", "init", "--field-selector", "involvedObject.name=seq", "--sort-by=.metadata.creationTimestamp", "-o", eventLines)
	order := []string{"Started container first", "Started container second", "Started container side", "Started container app"}
	at := 0
	for _, want := range order {
		i := strings.Index(ev[at:], want)
		if i < 0 {
			t.Errorf("events out of order, %q missing after the %d-th:\n%s", want, at, ev)
			break
		}
		at += i
	}

	// fails: Init:Error, Failed, the app container never begun.
	k.eventually("fails failed", func(s string) bool { return regexp.MustCompile(`(?m)^fails\s+0/1\s+Init:Error\s+0\s`).MatchString(s) },
		"get", "pod", "fails", "-n", "init")
	st = k.must("get", "pod", "fails", "-n", "init", "-o",
		`jsonpath={.status.phase} {.status.initContainerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.waiting.reason} {.status.conditions[?(@.type=="Ready")].reason}`)
	if st != "Failed 3 PodInitializing PodFailed" {
		t.Errorf("fails: %q", st)
	}
	if _, msg, err := k.kubectl("", "logs", "fails", "-n", "init", "-c", "never"); err == nil || !strings.Contains(msg, `container "never" in pod "fails" is waiting to start: PodInitializing`) {
		t.Errorf("logs of the app container that never started: %v %s", err, msg)
	}
	if out := k.must("logs", "fails", "-n", "init", "-c", "bad"); out != "giving up\n" {
		t.Errorf("logs of bad: %q", out)
	}

	// retry: the init container ran twice, the pod completed (kubectl
	// counts an initialized pod's restarts without its init containers').
	k.eventually("retry completed", func(s string) bool { return regexp.MustCompile(`(?m)^retry\s+0/1\s+Completed\s+0\s`).MatchString(s) },
		"get", "pod", "retry", "-n", "init")
	if st := k.must("get", "pod", "retry", "-n", "init", "-o", `jsonpath={.status.phase} {.status.initContainerStatuses[0].restartCount} {.status.initContainerStatuses[0].lastState.terminated.exitCode}`); st != "Succeeded 1 1" {
		t.Errorf("retry: %q", st)
	}

	// job: the sidecar is stopped once the task is done; Succeeded.
	k.eventually("job completed", func(s string) bool { return s == "Succeeded" }, "get", "pod", "job", "-n", "init", "-o", "jsonpath={.status.phase}")
	if st := k.must("get", "pod", "job", "-n", "init", "-o", `jsonpath={.status.initContainerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}`); st != "0 Completed" {
		t.Errorf("job: %q", st)
	}
	if out := k.must("logs", "job", "-n", "init", "-c", "helper"); !strings.Contains(out, "helper stopped") {
		t.Errorf("the sidecar was not stopped with SIGTERM: %q", out)
	}
	k.eventually("job's Killing event", contains("Normal Killing: Stopping container helper"),
		"get", "events", "-n", "init", "--field-selector", "involvedObject.name=job", "-o", eventLines)

	// Deleting seq stops the sidecar and the app, and leaves no unit.
	k.must("delete", "pod", "seq", "-n", "init", "--wait=true")
	if out := e.run("sh", "-c", "systemctl list-units --all --no-legend 'berth-init_seq_*' | wc -l"); strings.TrimSpace(out) != "0" {
		t.Errorf("units left after the deletion: %s", out)
	}
}
