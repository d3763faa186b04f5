package logs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/logs"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/unitgen"
)

// journal reads the node's journal with the node's journalctl and
// systemctl, as berthd reads its host's. nsenter stays in between as their
// parent, and killing it (ctx done) would leave them running, so each dies
// with it (setpriv --pdeathsig), as berthd's own children die when killed.
func journal(n *node.Node) *logs.Journal {
	return logs.New(func(ctx context.Context, args ...string) *exec.Cmd {
		return n.Command(ctx, append([]string{"setpriv", "--pdeathsig", "KILL", "--"}, args...)...)
	})
}

// container runs script as the unit of container c of pod ns/name with
// uid, the way unitgen names and marks a container's unit, with extra
// systemd-run properties.
func container(t *testing.T, n *node.Node, pod *corev1.Pod, c, script string, props ...string) string {
	t.Helper()
	unit := unitgen.UnitName(pod.Namespace, pod.Name, c)
	args := []string{"systemd-run", "--unit=" + unit, "--collect",
		"-p", "LogExtraFields=" + unitgen.PodUIDField + "=" + string(pod.UID),
		"-p", "SyslogIdentifier=" + pod.Name + "/" + c}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	run(t, n, append(args, "/bin/sh", "-c", script)...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = n.Run(ctx, "systemctl", "stop", unit)
	})
	return unit
}

func run(t *testing.T, n *node.Node, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := n.Run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newPod(name, uid string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID(uid)}}
}

func read(t *testing.T, j *logs.Journal, pod *corev1.Pod, c string, opts *corev1.PodLogOptions) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var b bytes.Buffer
	err := j.ContainerLogs(ctx, pod, c, opts, &b)
	return b.String(), err
}

// eventually reads until ok says the output is there (journald takes in
// a stream's lines asynchronously).
func eventually(t *testing.T, j *logs.Journal, pod *corev1.Pod, c string, opts *corev1.PodLogOptions, ok func(string) bool) string {
	t.Helper()
	var out string
	var err error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if out, err = read(t, j, pod, c, opts); err == nil && ok(out) {
			return out
		}
	}
	t.Fatalf("logs of %s/%s never as expected; last: %q, %v", pod.Name, c, out, err)
	return ""
}

func equals(want string) func(string) bool { return func(s string) bool { return s == want } }

func ptr[T any](v T) *T { return &v }

