package exporter

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berth-dev/berth/agent/store"
)

// The kube-state-metrics series berth reports, with its names, labels and
// help texts (kube-state-metrics internal/store/pod.go, deployment.go,
// resourcequota.go, node.go).
var (
	podInfo = ksm("kube_pod_info", "Information about pod.",
		[]string{"namespace", "pod", "uid", "host_ip", "pod_ip", "node", "created_by_kind", "created_by_name", "priority_class", "host_network"}, nil)
	podPhase = ksm("kube_pod_status_phase", "The pods current phase.",
		[]string{"namespace", "pod", "uid", "phase"}, nil)
	podReady = ksm("kube_pod_status_ready", "Describes whether the pod is ready to serve requests.",
		[]string{"namespace", "pod", "uid", "condition"}, nil)
	podRestarts = ksm("kube_pod_container_status_restarts_total", "The number of container restarts per container.",
		[]string{"namespace", "pod", "uid", "container"}, nil)
	podContainerReady = ksm("kube_pod_container_status_ready", "Describes whether the containers readiness check succeeded.",
		[]string{"namespace", "pod", "uid", "container"}, nil)
	podContainerRunning = ksm("kube_pod_container_status_running", "Describes whether the container is currently in running state.",
		[]string{"namespace", "pod", "uid", "container"}, nil)
	podContainerWaitingReason = ksm("kube_pod_container_status_waiting_reason", "Describes the reason the container is currently in waiting state.",
		[]string{"namespace", "pod", "uid", "container", "reason"}, nil)
	podContainerLastTerminatedReason = ksm("kube_pod_container_status_last_terminated_reason", "Describes the last reason the container was in terminated state.",
		[]string{"namespace", "pod", "uid", "container", "reason"}, nil)
	podRequests = ksm("kube_pod_container_resource_requests", "The number of requested request resource by a container. It is recommended to use the kube_pod_resource_requests metric exposed by kube-scheduler instead, as it is more precise.",
		[]string{"namespace", "pod", "uid", "container", "node", "resource", "unit"}, nil)
	podLimits = ksm("kube_pod_container_resource_limits", "The number of requested limit resource by a container. It is recommended to use the kube_pod_resource_limits metric exposed by kube-scheduler instead, as it is more precise.",
		[]string{"namespace", "pod", "uid", "container", "node", "resource", "unit"}, nil)

	deployLabels            = []string{"namespace", "deployment"}
	deploySpecReplicas      = ksm("kube_deployment_spec_replicas", "Number of desired pods for a deployment.", deployLabels, nil)
	deployReplicas          = ksm("kube_deployment_status_replicas", "The number of replicas per deployment.", deployLabels, nil)
	deployReady             = ksm("kube_deployment_status_replicas_ready", "The number of ready replicas per deployment.", deployLabels, nil)
	deployAvailable         = ksm("kube_deployment_status_replicas_available", "The number of available replicas per deployment.", deployLabels, nil)
	deployUnavailable       = ksm("kube_deployment_status_replicas_unavailable", "The number of unavailable replicas per deployment.", deployLabels, nil)
	deployUpdated           = ksm("kube_deployment_status_replicas_updated", "The number of updated replicas per deployment.", deployLabels, nil)
	deployObservedGen       = ksm("kube_deployment_status_observed_generation", "The generation observed by the deployment controller.", deployLabels, nil)
	deployGeneration        = ksm("kube_deployment_metadata_generation", "Sequence number representing a specific generation of the desired state.", deployLabels, nil)
	deployPaused            = ksm("kube_deployment_spec_paused", "Whether the deployment is paused and will not be processed by the deployment controller.", deployLabels, nil)
	deployConditionProgress = ksm("kube_deployment_status_condition", "The current status conditions of a deployment.",
		[]string{"namespace", "deployment", "condition", "status"}, nil)

	quota = ksm("kube_resourcequota", "Information about resource quota.",
		[]string{"namespace", "resourcequota", "resource", "type"}, nil)

	nodeCapacity    = ksm("kube_node_status_capacity", "The capacity for different resources of a node.", []string{"node", "resource", "unit"}, nil)
	nodeAllocatable = ksm("kube_node_status_allocatable", "The allocatable for different resources of a node.", []string{"node", "resource", "unit"}, nil)
)

