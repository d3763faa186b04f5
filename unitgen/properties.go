package unitgen

import (
	"fmt"
	"math"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/cgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

const (
	// The kubelet's default terminationGracePeriodSeconds (API defaulting).
	defaultGracePeriodSeconds = 30
	// The kubelet never gives a container less than this
	// (kuberuntime_container.go minimumGracePeriodInSeconds). It also keeps
	// TimeoutStopUSec away from 0, which systemd reads as "no timeout".
	minGracePeriodSeconds = 2

	// PodUIDField is the journal field, set by LogExtraFields=, that
	// carries the UID of a container's pod on every journal entry of the
	// container: a pod deleted and recreated under the same name gets the
	// same unit name, so agent/logs selects a pod's output by it.
	PodUIDField = "BERTH_POD_UID"
)

// JournalFields is LogExtraFields= (D-Bus aay): KEY=VALUE fields journald
// adds to every entry a unit's processes write. unitgen/systemd sends each
// as its bytes; Render prints them space-separated, as `systemctl show`
// does.
type JournalFields []string

func (f JournalFields) String() string { return strings.Join(f, " ") }

// properties builds the unit's properties in a fixed order. Resource values
// come from in.Limits (the cgroup package's kubelet math); here they only
// become the right systemd property for the host's cgroup version.
func (g *gen) properties() ([]Property, error) {
	in, pod := g.in, g.pod
	var ps []Property
	add := func(name string, v any, why string, args ...any) {
		ps = append(ps, Property{Name: name, Value: v, Why: fmt.Sprintf(why, args...)})
	}

	add("Description", g.description(), "shown by systemctl status: namespace/pod/container and the image it runs")
	stateDir := BundleStateDir(in.Paths.Bundle)
	add("Documentation", []string{InstanceDoc(stateDir)}, "the state directory of the berth that made this unit (%s): berthd's reconcile removes only units of its own state directory, and leaves those of another berthd or `berthd --state-dir` on this host alone", stateDir)
	add("Slice", g.slice, "%s", sliceWhy(pod, g.slice))
	add("Type", "forking", "stage-1 forks the workload into new PID+mount namespaces, writes its PID and exits; systemd 252 cannot create a PID namespace itself")
	add("PIDFile", in.Paths.PIDFile, "stage-1 writes the workload's PID here, so MainPID is the container's PID 1")
	if in.Options.VerifyImage {
		add("ExecStart", []ExecCommand{{
			Path: in.Paths.Init, Args: []string{in.Paths.Init, "start", "--verify-image", in.Paths.Bundle},
		}}, "berth's stage-1 runs %s/config.json once the trust policy, from the local store, has judged the image again (on every (re)start, so a policy change takes effect at the next one); a failing start fails the unit (IgnoreFailure=false)", in.Paths.Bundle)
	} else {
		add("ExecStart", []ExecCommand{{
			Path: in.Paths.Init, Args: []string{in.Paths.Init, "start", in.Paths.Bundle},
		}}, "berth's stage-1 runs %s/config.json; a failing start fails the unit (IgnoreFailure=false)", in.Paths.Bundle)
	}
	add("ExecStopPost", []ExecCommand{{
		Path: in.Paths.Init, Args: []string{in.Paths.Init, "poststop", in.Paths.Bundle}, IgnoreFailure: true,
	}}, "records exit status and OOM kill while the cgroup still exists; its own failure must not mask the workload's result")
	ps = append(ps, g.hookProperties()...)
	add("KillMode", "mixed", "SIGTERM to the container's PID 1 only (like the kubelet/runc), SIGKILL to every process after the timeout")

	sig, why, err := g.stopSignal()
	if err != nil {
		return nil, err
	}
	add("KillSignal", sig, "%s", why)
	add("SendSIGKILL", true, "processes still alive after the grace period are killed, as the kubelet does")
	grace, why := g.gracePeriod()
	add("TimeoutStopUSec", grace, "%s", why)

	restart, why, err := g.restart()
	if err != nil {
		return nil, err
	}
	if restart == restartUnlessSucceeded {
		add("Restart", "always", "%s", why)
		add("RestartPreventExitStatus", ExitStatusSet{Codes: []int32{0}}, "Kubernetes restarts on any non-zero exit code, a signal's (128+n) included; systemd's on-failure would not restart after SIGTERM, SIGHUP, SIGINT or SIGPIPE (its clean signals): so always, except after exit code 0")
	} else {
		add("Restart", restart, "%s", why)
	}
	if restart != "no" {
		delay := in.Options.RestartDelay
		if delay <= 0 {
			delay = defaultRestartDelay
		}
		add("RestartUSec", uint64(delay.Microseconds()), "wait before restarting, like the kubelet's first crash-loop back-off (10s); systemd 252 has no growing back-off (RestartSteps= needs 254)")
		add("StartLimitIntervalUSec", uint64(0), "never give up restarting (Kubernetes restarts forever); transient-settable in systemd 252 (src/core/dbus-unit.c)")
		add("TimeoutStartUSec", uint64(restartTimeoutStart.Microseconds()), "berth-init start first waits out the rest of the kubelet's crash-loop back-off (up to 5 min, agent/berthinit/backoff.go); systemd's default 90 s would cut that wait short")
	}
	add("CollectMode", "inactive-or-failed", "unload the unit once it is dead, failed or not, so the same name can be started again; stage-1's poststop has already recorded the exit")
	add("Delegate", true, "kubectl exec joins the container's cgroup through systemd's AttachProcessesToUnit, which systemd allows only into a delegated unit; the container's cgroup mount stays read-only")
	add("SyslogIdentifier", pod.Name+"/"+g.ctr.Name, "journal lines of the container carry pod/container (journalctl -t %s/%s)", pod.Name, g.ctr.Name)
	if pod.UID != "" {
		add("LogExtraFields", JournalFields{PodUIDField + "=" + string(pod.UID)}, "every journal entry of the container carries its pod's UID: a pod deleted and recreated under the same name gets the same unit name, and kubectl logs (agent/logs) shows only this pod's runs")
	}

	// Resource control. Accounting is on so the agent can read usage.
	add("CPUAccounting", true, "report CPU usage of the container's cgroup")
	add("MemoryAccounting", true, "report memory usage of the container's cgroup")
	add("TasksAccounting", true, "report the number of tasks of the container's cgroup")
	lim := in.Limits
	if in.Options.CgroupV2 {
		if lim.CPUWeight > 0 {
			add("CPUWeight", lim.CPUWeight, "cpu.weight from the cpu request (cgroup v2; runc's shares→weight conversion)")
		}
	} else if lim.CPUShares > 0 {
		add("CPUShares", lim.CPUShares, "cpu.shares from the cpu request (cgroup v1; kubelet MilliCPUToShares)")
	}
	if lim.CPUQuotaPerSecUSec > 0 {
		add("CPUQuotaPerSecUSec", lim.CPUQuotaPerSecUSec, "cpu limit %s: µs of CPU time allowed per second of wall time", cpuString(lim.CPUQuotaPerSecUSec))
		add("CPUQuotaPeriodUSec", uint64(cgroup.QuotaPeriod), "the kubelet's 100ms CFS period (property needs systemd >= 242)")
	}
	if lim.MemoryMax > 0 {
		add("MemoryMax", lim.MemoryMax, "memory limit; MemoryMax, not MemoryLimit, which systemd ignores on cgroup v1 as soon as any other memory property is set")
	}
	if in.Options.CgroupV2 && lim.MemoryMin > 0 {
		add("MemoryMin", lim.MemoryMin, "memory request protected from reclaim (Kubernetes MemoryQoS, cgroup v2 only)")
	}
	if in.Options.CgroupV2 && lim.MemoryHigh > 0 {
		add("MemoryHigh", lim.MemoryHigh, "reclaim pressure from 90%% of the way from request to limit (Kubernetes MemoryQoS memory.high, cgroup v2 only)")
	}
	if lim.TasksMax > 0 {
		add("TasksMax", lim.TasksMax, "per-container pids limit of the node")
	}
	if lim.OOMScoreAdjust < -1000 || lim.OOMScoreAdjust > 1000 {
		return nil, fmt.Errorf("unitgen: Limits.OOMScoreAdjust %d outside -1000..1000", lim.OOMScoreAdjust)
	}
	add("OOMScoreAdjust", int32(lim.OOMScoreAdjust), "oom_score_adj for QoS class %s (kubelet GetContainerOOMScoreAdjust)", qosName(lim.QOS))

	// Devices cgroup. The spec's Linux.Devices are bound in from the host, so
	// the host's major:minor numbers are what the allow list must name.
	if g.sc.privileged {
		add("DevicePolicy", "auto", "privileged: auto without DeviceAllow= leaves the devices cgroup unrestricted")
	} else {
		add("DevicePolicy", "closed", "only the standard pseudo devices (null, zero, full, random, urandom, tty, ptmx) may be opened")
		add("DeviceAllow", []DeviceAllow{{Path: "char-pts", Perm: "rw"}},
			"terminals of the container's devpts; DevicePolicy=closed already allows them in systemd 252 (src/core/cgroup.c), said here explicitly")
	}
	return ps, nil
}

// sliceWhy says where a pod's units go: the pod's slice, in its QoS
// class's, in its namespace's (slices.go).
func sliceWhy(pod *corev1.Pod, slice string) string {
	if slice == SliceName(pod.Namespace) {
		return fmt.Sprintf("a pod without a UID has no pod slice: the namespace's slice (berth.slice/%s)", slice)
	}
	var path []string
	for s := slice; s != "-.slice"; s = ParentSlice(s) {
		path = append([]string{s}, path...)
	}
	return fmt.Sprintf("the pod's slice, as the kubelet's pod cgroup (%s): its containers share the pod's limits, inside the namespace's", strings.Join(path, "/"))
}

// BundleStateDir is the state directory a bundle belongs to: bundles are
// <stateDir>/containers/<ContainerKey> (agent/pods).
func BundleStateDir(bundle string) string {
	return path.Dir(path.Dir(path.Clean(bundle)))
}

// InstanceDoc is the Documentation= entry that marks a container unit as the
// one of the berth whose state directory is stateDir (absolute): a file: URL
// of that directory, e.g. file:///var/lib/berth. Unit names are shared by
// every berth on the host, so the name alone cannot tell whose a unit is.
// Documentation= is settable on a transient unit, kept verbatim, shown by
// `systemctl status` as Docs:, read back as the Unit interface's
// Documentation property, and has no effect on the unit (systemd 252 only
// checks that it is an ASCII http:, https:, file:, info: or man: URL, which
// the escaping here guarantees). berth writes no other file: URL there.
func InstanceDoc(stateDir string) string {
	return (&url.URL{Scheme: "file", Path: path.Clean(stateDir)}).String()
}

// UnitInstance is the state directory a unit's Documentation= names
// (InstanceDoc), false when it names none: a unit of a berth from before
// the mark, or not berth's at all.
func UnitInstance(docs []string) (string, bool) {
	for _, d := range docs {
		u, err := url.Parse(d)
		if err != nil || u.Scheme != "file" || u.Host != "" || !path.IsAbs(u.Path) {
			continue
		}
		return path.Clean(u.Path), true
	}
	return "", false
}

func (g *gen) description() string {
	img := g.in.Image.Ref
	if d := g.in.Image.Digest; d != "" && !strings.Contains(img, "@") {
		img += "@" + d
	}
	if img == "" {
		img = g.ctr.Image
	}
	return fmt.Sprintf("berth container %s/%s/%s (%s)", g.pod.Namespace, g.pod.Name, g.ctr.Name, img)
}

// stopSignal is lifecycle.stopSignal (Kubernetes ContainerStopSignals), else
// the image's StopSignal, else SIGTERM, as the kubelet and containerd choose it.
func (g *gen) stopSignal() (int32, string, error) {
	if lc := g.ctr.Lifecycle; lc != nil && lc.StopSignal != nil {
		n, err := parseSignal(string(*lc.StopSignal))
		if err != nil {
			return 0, "", invalid(g.fp.Child("lifecycle", "stopSignal"), "%v", err)
		}
		return n, fmt.Sprintf("stop signal %s from lifecycle.stopSignal", *lc.StopSignal), nil
	}
	if s := g.in.Image.Config.StopSignal; s != "" {
		n, err := parseSignal(s)
		if err != nil {
			return 0, "", invalid(g.fp.Child("image"), "image StopSignal: %v", err)
		}
		return n, fmt.Sprintf("stop signal %s from the image's StopSignal", s), nil
	}
	return 15, "SIGTERM, the default stop signal (the image sets no StopSignal)", nil
}

// gracePeriod is terminationGracePeriodSeconds in µs, at least the kubelet's
// 2 s minimum (0 means "as fast as possible" to Kubernetes but "never time
// out" to systemd).
func (g *gen) gracePeriod() (uint64, string) {
	secs := int64(defaultGracePeriodSeconds)
	src := "the default terminationGracePeriodSeconds (30)"
	if p := g.pod.Spec.TerminationGracePeriodSeconds; p != nil {
		secs = *p
		src = fmt.Sprintf("terminationGracePeriodSeconds %d", *p)
	}
	if secs < minGracePeriodSeconds {
		return minGracePeriodSeconds * 1_000_000, src + ", raised to the kubelet's 2s minimum (0 would mean no timeout to systemd)"
	}
	if secs > math.MaxInt64/1_000_000 {
		return math.MaxUint64, src + ": effectively infinite"
	}
	return uint64(secs) * 1_000_000, "SIGKILL after " + src
}

// restart maps the restart policy. Init containers are restarted on failure
// unless the pod's policy is Never, and sidecars (restartPolicy: Always on an
// init container) always, as the kubelet does.
func (g *gen) restart() (policy, why string, err error) {
	pol := g.pod.Spec.RestartPolicy
	if pol == "" {
		pol = corev1.RestartPolicyAlways // API default
	}
	switch pol {
	case corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		return "", "", invalid(field.NewPath("spec", "restartPolicy"), "unsupported value %q: supported values: \"Always\", \"OnFailure\", \"Never\"", pol)
	}
	if g.isInit {
		if p := g.ctr.RestartPolicy; p != nil && *p == corev1.ContainerRestartPolicyAlways {
			return "always", "sidecar init container (restartPolicy: Always) runs for the pod's lifetime", nil
		}
		if pol == corev1.RestartPolicyNever {
			return "no", "init container of a restartPolicy: Never pod", nil
		}
		return restartUnlessSucceeded, "init container: rerun until it succeeds (pod restartPolicy: " + string(pol) + ")", nil
	}
	switch pol {
	case corev1.RestartPolicyOnFailure:
		return restartUnlessSucceeded, "restartPolicy: OnFailure (restart on a non-zero exit code or a signal)", nil
	case corev1.RestartPolicyNever:
		return "no", "restartPolicy: Never", nil
	}
	return "always", "restartPolicy: Always", nil
}

// restartUnlessSucceeded is Kubernetes' OnFailure (and a regular init
// container's rule): Restart=always with RestartPreventExitStatus=0.
const restartUnlessSucceeded = "unless-succeeded"

// ExitStatusSet is an exit code list (RestartPreventExitStatus=, D-Bus
// (aiai): exit codes, and signals, which berth never lists).
type ExitStatusSet struct{ Codes []int32 }

func (s ExitStatusSet) String() string {
	w := make([]string, len(s.Codes))
	for i, c := range s.Codes {
		w[i] = strconv.Itoa(int(c))
	}
	return strings.Join(w, " ")
}

// cpuString shows a CPU quota the way a pod spec would ("500m", "2").
func cpuString(perSecUSec uint64) string {
	milli := perSecUSec / 1000
	if milli%1000 == 0 {
		return fmt.Sprintf("%d", milli/1000)
	}
	return fmt.Sprintf("%dm", milli)
}

func qosName(q corev1.PodQOSClass) string {
	if q == "" {
		return "(unknown)"
	}
	return string(q)
}
