package pods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bndl "github.com/berth-dev/berth/agent/bundle"
	"github.com/berth-dev/berth/agent/volumes"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/verify"
)

// Unit tests of the runtime's own logic against fakes of its small
// interfaces. systemd's behaviour is tested against a real systemd in
// test/e2e and unitgen/systemd; here only what pods decides is checked.

// fakeUnits plays systemd and berth-init: Start waits for the bundle's
// release as berth-init would, then reports what start() says.
type fakeUnits struct {
	mu      sync.Mutex
	started map[string]bool // unit → running
	calls   []string
	start   func(name string) error // nil: success
	block   chan struct{}           // if set, Start waits for it after the release
	inStart chan string             // if set, told when Start holds the release
	// mainStart is every running unit's ExecMainStart.
	mainStart time.Time
}

func newFakeUnits() *fakeUnits { return &fakeUnits{started: map[string]bool{}} }

func (f *fakeUnits) log(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeUnits) EnsureSlice(ctx context.Context, name string, _ []unitgen.Property) error {
	f.log("slice " + name)
	return nil
}

func (f *fakeUnits) Start(ctx context.Context, name string, props []unitgen.Property) error {
	f.log("start " + name)
	var bundle string
	for _, p := range props {
		if p.Name == "ExecStart" {
			cmd := p.Value.([]unitgen.ExecCommand)[0]
			bundle = cmd.Args[len(cmd.Args)-1]
		}
	}
	if err := bndl.AwaitRelease(bundle); err != nil {
		return fmt.Errorf("berth-init: %w", err)
	}
	if f.inStart != nil {
		f.inStart <- name
	}
	if f.block != nil {
		<-f.block
	}
	if f.start != nil {
		if err := f.start(name); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.started[name] = true
	f.mu.Unlock()
	return nil
}

func (f *fakeUnits) Stop(ctx context.Context, name string) error {
	f.log("stop " + name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started[name] {
		return fmt.Errorf("unit %s: %w", name, errdefs.ErrNotFound)
	}
	delete(f.started, name)
	return nil
}

func (f *fakeUnits) ResetFailed(ctx context.Context, name string) error {
	return fmt.Errorf("unit %s: %w", name, errdefs.ErrNotFound)
}

func (f *fakeUnits) Status(ctx context.Context, name string) (*UnitState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started[name] {
		return nil, fmt.Errorf("unit %s: %w", name, errdefs.ErrNotFound)
	}
	return &UnitState{ActiveState: "active", SubState: "running", MainPID: 42, ExecMainStart: f.mainStart}, nil
}

// fakeImages is an image store with one layer directory and meta in memory.
type fakeImages struct {
	root, layer string
	files       map[string][]byte
	readErr     error
	mu          sync.Mutex
	meta        map[string][]byte
}

func (f *fakeImages) LayerDirs(*image.Image) []string { return []string{f.layer} }
func (f *fakeImages) Root() string                    { return f.root }
func (f *fakeImages) ReadFile(_ *image.Image, name string) ([]byte, error) {
	if f.readErr != nil {
		return nil, f.readErr
	}
	if b, ok := f.files[name]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
}
func (f *fakeImages) PutMeta(digest, name string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.meta[digest+"/"+name] = data
	return nil
}
func (f *fakeImages) GetMeta(digest, name string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.meta[digest+"/"+name]; ok {
		return b, nil
	}
	return nil, errdefs.ErrNotFound
}
func (f *fakeImages) MetaPath(digest, name string) string { return filepath.Join(f.root, digest, name) }

type fixture struct {
	rt     *Runtime
	units  *fakeUnits
	images *fakeImages
	state  string
	run    string
	layout string
}

// newFixture needs root: RunPod makes and pins the pod's namespaces.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	f := &fixture{units: newFakeUnits(), state: filepath.Join(dir, "state"), run: filepath.Join(dir, "run"), layout: filepath.Join(dir, "layout")}
	f.images = &fakeImages{root: filepath.Join(dir, "store"), layer: filepath.Join(dir, "layer"), meta: map[string][]byte{}}
	policy := filepath.Join(dir, "policy.json")
	must(t, os.WriteFile(policy, []byte(`{"default":[{"type":"reject"}],"transports":{"oci":{"`+f.layout+`":[{"type":"insecureAcceptAnything"}]}}}`), 0o600))
	f.rt = New(Config{StateDir: f.state, RunDir: f.run, Init: "/usr/libexec/berth/berth-init", Policy: policy}, f.units, f.images)
	t.Cleanup(func() {
		// Whatever a failing test left: namespaces unpinned, nothing mounted.
		pods, _ := filepath.Glob(filepath.Join(f.run, "pods", "*"))
		for _, p := range pods {
			_ = removeNamespaces(filepath.Join(p, "ns"))
		}
		states, _ := filepath.Glob(filepath.Join(f.state, "pods", "*"))
		for _, p := range states {
			_ = volumes.Teardown(filepath.Join(p, "volumes"))
		}
	})
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) pod(name string, containers ...string) (*corev1.Pod, map[string]PodImage) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	imgs := map[string]PodImage{}
	for _, c := range containers {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c, Image: "app", Command: []string{"/bin/sleep", "1000"}})
		imgs[c] = PodImage{Image: &image.Image{Digest: "sha256:" + strings.Repeat("a", 64), Config: ocispec.Image{}}, Layout: f.layout}
	}
	return pod, imgs
}

