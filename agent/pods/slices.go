package pods

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/unitgen"
)

// A pod's units run in the kubelet's slice layout (unitgen slices.go):
// namespace slice → QoS class slice (none for Guaranteed) → pod slice,
// which carries the pod-level limits. RunPod ensures the three before the
// pod's first unit; RemovePod stops the pod's slice after its units, so no
// cgroup of it is left; reconcile's RemovePodDirs does the same for an
// orphan. The namespace and QoS slices stay: empty, they cost a cgroup
// directory, and the next pod of the namespace uses them. Pods started
// before pod slices existed have their units in the namespace slice; their
// units are found and stopped by name, and their pod slice, never made, is
// nothing to stop.

// SetNamespaceLimits sets the namespace's ceilings on its slice:
// CPUQuotaPerSecUSec from cpuMilli (milli×1000 µs per second, the §8 rule
// of kubernetes-semantics.md) and MemoryMax from memoryBytes, 0 meaning no
// limit (infinity). A ResourceQuota's limits.cpu and limits.memory (the
// smallest of the namespace's quotas) become the kernel's, so that the
// namespace's pods stay under them even if admission were bypassed.
//
// The values are set live on an existing slice (systemd's
// SetUnitProperties, runtime: they last until reboot and survive
// daemon-reload; docs/cgroups.md), and the slice is made if it does not
// exist and a limit is given; lifting every limit of a slice that does not
// run is nothing to do. The runtime remembers the values, so that the
// slice carries them when it is made later (the namespace's first pod),
// for as long as this process runs: after a restart of berthd the caller
// sets them again.
func (r *Runtime) SetNamespaceLimits(ctx context.Context, namespace string, cpuMilli, memoryBytes int64) error {
	if msgs := apivalidation.ValidateNamespaceName(namespace, false); len(msgs) > 0 {
		return FieldErrors{field.Invalid(field.NewPath("metadata", "namespace"), namespace, msgs[0])}
	}
	if cpuMilli < 0 || memoryBytes < 0 {
		return fmt.Errorf("limits of namespace %s: cpu %dm, memory %d: %w: a limit is not negative", namespace, cpuMilli, memoryBytes, errdefs.ErrInvalidArgument)
	}
	unlock, err := r.sliceLocks.Lock(ctx, namespace)
	if err != nil {
		return err
	}
	defer unlock()
	lim := unitgen.NamespaceLimits{CPUMilli: cpuMilli, MemoryBytes: memoryBytes}
	// Remembered first: should systemd fail now, the slice still gets
	// them when it is next made.
	r.nsLimits.Store(namespace, lim)
	name := unitgen.SliceName(namespace)
	if cpuMilli == 0 && memoryBytes == 0 {
		st, err := r.units.Status(ctx, name)
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("namespace slice %s: %w", name, err)
		}
		if err != nil || st.ActiveState != "active" {
			// Nothing runs in it: no limit to lift. Made again later, it
			// is made with what is remembered.
			r.slices.Delete(name)
			return nil
		}
	}
	if err := r.units.EnsureSlice(ctx, name, unitgen.NamespaceSliceProperties(namespace, &lim)); err != nil {
		return fmt.Errorf("namespace slice %s: %w", name, err)
	}
	r.slices.Store(name, true)
	r.log.Info("namespace limits set", "namespace", namespace, "slice", name, "cpuMilli", cpuMilli, "memoryBytes", memoryBytes)
	return nil
}

// namespaceLimits are the namespace's limits as SetNamespaceLimits last
// set them, nil if it never did in this process.
func (r *Runtime) namespaceLimits(namespace string) *unitgen.NamespaceLimits {
	v, ok := r.nsLimits.Load(namespace)
	if !ok {
		return nil
	}
	lim := v.(unitgen.NamespaceLimits)
	return &lim
}

// podSlices are the slices of pod (which has its UID), parent first.
func (r *Runtime) podSlices(pod *corev1.Pod) ([]unitgen.Slice, error) {
	podLim := cgroup.PodLimits(pod, r.cfg.Node)
	return unitgen.PodSlices(unitgen.SlicesInput{
		Pod:       pod,
		PodLimits: podLim,
		QoSLimits: cgroup.QoSLimits(podLim.QOS, r.cfg.Node),
		Namespace: r.namespaceLimits(pod.Namespace),
		CgroupV2:  r.cfg.Node.CgroupV2,
	})
}

