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
	"bytes"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

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

// A namespace's slice: what all its pods use, next to
// kube_resourcequota's used and hard (berth's names: cAdvisor has no
// namespace-level series, and a container_* series with only a namespace
// label would be counted twice by queries summing by namespace).
var (
	nsLabels     = []string{"namespace", "id"}
	nsCPU        = prometheus.NewDesc("berth_namespace_cpu_usage_seconds_total", "Cumulative CPU time of the namespace's pods (its slice).", nsLabels, nil)
	nsWorkingSet = prometheus.NewDesc("berth_namespace_memory_working_set_bytes", "Working set of the namespace's pods (its slice).", nsLabels, nil)
	nsMemLimit   = prometheus.NewDesc("berth_namespace_memory_limit_bytes", "Memory limit of the namespace's slice (its ResourceQuota's limits.memory; 0: none).", nsLabels, nil)
	nsThrottled  = prometheus.NewDesc("berth_namespace_cpu_cfs_throttled_periods_total", "Throttled periods of the namespace's slice (its ResourceQuota's limits.cpu).", nsLabels, nil)
)

var cadvisorDescs = []*prometheus.Desc{nsCPU, nsWorkingSet, nsMemLimit, nsThrottled, cpuUsage, cpuUser, cpuSystem, cfsPeriods, cfsThrottled, cfsThrottledSecs,
	memUsage, memWorkingSet, memRSS, memMax, memLimit, oomEvents, threads, threadsMax}

// Exporter is a prometheus.Gatherer of the cAdvisor and
// kube-state-metrics series. They are many (about 40 a pod), and building
// and rendering them costs about 0.15 ms a pod, so they are built when
// what they show changes and kept, as kube-state-metrics keeps its
// rendered objects: the cAdvisor series once per collection cycle, the
// kube-state series once per object that changed. A scrape with nothing
// changed renders nothing again (BenchmarkScrape).
type Exporter struct {
	usage Usage
	state *kubeState
	reg   *prometheus.Registry // the cAdvisor collector, gathered once per cycle

	mu   sync.Mutex
	snap *usage.Snapshot // the cycle collect reads
	// What each part was built from, the parts, and the whole.
	builtSnap    *usage.Snapshot
	builtLists   kubeLists
	cFams, kFams []*dto.MetricFamily
	cText, kText []byte
	fams         []*dto.MetricFamily
	text         []byte
}

// New returns the exporter.
func New(u Usage, st Store) *Exporter {
	e := &Exporter{usage: u, state: newKubeState(st), reg: prometheus.NewRegistry()}
	e.reg.MustRegister(collector{e})
	return e
}

// collector is the cAdvisor series for the Exporter's private registry.
type collector struct{ e *Exporter }

// Describe sends every series' description.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range cadvisorDescs {
		ch <- d
	}
}

// Collect renders the cycle build chose.
func (c collector) Collect(ch chan<- prometheus.Metric) { c.e.collect(ch) }

// Gather returns the series, built again only where the usage cycle or
// an object changed since the last call. The families are shared and read
// only.
func (e *Exporter) Gather() ([]*dto.MetricFamily, error) {
	fams, _, err := e.build()
	return fams, err
}

// Text is the series in Prometheus' text format (0.0.4), from the same
// cache.
func (e *Exporter) Text() ([]byte, error) {
	_, text, err := e.build()
	return text, err
}

func (e *Exporter) build() ([]*dto.MetricFamily, []byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	snap := e.usage.Last()
	lists, err := e.state.list()
	if err != nil {
		return nil, nil, err
	}
	changed := false
	if e.cFams == nil || snap != e.builtSnap {
		e.snap = snap
		fams, err := e.reg.Gather()
		if err != nil {
			return nil, nil, err
		}
		var buf bytes.Buffer
		for _, mf := range fams {
			if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
				return nil, nil, err
			}
		}
		e.cFams, e.cText, e.builtSnap, changed = fams, buf.Bytes(), snap, true
	}
	if e.kFams == nil || !lists.same(e.builtLists) {
		e.state.cur = lists
		e.kFams, e.kText = e.state.build()
		e.builtLists, changed = lists, true
	}
	if changed {
		e.fams = append(append([]*dto.MetricFamily{}, e.cFams...), e.kFams...)
		e.text = append(append([]byte{}, e.cText...), e.kText...)
	}
	return e.fams, e.text, nil
}

func (e *Exporter) collect(ch chan<- prometheus.Metric) {
	if snap := e.snap; snap != nil {
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
		for _, n := range snap.Namespaces {
			for _, m := range []struct {
				d *prometheus.Desc
				t prometheus.ValueType
				v float64
			}{{nsCPU, prometheus.CounterValue, float64(n.Stats.CPUUsageNSec) / 1e9}, {nsWorkingSet, prometheus.GaugeValue, float64(n.Stats.MemoryWorkingSet)},
				{nsMemLimit, prometheus.GaugeValue, float64(n.Stats.MemoryLimit)}, {nsThrottled, prometheus.CounterValue, float64(n.Stats.CPUThrottled)}} {
				if cm, err := prometheus.NewConstMetric(m.d, m.t, m.v, n.Name, n.Cgroup); err == nil {
					ch <- prometheus.NewMetricWithTimestamp(snap.Time, cm)
				}
			}
		}
	}
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
