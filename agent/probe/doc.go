// Package probe is berth's prober: it runs the liveness, readiness and
// startup probes of a node's containers as the kubelet's prober does
// (pkg/kubelet/prober and pkg/probe/{exec,http,tcp,grpc} of Kubernetes
// 1.37), so that a pod behaves on berth as it would on a kubelet: the same
// timing fields and defaults, the same thresholds, the same Events and the
// same messages.
//
// # Use
//
// The pod worker owns a Manager (New) and tells it what it sees of each
// container, and asks it what the probes say:
//
//   - Add when a container runs (again with a new start time after every
//     restart: results go back to their initial values, as for the kubelet's
//     new container ID);
//   - Exited when it stopped running;
//   - StopLivenessAndStartup when the pod starts terminating;
//   - Remove when the pod is gone;
//   - UpdateStatus (or the pure queries Started and Ready) when it computes
//     the pod's status.
//
// The Manager calls back Config.Changed when a container's started or
// ready may have changed (the kubelet's result updates that trigger a pod
// sync), and Config.Kill when a container failed its liveness or startup
// probe (the kubelet's computePodActions decision, with the kubelet's
// Killing message and grace period). Unhealthy and ProbeWarning Events go
// to Config.Events.
//
// # Cost
//
// One goroutine and one timer per probe (container × kind); between probes
// a worker is parked on its timer. httpGet probes reuse one request and one
// client per worker and a shared transport (keep-alives disabled, as the
// kubelet has them, so every probe is a new connection); response bodies are
// read into pooled buffers.
//
// # Not done (see the package tests and the report of issue 10)
//
//   - The kubelet's metrics (prober_probe_total, prober_probe_duration).
//   - The MutableContainerProbes / instance-bound workers of the newest
//     kubelet (feature-gated there); this is the default (legacy) worker.
//   - Probe specs that change while a container runs (the kubelet's default
//     worker ignores such changes too).
package probe
