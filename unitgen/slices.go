package unitgen

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/cgroup"
)

// berth's slices are the kubelet's layout under its systemd cgroup driver
// (pkg/kubelet/cm/cgroup_manager_linux.go, kubernetes-semantics.md §5.2),
// with one namespace slice where the kubelet has kubepods.slice:
//
//	berth.slice/                             MemoryMin: every namespace's
//	  berth-<ns>.slice/                      namespace: its ResourceQuota's limits (Runtime.SetNamespaceLimits), its pods' summed requests
//	    berth-<ns>-pod<uid>.slice/           a Guaranteed pod
//	    berth-<ns>-burstable.slice/          its pods' summed requests
//	      berth-<ns>-burstable-pod<uid>.slice/
//	    berth-<ns>-besteffort.slice/
//	      berth-<ns>-besteffort-pod<uid>.slice/
//	        berth-<ns>_<pod>_<container>.service   the pod's containers and its pause
//
// A slice's parent is named by the dashes of its name (systemd.slice(5)),
// so each component is written as the kubelet's ToSystemd() writes it:
// its '-' become '_' and the components are joined by '-'. Neither a
// namespace (a DNS label) nor a UID (a UUID) contains '_', so the mapping
// stays unambiguous, and a namespace team-a (berth-team_a.slice) does not
// nest in a namespace team. The pod slice holds the pod-level limits of the
// kubelet's pod cgroup (ResourceConfigForPod): its containers share them.

// Names of the QoS slices' component, as the kubelet's QoS cgroups
// (pkg/kubelet/cm/qos_container_manager_linux.go).
const (
	qosBurstable  = "burstable"
	qosBestEffort = "besteffort"
	sliceSuffix   = ".slice"
)

// sliceComponent writes one component of a slice name as ToSystemd does.
func sliceComponent(s string) string { return strings.ReplaceAll(s, "-", "_") }

// QoSSliceName is the slice of a QoS class in a namespace,
// berth-<ns>-burstable.slice or berth-<ns>-besteffort.slice; "" for
// Guaranteed, whose pod slices sit directly in the namespace slice, as the
// kubelet's sit in kubepods.slice.
func QoSSliceName(namespace string, qos corev1.PodQOSClass) string {
	var c string
	switch qos {
	case corev1.PodQOSBurstable:
		c = qosBurstable
	case corev1.PodQOSBestEffort:
		c = qosBestEffort
	default:
		return ""
	}
	return unitPrefix + sliceComponent(namespace) + "-" + c + sliceSuffix
}

// PodSliceName is the slice of a pod (its containers and its pause):
// pod<uid> in its QoS slice, or in the namespace slice for a Guaranteed
// pod. The longest, a 63-character namespace and a 36-character UID in
// the besteffort slice, is 126 characters: well within systemd's 255.
func PodSliceName(namespace string, uid types.UID, qos corev1.PodQOSClass) string {
	parent := QoSSliceName(namespace, qos)
	if parent == "" {
		parent = SliceName(namespace)
	}
	return strings.TrimSuffix(parent, sliceSuffix) + "-pod" + sliceComponent(string(uid)) + sliceSuffix
}

// ParentSlice is the slice a slice sits in, from the dashes of its name
// (systemd's slice_build_parent_slice): berth-a-b.slice is in
// berth-a.slice, berth.slice in the root slice, -.slice.
func ParentSlice(name string) string {
	base := strings.TrimSuffix(name, sliceSuffix)
	if i := strings.LastIndexByte(base, '-'); i > 0 {
		return base[:i] + sliceSuffix
	}
	return "-" + sliceSuffix
}

// SliceCgroup is the cgroup (relative to each hierarchy's root, as
// systemd's ControlGroup property says it) of a slice: every parent
// slice's directory above its own, as systemd nests them
// (berth-a-b.slice is /berth.slice/berth-a.slice/berth-a-b.slice). It
// lets a reader find a unit's group without asking systemd:
// SliceCgroup(slice) + "/" + unit.
func SliceCgroup(name string) string {
	var parts []string
	for s := name; s != "-"+sliceSuffix; s = ParentSlice(s) {
		parts = append(parts, s)
	}
	slices.Reverse(parts)
	return "/" + strings.Join(parts, "/")
}