// leftovers lists what exists under the state and run directories.
func (f *fixture) leftovers(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, root := range []string{filepath.Join(f.state, "pods"), filepath.Join(f.state, "containers"), filepath.Join(f.run, "pods")} {
		ents, err := os.ReadDir(root)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range ents {
			out = append(out, filepath.Join(root, e.Name()))
		}
	}
	return out
}

func TestRunPodAndRemove(t *testing.T) {
	f := newFixture(t)
	pod, imgs := f.pod("web.v1", "app", "side")
	if err := f.rt.RunPod(context.Background(), pod, imgs); err != nil {
		t.Fatal(err)
	}
	sts, err := f.rt.PodStatus(context.Background(), "default", "web.v1")
	if err != nil || len(sts) != 2 || sts[0].State.Running == nil || sts[0].Unit != "berth-default_web.v1_app.service" {
		t.Fatalf("status: %+v, %v", sts, err)
	}
	// The bundle holds the contract's files; the FIFO is gone after the start.
	b := filepath.Join(f.state, "containers", "default_web.v1_app")
	for _, name := range []string{bndl.ConfigFile, bndl.SourceFile, bndl.RecordFile, bndl.SeccompFile} {
		if _, err := os.Stat(filepath.Join(b, name)); err != nil {
			t.Errorf("bundle file %s: %v", name, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(b, bndl.ReleaseFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("release FIFO left after a successful start: %v", err)
	}
	if err := f.rt.RunPod(context.Background(), pod, imgs); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second run: %v, want already-exists", err)
	}
	must(t, f.rt.RemovePod(context.Background(), "default", "web.v1"))
	if l := f.leftovers(t); len(l) > 0 {
		t.Errorf("left after remove: %v", l)
	}
	if err := f.rt.RemovePod(context.Background(), "default", "web.v1"); !errdefs.IsNotFound(err) {
		t.Errorf("second remove: %v, want not-found", err)
	}
}

// An exit record older than the running instance is the last run's
// (lastState); one newer is this run's own, written by stage-1 before the
// unit leaves active: the container has ended, and it is not running with
// its own end as its last state (what TestInitContainers' retry pod once
// reported).
func TestStatusOfAnEndingRun(t *testing.T) {
	f := newFixture(t)
	pod, imgs := f.pod("web", "app")
	must(t, f.rt.RunPod(context.Background(), pod, imgs))
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	f.units.mu.Lock()
	f.units.mainStart = t0
	f.units.mu.Unlock()
	b := filepath.Join(f.state, "containers", "default_web_app")

	must(t, bndl.WriteExit(b, bndl.ExitStatus{ExitCode: 1, Reason: bndl.ReasonError, FinishedAt: t0.Add(-time.Second)}))
	sts, err := f.rt.PodStatus(context.Background(), "default", "web")
	if err != nil || sts[0].State.Running == nil || sts[0].LastTerminationState.Terminated == nil || sts[0].LastTerminationState.Terminated.ExitCode != 1 {
		t.Fatalf("after an earlier run: %+v, %v", sts, err)
	}

	must(t, bndl.WriteExit(b, bndl.ExitStatus{ExitCode: 0, Reason: bndl.ReasonCompleted, FinishedAt: t0.Add(time.Second)}))
	sts, err = f.rt.PodStatus(context.Background(), "default", "web")
	if err != nil || sts[0].State.Running != nil || sts[0].LastTerminationState.Terminated != nil ||
		sts[0].State.Terminated == nil || sts[0].State.Terminated.ExitCode != 0 {
		t.Fatalf("after this run ended: %+v, %v", sts, err)
	}
}

// A failed start undoes everything: units stopped, bundles, namespaces and
// records removed, and the error keeps its class and names the container.
func TestFailedStartRollsBack(t *testing.T) {
	f := newFixture(t)
	jobErr := errors.New("start job for unit x finished with result \"failed\"")
	f.units.start = func(name string) error {
		if strings.Contains(name, "_second.") {
			return jobErr
		}
		return nil
	}
	pod, imgs := f.pod("web", "first", "second")
	err := f.rt.RunPod(context.Background(), pod, imgs)
	if !errors.Is(err, jobErr) || !strings.Contains(err.Error(), `container "second"`) {
		t.Fatalf("err = %v, want the job error naming the container", err)
	}
	if l := f.leftovers(t); len(l) > 0 {
		t.Errorf("left after a failed start: %v", l)
	}
	if f.units.started["berth-default_web_first.service"] {
		t.Error("the first container's unit still runs after the pod failed")
	}
}

func TestRunPodErrorClasses(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name  string
		edit  func(*corev1.Pod, map[string]PodImage)
		class func(error) bool
		want  string
	}{
		{"pod name not a DNS subdomain", func(p *corev1.Pod, _ map[string]PodImage) { p.Name = "x/../../etc" }, errdefs.IsInvalidArgument, "metadata.name: Invalid value"},
		{"namespace with a dot", func(p *corev1.Pod, _ map[string]PodImage) { p.Namespace = "a.b" }, errdefs.IsInvalidArgument, "metadata.namespace"},
		{"duplicate container", func(p *corev1.Pod, _ map[string]PodImage) { p.Spec.Containers[1].Name = "app" }, errdefs.IsInvalidArgument, "spec.containers[1].name: Duplicate value"},
		{"unsupported field", func(p *corev1.Pod, _ map[string]PodImage) { p.Spec.HostIPC = true }, errdefs.IsInvalidArgument, "spec.hostIPC"},
		{"image refused by policy", func(_ *corev1.Pod, m map[string]PodImage) {
			pi := m["app"]
			pi.Layout = "/elsewhere"
			m["app"] = pi
		}, errdefs.IsPermissionDenied, "rejected by policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod, imgs := f.pod("web", "app", "side")
			tc.edit(pod, imgs)
			err := f.rt.RunPod(context.Background(), pod, imgs)
			if !tc.class(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want class and %q", err, tc.want)
			}
			var rej *verify.RejectedError
			if errdefs.IsPermissionDenied(err) && !errors.As(err, &rej) {
				t.Errorf("the policy's rejection is not reachable with errors.As: %v", err)
			}
			if l := f.leftovers(t); len(l) > 0 {
				t.Errorf("left: %v", l)
			}
		})
	}
	// An unreadable /etc/passwd fails the start (absence does not).
	f.images.readErr = errors.New("input/output error")
	pod, imgs := f.pod("web", "app")
	if err := f.rt.RunPod(context.Background(), pod, imgs); err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("unreadable /etc/passwd: %v", err)
	}
}

