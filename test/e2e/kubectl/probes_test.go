package kubectl

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/testenv"
)

// The pods of the probe scenario.
//
//   - ready: busybox httpd serves /tmp/www; its readiness probe asks for
//     /healthz, which the CGI scripts up and down create and remove (the
//     test calls them by the pod's IP from the node).
//   - live: its liveness probe asks for /alive, which never exists: it is
//     killed (its shell's TERM trap exits) and restarted again and again.
//   - stubborn: as live, but its PID 1 (httpd) ignores SIGTERM: it is
//     SIGKILLed when the probe's terminationGracePeriodSeconds runs out.
//   - start: nothing listens for 6 s; the startup probe (httpGet on a named
//     port) holds back the tcpSocket liveness probe, which would kill it.
const probePods = `apiVersion: v1
kind: Pod
metadata:
  name: ready
  namespace: probes
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: %[1]s
    ports:
    - name: http
      containerPort: 8080
    command:
    - sh
    - -c
    - |
      mkdir -p /tmp/www/cgi-bin
      for verb in up down; do
        cmd="touch /tmp/www/healthz"
        [ $verb = down ] && cmd="rm -f /tmp/www/healthz"
        printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\n%%s\necho %%s\n' "$cmd" "$verb" > /tmp/www/cgi-bin/$verb
        chmod 755 /tmp/www/cgi-bin/$verb
      done
      exec httpd -f -p 8080 -h /tmp/www
    readinessProbe:
      httpGet:
        path: /healthz
        port: http
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: live
  namespace: probes
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'mkdir -p /tmp/www && httpd -p 8080 -h /tmp/www && trap "exit 143" TERM && while :; do sleep 1; done']
    livenessProbe:
      httpGet:
        path: /alive
        port: 8080
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: start
  namespace: probes
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: %[1]s
    ports:
    - name: web
      containerPort: 8080
    command: [sh, -c, 'sleep 6; mkdir -p /tmp/www && touch /tmp/www/started && exec httpd -f -p 8080 -h /tmp/www']
    startupProbe:
      httpGet:
        path: /started
        port: web
      periodSeconds: 1
      failureThreshold: 60
    livenessProbe:
      tcpSocket:
        port: 8080
      periodSeconds: 1
      failureThreshold: 1
    readinessProbe:
      tcpSocket:
        port: web
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: stubborn
  namespace: probes
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'mkdir -p /tmp/www && exec httpd -f -p 8080 -h /tmp/www']
    livenessProbe:
      httpGet:
        path: /alive
        port: 8080
      periodSeconds: 1
      failureThreshold: 1
      terminationGracePeriodSeconds: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: execp
  namespace: probes
spec:
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'sleep 4; touch /tmp/ready; exec sleep 3600']
    readinessProbe:
      exec:
        command: [cat, /tmp/ready]
      periodSeconds: 1
`

// probeState is what kubectl shows of a one-container pod's probes: phase,
// started, ready, the Ready and ContainersReady conditions.
const probeState = `jsonpath={.status.phase} {.status.containerStatuses[0].started} {.status.containerStatuses[0].ready} {.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="ContainersReady")].status}`

// eventLines are a pod's events as "type reason: message" lines.
const eventLines = `jsonpath={range .items[*]}{.type} {.reason}: {.message}{"\n"}{end}`

