// Package worker runs agent/worker on a real systemd node (test/node): a
// small binary (workerd) runs the worker inside the node over a store of
// its own, and the test drives that store through workerd's control
// socket, as the API will: pods stored → running with the kubelet's status
// and Events, completion, trust refusal, graceful and outright deletion.
package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen"
)

const (
	layoutDir = "/var/tmp/images"
	policy    = "/var/tmp/policy.json"
	imageRef  = "busybox:e2e"
	ctlSock   = "/var/tmp/worker/ctl.sock"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = testenv.TempDir("berth-worker-bin")
		if buildErr != nil {
			return
		}
		buildErr = testenv.BuildStatic(binDir, "./cmd/berth-init", "./cmd/berth-hook", "./cmd/berth-verify", "./test/e2e/worker/workerd")
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

type env struct {
	t      *testing.T
	n      *node.Node
	client *http.Client
	log    *syncBuffer
	// stopWorkerd sends workerd a signal (TERM, KILL) and waits for it.
	stopWorkerd func(sig string)
	// imageSize is the layout's image's size as a registry's descriptors
	// give it: manifest, config and compressed layers.
	imageSize int64
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t)
	_, err := os.Stat(imagetest.Busybox)
	testenv.Require(t, err == nil, "needs busybox-static (/bin/busybox); `make test` installs it")
	n := nodetest.New(t, node.Options{Name: "worker", BinDir: binaries(t)})
	e := &env{t: t, n: n, log: &syncBuffer{}}
	t.Cleanup(func() {
		if e.stopWorkerd == nil {
			return
		}
		if t.Failed() {
			n.Run(context.Background(), "sh", "-c", "kill -USR1 $(cat /var/tmp/worker/pid)")
			time.Sleep(time.Second)
		}
		e.stopWorkerd("TERM")
		if t.Failed() {
			t.Logf("workerd log:\n%s", e.log.String())
		}
	})
	img, err := imagetest.BusyboxImage(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagetest.WriteLayout(e.host(layoutDir), imageRef, img); err != nil {
		t.Fatal(err)
	}
	e.imageSize = descriptorSize(t, img)
	e.writePolicy(`{"default": [{"type": "reject"}], "transports": {"oci": {"` + layoutDir + `": [{"type": "insecureAcceptAnything"}]}}}`)

	e.startWorkerd()
	return e
}

// descriptorSize is what a registry's descriptors say of img: its
// manifest's bytes, its config's and its compressed layers'.
func descriptorSize(t *testing.T, img v1.Image) int64 {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	if len(m.Layers) == 0 || m.Config.Size <= 0 {
		t.Fatalf("image without layers or config: %+v", m)
	}
	return n
}

// startWorkerd runs workerd in the node and waits for its control socket.
func (e *env) startWorkerd() {
	t, n := e.t, e.n
	ctx, cancel := context.WithCancel(context.Background())
	cmd := n.Command(ctx, "workerd", "--policy", policy, "--layout", layoutDir)
	cmd.Stdout, cmd.Stderr = e.log, e.log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	e.stopWorkerd = func(sig string) {
		// workerd is ended by its PID inside the node (nsenter does not
		// forward signals); what it started goes with the node.
		if out, err := n.Run(context.Background(), "sh", "-c", "kill -"+sig+" $(cat /var/tmp/worker/pid)"); err != nil {
			t.Logf("stop workerd: %v %s", err, out)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cancel()
			<-done
		}
		cancel()
	}
	sock := n.HostPath(ctlSock)
	e.client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	e.waitFor("workerd's control socket", func() bool {
		resp, err := e.client.Get("http://workerd/events")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
}

func (e *env) host(p string) string {
	return filepath.Join(e.n.Dir, "var", strings.TrimPrefix(p, "/var/"))
}

func (e *env) writePolicy(doc string) {
	e.t.Helper()
	if err := os.WriteFile(e.host(policy), []byte(doc), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) run(args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := e.n.Run(ctx, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// waitFor polls cond (every 100 ms, up to two minutes); a functional wait,
// not a timing assertion.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) create(name, spec string) {
	e.t.Helper()
	var pod corev1.Pod
	pod.Name, pod.Namespace = name, "default"
	if err := json.Unmarshal([]byte(spec), &pod.Spec); err != nil {
		e.t.Fatal(err)
	}
	b, _ := json.Marshal(&pod)
	resp, err := e.client.Post("http://workerd/pods", "application/json", bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		sc := bufio.NewScanner(resp.Body)
		sc.Scan()
		e.t.Fatalf("create %s: %s %s", name, resp.Status, sc.Text())
	}
}

// get returns the stored pod, nil once it is gone.
func (e *env) get(name string) *corev1.Pod {
	e.t.Helper()
	resp, err := e.client.Get("http://workerd/pods/default/" + name)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var pod corev1.Pod
	if err := json.NewDecoder(resp.Body).Decode(&pod); err != nil {
		e.t.Fatal(err)
	}
	return &pod
}

func (e *env) delete(name string, grace int) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("http://workerd/pods/default/%s?grace=%d", name, grace), nil)
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("delete %s: %s", name, resp.Status)
	}
}

func (e *env) events(pod string) []corev1.Event {
	e.t.Helper()
	resp, err := e.client.Get("http://workerd/events")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var list corev1.EventList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		e.t.Fatal(err)
	}
	var out []corev1.Event
	for _, ev := range list.Items {
		if ev.InvolvedObject.Name == pod {
			out = append(out, ev)
		}
	}
	return out
}

func findEvent(evs []corev1.Event, reason string) *corev1.Event {
	for i := range evs {
		if evs[i].Reason == reason {
			return &evs[i]
		}
	}
	return nil
}

func condition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

const sleeper = `{"containers": [{"name": "main", "image": "busybox:e2e", "command": ["sleep", "3600"]}], "terminationGracePeriodSeconds": 30}`

func TestWorker(t *testing.T) {
	e := newEnv(t)

	t.Run("StoredPodRuns", func(t *testing.T) {
		e.t = t
		e.create("web", sleeper)
		var pod *corev1.Pod
		e.waitFor("web Running and Ready", func() bool {
			pod = e.get("web")
			c := condition(pod, corev1.PodReady)
			return pod.Status.Phase == corev1.PodRunning && c != nil && c.Status == corev1.ConditionTrue
		})
		unit := unitgen.UnitName("default", "web", "main")
		st := pod.Status
		if st.HostIP != "10.0.0.1" || len(st.HostIPs) != 1 || st.StartTime == nil || st.QOSClass != corev1.PodQOSBestEffort {
			t.Errorf("hostIP %q %v startTime %v qos %q", st.HostIP, st.HostIPs, st.StartTime, st.QOSClass)
		}
		for _, ct := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodScheduled} {
			if c := condition(pod, ct); c == nil || c.Status != corev1.ConditionTrue || c.LastTransitionTime.IsZero() {
				t.Errorf("condition %s = %+v", ct, c)
			}
		}
		if len(st.ContainerStatuses) != 1 {
			t.Fatalf("containerStatuses %+v", st.ContainerStatuses)
		}
		cs := st.ContainerStatuses[0]
		if cs.ContainerID != "berth://"+unit || cs.Image != imageRef || !strings.HasPrefix(cs.ImageID, "sha256:") ||
			!cs.Ready || cs.Started == nil || !*cs.Started || cs.State.Running == nil || cs.State.Running.StartedAt.IsZero() || cs.RestartCount != 0 {
			t.Errorf("container status %+v", cs)
		}
		if s := strings.TrimSpace(e.run("systemctl", "show", "-P", "ActiveState", unit)); s != "active" {
			t.Errorf("%s is %s", unit, s)
		}
		evs := e.events("web")
		for reason, msg := range map[string]string{
			"Scheduled": "Successfully assigned default/web to ",
			"Pulling":   `Pulling image "busybox:e2e"`,
			"Created":   "Created container: main",
			"Started":   "Started container main",
		} {
			ev := findEvent(evs, reason)
			if ev == nil || !strings.HasPrefix(ev.Message, msg) || ev.Type != corev1.EventTypeNormal || ev.Count != 1 {
				t.Errorf("event %s = %+v", reason, ev)
				continue
			}
			wantFrom := "kubelet"
			if reason == "Scheduled" {
				wantFrom = "default-scheduler"
			} else if ev.InvolvedObject.FieldPath != "spec.containers{main}" {
				t.Errorf("event %s fieldPath %q", reason, ev.InvolvedObject.FieldPath)
			}
			if ev.Source.Component != wantFrom || ev.Source.Host == "" || ev.InvolvedObject.UID != pod.UID || ev.InvolvedObject.Kind != "Pod" {
				t.Errorf("event %s source %+v object %+v", reason, ev.Source, ev.InvolvedObject)
			}
		}
		// The kubelet's words since 1.30, with the image's size as a
		// runtime reports it.
		pulled := findEvent(evs, "Pulled")
		re := regexp.MustCompile(`^Successfully pulled image "busybox:e2e" in (\S+) \((\S+) including waiting\)\. Image size: (\d+) bytes\.$`)
		if pulled == nil {
			t.Fatal("no Pulled event")
		}
		t.Logf("Pulled: %s", pulled.Message)
		m := re.FindStringSubmatch(pulled.Message)
		if m == nil {
			t.Fatalf("Pulled: %q", pulled.Message)
		}
		for _, d := range m[1:3] {
			if v, err := time.ParseDuration(d); err != nil || v.Truncate(time.Millisecond) != v {
				t.Errorf("Pulled: duration %q is not one truncated to the millisecond (%v)", d, err)
			}
		}
		if want := strconv.FormatInt(e.imageSize, 10); m[3] != want {
			t.Errorf("Pulled: image size %s, want %s (manifest, config and layers)", m[3], want)
		}
		if pulled.Type != corev1.EventTypeNormal || pulled.Count != 1 || pulled.InvolvedObject.FieldPath != "spec.containers{main}" || pulled.Source.Component != "kubelet" {
			t.Errorf("Pulled: %+v", pulled)
		}
	})

	t.Run("NeverExitZeroSucceeds", func(t *testing.T) {
		e.t = t
		e.create("once", `{"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:e2e", "command": ["sh", "-c", "sleep 1; exit 0"]}]}`)
		var pod *corev1.Pod
		e.waitFor("once Succeeded", func() bool {
			pod = e.get("once")
			return pod.Status.Phase == corev1.PodSucceeded
		})
		cs := pod.Status.ContainerStatuses
		if len(cs) != 1 || cs[0].State.Terminated == nil {
			t.Fatalf("container statuses %+v", cs)
		}
		term := cs[0].State.Terminated
		if term.Reason != "Completed" || term.ExitCode != 0 || term.FinishedAt.IsZero() || term.StartedAt.IsZero() || cs[0].Ready {
			t.Errorf("terminated %+v ready %v", term, cs[0].Ready)
		}
		if c := condition(pod, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse || c.Reason != "PodCompleted" {
			t.Errorf("Ready condition %+v", c)
		}
	})

	t.Run("NeverExitOneFails", func(t *testing.T) {
		e.t = t
		e.create("broken", `{"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:e2e", "command": ["sh", "-c", "sleep 1; exit 3"]}]}`)
		var pod *corev1.Pod
		e.waitFor("broken Failed", func() bool {
			pod = e.get("broken")
			return pod.Status.Phase == corev1.PodFailed
		})
		if term := pod.Status.ContainerStatuses[0].State.Terminated; term == nil || term.Reason != "Error" || term.ExitCode != 3 {
			t.Errorf("terminated %+v", term)
		}
	})

	t.Run("GracefulDelete", func(t *testing.T) {
		e.t = t
		unit := unitgen.UnitName("default", "web", "main")
		e.delete("web", 5)
		e.waitFor("web deleted from the store", func() bool { return e.get("web") == nil })
		if s := strings.TrimSpace(e.run("systemctl", "show", "-P", "LoadState", unit)); s != "not-found" {
			t.Errorf("%s LoadState %s after deletion", unit, s)
		}
		if out, _ := e.n.Run(context.Background(), "ls", "/var/lib/berth/pods"); strings.Contains(out, "default_web") {
			t.Errorf("state directory left: %s", out)
		}
		if ev := findEvent(e.events("web"), "Killing"); ev == nil || ev.Message != "Stopping container main" {
			t.Errorf("Killing event %+v", ev)
		}
	})

	t.Run("DeletedOutright", func(t *testing.T) {
		e.t = t
		e.delete("once", 0)
		e.waitFor("once's state removed", func() bool {
			out, _ := e.n.Run(context.Background(), "ls", "/var/lib/berth/pods")
			return !strings.Contains(out, "default_once")
		})
	})

	t.Run("CrashLoopBackOff", func(t *testing.T) {
		e.t = t
		e.create("crash", `{"containers": [{"name": "main", "image": "busybox:e2e", "command": ["sh", "-c", "sleep 1; exit 1"]}]}`)
		var pod *corev1.Pod
		// The second back-off is 20 s: systemd's RestartUSec (10 s), then
		// berth-init start waits out the other 10 s.
		e.waitFor("crash in its second back-off", func() bool {
			pod = e.get("crash")
			cs := pod.Status.ContainerStatuses
			return len(cs) == 1 && cs[0].RestartCount >= 2 && cs[0].State.Waiting != nil &&
				cs[0].State.Waiting.Reason == "CrashLoopBackOff" && strings.HasPrefix(cs[0].State.Waiting.Message, "back-off 20s ")
		})
		cs := pod.Status.ContainerStatuses[0]
		if lt := cs.LastTerminationState.Terminated; lt == nil || lt.ExitCode != 1 || lt.Reason != "Error" {
			t.Errorf("lastState %+v", cs.LastTerminationState)
		}
		if pod.Status.Phase != corev1.PodRunning || cs.Ready {
			t.Errorf("phase %s ready %v", pod.Status.Phase, cs.Ready)
		}
		unit := unitgen.UnitName("default", "crash", "main")
		if s := strings.TrimSpace(e.run("systemctl", "show", "-P", "ActiveState", unit)); s != "activating" {
			t.Errorf("%s is %s during the back-off", unit, s)
		}
		// berth-init records the delay it waits out once systemd has run it
		// for the restart (the status says CrashLoopBackOff from the exit on).
		e.waitFor("berth-init's back-off record of 20 s", func() bool {
			var rec struct{ Delay time.Duration }
			b := e.run("cat", "/var/lib/berth/containers/"+unitgen.ContainerKey("default", "crash", "main")+"/backoff.json")
			return json.Unmarshal([]byte(b), &rec) == nil && rec.Delay == 20*time.Second
		})
		if ev := findEvent(e.events("crash"), "BackOff"); ev == nil || ev.Type != corev1.EventTypeWarning ||
			ev.Message != fmt.Sprintf("Back-off restarting failed container main in pod crash_default(%s)", pod.UID) {
			t.Errorf("BackOff event %+v", ev)
		}
		e.delete("crash", 0)
	})

	t.Run("KilledWorkerAdoptsAndStarts", func(t *testing.T) {
		e.t = t
		// Pods created, then workerd SIGKILLed while it starts them: some
		// half-started, some not begun.
		names := []string{"k1", "k2", "k3", "k4"}
		for _, name := range names {
			e.create(name, sleeper)
		}
		e.stopWorkerd("KILL")
		e.startWorkerd()
		for _, name := range names {
			e.waitFor(name+" Running", func() bool {
				p := e.get(name)
				return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready
			})
			out := e.run("systemctl", "list-units", "--all", "--plain", "--no-legend", "berth-default_"+name+"_*")
			if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != 1 {
				t.Errorf("%s has %d units:\n%s", name, n, out)
			}
		}
		// Restarted again with everything running: adopted as is.
		before := e.get("k1").Status
		e.stopWorkerd("KILL")
		e.startWorkerd()
		time.Sleep(2 * time.Second) // let it sync; nothing must change
		after := e.get("k1").Status
		if !reflect.DeepEqual(before, after) {
			t.Errorf("adoption changed the status:\n%+v\n%+v", before, after)
		}
	})

	t.Run("PullBackOff", func(t *testing.T) {
		e.t = t
		e.create("missing", `{"containers": [{"name": "main", "image": "busybox:missing", "command": ["sleep", "3600"]}]}`)
		var pod *corev1.Pod
		waiting := func(reason string) func() bool {
			return func() bool {
				pod = e.get("missing")
				cs := pod.Status.ContainerStatuses
				return len(cs) == 1 && cs[0].State.Waiting != nil && cs[0].State.Waiting.Reason == reason
			}
		}
		e.waitFor("ErrImagePull", waiting("ErrImagePull"))
		// The kubelet's image back-off: a second pull after 10 s fails and
		// doubles it, and the next sync finds the image in back-off.
		e.waitFor("ImagePullBackOff", waiting("ImagePullBackOff"))
		w := pod.Status.ContainerStatuses[0].State.Waiting
		if !strings.HasPrefix(w.Message, `Back-off pulling image "busybox:missing": ErrImagePull: `) || pod.Status.Phase != corev1.PodPending {
			t.Errorf("waiting %+v phase %s", w, pod.Status.Phase)
		}
		evs := e.events("missing")
		if ev := findEvent(evs, "BackOff"); ev == nil || ev.Message != `Back-off pulling image "busybox:missing"` || ev.Type != corev1.EventTypeNormal {
			t.Errorf("BackOff event %+v", ev)
		}
		var pullFailed, errImagePull bool
		for _, ev := range evs {
			pullFailed = pullFailed || (ev.Reason == "Failed" && ev.Type == corev1.EventTypeWarning && strings.HasPrefix(ev.Message, `Failed to pull image "busybox:missing": `))
			errImagePull = errImagePull || (ev.Reason == "Failed" && ev.Message == "Error: ErrImagePull" && ev.Count >= 2)
		}
		if !pullFailed || !errImagePull {
			t.Errorf("Failed events (pull, and \"Error: ErrImagePull\" counted twice): %+v", evs)
		}
		e.delete("missing", 0)
	})

	t.Run("UnsignedImageRefused", func(t *testing.T) {
		e.t = t
		e.writePolicy(`{"default": [{"type": "reject"}]}`)
		e.create("unsigned", sleeper)
		var pod *corev1.Pod
		e.waitFor("unsigned waiting with SignatureValidationFailed", func() bool {
			pod = e.get("unsigned")
			cs := pod.Status.ContainerStatuses
			return len(cs) == 1 && cs[0].State.Waiting != nil && cs[0].State.Waiting.Reason == "SignatureValidationFailed"
		})
		w := pod.Status.ContainerStatuses[0].State.Waiting
		if !strings.Contains(w.Message, "because the signature validation failed: ") || pod.Status.Phase != corev1.PodPending {
			t.Errorf("waiting %+v phase %s", w, pod.Status.Phase)
		}
		var failed *corev1.Event
		for _, ev := range e.events("unsigned") {
			if ev.Reason == "Failed" && strings.HasPrefix(ev.Message, `Failed to pull image "busybox:e2e": `) {
				failed = &ev
			}
		}
		if failed == nil || failed.Type != corev1.EventTypeWarning || !strings.Contains(failed.Message, "rejected") {
			t.Errorf("no Warning Failed event with the policy's reason: %+v", e.events("unsigned"))
		}
		if out, _ := e.n.Run(context.Background(), "systemctl", "list-units", "--all", "--plain", "--no-legend", "berth-default_unsigned*"); strings.TrimSpace(out) != "" {
			t.Errorf("units of a refused pod: %s", out)
		}
	})
}
