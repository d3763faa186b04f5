package exporter

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Own is berth's own series: what berthd does, for alerts on the agent
// itself. Its methods are the small interfaces the instrumented packages
// declare (api/instrument.Observer, agent/events.Counter,
// agent/worker.Observer, agent/admission.Observer), so that none of them
// imports Prometheus.
type Own struct {
	apiRequests *prometheus.CounterVec
	apiLatency  *prometheus.HistogramVec
	events      *prometheus.CounterVec
	pulls       *prometheus.HistogramVec
	rejected    *prometheus.CounterVec
	admission   *prometheus.CounterVec
	podSync     prometheus.Histogram
	podStart    prometheus.Histogram
	systemd     atomic.Pointer[func() int]
	// all is every collector above, and the function-backed ones, for
	// Describe and Collect.
	all []prometheus.Collector
}

// Cycles is what Own reads of the usage sampler.
type Cycles interface {
	Cycles() uint64
	Usage
}

// NewOwn returns berth's own series; u may be nil (no usage series).
func NewOwn(u Cycles) *Own {
	o := &Own{
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_api_requests_total", Help: "API requests answered, by verb, resource and HTTP status code (the apiserver's apiserver_request_total)."},
			[]string{"verb", "resource", "code"}),
		apiLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "berth_api_request_duration_seconds", Help: "API request latency by verb and resource; watches, logs and streams excluded (they last as long as the client stays).",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}},
			[]string{"verb", "resource"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_events_total", Help: "Kubernetes Events recorded, by type, reason and the kind of object they are about (Warning SignatureValidationFailed: an image the trust policy refused; FailedCreate: a quota or limit refused a pod; BackOff: a container in CrashLoopBackOff)."},
			[]string{"type", "reason", "kind"}),
		pulls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "berth_image_pull_duration_seconds", Help: "Image pulls for containers (trust verification included), by outcome: \"\" for success, else the kubelet's waiting reason (ErrImagePull, SignatureValidationFailed).",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}},
			[]string{"failure"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_image_trust_rejections_total", Help: "Images the trust policy refused, by the policy scope that applied and the type of the requirement that refused (reject, sigstoreSigned, ...)."},
			[]string{"scope", "requirement"}),
		admission: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_admission_rejections_total", Help: "Writes refused by admission, by plugin (LimitRanger, ResourceQuota) and the resource written."},
			[]string{"plugin", "resource"}),
		podSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "berth_pod_sync_duration_seconds", Help: "One pass of the pod worker over a pod that should run (the kubelet's pod worker duration): adopt, pull, start, status.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}}),
		podStart: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "berth_pod_start_duration_seconds", Help: "From a pod's creation to its first Running status, image pulls included.",
			Buckets: []float64{0.25, 0.5, 1, 2, 3, 5, 8, 15, 30, 60, 120, 300}}),
	}
	o.all = []prometheus.Collector{o.apiRequests, o.apiLatency, o.events, o.pulls, o.rejected, o.admission, o.podSync, o.podStart}
	o.all = append(o.all, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "berth_systemd_reconnects_total", Help: "Times berthd's connection to systemd was dialled again after it broke (systemd re-executed, dbus-daemon restarted)."},
		func() float64 {
			if f := o.systemd.Load(); f != nil {
				return float64((*f)())
			}
			return 0
		}))
	if u != nil {
		o.all = append(o.all, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "berth_usage_collections_total", Help: "Usage collection cycles completed (each reads every running container's cgroup once)."},
			func() float64 { return float64(u.Cycles()) }), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_usage_collection_duration_seconds", Help: "How long the last usage collection cycle took."},
			func() float64 {
				if s := u.Last(); s != nil {
					return s.Took.Seconds()
				}
				return 0
			}))
	}
	return o
}

// Describe sends every series' description.
func (o *Own) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range o.all {
		c.Describe(ch)
	}
}

// Collect sends their values.
func (o *Own) Collect(ch chan<- prometheus.Metric) {
	for _, c := range o.all {
		c.Collect(ch)
	}
}

// APIRequest counts one answered request; long-running ones (watch,
// logs, streams) count without their duration.
func (o *Own) APIRequest(verb, resource string, code int, took time.Duration, longRunning bool) {
	o.apiRequests.WithLabelValues(verb, resource, strconv.Itoa(code)).Inc()
	if !longRunning {
		o.apiLatency.WithLabelValues(verb, resource).Observe(took.Seconds())
	}
}

// EventRecorded counts one Event (a repeat of a correlated Event too: the
// counter says how often it happened).
func (o *Own) EventRecorded(eventtype, reason, kind string) {
	o.events.WithLabelValues(eventtype, reason, kind).Inc()
}

// ImagePull counts one pull for a container.
func (o *Own) ImagePull(took time.Duration, failure string) {
	o.pulls.WithLabelValues(failure).Observe(took.Seconds())
}

// ImageRejected counts one refusal by the trust policy.
func (o *Own) ImageRejected(scope, requirement string) {
	o.rejected.WithLabelValues(scope, requirement).Inc()
}

// AdmissionRejected counts one write admission refused.
func (o *Own) AdmissionRejected(plugin, resource string) {
	o.admission.WithLabelValues(plugin, resource).Inc()
}

// PodSynced observes one pass of the pod worker.
func (o *Own) PodSynced(took time.Duration) { o.podSync.Observe(took.Seconds()) }

// PodStarted observes a pod's time to its first Running.
func (o *Own) PodStarted(took time.Duration) { o.podStart.Observe(took.Seconds()) }

// SetSystemd gives the connection's reconnect count, once systemd
// answers.
func (o *Own) SetSystemd(reconnects func() int) { o.systemd.Store(&reconnects) }