// kubeLists are the objects the series are built from: the store's
// decoded objects, the same pointers while their bytes are unchanged
// (store.Decoded), so that comparing pointers tells a change.
type kubeLists struct {
	pods   []*corev1.Pod
	deploy []*appsv1.Deployment
	quotas []*corev1.ResourceQuota
	nodes  []*corev1.Node
}

func samePtrs[T any](a, b []*T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (l kubeLists) same(o kubeLists) bool {
	return samePtrs(l.pods, o.pods) && samePtrs(l.deploy, o.deploy) && samePtrs(l.quotas, o.quotas) && samePtrs(l.nodes, o.nodes)
}

// family is one kube-state series' name, help and type, in the order
// they were declared (the order of /metrics).
type family struct {
	idx        int
	name, help string
	typ        dto.MetricType
}

var (
	kubeFamilies []*family
	familyOf     = map[*prometheus.Desc]*family{}
)

// ksm declares a kube-state series (a counter when its name says so).
func ksm(name, help string, labels []string, _ prometheus.Labels) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, labels, nil)
	typ := dto.MetricType_GAUGE
	if strings.HasSuffix(name, "_total") {
		typ = dto.MetricType_COUNTER
	}
	f := &family{idx: len(kubeFamilies), name: name, help: help, typ: typ}
	kubeFamilies = append(kubeFamilies, f)
	familyOf[d] = f
	return d
}

// objSeries is one object's series, by family: as metrics (for remote
// write) and as text lines (for /metrics), built when the object changed
// and kept while it does not.
type objSeries struct {
	metrics [][]*dto.Metric
	text    [][]byte
}

func objectSeries(fn func(emitFn)) *objSeries {
	o := &objSeries{metrics: make([][]*dto.Metric, len(kubeFamilies)), text: make([][]byte, len(kubeFamilies))}
	fn(func(m prometheus.Metric) {
		f := familyOf[m.Desc()]
		dm := &dto.Metric{}
		if f == nil || m.Write(dm) != nil {
			return
		}
		o.metrics[f.idx] = append(o.metrics[f.idx], dm)
	})
	for i, ms := range o.metrics {
		if len(ms) == 0 {
			continue
		}
		f := kubeFamilies[i]
		var b bytes.Buffer
		if _, err := expfmt.MetricFamilyToText(&b, &dto.MetricFamily{Name: &f.name, Help: &f.help, Type: &f.typ, Metric: ms}); err != nil {
			continue
		}
		// The sample lines only: each family's HELP and TYPE come once.
		lines := b.Bytes()
		for range 2 {
			if j := bytes.IndexByte(lines, '\n'); j >= 0 && bytes.HasPrefix(lines, []byte("# ")) {
				lines = lines[j+1:]
			}
		}
		o.text[i] = lines
	}
	return o
}

// build is the kube-state series of the current lists: each object's
// from the cache unless it changed, then put together family by family.
func (k *kubeState) build() ([]*dto.MetricFamily, []byte) {
	next := make(map[any]*objSeries, len(k.cache))
	var objs []*objSeries
	get := func(key any, fn func(emitFn)) {
		o := k.cache[key]
		if o == nil {
			o = objectSeries(fn)
		}
		next[key] = o
		objs = append(objs, o)
	}
	for _, p := range k.cur.pods {
		get(p, func(e emitFn) { pod(e, p) })
	}
	for _, d := range k.cur.deploy {
		get(d, func(e emitFn) { deployment(e, d) })
	}
	for _, q := range k.cur.quotas {
		get(q, func(e emitFn) { quotaSeries(e, q) })
	}
	for _, n := range k.cur.nodes {
		get(n, func(e emitFn) { node(e, n) })
	}
	k.cache = next
	var fams []*dto.MetricFamily
	var text bytes.Buffer
	for i, f := range kubeFamilies {
		var ms []*dto.Metric
		for _, o := range objs {
			ms = append(ms, o.metrics[i]...)
		}
		if len(ms) == 0 {
			continue
		}
		fams = append(fams, &dto.MetricFamily{Name: &f.name, Help: &f.help, Type: &f.typ, Metric: ms})
		fmt.Fprintf(&text, "# HELP %s %s\n# TYPE %s %s\n", f.name, escapeHelp(f.help), f.name, strings.ToLower(f.typ.String()))
		for _, o := range objs {
			text.Write(o.text[i])
		}
	}
	return fams, text.Bytes()
}