// PodCgroup is the cgroup of a pod's slice, which holds its containers'
// units (as <unit name> below it).
func PodCgroup(pod *corev1.Pod) (string, error) {
	s, err := unitSlice(pod)
	if err != nil {
		return "", err
	}
	return SliceCgroup(s), nil
}

// unitSlice is the slice of pod's units: its pod slice. A pod without a
// UID (only tests of the unit alone give none: RunPod and berth plan give
// every pod one) has no pod slice; its units name the namespace slice,
// where every unit went before pod slices.
func unitSlice(pod *corev1.Pod) (string, error) {
	if pod.UID == "" {
		return SliceName(pod.Namespace), nil
	}
	if err := checkSliceUID(pod.UID); err != nil {
		return "", err
	}
	return PodSliceName(pod.Namespace, pod.UID, cgroup.PodQOS(pod)), nil
}

// checkSliceUID refuses a UID that cannot name a slice. The API server
// gives every pod a UUID; this guards against a record or manifest with
// something else: a character systemd does not allow in a unit name
// (src/basic/unit-name.c: letters, digits, ":_.\-"; '-' nests), or a UID
// so long that the pod slice's name would exceed 255 characters with the
// longest namespace.
func checkSliceUID(uid types.UID) error {
	const maxUID = unitNameMax - len(unitPrefix) - 63 - len("-"+qosBestEffort+"-pod") - len(sliceSuffix)
	s := string(uid)
	if len(s) > maxUID {
		return invalid(field.NewPath("metadata", "uid"), "%q: longer than %d characters, it cannot name the pod's slice", s, maxUID)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == ':') {
			return invalid(field.NewPath("metadata", "uid"), "%q: %q cannot be part of a slice name", s, r)
		}
	}
	return nil
}

// Slice is one of berth's transient slices, in the order they must exist:
// a slice is started after its parent.
type Slice struct {
	Name       string
	Properties []Property
}

// Property returns the named property of s.
func (s *Slice) Property(name string) (Property, bool) {
	for _, p := range s.Properties {
		if p.Name == name {
			return p, true
		}
	}
	return Property{}, false
}

// NamespaceLimits are a namespace's ceilings, from its ResourceQuotas'
// limits.cpu and limits.memory (kubernetes-semantics.md §8); 0 is no limit.
type NamespaceLimits struct {
	CPUMilli    int64
	MemoryBytes int64
}

// SlicesInput is what PodSlices needs; the caller computed the limits with
// the cgroup package.
type SlicesInput struct {
	Pod *corev1.Pod // with its UID
	// PodLimits from cgroup.PodLimits; QoSLimits from cgroup.QoSLimits of
	// the pod's class.
	PodLimits, QoSLimits cgroup.SliceLimits
	// Namespace is what the runtime knows of the namespace's limits; nil:
	// nothing (the slice keeps whatever it has).
	Namespace *NamespaceLimits
	// NamespaceShare is cgroup.NamespaceShares of the namespace's pods'
	// requests, this pod's included; nil: nothing said.
	NamespaceShare *cgroup.SliceLimits
	CgroupV2       bool
}

// PodSlices are the slices a pod's units need, parent first: its
// namespace's, its QoS class's (none for Guaranteed) and its own.
func PodSlices(in SlicesInput) ([]Slice, error) {
	pod := in.Pod
	if pod == nil {
		return nil, errors.New("unitgen: no pod")
	}
	if pod.UID == "" {
		return nil, fmt.Errorf("unitgen: pod %s/%s has no UID: it names the pod's slice", pod.Namespace, pod.Name)
	}
	if errs := NameErrors(pod.Namespace, pod.Name); len(errs) > 0 {
		return nil, &InvalidError{Field: errs[0].Field, Detail: fmt.Sprintf("%q: %s", errs[0].BadValue, errs[0].Detail)}
	}
	if err := checkSliceUID(pod.UID); err != nil {
		return nil, err
	}
	qos := cgroup.PodQOS(pod)
	if in.PodLimits.QOS != qos || in.QoSLimits.QOS != qos {
		return nil, fmt.Errorf("unitgen: SlicesInput's limits are for QoS classes %q and %q, the pod's is %q", in.PodLimits.QOS, in.QoSLimits.QOS, qos)
	}
	out := []Slice{{Name: SliceName(pod.Namespace), Properties: NamespaceSliceProperties(pod.Namespace, in.Namespace, in.NamespaceShare, in.CgroupV2)}}
	if q := QoSSliceName(pod.Namespace, qos); q != "" {
		out = append(out, Slice{Name: q, Properties: QoSSliceProperties(pod.Namespace, in.QoSLimits, in.CgroupV2)})
	}
	out = append(out, Slice{Name: PodSliceName(pod.Namespace, pod.UID, qos), Properties: PodSliceProperties(pod, in.PodLimits, in.CgroupV2)})
	return out, nil
}