// PlanSlices returns the slices pod's units would run in, as RunPod would
// make them now, touching nothing (berth plan). The pod must have its UID.
func (r *Runtime) PlanSlices(pod *corev1.Pod) ([]unitgen.Slice, error) {
	if err := ValidateName(pod.Namespace, pod.Name); err != nil {
		return nil, err
	}
	return r.podSlices(pod)
}

// ensurePodSlices makes the pod's slices, parent first, each with its
// properties, before any of its units names its slice (systemd would make
// a missing one implicitly, without them). The namespace and QoS slices
// are made once per process; the pod's own every time (an existing one
// gets its properties again, live).
func (r *Runtime) ensurePodSlices(ctx context.Context, pod *corev1.Pod) error {
	slices, err := r.podSlices(pod)
	if err != nil {
		return err
	}
	for i, s := range slices {
		switch {
		case i == 0:
			err = r.ensureNamespaceSlice(ctx, pod.Namespace)
		case i < len(slices)-1:
			err = r.ensureSlice(ctx, s.Name, s.Properties)
		default:
			err = r.units.EnsureSlice(ctx, s.Name, s.Properties)
		}
		if err != nil {
			return fmt.Errorf("slice %s: %w", s.Name, err)
		}
	}
	return nil
}

// ensureNamespaceSlice makes the namespace's slice once per process, with
// the limits SetNamespaceLimits remembers, read under the namespace's lock:
// a limit set meanwhile is not overwritten by an older one.
func (r *Runtime) ensureNamespaceSlice(ctx context.Context, namespace string) error {
	name := unitgen.SliceName(namespace)
	if _, ok := r.slices.Load(name); ok {
		return nil
	}
	unlock, err := r.sliceLocks.Lock(ctx, namespace)
	if err != nil {
		return err
	}
	defer unlock()
	return r.ensureSlice(ctx, name, unitgen.NamespaceSliceProperties(namespace, r.namespaceLimits(namespace)))
}

// ensureSlice makes a slice once per process. Should someone stop it
// meanwhile, systemd recreates it implicitly when a unit names it, without
// berth's properties, until the next berthd (or SetNamespaceLimits).
func (r *Runtime) ensureSlice(ctx context.Context, name string, props []unitgen.Property) error {
	if _, ok := r.slices.Load(name); ok {
		return nil
	}
	if err := r.units.EnsureSlice(ctx, name, props); err != nil {
		return err
	}
	r.slices.Store(name, true)
	return nil
}

// stopPodSlice stops the pod's slice once its units are stopped, so that
// no cgroup of the pod is left, and resets its failed state. A slice that
// does not exist (a pod started before pod slices, or removed already) is
// nothing to stop. A pod without a UID has none.
func (r *Runtime) stopPodSlice(ctx context.Context, pod *corev1.Pod) error {
	if pod.UID == "" {
		return nil
	}
	slices, err := r.podSlices(pod)
	if err != nil {
		return err
	}
	return r.stopUnit(ctx, slices[len(slices)-1].Name)
}

// stopRecordedPodSlice stops the slice of the pod whose record is in
// stateDir (reconcile's removal of an orphan: its units are stopped). A
// record that is missing or cannot be read names no slice: nothing is
// stopped, and an empty slice may be left (a cgroup directory, until the
// next boot). A record of another pod than its key (corrupt) is not
// trusted with a slice name either.
func (r *Runtime) stopRecordedPodSlice(ctx context.Context, key, stateDir string) error {
	b, err := os.ReadFile(filepath.Join(stateDir, podRecord))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var pod corev1.Pod
	if err := json.Unmarshal(b, &pod); err != nil {
		r.log.Warn("unreadable pod record: its pod slice, if any, is left", "key", key, "error", err)
		return nil
	}
	if ValidateName(pod.Namespace, pod.Name) != nil || unitgen.PodKey(pod.Namespace, pod.Name) != key {
		r.log.Warn("pod record names another pod: its pod slice, if any, is left", "key", key, "pod", pod.Namespace+"/"+pod.Name)
		return nil
	}
	if err := r.stopPodSlice(ctx, &pod); err != nil {
		if errdefs.IsInvalidArgument(err) {
			r.log.Warn("pod record names no slice", "key", key, "error", err)
			return nil
		}
		return err
	}
	return nil
}