// escapeHelp is the text format's escaping of a HELP line.
func escapeHelp(s string) string { return strings.NewReplacer("\\", `\\`, "\n", `\n`).Replace(s) }

type kubeState struct {
	cur    kubeLists // what build renders
	cache  map[any]*objSeries
	st     Store
	pods   *store.Decoded[corev1.Pod]
	deploy *store.Decoded[appsv1.Deployment]
	quotas *store.Decoded[corev1.ResourceQuota]
	nodes  *store.Decoded[corev1.Node]
}

func newKubeState(st Store) *kubeState {
	return &kubeState{st: st,
		pods: &store.Decoded[corev1.Pod]{Resource: "pods"}, deploy: &store.Decoded[appsv1.Deployment]{Resource: "apps/deployments"},
		quotas: &store.Decoded[corev1.ResourceQuota]{Resource: "resourcequotas"}, nodes: &store.Decoded[corev1.Node]{Resource: "nodes"}}
}

// emitFn takes one series.
type emitFn func(prometheus.Metric)

func gauge(emit emitFn, d *prometheus.Desc, v float64, lv ...string) {
	if m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, lv...); err == nil {
		emit(m)
	}
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// resourceUnit is kube-state-metrics' unit label and value of a
// resource quantity: cores for CPU, bytes for memory and storage, an
// integer for the rest.
func resourceUnit(name corev1.ResourceName, q resource.Quantity) (string, float64) {
	switch {
	case name == corev1.ResourceCPU:
		return "core", float64(q.MilliValue()) / 1000
	case name == corev1.ResourceMemory || name == corev1.ResourceStorage || name == corev1.ResourceEphemeralStorage ||
		strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix):
		return "byte", float64(q.Value())
	}
	return "integer", float64(q.Value())
}

// quotaValue is kube-state-metrics' value of a quota's quantity: CPU in
// cores (fractions kept), everything else as a number.
func quotaValue(name corev1.ResourceName, q resource.Quantity) float64 {
	if strings.HasSuffix(string(name), "cpu") || name == corev1.ResourceCPU {
		return float64(q.MilliValue()) / 1000
	}
	return float64(q.Value())
}

// list reads the objects (decoding only what changed).
func (k *kubeState) list() (kubeLists, error) {
	var l kubeLists
	var err error
	if l.pods, _, err = k.pods.List(k.st, ""); err != nil {
		return l, err
	}
	if l.deploy, _, err = k.deploy.List(k.st, ""); err != nil {
		return l, err
	}
	if l.quotas, _, err = k.quotas.List(k.st, ""); err != nil {
		return l, err
	}
	l.nodes, _, err = k.nodes.List(k.st, "")
	return l, err
}