// accounting is on in every slice: usage per namespace, QoS class and pod
// (the kubelet's pod cgroup stats) is read from them.
func accounting(what string) []Property {
	return []Property{
		{Name: "CPUAccounting", Value: true, Why: "report the CPU usage of the " + what},
		{Name: "MemoryAccounting", Value: true, Why: "report the memory usage of the " + what},
		{Name: "TasksAccounting", Value: true, Why: "report the number of tasks of the " + what},
	}
}

// NamespaceSliceProperties are the properties of a namespace's slice.
// With share (nil: unknown, left as the slice has them), its weight and
// memory protection from its pods' summed requests (cgroup.NamespaceShares).
// With limits (nil: unknown, left as the slice has them), the namespace's
// cpu and memory ceilings, or infinity for none, so that lifting a limit
// takes it off a slice that has it (EnsureSlice sets them live on an
// existing slice).
func NamespaceSliceProperties(namespace string, lim *NamespaceLimits, share *cgroup.SliceLimits, cgroupV2 bool) []Property {
	ps := []Property{{Name: "Description", Value: "berth namespace " + namespace, Why: "shown by systemctl status and systemd-cgtop: the namespace whose pods the slice holds"}}
	ps = append(ps, accounting("namespace's pods")...)
	if share != nil {
		ps = append(ps, cpuShares(*share, cgroupV2, "the namespace's pods' summed cpu requests: namespaces weigh against each other in berth.slice as pods do in the kubelet's kubepods")...)
		ps = append(ps, memoryMin(share.MemoryMin, cgroupV2, "the namespace's pods' summed memory requests, which its QoS and pod slices' memory.min draw on (the kernel bounds a child's protection by its parent's; MemoryQoS's kubepods)")...)
	}
	if lim == nil {
		return ps
	}
	if q := cgroup.NamespaceCPUQuota(lim.CPUMilli); q > 0 {
		ps = append(ps,
			Property{Name: "CPUQuotaPerSecUSec", Value: q, Why: fmt.Sprintf("the namespace's cpu limit %s (its ResourceQuota's limits.cpu): the kernel holds its pods together under it even if admission were bypassed", cpuString(q))},
			Property{Name: "CPUQuotaPeriodUSec", Value: uint64(cgroup.QuotaPeriod), Why: "the kubelet's 100ms CFS period (property needs systemd >= 242)"})
	} else {
		ps = append(ps, Property{Name: "CPUQuotaPerSecUSec", Value: uint64(math.MaxUint64), Why: "no cpu limit on the namespace: infinity lifts an earlier one"})
	}
	if lim.MemoryBytes > 0 {
		ps = append(ps, Property{Name: "MemoryMax", Value: uint64(lim.MemoryBytes), Why: "the namespace's memory limit (its ResourceQuota's limits.memory): the kernel reclaims and OOM-kills within it even if admission were bypassed"})
	} else {
		ps = append(ps, Property{Name: "MemoryMax", Value: uint64(math.MaxUint64), Why: "no memory limit on the namespace: infinity lifts an earlier one"})
	}
	return ps
}

// QoSSliceProperties are the properties of a QoS class's slice in a
// namespace, lim from cgroup.QoSLimits.
func QoSSliceProperties(namespace string, lim cgroup.SliceLimits, cgroupV2 bool) []Property {
	ps := []Property{{Name: "Description", Value: fmt.Sprintf("berth namespace %s, QoS class %s", namespace, lim.QOS),
		Why: "shown by systemctl status and systemd-cgtop: the namespace's pods of one QoS class"}}
	ps = append(ps, accounting("class's pods")...)
	if lim.QOS == corev1.PodQOSBurstable {
		ps = append(ps, cpuShares(lim, cgroupV2, "the class's pods' summed cpu requests, as the kubelet's burstable cgroup (the minimum with none)")...)
		return append(ps, memoryMin(lim.MemoryMin, cgroupV2, "the class's pods' summed memory requests, which their pod slices' memory.min draw on (MemoryQoS's burstable cgroup)")...)
	}
	return append(ps, cpuShares(lim, cgroupV2, "BestEffort pods run on what the others leave: the minimum share, as the kubelet's besteffort cgroup")...)
}