// TestProbes runs liveness, readiness and startup probes on a real node
// with the stock kubectl: readiness failure keeps Ready False and recovery
// sets it True (also after berthd was SIGKILLed: probing resumes), a
// failing liveness probe restarts the container with the kubelet's events
// until it is in CrashLoopBackOff, and a startup probe holds the liveness
// probe back until it succeeds (httpGet on a named port, tcpSocket).
func TestProbes(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	k.must("create", "namespace", "probes")
	e.write("/var/tmp/probes.yaml", fmt.Sprintf(probePods, e.signed.Ref))
	e.apply(k, "/namespaces/probes/pods/", "/var/tmp/probes.yaml")

	// Readiness: running and started, but not ready until /healthz exists.
	k.eventually("ready to run, started and unready", func(s string) bool { return s == "Running true false False False" },
		"get", "pod", "ready", "-n", "probes", "-o", probeState)
	if out := k.must("get", "pod", "ready", "-n", "probes"); !regexp.MustCompile(`(?m)^ready\s+0/1\s+Running\s+0\s`).MatchString(out) {
		t.Errorf("an unready pod:\n%s", out)
	}
	if msg := k.must("get", "pod", "ready", "-n", "probes", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].reason}: {.status.conditions[?(@.type=="Ready")].message}`); msg != "ContainersNotReady: containers with unready status: [c]" {
		t.Errorf("Ready condition: %q", msg)
	}
	k.eventually("the readiness probe's Unhealthy event", contains("Warning Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404"),
		"get", "events", "-n", "probes", "--field-selector", "involvedObject.name=ready", "-o", eventLines)
	ip := k.must("get", "pod", "ready", "-n", "probes", "-o", "jsonpath={.status.podIP}")
	toggle := func(verb string) {
		t.Helper()
		if out := e.run("busybox", "wget", "-q", "-O", "-", "http://"+ip+":8080/cgi-bin/"+verb); out != verb+"\n" {
			t.Fatalf("cgi-bin/%s answered %q", verb, out)
		}
	}
	toggle("up")
	k.must("wait", "--for=condition=Ready", "pod/ready", "-n", "probes", "--timeout=60s")
	if out := k.must("get", "pod", "ready", "-n", "probes"); !regexp.MustCompile(`(?m)^ready\s+1/1\s+Running\s+0\s`).MatchString(out) {
		t.Errorf("a ready pod:\n%s", out)
	}
	if s := k.must("get", "pod", "ready", "-n", "probes", "-o", probeState); s != "Running true true True True" {
		t.Errorf("a ready pod's state: %q", s)
	}
	toggle("down")
	k.must("wait", "--for=condition=Ready=false", "pod/ready", "-n", "probes", "--timeout=60s")
	if s := k.must("get", "pod", "ready", "-n", "probes", "-o", probeState); s != "Running true false False False" {
		t.Errorf("unready again: %q", s)
	}

	// An exec probe runs in the container, confined like it: not ready
	// until the file exists, with the command's output in the event.
	k.must("wait", "--for=condition=Ready", "pod/execp", "-n", "probes", "--timeout=120s")
	k.eventually("the exec probe's Unhealthy event", contains("Warning Unhealthy: Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory"),
		"get", "events", "-n", "probes", "--field-selector", "involvedObject.name=execp", "-o", eventLines)

	// Startup gates liveness: the tcpSocket liveness probe would have
	// killed the container in its first 6 s.
	k.must("wait", "--for=condition=Ready", "pod/start", "-n", "probes", "--timeout=120s")
	if s := k.must("get", "pod", "start", "-n", "probes", "-o", probeState+` {.status.containerStatuses[0].restartCount}`); s != "Running true true True True 0" {
		t.Errorf("start: %q", s)
	}
	startEvents := k.must("get", "events", "-n", "probes", "--field-selector", "involvedObject.name=start", "-o", eventLines)
	if !regexp.MustCompile(`Warning Unhealthy: Startup probe failed: Get "http://` + regexp.QuoteMeta(k.must("get", "pod", "start", "-n", "probes", "-o", "jsonpath={.status.podIP}")) + `:8080/started": dial tcp [0-9.:]+: connect: connection refused`).MatchString(startEvents) {
		t.Errorf("no startup probe failure event:\n%s", startEvents)
	}
	t.Logf("start's events:\n%s", startEvents)
	if strings.Contains(startEvents, "Liveness probe failed") || strings.Contains(startEvents, "Killing") {
		t.Errorf("the liveness probe ran before the startup probe succeeded:\n%s", startEvents)
	}

	// Liveness: killed and restarted, again and again, with the kubelet's
	// events, into CrashLoopBackOff.
	k.eventually("live restarted twice", func(s string) bool { n, err := strconv.Atoi(s); return err == nil && n >= 2 },
		"get", "pod", "live", "-n", "probes", "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
	liveEvents := k.eventually("live's back-off event", contains("Warning BackOff: Back-off restarting failed container c in pod live_probes("),
		"get", "events", "-n", "probes", "--field-selector", "involvedObject.name=live", "-o", eventLines)
	for _, want := range []string{
		"Warning Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 404\n",
		"Normal Killing: Container c failed liveness probe, will be restarted\n",
		"Normal Started: Started container c\n",
	} {
		if !strings.Contains(liveEvents, want) {
			t.Errorf("live's events lack %q:\n%s", want, liveEvents)
		}
	}
	if last := k.must("get", "pod", "live", "-n", "probes", "-o", "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].lastState.terminated.reason}"); last != "143 Error" {
		t.Errorf("live's last termination: %q (the TERM trap exits 143)", last)
	}
	k.eventually("live in CrashLoopBackOff", contains("CrashLoopBackOff"), "get", "pod", "live", "-n", "probes")
	t.Logf("live's events:\n%s", liveEvents)

	// A PID 1 that ignores the stop signal is SIGKILLed after the probe's
	// grace period.
	k.eventually("stubborn restarted", func(s string) bool { n, err := strconv.Atoi(s); return err == nil && n >= 1 },
		"get", "pod", "stubborn", "-n", "probes", "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
	if last := k.must("get", "pod", "stubborn", "-n", "probes", "-o", "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].lastState.terminated.reason}"); last != "137 Error" {
		t.Errorf("stubborn's last termination: %q (SIGKILL)", last)
	}
	if ev := k.must("get", "events", "-n", "probes", "--field-selector", "involvedObject.name=stubborn", "-o", eventLines); !strings.Contains(ev, "Normal Killing: Container c failed liveness probe, will be restarted\n") {
		t.Errorf("stubborn's events:\n%s", ev)
	}

	// SIGKILL of berthd: the adopted container is probed again, and a
	// readiness change after the restart shows.
	e.kill()
	e.waitBerthd()
	toggle("up")
	k.must("wait", "--for=condition=Ready", "pod/ready", "-n", "probes", "--timeout=60s")
	if s := k.must("get", "pod", "ready", "-n", "probes", "-o", probeState+` {.status.containerStatuses[0].restartCount}`); s != "Running true true True True 0" {
		t.Errorf("ready after berthd's restart: %q", s)
	}
	toggle("down")
	k.must("wait", "--for=condition=Ready=false", "pod/ready", "-n", "probes", "--timeout=60s")
	// The adopted containers are probed again: start, whose startup probe
	// runs again as the kubelet's after its restart, is started and ready
	// without having been restarted.
	k.eventually("start probed again after berthd's restart", func(s string) bool { return s == "Running true true True True 0" },
		"get", "pod", "start", "-n", "probes", "-o", probeState+` {.status.containerStatuses[0].restartCount}`)
}

// benchProbePod is one pod of BenchmarkProbesOnNode: busybox httpd with
// an httpGet readiness probe at the default period (10 s).
const benchProbePod = `apiVersion: v1
kind: Pod
metadata:
  name: p%[2]d
  namespace: %[3]s
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'mkdir -p /tmp/www && echo ok > /tmp/www/healthz && exec httpd -f -p 8080 -h /tmp/www']
    readinessProbe:
      httpGet:
        path: /healthz
        port: 8080
