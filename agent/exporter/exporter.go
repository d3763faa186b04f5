// Package exporter renders the node for Prometheus under the names the
// usual Kubernetes dashboards and alerts already query:
//
//   - containers' usage under cAdvisor's names and labels (the kubelet's
//     /metrics/cadvisor: container_cpu_usage_seconds_total,
//     container_memory_working_set_bytes, ... with namespace, pod,
//     container, id, image, name), from agent/usage's last cycle, never
//     from the cgroup tree: a scrape reads no file;
//   - objects' state under kube-state-metrics' names (kube_pod_status_phase,
//     kube_deployment_status_replicas_available, kube_resourcequota, ...),
//     from the store, decoded once per change (store.Decoded);
//   - berth's own (own.go): API requests, Events by reason, collection
//     cycles.
//
// Label sets follow the upstream exporters so that a query written for a
// cluster (sum by (namespace) (rate(container_cpu_usage_seconds_total
// {container!=""}[5m]))) works unchanged.
package exporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/agent/usage"
	"github.com/berth-dev/berth/cgroup"
)

// Usage is the last collection cycle (agent/usage.Sampler).
type Usage interface {
	Last() *usage.Snapshot
}

var _ Usage = (*usage.Sampler)(nil)

// Store is what the exporter reads of agent/store.
type Store interface {
	ScanKeyed(res store.Resource, ns string, fn func(key, data []byte) error) (uint64, error)
}

var _ Store = (*store.Store)(nil)

// cAdvisor's label names, in its order.
var containerLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

func cadvisor(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append(append([]string{}, containerLabels...), extra...), nil)
}

// The cAdvisor series berth reports, with cAdvisor's help texts.
var (
	cpuUsage         = cadvisor("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", "cpu")
	cpuUser          = cadvisor("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.")
	cpuSystem        = cadvisor("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.")
	cfsPeriods       = cadvisor("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.")
	cfsThrottled     = cadvisor("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.")
	cfsThrottledSecs = cadvisor("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.")
	memUsage         = cadvisor("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed")
	memWorkingSet    = cadvisor("container_memory_working_set_bytes", "Current working set in bytes.")
	memRSS           = cadvisor("container_memory_rss", "Size of RSS in bytes.")
	memMax           = cadvisor("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes")
	memLimit         = cadvisor("container_spec_memory_limit_bytes", "Memory limit for the container.")
	oomEvents        = cadvisor("container_oom_events_total", "Count of out of memory events observed for the container")
	threads          = cadvisor("container_threads", "Number of threads running inside the container")
	threadsMax       = cadvisor("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero")
)

var cadvisorDescs = []*prometheus.Desc{cpuUsage, cpuUser, cpuSystem, cfsPeriods, cfsThrottled, cfsThrottledSecs,
	memUsage, memWorkingSet, memRSS, memMax, memLimit, oomEvents, threads, threadsMax}

// Exporter is a prometheus.Collector of the cAdvisor and
// kube-state-metrics series.
type Exporter struct {
	usage Usage
	state *kubeState
}

// New returns the exporter; register it with a prometheus.Registry.
func New(u Usage, st Store) *Exporter {
	return &Exporter{usage: u, state: newKubeState(st)}
}

// Describe sends every series' description.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range cadvisorDescs {
		ch <- d
	}
	e.state.describe(ch)
}

// Collect renders the last cycle and the store's objects.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	if snap := e.usage.Last(); snap != nil {
		// The root group as cAdvisor reports it: id="/", every other
		// label empty.
		emitGroup(ch, snap, &snap.Node, []string{"", "/", "", "", "", ""})
		for _, p := range snap.Pods {
			// The pod's slice: cAdvisor's container="" series, the one
			// pod-level queries and the kubelet's own pod figures use.
			emitGroup(ch, snap, &p.Stats, []string{"", p.Cgroup, "", "", p.Namespace, p.Name})
			for i := range p.Containers {
				c := &p.Containers[i]
				emitGroup(ch, snap, &c.Stats, []string{c.Name, c.Cgroup, c.Image, c.Unit, p.Namespace, p.Name})
			}
		}
	}
	e.state.collect(ch)
}

// emitGroup sends one group's series, stamped with the cycle's time as
// cAdvisor stamps its own: a scrape between two cycles repeats the same
// sample instead of inventing a new one.
func emitGroup(ch chan<- prometheus.Metric, snap *usage.Snapshot, st *cgroup.Stats, lv []string) {
	send := func(d *prometheus.Desc, t prometheus.ValueType, v float64, extra ...string) {
		m, err := prometheus.NewConstMetric(d, t, v, append(lv, extra...)...)
		if err != nil {
			return // a label value that is not UTF-8: never from berth's names
		}
		ch <- prometheus.NewMetricWithTimestamp(snap.Time, m)
	}
	const ns = 1e9
	send(cpuUsage, prometheus.CounterValue, float64(st.CPUUsageNSec)/ns, "total")
	send(cpuUser, prometheus.CounterValue, float64(st.CPUUserNSec)/ns)
	send(cpuSystem, prometheus.CounterValue, float64(st.CPUSystemNSec)/ns)
	if st.CPUPeriods > 0 {
		// cAdvisor reports the CFS counters only for a group with a quota.
		send(cfsPeriods, prometheus.CounterValue, float64(st.CPUPeriods))
		send(cfsThrottled, prometheus.CounterValue, float64(st.CPUThrottled))
		send(cfsThrottledSecs, prometheus.CounterValue, float64(st.CPUThrottledNSec)/ns)
	}
	send(memUsage, prometheus.GaugeValue, float64(st.MemoryUsage))
	send(memWorkingSet, prometheus.GaugeValue, float64(st.MemoryWorkingSet))
	send(memRSS, prometheus.GaugeValue, float64(st.MemoryRSS))
	send(memMax, prometheus.GaugeValue, float64(st.MemoryPeak))
	send(memLimit, prometheus.GaugeValue, float64(st.MemoryLimit))
	send(oomEvents, prometheus.CounterValue, float64(st.OOMKills))
	send(threads, prometheus.GaugeValue, float64(st.Pids))
	send(threadsMax, prometheus.GaugeValue, float64(st.PidsLimit))
}
