package pods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	bndl "github.com/berth-dev/berth/agent/bundle"
	"github.com/berth-dev/berth/agent/events"
	"github.com/berth-dev/berth/unitgen"
)

// AllContainers are the pod's init containers, then its app containers:
// the order they start in.
func AllContainers(pod *corev1.Pod) []*corev1.Container {
	out := make([]*corev1.Container, 0, len(pod.Spec.InitContainers)+len(pod.Spec.Containers))
	for i := range pod.Spec.InitContainers {
		out = append(out, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

// containerNames checks the names of every container of pod (init
// containers and app containers share one namespace of names, as the
// apiserver requires) and returns them in start order.
func containerNames(pod *corev1.Pod) ([]string, error) {
	var names []string
	for _, c := range AllContainers(pod) {
		names = append(names, c.Name)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, FieldErrors{field.Required(field.NewPath("spec", "containers"), "")}
	}
	return names, validateContainers(names)
}

// ContainerByName is pod's init or app container of that name, or nil.
func ContainerByName(pod *corev1.Pod, name string) *corev1.Container {
	for _, c := range AllContainers(pod) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// IsSidecar tells whether an init container is a sidecar: restartPolicy
// Always, so it starts in the init sequence and runs for the pod's life.
func IsSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// checkImages refuses a start whose images name no container of the pod,
// or a container without a resolved image.
func checkImages(pod *corev1.Pod, images map[string]PodImage) error {
	if len(images) == 0 {
		return fmt.Errorf("pod %s/%s: no container to start: %w", pod.Namespace, pod.Name, errdefs.ErrInvalidArgument)
	}
	known := map[string]bool{}
	for _, c := range AllContainers(pod) {
		known[c.Name] = true
	}
	for name, pi := range images {
		if !known[name] {
			return FieldErrors{field.NotFound(field.NewPath("spec", "containers"), name)}
		}
		if pi.Image == nil {
			return FieldErrors{field.Invalid(field.NewPath("spec", "containers").Key(name).Child("image"), name, "not resolved to a stored image")}
		}
	}
	return nil
}

// StartContainers starts more containers of a pod that runs (the next
// step of its init sequence: the next init container, or the app
// containers once every init container has completed), each from its
// resolved image. Containers already started are refused: a container
// starts once per pod sandbox, systemd restarts it. On failure the
// containers of this call are stopped and removed again, so that the next
// attempt starts them afresh; the rest of the pod is left as it is.
func (r *Runtime) StartContainers(ctx context.Context, pod *corev1.Pod, images map[string]PodImage) (err error) {
	pod = pod.DeepCopy()
	d, err := r.dirs(pod.Namespace, pod.Name)
	if err != nil {
		return err
	}
	if _, err := containerNames(pod); err != nil {
		return err
	}
	if err := checkImages(pod, images); err != nil {
		return err
	}
	unlock, err := r.lock(ctx, d)
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := loadPod(d)
	if err != nil {
		return err
	}
	if rec.UID != pod.UID {
		return fmt.Errorf("pod %s/%s: runs as uid %s, not %s: %w", pod.Namespace, pod.Name, rec.UID, pod.UID, errdefs.ErrConflict)
	}
	for name := range images {
		bundle, err := d.bundle(name)
		if err != nil {
			return err
		}
		if _, err := os.Lstat(bundle); err == nil {
			return fmt.Errorf("container %q of pod %s/%s: %w", name, pod.Namespace, pod.Name, errdefs.ErrAlreadyExists)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout(pod))
		defer cancel()
		for name := range images {
			if rerr := r.removeContainer(cctx, d, name); rerr != nil {
				r.log.Error("clean up after failed container start", "pod", pod.Namespace+"/"+pod.Name, "container", name, "error", rerr)
			}
		}
	}()
	// Idempotent: the volumes exist since RunPod; this returns their set
	// (and brings configMaps and secrets up to date, as a kubelet's sync).
	set, shm, err := r.setupVolumes(d, pod)
	if err != nil {
		return err
	}
	// Idempotent too: the slices exist since RunPod, unless this berthd
	// came after one that did not make them (the new units would go into
	// a slice systemd makes without the pod's limits).
	if err := r.ensurePodSlices(ctx, pod); err != nil {
		return err
	}
	ein, err := r.envInput(pod, func() error { return nil })
	if err != nil {
		return err
	}
	_, err = r.startContainers(ctx, d, pod, images, set, shm, ein, func() error { return nil })
	return err
}

// StopContainers stops some containers of a running pod, in the order
// given, each within its grace period (systemd's TimeoutStopSec), and
// keeps their bundles: their exit records are their final state. The
// kubelet does this to a pod's sidecars once its app containers are done
// for good, and to everything a failed init container leaves running.
func (r *Runtime) StopContainers(ctx context.Context, ns, name string, containers []string) error {
	d, err := r.dirs(ns, name)
	if err != nil {
		return err
	}
	unlock, err := r.lock(ctx, d)
	if err != nil {
		return err
	}
	defer unlock()
	pod, err := loadPod(d)
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	var errs []error
	for _, c := range containers {
		if _, err := r.stopContainer(ctx, d, pod, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeContainer stops one container's unit and removes its bundle, so
// that it counts as never started.
func (r *Runtime) removeContainer(ctx context.Context, d podDirs, name string) error {
	bundle, err := r.stopContainer(ctx, d, nil, name)
	if err != nil {
		return err
	}
	r.logMessages.Delete(bundle)
	return os.RemoveAll(bundle)
}

// stopContainer stops one container's unit (within its grace period,
// systemd's TimeoutStopSec), reports the hook failures the stop left (a
// preStop hook's; pod nil: none reported) and returns its bundle.
func (r *Runtime) stopContainer(ctx context.Context, d podDirs, pod *corev1.Pod, name string) (string, error) {
	bundle, err := d.bundle(name)
	if err != nil {
		return "", err
	}
	if err := r.stopUnit(ctx, unitgen.UnitName(d.ns, d.pod, name)); err != nil {
		return "", err
	}
	if pod != nil {
		r.reportHookFailures(pod, name, bundle)
	}
	return bundle, nil
}

// stopUnit stops one of the pod's units and resets its failed state, so
// that systemd forgets it. A unit that failed stays loaded until reset; a
// reset that fails is reported, not returned: the stop has happened.
func (r *Runtime) stopUnit(ctx context.Context, unit string) error {
	if err := r.units.Stop(ctx, unit); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("stop %s: %w", unit, err)
	}
	if err := r.units.ResetFailed(ctx, unit); err != nil && !errdefs.IsNotFound(err) {
		r.log.Warn("reset-failed after stop", "unit", unit, "error", err)
	}
	return nil
}

// stopOrder is the order a pod's containers stop in, as the kubelet's
// killPodWithSyncResult with sidecars: app containers first, then the
// init containers (sidecars) in reverse order of their start.
func stopOrder(pod *corev1.Pod) []string {
	var out []string
	for _, c := range pod.Spec.Containers {
		out = append(out, c.Name)
	}
	for i := len(pod.Spec.InitContainers) - 1; i >= 0; i-- {
		out = append(out, pod.Spec.InitContainers[i].Name)
	}
	return out
}

// reportHookFailures records the kubelet's Warning event for each hook
// failure berth-init recorded in a container's bundle (bndl.HookFailure),
// once: a failed postStart (the unit failed its start) shows when the
// status is read, a failed preStop when the container has been stopped.
func (r *Runtime) reportHookFailures(pod *corev1.Pod, name, bundle string) {
	if c := ContainerByName(pod, name); c == nil || c.Lifecycle == nil {
		return // no hooks, no records: no file system calls on each status read
	}
	fs, err := bndl.TakeHookFailures(bundle)
	if err != nil {
		r.log.Warn("hook failure records", "pod", pod.Namespace+"/"+pod.Name, "container", name, "error", err)
	}
	for _, f := range fs {
		r.log.Info("lifecycle hook failed", "pod", pod.Namespace+"/"+pod.Name, "container", name, "hook", f.Kind, "message", f.Message)
		if r.cfg.Recorder != nil {
			et, reason, msg := HookFailureEvent(f)
			r.cfg.Recorder.Event(events.ContainerRef(pod, name), et, reason, msg)
		}
	}
}