func TestJournal(t *testing.T) {
	n := nodetest.New(t, node.Options{Name: "logs"})
	j := journal(n)

	// Three runs of one container: the first two exit and systemd
	// restarts the unit, the third stays. Each run writes a line with a
	// byte that is not UTF-8 (journalctl's JSON has it as an array).
	pod := newPod("web", "uid-1")
	script := `n=$(cat /run/web-runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > /run/web-runs
echo "run $n one"; printf 'run %s \377bytes\n' $n; echo "run $n three"
if [ $n -lt 3 ]; then exit 1; fi
exec sleep 1000`
	container(t, n, pod, "app", script, "Restart=always", "RestartSec=100ms")
	cur := "run 3 one\nrun 3 \xffbytes\nrun 3 three\n"
	eventually(t, j, pod, "app", nil, equals(cur))

	t.Run("previous", func(t *testing.T) {
		out, err := read(t, j, pod, "app", &corev1.PodLogOptions{Previous: true})
		if want := "run 2 one\nrun 2 \xffbytes\nrun 2 three\n"; err != nil || out != want {
			t.Errorf("previous: %q, %v; want %q", out, err, want)
		}
	})
	t.Run("back-off", func(t *testing.T) {
		// A crash loop between runs (systemd's auto-restart wait, the
		// kubelet's CrashLoopBackOff): plain and --previous both show the
		// run that ended.
		pod := newPod("loop", "uid-loop")
		unit := container(t, n, pod, "app", `n=$(cat /run/loop-runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > /run/loop-runs; echo "loop $n"; exit 1`,
			"Restart=always", "RestartSec=1h")
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			if st := run(t, n, "systemctl", "show", "-P", "SubState", unit); strings.TrimSpace(st) == "auto-restart" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the unit never waited to restart")
			}
		}
		t.Cleanup(func() {
			if t.Failed() {
				// What journald stored of the run, with every field: which
				// of them it could attach decides which run a line is in.
				out, _ := n.Run(context.Background(), "journalctl", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=loop/app")
				t.Logf("entries of loop/app:\n%s", out)
				out, _ = n.Run(context.Background(), "systemctl", "show", "--property=ActiveState,SubState,InvocationID", unit)
				t.Logf("unit:\n%s", out)
			}
		})
		eventually(t, j, pod, "app", nil, equals("loop 1\n"))
		// The kubelet's CrashLoopBackOff: the container waits, its last
		// termination is the run that ended, and --previous shows it too.
		if out, err := read(t, j, pod, "app", &corev1.PodLogOptions{Previous: true}); err != nil || out != "loop 1\n" {
			t.Errorf("previous in back-off: %q, %v; want the run that ended", out, err)
		}
	})
	t.Run("tail", func(t *testing.T) {
		for tail, want := range map[int64]string{0: "", 1: "run 3 three\n", 2: "run 3 \xffbytes\nrun 3 three\n", 100: cur} {
			if out, err := read(t, j, pod, "app", &corev1.PodLogOptions{TailLines: ptr(tail)}); err != nil || out != want {
				t.Errorf("tail %d: %q, %v; want %q", tail, out, err, want)
			}
		}
	})
	t.Run("timestamps", func(t *testing.T) {
		out, err := read(t, j, pod, "app", &corev1.PodLogOptions{Timestamps: true})
		if err != nil {
			t.Fatal(err)
		}
		stamp := regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) `)
		var lines []string
		for _, l := range strings.SplitAfter(out, "\n") {
			if l == "" {
				continue
			}
			m := stamp.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("line without the kubelet's timestamp: %q", l)
			}
			ts, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil || time.Since(ts) < 0 || time.Since(ts) > time.Hour {
				t.Errorf("timestamp %s: %v", m[1], err)
			}
			lines = append(lines, strings.TrimPrefix(l, m[0]))
		}
		if got := strings.Join(lines, ""); got != cur {
			t.Errorf("lines after their timestamps: %q", got)
		}
	})
	t.Run("limitBytes", func(t *testing.T) {
		for limit, want := range map[int64]string{1: "r", 11: "run 3 one\nr", 1000: cur} {
			if out, err := read(t, j, pod, "app", &corev1.PodLogOptions{LimitBytes: ptr(limit)}); err != nil || out != want {
				t.Errorf("limitBytes %d: %q, %v; want %q", limit, out, err, want)
			}
		}
		out, err := read(t, j, pod, "app", &corev1.PodLogOptions{LimitBytes: ptr[int64](42), Timestamps: true})
		if err != nil || len(out) != 42 || !strings.HasSuffix(out, "Z run 3 one\n2") {
			t.Errorf("limitBytes 42 with timestamps counts the prefix: %q, %v", out, err)
		}
	})
	t.Run("since", func(t *testing.T) {
		if out, err := read(t, j, pod, "app", &corev1.PodLogOptions{SinceSeconds: ptr[int64](3600)}); err != nil || out != cur {
			t.Errorf("sinceSeconds 3600: %q, %v", out, err)
		}
		future := metav1.NewTime(time.Now().Add(time.Hour))
		if out, err := read(t, j, pod, "app", &corev1.PodLogOptions{SinceTime: &future}); err != nil || out != "" {
			t.Errorf("sinceTime in an hour: %q, %v", out, err)
		}
		// From the last line's own time, to the microsecond: it is shown;
		// from 1µs later, nothing.
		stamped, err := read(t, j, pod, "app", &corev1.PodLogOptions{Timestamps: true, TailLines: ptr[int64](1)})
		if err != nil {
			t.Fatal(err)
		}
		ts, err := time.Parse(time.RFC3339Nano, strings.Fields(stamped)[0])
		if err != nil {
			t.Fatal(err)
		}
		at := metav1.NewTime(ts)
		if out, err := read(t, j, pod, "app", &corev1.PodLogOptions{SinceTime: &at}); err != nil || !strings.HasSuffix(out, "run 3 three\n") {
			t.Errorf("sinceTime of the last line: %q, %v", out, err)
		}
		after := metav1.NewTime(ts.Add(time.Microsecond))
		if out, err := read(t, j, pod, "app", &corev1.PodLogOptions{SinceTime: &after}); err != nil || out != "" {
			t.Errorf("sinceTime 1µs after the last line: %q, %v", out, err)
		}
	})
	t.Run("recreated pod", func(t *testing.T) {
		// Same namespace, name and container, so the same unit name: the
		// entries of the pod before are not this pod's.
		again := newPod("web", "uid-2")
		if out, err := read(t, j, again, "app", nil); err != nil || out != "" {
			t.Errorf("logs of a pod of the same name: %q, %v", out, err)
		}
	})

	t.Run("no previous run", func(t *testing.T) {
		once := newPod("once", "uid-3")
		container(t, n, once, "c", "echo only; exec sleep 1000")
		eventually(t, j, once, "c", nil, equals("only\n"))
		_, err := read(t, j, once, "c", &corev1.PodLogOptions{Previous: true})
		if want := `previous terminated container "c" in pod "once" not found`; err == nil || err.Error() != want || !errdefs.IsInvalidArgument(err) {
			t.Errorf("previous of a container that never restarted: %v, want %q (InvalidArgument)", err, want)
		}
		if out, err := read(t, j, newPod("never", "uid-4"), "c", nil); err != nil || out != "" {
			t.Errorf("a container that never ran: %q, %v", out, err)
		}
	})

	t.Run("follow ends with the run", func(t *testing.T) {
		// The container exits for good (the unit is unloaded).
		p := newPod("job", "uid-5")
		container(t, n, p, "c", "echo first; while [ ! -e /run/job-go ]; do sleep 0.1; done; echo second; printf 'third'")
		eventually(t, j, p, "c", nil, equals("first\n"))
		out, err := followWhile(t, j, p, "c", &corev1.PodLogOptions{Follow: true}, func() { run(t, n, "touch", "/run/job-go") })
		if want := "first\nsecond\nthird\n"; err != nil || out != want {
			t.Errorf("follow of a run that ends: %q, %v; want %q", out, err, want)
		}

		// The container exits and systemd restarts it: the follow ends
		// with the run it followed.
		r := newPod("again", "uid-6")
		container(t, n, r, "c", `n=$(cat /run/again-runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > /run/again-runs
echo "run $n"; if [ $n -eq 1 ]; then while [ ! -e /run/again-go ]; do sleep 0.1; done; echo "run 1 end"; exit 3; fi; exec sleep 1000`,
			"Restart=always", "RestartSec=100ms")
		eventually(t, j, r, "c", nil, equals("run 1\n"))
		out, err = followWhile(t, j, r, "c", &corev1.PodLogOptions{Follow: true, Timestamps: false}, func() { run(t, n, "touch", "/run/again-go") })
		if want := "run 1\nrun 1 end\n"; err != nil || out != want {
			t.Errorf("follow of a run that is restarted: %q, %v; want %q", out, err, want)
		}
		eventually(t, j, r, "c", nil, equals("run 2\n"))
	})

	t.Run("follow cancelled", func(t *testing.T) {
		p := newPod("ticker", "uid-7")
		container(t, n, p, "c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done")
		eventually(t, j, p, "c", &corev1.PodLogOptions{TailLines: ptr[int64](1)}, func(s string) bool { return s != "" })
		base := runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		w := &cancelAfter{lines: 5, cancel: cancel}
		done := make(chan error, 1)
		go func() {
			done <- j.ContainerLogs(ctx, p, "c", &corev1.PodLogOptions{Follow: true, TailLines: ptr[int64](2)}, w)
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(2 * time.Minute):
			cancel()
			t.Fatal("ContainerLogs did not return after its context was cancelled")
		}
		if err != nil {
			t.Errorf("follow cancelled by its context: %v", err)
		}
		if got := w.String(); !regexp.MustCompile(`^(tick \d+\n){5,}$`).MatchString(got) {
			t.Errorf("followed output: %q", got)
		}
		// Nothing is left behind: no journalctl in the node, no goroutine.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			ps, _ := n.Run(context.Background(), "pgrep", "-a", "journalctl")
			g := runtime.NumGoroutine()
			if strings.TrimSpace(ps) == "" && g <= base {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the follow: journalctl left %q, %d goroutines (%d before)", ps, g, base)
			}
		}
	})
}

// followWhile follows the logs while act runs and returns what the follow
// wrote once ContainerLogs has returned by itself.
func followWhile(t *testing.T, j *logs.Journal, pod *corev1.Pod, c string, opts *corev1.PodLogOptions, act func()) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := &cancelAfter{lines: -1}
	done := make(chan error, 1)
	go func() { done <- j.ContainerLogs(ctx, pod, c, opts, w) }()
	// The follow has begun once it has written the first line.
	for !strings.Contains(w.String(), "\n") {
		select {
		case err := <-done:
			return w.String(), fmt.Errorf("returned before act: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	act()
	err := <-done
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the follow did not end with the run")
	}
	return w.String(), err
}

// cancelAfter collects output and cancels after lines lines (-1: never).
type cancelAfter struct {
	mu     sync.Mutex
	b      bytes.Buffer
	lines  int
	cancel func()
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.b.Write(p)
	if c.lines >= 0 && bytes.Count(c.b.Bytes(), []byte("\n")) >= c.lines {
		c.cancel()
	}
	return len(p), nil
}

func (c *cancelAfter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}
