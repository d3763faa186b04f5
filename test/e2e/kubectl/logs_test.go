package kubectl

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/unitgen"
)

// logPods: web has two containers (main prints a line naming its run,
// side ticks every 200 ms), single prints two lines, job prints, waits for
// the file /go the test puts into its root and exits (restartPolicy
// Never), never waits for an image it may not pull.
const logPods = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: logs, labels: {app: logs}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: %[1]s
    command: ["sh", "-c", "echo \"run $(cat /proc/sys/kernel/random/uuid)\"; printf 'two\\nthree\\n'; exec sleep 3600"]
  - name: side
    image: %[1]s
    command: ["sh", "-c", "i=0; while :; do i=$((i+1)); echo \"tick $i\"; sleep 0.2; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: single, namespace: logs, labels: {app: logs}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: %[1]s, command: ["sh", "-c", "echo hello; echo world; exec sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: logs}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: %[1]s, command: ["sh", "-c", "echo one; while [ ! -e /go ]; do sleep 0.1; done; echo two"]}
---
apiVersion: v1
kind: Pod
metadata: {name: never, namespace: logs}
spec:
  containers:
  - {name: c, image: %[2]s, imagePullPolicy: Never}
`

func TestLogs(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	k.must("create", "namespace", "logs")
	e.write("/var/tmp/logs.yaml", fmt.Sprintf(logPods, e.signed.Ref, e.signed.Unsigned))
	if _, msg, err := k.kubectl("/logs/pods/", "apply", "-f", "/var/tmp/logs.yaml"); err != nil {
		t.Fatalf("apply: %v\n%s", err, msg)
	}
	k.must("wait", "--for=condition=Ready", "pod/web", "pod/single", "-n", "logs", "--timeout=120s")

	// One container: no -c needed; the output is what it printed.
	k.eventually("single's two lines", func(s string) bool { return s == "hello\nworld\n" }, "logs", "single", "-n", "logs")
	run := regexp.MustCompile(`^run ([0-9a-f-]{36})\ntwo\nthree\n$`)
	out := k.eventually("main's three lines", run.MatchString, "logs", "web", "-n", "logs", "-c", "main")
	firstRun := run.FindStringSubmatch(out)[1]

	// Several containers: kubectl picks the first and says so; the API
	// itself refuses to choose, with the apiserver's text.
	if out, msg, err := k.kubectl("", "logs", "web", "-n", "logs"); err != nil || !run.MatchString(out) || !strings.Contains(msg, `Defaulted container "main" out of: main, side`) {
		t.Errorf("logs web: %v %q %s", err, out, msg)
	}
	if _, msg, err := k.kubectl("", "get", "--raw", "/api/v1/namespaces/logs/pods/web/log"); err == nil ||
		!strings.Contains(msg, "a container name must be specified for pod web, choose one of: [main side]") {
		t.Errorf("the log of a pod of two containers, none named: %v %s", err, msg)
	}
	if _, msg, err := k.kubectl("", "logs", "web", "-n", "logs", "-c", "nope"); err == nil || !strings.Contains(msg, "container nope is not valid for pod web") {
		t.Errorf("logs -c nope: %v %s", err, msg)
	}
	k.eventually("ErrImageNeverPull", contains("ErrImageNeverPull"), "get", "pod", "never", "-n", "logs", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}")
	if _, msg, err := k.kubectl("", "logs", "never", "-n", "logs"); err == nil || !strings.Contains(msg, `Error from server (BadRequest): container "c" in pod "never" is waiting to start: ErrImageNeverPull`) {
		t.Errorf("logs of a waiting container: %v %s", err, msg)
	}

	// --tail, --timestamps, --limit-bytes, --since, --since-time.
	if out := k.must("logs", "web", "-n", "logs", "-c", "main", "--tail", "2"); out != "two\nthree\n" {
		t.Errorf("--tail 2: %q", out)
	}
	if out := k.must("logs", "web", "-n", "logs", "-c", "main", "--tail", "0"); out != "" {
		t.Errorf("--tail 0: %q", out)
	}
	if out := k.must("logs", "single", "-n", "logs", "--limit-bytes", "8"); out != "hello\nwo" {
		t.Errorf("--limit-bytes 8: %q", out)
	}
	stamped := k.must("logs", "single", "-n", "logs", "--timestamps")
	stamp := regexp.MustCompile(`(?m)^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (hello|world)$`)
	ms := stamp.FindAllStringSubmatch(stamped, -1)
	if len(ms) != 2 || strings.Count(stamped, "\n") != 2 {
		t.Fatalf("--timestamps: %q", stamped)
	}
	printed, err := time.Parse(time.RFC3339Nano, ms[1][1])
	if err != nil {
		t.Fatal(err)
	}
	if out := k.must("logs", "single", "-n", "logs", "--since", "1h"); out != "hello\nworld\n" {
		t.Errorf("--since 1h: %q", out)
	}
	for time.Since(printed) < 3*time.Second {
		time.Sleep(200 * time.Millisecond)
	}
	if out := k.must("logs", "single", "-n", "logs", "--since", "2s"); out != "" {
		t.Errorf("--since 2s, lines printed %s ago: %q", time.Since(printed), out)
	}
	if out := k.must("logs", "single", "-n", "logs", "--since-time", printed.Add(-time.Second).Format(time.RFC3339)); out != "hello\nworld\n" && out != "world\n" {
		t.Errorf("--since-time before the lines: %q", out)
	}
	if out := k.must("logs", "single", "-n", "logs", "--since-time", printed.Add(time.Minute).Format(time.RFC3339)); out != "" {
		t.Errorf("--since-time after the lines: %q", out)
	}
	if out := k.must("logs", "single", "-n", "logs", "--timestamps", "--since-time", ms[1][1]); !strings.HasSuffix(out, ms[1][0]+"\n") {
		t.Errorf("--since-time of the last line's own timestamp: %q", out)
	}

	// --all-containers and -l.
	all := k.must("logs", "web", "-n", "logs", "--all-containers")
	if !strings.Contains(all, "run "+firstRun+"\ntwo\nthree\n") || !strings.Contains(all, "tick 1\n") {
		t.Errorf("--all-containers: %q", all)
	}
	sel := k.must("logs", "-l", "app=logs", "-n", "logs", "--prefix", "--all-containers", "--tail", "1")
	for _, want := range []string{"[pod/single/c] world\n", "[pod/web/main] three\n", "[pod/web/side] tick "} {
		if !strings.Contains(sel, want) {
			t.Errorf("-l app=logs --all-containers lacks %q:\n%s", want, sel)
		}
	}

	// -f ends when the container's run ends.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k.eventually("job's first line", func(s string) bool { return s == "one\n" }, "logs", "job", "-n", "logs")
	follow := e.follow(ctx, "logs", "-f", "job", "-n", "logs")
	followed := &lockedBuffer{}
	follow.Stdout = followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "kubectl logs -f job to print", func() bool { return strings.Contains(followed.String(), "one\n") })
	jobUnit := unitgen.UnitName("logs", "job", "c")
	// The file the job waits for, put into its root from the node.
	e.run("sh", "-c", "touch /proc/$(systemctl show -p MainPID --value "+jobUnit+")/root/go")
	if err := follow.Wait(); err != nil || followed.String() != "one\ntwo\n" {
		t.Errorf("logs -f of a container that exits: %v %q", err, followed.String())
	}
	k.eventually("job Completed", contains("Completed"), "get", "pod", "job", "-n", "logs")
	if out := k.must("logs", "job", "-n", "logs", "-f"); out != "one\ntwo\n" {
		t.Errorf("logs -f of a completed container: %q", out)
	}

	// -f is ended by the client: kubectl killed, berthd's journalctl goes.
	follow = e.follow(ctx, "logs", "-f", "web", "-c", "side", "-n", "logs", "--tail", "1")
	followed = &lockedBuffer{}
	follow.Stdout = followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "kubectl logs -f web -c side to print", func() bool { return strings.Count(followed.String(), "\n") >= 5 })
	_ = follow.Process.Kill()
	_ = follow.Wait()
	if lines := strings.Split(strings.TrimSuffix(followed.String(), "\n"), "\n"); !consecutiveTicks(lines) {
		t.Errorf("logs -f of the ticker: %q", followed.String())
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		ps, _ := e.n.Run(ctx, "pgrep", "-a", "journalctl")
		if strings.TrimSpace(ps) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journalctl still runs after the client went away:\n%s", ps)
		}
	}

	// --previous: refused before a restart, the run before after one.
	if _, msg, err := k.kubectl("", "logs", "web", "-n", "logs", "-c", "main", "--previous"); err == nil ||
		!strings.Contains(msg, `previous terminated container "main" in pod "web" not found`) {
		t.Errorf("--previous before a restart: %v %s", err, msg)
	}
	e.run("systemctl", "kill", "--signal=SIGKILL", unitgen.UnitName("logs", "web", "main"))
	k.eventually("main restarted", func(s string) bool { return s == "1" }, "get", "pod", "web", "-n", "logs", "-o", `jsonpath={.status.containerStatuses[?(@.name=="main")].restartCount}`)
	out = k.eventually("main's new run", func(s string) bool { return run.MatchString(s) && !strings.Contains(s, firstRun) }, "logs", "web", "-n", "logs", "-c", "main")
	if out := k.must("logs", "web", "-n", "logs", "-c", "main", "--previous"); out != "run "+firstRun+"\ntwo\nthree\n" {
		t.Errorf("--previous after a restart: %q, want the first run's", out)
	}

	// Output reaches the journal while berthd is down.
	before := k.must("logs", "web", "-n", "logs", "-c", "side", "--tail", "1")
	e.run("systemctl", "stop", "berthd")
	last := lastTick(before)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		// Read straight from the journal: the ticker goes on meanwhile.
		out, _ := e.n.Run(ctx, "journalctl", "-q", "-o", "cat", "-n", "1", "_SYSTEMD_UNIT="+unitgen.UnitName("logs", "web", "side"))
		if lastTick(out) >= last+10 {
			last = lastTick(out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ticker stopped with berthd: last %q", out)
		}
	}
	e.run("systemctl", "start", "berthd")
	if err := nodeberthd.WaitReady(ctx, e.n); err != nil {
		t.Fatal(err)
	}
	out = k.must("logs", "web", "-n", "logs", "-c", "side")
	if lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); !consecutiveTicks(lines) || lastTick(out) < last || !strings.HasPrefix(out, "tick 1\n") {
		t.Errorf("logs after berthd was down from tick %s to tick %d: %d lines, last %d", strings.TrimSpace(before), last, len(lines), lastTick(out))
	}
}

// follow is a stock kubectl in the node that dies with the command
// (setpriv --pdeathsig: nsenter stays its parent, and killing nsenter
// alone would leave it running).
func (e *env) follow(ctx context.Context, args ...string) *exec.Cmd {
	cmd := e.n.Command(ctx, append([]string{"setpriv", "--pdeathsig", "KILL", "--", stockKubectl, "--kubeconfig", kubeconfig}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened", what)
		}
	}
}

func lastTick(out string) int {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	n, _ := strconv.Atoi(strings.TrimPrefix(lines[len(lines)-1], "tick "))
	return n
}

// consecutiveTicks: "tick N", "tick N+1", ... without a gap.
func consecutiveTicks(lines []string) bool {
	prev := -1
	for _, l := range lines {
		n, err := strconv.Atoi(strings.TrimPrefix(l, "tick "))
		if err != nil || !strings.HasPrefix(l, "tick ") || (prev >= 0 && n != prev+1) {
			return false
		}
		prev = n
	}
	return len(lines) > 0
}