// RootSlice holds every namespace's slice.
const RootSlice = "berth.slice"

// RootSliceProperties are what berth sets on RootSlice, which systemd
// makes implicitly with the first namespace slice: on cgroup v2 MemoryMin
// of every pod's memory requests, the protection the namespace slices draw
// on (the root cgroup's children are not bounded by a parent); nothing on
// v1.
func RootSliceProperties(bytes uint64, cgroupV2 bool) []Property {
	if !cgroupV2 {
		return nil
	}
	return memoryMin(bytes, true, "every namespace's pods' summed memory requests, which the namespace slices' memory.min draw on")
}

// memoryMin is MemoryMin, 0 included: a protection taken off when the
// pods that asked for it go. cgroup v2 only.
func memoryMin(bytes uint64, cgroupV2 bool, why string) []Property {
	if !cgroupV2 {
		return nil
	}
	return []Property{{Name: "MemoryMin", Value: bytes, Why: why + "; cgroup v2 only"}}
}

// PodSliceProperties are the properties of a pod's slice, lim from
// cgroup.PodLimits: the kubelet's pod cgroup (ResourceConfigForPod).
func PodSliceProperties(pod *corev1.Pod, lim cgroup.SliceLimits, cgroupV2 bool) []Property {
	ps := []Property{{Name: "Description", Value: fmt.Sprintf("berth pod %s/%s (%s)", pod.Namespace, pod.Name, pod.UID),
		Why: "shown by systemctl status and systemd-cgtop: the pod whose containers the slice holds"}}
	ps = append(ps, accounting("pod's containers")...)
	why := "the pod's cpu request, its share against its siblings: app containers and sidecars, or the largest init container if more, plus overhead (kubelet ResourceConfigForPod)"
	if lim.QOS == corev1.PodQOSBestEffort {
		why = "a BestEffort pod gets the minimum share, as the kubelet's pod cgroup"
	}
	ps = append(ps, cpuShares(lim, cgroupV2, why)...)
	if lim.CPUQuotaPerSecUSec > 0 {
		ps = append(ps,
			Property{Name: "CPUQuotaPerSecUSec", Value: lim.CPUQuotaPerSecUSec, Why: fmt.Sprintf("the pod's cpu limit %s: %s", cpuString(lim.CPUQuotaPerSecUSec), limitRule(lim.QOS, "cpu"))},
			Property{Name: "CPUQuotaPeriodUSec", Value: uint64(cgroup.QuotaPeriod), Why: "the kubelet's 100ms CFS period (property needs systemd >= 242)"})
	}
	if lim.MemoryMax > 0 {
		ps = append(ps, Property{Name: "MemoryMax", Value: lim.MemoryMax, Why: "the pod's memory limit: " + limitRule(lim.QOS, "memory")})
	}
	if cgroupV2 && lim.MemoryMin > 0 {
		ps = append(ps, Property{Name: "MemoryMin", Value: lim.MemoryMin, Why: "the pod's memory request protected from reclaim (Kubernetes MemoryQoS, cgroup v2 only)"})
	}
	return ps
}

// limitRule says why a pod slice has a limit of a resource.
func limitRule(qos corev1.PodQOSClass, res string) string {
	if qos == corev1.PodQOSGuaranteed {
		return "a Guaranteed pod's, summed over its containers (ResourceConfigForPod)"
	}
	return "every container of this Burstable pod declares a " + res + " limit, so the pod has their sum (ResourceConfigForPod; one unlimited container would leave the pod unlimited)"
}

// cpuShares is CPUWeight (cgroup v2) or CPUShares (v1), whichever lim has
// for the host's cgroup version; none when unset (systemd's default).
func cpuShares(lim cgroup.SliceLimits, cgroupV2 bool, why string) []Property {
	if cgroupV2 {
		if lim.CPUWeight > 0 {
			return []Property{{Name: "CPUWeight", Value: lim.CPUWeight, Why: why + "; cgroup v2 cpu.weight by runc's shares→weight conversion"}}
		}
	} else if lim.CPUShares > 0 {
		return []Property{{Name: "CPUShares", Value: lim.CPUShares, Why: why + "; cgroup v1 cpu.shares (kubelet MilliCPUToShares)"}}
	}
	return nil
}
