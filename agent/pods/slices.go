package pods

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

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
	// The sums are not touched: updateSums sets them (and takes this lock
	// after its own, never the other way round).
	if err := r.units.EnsureSlice(ctx, name, unitgen.NamespaceSliceProperties(namespace, &lim, nil, r.cfg.Node.CgroupV2)); err != nil {
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

// podSlices are the slices of pod (which has its UID), parent first, with
// the sums of its namespace's running pods and itself.
func (r *Runtime) podSlices(pod *corev1.Pod) ([]unitgen.Slice, error) {
	podLim := cgroup.PodLimits(pod, r.cfg.Node)
	nsSum, qosSum, _ := r.sumsWith(pod.Namespace, unitgen.PodKey(pod.Namespace, pod.Name), pod)
	share := cgroup.NamespaceShares(nsSum, r.cfg.Node)
	return unitgen.PodSlices(unitgen.SlicesInput{
		Pod:            pod,
		PodLimits:      podLim,
		QoSLimits:      cgroup.QoSLimits(podLim.QOS, qosSum[podLim.QOS], r.cfg.Node),
		Namespace:      r.namespaceLimits(pod.Namespace),
		NamespaceShare: &share,
		CgroupV2:       r.cfg.Node.CgroupV2,
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
	// The sums follow at once (updateSums).
	return r.ensureSlice(ctx, name, unitgen.NamespaceSliceProperties(namespace, r.namespaceLimits(namespace), nil, r.cfg.Node.CgroupV2))
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

// The slices above the pods are weighed and protected by what their pods
// request, as the kubelet's QoS cgroups are (kubernetes-semantics.md §5.5,
// docs/cgroups.md): the Burstable slice by its pods' summed cpu and
// memory requests, the namespace slice by all its pods' (berth's level
// between kubepods and the QoS cgroups), berth.slice on cgroup v2 by every
// pod's memory requests, up to the node's allocatable memory
// (cgroup.RootMemoryMin). Without the memory sums a pod's MemoryMin would
// protect nothing against pressure from outside its pod slice: the kernel
// bounds a cgroup's protection by its ancestors'. The kubelet refreshes
// its sums every minute and on pod changes; berth on each pod's start and
// removal, the only times they change (requests are immutable), so they
// are never stale. A pod counts from its start until its removal, also
// when its containers have ended (the kubelet counts active pods).

// requestSums are the running pods' requests by pod key, seeded from the
// pod records on first use (a restarted berthd finds the pods that kept
// running), then kept by RunPod and the removals.
type requestSums struct {
	mu     sync.Mutex
	seeded bool
	pods   map[string]podShare
}

// podShare is what one pod adds to the sums.
type podShare struct {
	ns  string
	qos corev1.PodQOSClass
	req cgroup.Requests
}

func shareOf(pod *corev1.Pod) podShare {
	return podShare{ns: pod.Namespace, qos: cgroup.PodQOS(pod), req: cgroup.PodRequests(pod)}
}

// seedSums reads every pod record (r.sums.mu held). A record that cannot
// be read, or names another pod than its key, is left out, as
// stopRecordedPodSlice leaves it.
func (r *Runtime) seedSums() {
	if r.sums.seeded {
		return
	}
	r.sums.pods = map[string]podShare{}
	r.sums.seeded = true
	root := filepath.Join(r.cfg.StateDir, "pods")
	ents, err := os.ReadDir(root)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("pod records unreadable: the slices' sums start from none", "error", err)
		}
		return
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(root, e.Name(), podRecord))
		if err != nil {
			continue // a pod being made or removed: its start or removal updates the sums
		}
		var pod corev1.Pod
		if err := json.Unmarshal(b, &pod); err != nil || unitgen.PodKey(pod.Namespace, pod.Name) != e.Name() {
			r.log.Warn("pod record left out of the slices' sums", "key", e.Name())
			continue
		}
		r.sums.pods[e.Name()] = shareOf(&pod)
	}
}

// sumsWith is the sums of namespace ns, by QoS class and in all, and the
// memory requests of every namespace, with pod (nil: none) counted under
// key.
func (r *Runtime) sumsWith(ns, key string, pod *corev1.Pod) (cgroup.Requests, map[corev1.PodQOSClass]cgroup.Requests, int64) {
	r.sums.mu.Lock()
	defer r.sums.mu.Unlock()
	r.seedSums()
	return r.sumsLocked(ns, key, pod)
}

func (r *Runtime) sumsLocked(ns, key string, pod *corev1.Pod) (cgroup.Requests, map[corev1.PodQOSClass]cgroup.Requests, int64) {
	var nsSum cgroup.Requests
	byQoS := map[corev1.PodQOSClass]cgroup.Requests{}
	var total int64
	add := func(s podShare) {
		total += s.req.MemoryBytes
		if s.ns == ns {
			nsSum = nsSum.Add(s.req)
			byQoS[s.qos] = byQoS[s.qos].Add(s.req)
		}
	}
	for k, s := range r.sums.pods {
		if pod == nil || k != key {
			add(s)
		}
	}
	if pod != nil {
		add(shareOf(pod))
	}
	return nsSum, byQoS, total
}

// updateSums counts pod under key (nil: drops key's pod) and sets the
// new sums live on its namespace's slice, its Burstable slice (when the
// pod is or was Burstable, or the class has pods) and, on cgroup v2,
// berth.slice. A key not counted and not given is nothing to do.
func (r *Runtime) updateSums(ctx context.Context, key string, pod *corev1.Pod) error {
	r.sums.mu.Lock()
	defer r.sums.mu.Unlock()
	r.seedSums()
	var changed podShare
	if pod != nil {
		changed = shareOf(pod)
		r.sums.pods[key] = changed
	} else {
		s, ok := r.sums.pods[key]
		if !ok {
			return nil
		}
		changed = s
		delete(r.sums.pods, key)
	}
	ns := changed.ns
	nsSum, byQoS, total := r.sumsLocked(ns, "", nil)
	node := r.cfg.Node
	share := cgroup.NamespaceShares(nsSum, node)
	// Under the namespace's lock, with its limits: a SetNamespaceLimits
	// meanwhile is neither lost nor overwritten.
	unlock, err := r.sliceLocks.Lock(ctx, ns)
	if err != nil {
		return err
	}
	name := unitgen.SliceName(ns)
	err = r.units.EnsureSlice(ctx, name, unitgen.NamespaceSliceProperties(ns, r.namespaceLimits(ns), &share, node.CgroupV2))
	unlock()
	if err != nil {
		return fmt.Errorf("namespace slice %s: %w", name, err)
	}
	if _, has := byQoS[corev1.PodQOSBurstable]; has || changed.qos == corev1.PodQOSBurstable {
		name := unitgen.QoSSliceName(ns, corev1.PodQOSBurstable)
		lim := cgroup.QoSLimits(corev1.PodQOSBurstable, byQoS[corev1.PodQOSBurstable], node)
		if err := r.units.EnsureSlice(ctx, name, unitgen.QoSSliceProperties(ns, lim, node.CgroupV2)); err != nil {
			return fmt.Errorf("QoS slice %s: %w", name, err)
		}
	}
	if node.CgroupV2 {
		if err := r.units.EnsureSlice(ctx, unitgen.RootSlice, unitgen.RootSliceProperties(cgroup.RootMemoryMin(total, node), true)); err != nil {
			return fmt.Errorf("slice %s: %w", unitgen.RootSlice, err)
		}
	}
	r.log.Debug("slices' sums", "namespace", ns, "cpuMilli", nsSum.CPUMilli, "memoryBytes", nsSum.MemoryBytes, "allMemoryBytes", total)
	return nil
}