// The longest valid names run: unit and directory names are shortened with
// a hash, and stay usable in overlayfs options.
func TestLongestNamesRun(t *testing.T) {
	f := newFixture(t)
	var labels []string
	for n := 253; n > 0; n -= 64 {
		labels = append(labels, strings.Repeat("p", min(n, 63)))
	}
	name := strings.Join(labels, ".")[:253]
	name = strings.TrimRight(name, ".") + strings.Repeat("q", 253-len(strings.TrimRight(name, ".")))
	if err := ValidateName("default", name); err != nil {
		t.Fatalf("test built an invalid name: %v", err)
	}
	pod, imgs := f.pod(name, "app")
	if err := f.rt.RunPod(context.Background(), pod, imgs); err != nil {
		t.Fatal(err)
	}
	sts, err := f.rt.PodStatus(context.Background(), "default", name)
	if err != nil || len(sts) != 1 || sts[0].State.Running == nil || len(sts[0].Unit) > 255 {
		t.Fatalf("status %+v, %v", sts, err)
	}
	must(t, f.rt.RemovePod(context.Background(), "default", name))
	if l := f.leftovers(t); len(l) > 0 {
		t.Errorf("left: %v", l)
	}
}

// Names reach no path before they are validated: a traversal in a name, or
// in a record read back, touches nothing outside berth's directories.
func TestPathTraversalByName(t *testing.T) {
	f := newFixture(t)
	victim := filepath.Join(filepath.Dir(f.state), "victim")
	must(t, os.MkdirAll(filepath.Join(victim, "keep"), 0o700))
	for _, name := range []string{"x/../../../victim", "..", ".", "x/../../etc", "a_b"} {
		for _, op := range []struct {
			name string
			do   func() error
		}{
			{"remove", func() error { return f.rt.RemovePod(context.Background(), "default", name) }},
			{"status", func() error { _, err := f.rt.PodStatus(context.Background(), "default", name); return err }},
			{"remove by namespace", func() error { return f.rt.RemovePod(context.Background(), name, "web") }},
		} {
			if err := op.do(); !errdefs.IsInvalidArgument(err) {
				t.Errorf("%s %q: %v, want invalid-argument", op.name, name, err)
			}
		}
	}
	// A record whose container names climb out of the bundle directory.
	d, err := f.rt.dirs("default", "web")
	must(t, err)
	must(t, os.MkdirAll(d.state, 0o700))
	must(t, os.WriteFile(filepath.Join(d.state, podRecord), []byte(`{"metadata":{"name":"web","namespace":"default"},"spec":{"containers":[{"name":"../../../victim"}]}}`), 0o600))
	if err := f.rt.RemovePod(context.Background(), "default", "web"); !errdefs.IsDataLoss(err) || errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "corrupt record") {
		t.Errorf("tampered record: %v, want data loss (berth's state), not invalid argument", err)
	}
	// And one filed under another pod's name.
	must(t, os.WriteFile(filepath.Join(d.state, podRecord), []byte(`{"metadata":{"name":"other","namespace":"default"},"spec":{"containers":[{"name":"app"}]}}`), 0o600))
	if err := f.rt.RemovePod(context.Background(), "default", "web"); err == nil || !strings.Contains(err.Error(), "corrupt record") {
		t.Errorf("record of another pod: %v", err)
	}
	if _, err := os.Stat(filepath.Join(victim, "keep")); err != nil {
		t.Fatalf("a directory outside berth's was touched: %v", err)
	}
}

