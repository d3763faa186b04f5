package usage

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"

	"github.com/berth-dev/berth/cgroup"
)

// The metrics.k8s.io objects, as metrics-server builds them
// (pkg/storage/pod.go, node.go): CPU in nanocores, memory as the working
// set in bytes, timestamp the sample's and window the span the rate is
// over. A pod is listed only once every one of its running containers has
// a rate (metrics-server leaves a pod out until each container has two
// samples, so that a sum over the pod is never half of it).

func cpuQuantity(cores float64) resource.Quantity {
	return *resource.NewScaledQuantity(int64(cores*1e9), resource.Nano)
}

func memQuantity(st *cgroup.Stats) resource.Quantity {
	return *resource.NewQuantity(int64(st.MemoryWorkingSet), resource.BinarySI)
}

// PodMetrics are the pods of namespace ns ("": every namespace) that have
// figures in the last cycle; nil before there is one.
func (s *Sampler) PodMetrics(ns string) []metricsv1beta1.PodMetrics {
	snap := s.Last()
	if snap == nil {
		return nil
	}
	var out []metricsv1beta1.PodMetrics
	for _, p := range snap.Pods {
		if ns != "" && p.Namespace != ns {
			continue
		}
		pm, ok := p.metrics(snap)
		if ok {
			out = append(out, pm)
		}
	}
	return out
}

func (p *Pod) metrics(snap *Snapshot) (metricsv1beta1.PodMetrics, bool) {
	pm := metricsv1beta1.PodMetrics{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, CreationTimestamp: metav1.NewTime(time.Now())},
		Timestamp:  metav1.NewTime(snap.Time),
		Window:     metav1.Duration{Duration: snap.Window},
		Containers: []metricsv1beta1.ContainerMetrics{},
	}
	if len(p.Containers) == 0 {
		return pm, false
	}
	for i := range p.Containers {
		c := &p.Containers[i]
		if !c.HasRate {
			return pm, false
		}
		pm.Containers = append(pm.Containers, metricsv1beta1.ContainerMetrics{Name: c.Name, Usage: corev1.ResourceList{
			corev1.ResourceCPU: cpuQuantity(c.CPU), corev1.ResourceMemory: memQuantity(&c.Stats),
		}})
	}
	return pm, true
}

// NodeMetrics is the node's figures in the last cycle (false before there
// are two: no rate yet).
func (s *Sampler) NodeMetrics(node string) (metricsv1beta1.NodeMetrics, bool) {
	snap := s.Last()
	if snap == nil || snap.Window <= 0 {
		return metricsv1beta1.NodeMetrics{}, false
	}
	return metricsv1beta1.NodeMetrics{
		ObjectMeta: metav1.ObjectMeta{Name: node, CreationTimestamp: metav1.NewTime(time.Now())},
		Timestamp:  metav1.NewTime(snap.Time),
		Window:     metav1.Duration{Duration: snap.Window},
		Usage: corev1.ResourceList{
			corev1.ResourceCPU: cpuQuantity(snap.NodeCPU), corev1.ResourceMemory: memQuantity(&snap.Node),
		},
	}, true
}