// deployment, quota and node emit one object's series.
func deployment(emit emitFn, d *appsv1.Deployment) {
	lv := []string{d.Namespace, d.Name}
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	gauge(emit, deploySpecReplicas, float64(replicas), lv...)
	gauge(emit, deployReplicas, float64(d.Status.Replicas), lv...)
	gauge(emit, deployReady, float64(d.Status.ReadyReplicas), lv...)
	gauge(emit, deployAvailable, float64(d.Status.AvailableReplicas), lv...)
	gauge(emit, deployUnavailable, float64(d.Status.UnavailableReplicas), lv...)
	gauge(emit, deployUpdated, float64(d.Status.UpdatedReplicas), lv...)
	gauge(emit, deployObservedGen, float64(d.Status.ObservedGeneration), lv...)
	gauge(emit, deployGeneration, float64(d.Generation), lv...)
	gauge(emit, deployPaused, boolf(d.Spec.Paused), lv...)
	for _, c := range d.Status.Conditions {
		for _, s := range []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown} {
			gauge(emit, deployConditionProgress, boolf(c.Status == s), d.Namespace, d.Name, string(c.Type), strings.ToLower(string(s)))
		}
	}
}

func quotaSeries(emit emitFn, q *corev1.ResourceQuota) {
	for name, v := range q.Status.Hard {
		gauge(emit, quota, quotaValue(name, v), q.Namespace, q.Name, string(name), "hard")
	}
	for name, v := range q.Status.Used {
		gauge(emit, quota, quotaValue(name, v), q.Namespace, q.Name, string(name), "used")
	}
}

func node(emit emitFn, n *corev1.Node) {
	for name, v := range n.Status.Capacity {
		unit, f := resourceUnit(name, v)
		gauge(emit, nodeCapacity, f, n.Name, sanitize(string(name)), unit)
	}
	for name, v := range n.Status.Allocatable {
		unit, f := resourceUnit(name, v)
		gauge(emit, nodeAllocatable, f, n.Name, sanitize(string(name)), unit)
	}
}

// sanitize is kube-state-metrics' label value of a resource name: "/",
// "." and "-" become "_" (nvidia.com/gpu → nvidia_com_gpu).
func sanitize(s string) string {
	return strings.NewReplacer("/", "_", ".", "_", "-", "_").Replace(s)
}

func pod(emit emitFn, p *corev1.Pod) {
	uid := string(p.UID)
	var kind, owner string
	for _, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			kind, owner = o.Kind, o.Name
		}
	}
	gauge(emit, podInfo, 1, p.Namespace, p.Name, uid, p.Status.HostIP, p.Status.PodIP, p.Spec.NodeName, kind, owner,
		p.Spec.PriorityClassName, strings.ToLower(boolWord(p.Spec.HostNetwork)))
	phase := p.Status.Phase
	for _, ph := range []corev1.PodPhase{corev1.PodPending, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown, corev1.PodRunning} {
		gauge(emit, podPhase, boolf(phase == ph), p.Namespace, p.Name, uid, string(ph))
	}
	for _, c := range p.Status.Conditions {
		if c.Type != corev1.PodReady {
			continue
		}
		for _, s := range []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown} {
			gauge(emit, podReady, boolf(c.Status == s), p.Namespace, p.Name, uid, strings.ToLower(string(s)))
		}
	}
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		lv := []string{p.Namespace, p.Name, uid, cs.Name}
		if m, err := prometheus.NewConstMetric(podRestarts, prometheus.CounterValue, float64(cs.RestartCount), lv...); err == nil {
			emit(m)
		}
		gauge(emit, podContainerReady, boolf(cs.Ready), lv...)
		gauge(emit, podContainerRunning, boolf(cs.State.Running != nil), lv...)
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			gauge(emit, podContainerWaitingReason, 1, append(lv, w.Reason)...)
		}
		if t := cs.LastTerminationState.Terminated; t != nil && t.Reason != "" {
			gauge(emit, podContainerLastTerminatedReason, 1, append(lv, t.Reason)...)
		}
	}
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		for name, q := range c.Resources.Requests {
			unit, f := resourceUnit(name, q)
			gauge(emit, podRequests, f, p.Namespace, p.Name, uid, c.Name, p.Spec.NodeName, sanitize(string(name)), unit)
		}
		for name, q := range c.Resources.Limits {
			unit, f := resourceUnit(name, q)
			gauge(emit, podLimits, f, p.Namespace, p.Name, uid, c.Name, p.Spec.NodeName, sanitize(string(name)), unit)
		}
	}
}

func boolWord(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
