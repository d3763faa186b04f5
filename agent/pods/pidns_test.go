package pods

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/unitgen"
)

// pauseUnits plays berth-init pause for the pause's unit (it leaves the
// pin's file, not a mount) and the fake systemd for the rest.
type pauseUnits struct {
	*fakeUnits
	fail func() error // the pause's start fails with this, if set
}

func (p *pauseUnits) Start(ctx context.Context, name string, props []unitgen.Property) error {
	if !strings.HasSuffix(name, "_"+unitgen.PauseContainer+".service") {
		return p.fakeUnits.Start(ctx, name, props)
	}
	p.log("start " + name)
	if p.fail != nil {
		return p.fail()
	}
	cmd, _ := props[slices.IndexFunc(props, func(p unitgen.Property) bool { return p.Name == "ExecStart" })].Value.([]unitgen.ExecCommand)
	dir := cmd[0].Args[2]
	if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, unitgen.PIDNSPin), nil, 0o444); err != nil {
		return err
	}
	p.mu.Lock()
	p.started[name] = true
	p.mu.Unlock()
	return nil
}

func sharing(pod *corev1.Pod) *corev1.Pod {
	yes := true
	pod.Spec.ShareProcessNamespace = &yes
	return pod
}

// The pause starts before any container and stops after all of them; a
// pod without the field has none; a failed pause start fails the pod and
// leaves nothing.
func TestPauseOrder(t *testing.T) {
	f := newFixture(t)
	pu := &pauseUnits{fakeUnits: f.units}
	f.rt.units = pu
	pod, imgs := f.pod("web", "app", "side")
	sharing(pod)
	ctx := context.Background()
	must(t, f.rt.RunPod(ctx, pod, imgs))
	pause := unitgen.PauseUnitName("default", "web")
	var starts []string
	for _, c := range f.units.calls {
		if s, ok := strings.CutPrefix(c, "start "); ok {
			starts = append(starts, s)
		}
	}
	if len(starts) != 3 || starts[0] != pause {
		t.Errorf("starts %v, want the pause first", starts)
	}
	if gone, err := f.rt.PauseGone(ctx, "default", "web"); err != nil || gone {
		t.Errorf("PauseGone of a running pause: %v, %v", gone, err)
	}
	// What systemd does when the pause dies: the unit is gone.
	f.units.mu.Lock()
	delete(f.units.started, pause)
	f.units.mu.Unlock()
	if gone, err := f.rt.PauseGone(ctx, "default", "web"); err != nil || !gone {
		t.Errorf("PauseGone of a dead pause: %v, %v", gone, err)
	}
	f.units.mu.Lock()
	f.units.started[pause] = true
	f.units.calls = nil
	f.units.mu.Unlock()
	must(t, f.rt.RemovePod(ctx, "default", "web"))
	var stops []string
	for _, c := range f.units.calls {
		if s, ok := strings.CutPrefix(c, "stop "); ok {
			stops = append(stops, s)
		}
	}
	// Then the pod's slice, empty (slices.go).
	if len(stops) != 4 || stops[2] != pause || !strings.HasSuffix(stops[3], ".slice") {
		t.Errorf("stops %v, want the pause last of the units, then the pod's slice", stops)
	}
	if l := f.leftovers(t); len(l) > 0 {
		t.Errorf("left after remove: %v", l)
	}

	// Without the field: no pause started, containers in namespaces of
	// their own.
	f.units.calls = nil
	plain, imgs := f.pod("plain", "app")
	must(t, f.rt.RunPod(ctx, plain, imgs))
	for _, c := range f.units.calls {
		if strings.Contains(c, "_POD.") && strings.HasPrefix(c, "start ") {
			t.Errorf("a pod without shareProcessNamespace started %s", c)
		}
	}
	if gone, err := f.rt.PauseGone(ctx, "default", "plain"); err != nil || gone {
		t.Errorf("PauseGone without a pause: %v, %v", gone, err)
	}
	must(t, f.rt.RemovePod(ctx, "default", "plain"))

	// A pause that does not start fails the pod before any container.
	f.units.calls = nil
	failed := errors.New("pause start job failed")
	pu.fail = func() error { return failed }
	pod, imgs = f.pod("web", "app")
	sharing(pod)
	if err := f.rt.RunPod(ctx, pod, imgs); !errors.Is(err, failed) {
		t.Fatalf("RunPod with a failing pause: %v", err)
	}
	for _, c := range f.units.calls {
		if strings.HasPrefix(c, "start ") && !strings.Contains(c, "_POD.") {
			t.Errorf("container started although the pause failed: %s", c)
		}
	}
	if l := f.leftovers(t); len(l) > 0 {
		t.Errorf("left after a failed pause: %v", l)
	}
}

// The pause's unit is berth's: reconcile's listing takes it for a unit of
// its pod, also under a shortened key, which only the record can claim.
func TestPauseUnitIsThePods(t *testing.T) {
	name := unitgen.PauseUnitName("default", "web")
	key, ok := unitKey(name)
	if !ok || !IsContainerUnit(name) {
		t.Fatalf("%s is not taken for one of berth's units", name)
	}
	if pk, ok := ContainerKeyPodKey(key); !ok || pk != unitgen.PodKey("default", "web") {
		t.Errorf("pod key of %s = %q, %v", key, pk, ok)
	}
	long := strings.Repeat("p", 240)
	hp := HostPod{Namespace: "default", Name: long, Containers: []string{"app"}}
	pauseKey := unitgen.ContainerKey("default", long, unitgen.PauseContainer)
	if _, ok := ContainerKeyPodKey(pauseKey); ok {
		t.Fatalf("test needs a shortened key, got %s", pauseKey)
	}
	if !slices.Contains(hp.ContainerKeys(), pauseKey) {
		t.Errorf("ContainerKeys %v lack the pause's %s", hp.ContainerKeys(), pauseKey)
	}
	if pidNSPath("/run/p", &corev1.Pod{}) != "" || pidNSPath("/run/p", sharing(&corev1.Pod{})) != "/run/p/ns/pid" {
		t.Error("pidNSPath")
	}
	// A pod with no pause: stopping it is no error.
	rt := New(Config{StateDir: t.TempDir(), RunDir: t.TempDir()}, newFakeUnits(), nil)
	d, err := rt.dirs("default", "web")
	must(t, err)
	if err := rt.stopPause(context.Background(), d); err != nil && !errdefs.IsNotFound(err) {
		t.Errorf("stopPause without a pause: %v", err)
	}
}