---
`

// benchPlainPod is benchProbePod without its probe.
const benchPlainPod = `apiVersion: v1
kind: Pod
metadata:
  name: p%[2]d
  namespace: %[3]s
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'mkdir -p /tmp/www && echo ok > /tmp/www/healthz && exec httpd -f -p 8080 -h /tmp/www']
---
`

// BenchmarkProbesOnNode is issue 10 §7's probing cost on a real node:
// berthd's CPU (its process's user and system time) per second of wall
// time: idle, with BERTH_PROBE_NODE_PODS (default 100) pods of busybox
// httpd without probes, then with as many more pods each probed with
// httpGet every 10 s; what the probes add, scaled to 500 pods, is what
// probing 500 pods costs as a fraction of one core. Run once:
//
//	go test -run '^$' -bench ProbesOnNode -benchtime 1x -timeout 40m ./test/e2e/kubectl
func BenchmarkProbesOnNode(b *testing.B) {
	testenv.RequireRoot(b)
	pods := 100
	if v, err := strconv.Atoi(os.Getenv("BERTH_PROBE_NODE_PODS")); err == nil && v > 0 {
		pods = v
	}
	bn := newBenchNode(b, "probebench", "")
	n, signed, ctx := bn.n, bn.signed, bn.ctx
	sh := bn.sh
	// berthd's user and system time (this node may run cgroup v1, where
	// systemd accounts no CPU for berthd.service).
	cpu := func() (user, sys time.Duration) {
		pid := strings.TrimSpace(sh("systemctl", "show", "-P", "MainPID", "berthd.service"))
		stat := sh("cat", "/proc/"+pid+"/stat")
		f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+2:])
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			b.Fatalf("berthd's /proc/%s/stat: %s", pid, stat)
		}
		return time.Duration(utime) * time.Second / 100, time.Duration(stime) * time.Second / 100 // USER_HZ
	}
	// measure returns berthd's user and system CPU seconds per second.
	measure := func() (float64, float64) {
		u0, s0 := cpu()
		t0 := time.Now()
		time.Sleep(60 * time.Second)
		u1, s1 := cpu()
		wall := time.Since(t0).Seconds()
		return (u1 - u0).Seconds() / wall, (s1 - s0).Seconds() / wall
	}
	idleU, idleS := measure()
	// start applies count pods of tmpl in namespace ns and waits until
	// they are ready.
	start := func(ns, tmpl string, count int) {
		var y strings.Builder
		fmt.Fprintf(&y, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n---\n", ns)
		for i := range count {
			fmt.Fprintf(&y, tmpl, signed.Ref, i, ns)
		}
		f := "/var/tmp/" + ns + ".yaml"
		if err := os.WriteFile(n.HostPath(f), []byte(y.String()), 0o644); err != nil {
			b.Fatal(err)
		}
		sh("berth", "apply", "-f", f)
		for i := 0; ; i++ {
			out, err := n.Run(ctx, "berth", "wait", "--for=condition=Ready", "pod", "--all", "-n", ns, "--timeout=120s")
			if err == nil {
				break
			}
			if i == 10 {
				b.Fatalf("the pods never got ready: %v\n%s", err, out)
			}
		}
	}
	// The same pods without probes first: what running them costs berthd.
	start("plain", benchPlainPod, pods)
	time.Sleep(10 * time.Second)
	plainU, plainS := measure()
	start("bench", benchProbePod, pods)
	time.Sleep(10 * time.Second) // a period: the probes spread
	b.ResetTimer()
	probeU, probeS := measure()
	b.StopTimer()
	idle, plain := idleU+idleS, plainU+plainS
	b.ReportMetric(idle, "idle-cpu-s/s")
	b.ReportMetric(plain, "plain-cpu-s/s")
	b.ReportMetric(probeU, "probing-user-s/s")
	b.ReportMetric(probeS, "probing-sys-s/s")
	b.ReportMetric(float64(pods)/10, "probes/s")
	// The probed pods' own cost as pods (plain-idle) is not the probes'.
	b.ReportMetric((probeU+probeS-plain-(plain-idle))*500/float64(pods), "500pods-cpu-s/s")
}