// The same pod run and removed concurrently is serialised: the removal
// waits for the start and then removes everything it made.
func TestRunAndRemoveSerialised(t *testing.T) {
	f := newFixture(t)
	f.units.block = make(chan struct{})
	f.units.inStart = make(chan string, 1)
	pod, imgs := f.pod("web", "app")
	runErr := make(chan error, 1)
	go func() { runErr <- f.rt.RunPod(context.Background(), pod, imgs) }()
	<-f.units.inStart // the start holds the pod and waits in systemd
	rmErr := make(chan error, 1)
	go func() { rmErr <- f.rt.RemovePod(context.Background(), "default", "web") }()
	// Synchronisation point: the removal is queued on the pod's lock.
	deadline := time.Now().Add(30 * time.Second)
	for f.rt.locks.waiters("default/web") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("RemovePod did not wait for the pod's lock")
		}
		select {
		case err := <-rmErr:
			t.Fatalf("RemovePod ran during the start: %v", err)
		default:
		}
		time.Sleep(time.Millisecond)
	}
	for _, c := range f.units.calls {
		if strings.HasPrefix(c, "stop ") {
			t.Fatalf("unit stopped while it was being started: %v", f.units.calls)
		}
	}
	close(f.units.block)
	must(t, <-runErr)
	must(t, <-rmErr)
	if l := f.leftovers(t); len(l) > 0 || f.units.started["berth-default_web_app.service"] {
		t.Errorf("after run then remove: left %v, unit running %v", l, f.units.started)
	}
}
