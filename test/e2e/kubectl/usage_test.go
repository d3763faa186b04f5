package kubectl

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen"
)

const usagePods = `apiVersion: v1
kind: ResourceQuota
metadata: {name: q, namespace: usage}
spec:
  hard: {pods: "10", count/configmaps: "4"}
---
apiVersion: v1
kind: Pod
metadata: {name: mem, namespace: usage, labels: {app: mem}}
spec:
  containers:
  - name: mem
    image: %[1]s
    # 48 MiB held by tail: one line without an end, read whole, then
    # blocked writing it to sleep, which never reads. Anonymous memory:
    # in the working set and in rss.
    command: [sh, -c, 'head -c 50331648 /dev/zero | tail | sleep 100000']
    resources: {limits: {memory: 256Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: burn, namespace: usage, labels: {app: burn}}
spec:
  containers:
  - name: burn
    image: %[1]s
    command: [sh, -c, 'while :; do :; done']
    resources: {limits: {cpu: 200m, memory: 32Mi}}
  - name: idle
    image: %[1]s
    command: [sleep, "100000"]
---
apiVersion: v1
kind: Pod
metadata: {name: crash, namespace: usage}
spec:
  containers:
  - name: crash
    image: %[1]s
    command: [sh, -c, 'exit 3']
---
apiVersion: v1
kind: Pod
metadata: {name: refused, namespace: usage}
spec:
  containers:
  - name: app
    image: %[2]s
`

// promConfig scrapes berthd's TCP listener every second with its token.
const promConfig = `global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
- job_name: berth
  authorization: {credentials_file: /etc/berth/metrics.token}
  static_configs: [{targets: ["127.0.0.1:9465"]}]
`

// TestUsage is issue 13 on a node: berthd's usage as the stock kubectl top
// shows it and as the real Prometheus (Debian's) scrapes it from the TCP
// listener with a bearer token, compared with the cgroup files read from
// the host: a pod holding 48 MiB, a pod held at 200m of CPU, a quota's
// used and hard, a crashing container's restarts, an image the trust
// policy refused, counted by reason.
func TestUsage(t *testing.T) {
	t.Parallel() // a node of its own
	_, err := exec.LookPath("prometheus")
	testenv.Require(t, err == nil, "needs prometheus (Debian's package); `make test` installs it")
	e := newEnv(t)
	// The listener's token is read at start: written, then berthd
	// restarted with the listener configured.
	e.write("/etc/berth/metrics.token", "s3cret-token\n")
	e.run("sh", "-c", `printf 'metrics:\n  interval: 2s\n  listen: 127.0.0.1:9465\n  bearerTokenFile: /etc/berth/metrics.token\n' >> /etc/berth/berthd.yaml && systemctl restart berthd`)
	k := e.stock()
	k.eventually("berthd back", func(s string) bool { return strings.Contains(s, "default") }, "get", "namespaces", "-o", "name")

	k.must("create", "namespace", "usage")
	e.write("/var/tmp/usage.yaml", fmt.Sprintf(usagePods, e.signed.Ref, e.signed.Unsigned))
	e.apply(k, "/namespaces/usage/", "/var/tmp/usage.yaml")
	for _, p := range []string{"mem", "burn"} {
		k.eventually(p+" running", func(s string) bool { return s == "Running" }, "get", "pod", p, "-n", "usage", "-o", "jsonpath={.status.phase}")
	}

	// The listener: nothing without the token, /metrics only.
	for _, c := range []struct{ args, want string }{
		{"http://127.0.0.1:9465/metrics", "401"},
		{"-H 'Authorization: Bearer wrong' http://127.0.0.1:9465/metrics", "401"},
		{"-H 'Authorization: Bearer s3cret-token' http://127.0.0.1:9465/api/v1/pods", "404"},
		{"-H 'Authorization: Bearer s3cret-token' http://127.0.0.1:9465/metrics", "200"},
	} {
		if got := strings.TrimSpace(e.run("sh", "-c", "curl -s -o /dev/null -w '%{http_code}' "+c.args)); got != c.want {
			t.Errorf("curl %s: %s, want %s", c.args, got, c.want)
		}
	}

	// kubectl top, once both pods have two cycles.
	top := k.eventually("top pod lists mem and burn", func(s string) bool { return strings.Contains(s, "mem ") && strings.Contains(s, "burn ") },
		"top", "pod", "-n", "usage")
	t.Logf("kubectl top pod:\n%s", top)
	memGroup := e.containerGroup(k, "mem", "mem")
	burnGroup := e.containerGroup(k, "burn", "burn")
	files := func(group string) *cgroup.Stats {
		st, err := cgroup.ReadStats(group, e.n.Bases())
		if err != nil {
			t.Fatalf("read %s from the host: %v", group, err)
		}
		return st
	}
	const held = 48 << 20
	var mem *cgroup.Stats
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if mem = files(memGroup); mem.MemoryWorkingSet >= held && mem.MemoryRSS >= held {
			break
		}
	}
	if mem.MemoryWorkingSet < held || mem.MemoryRSS < held {
		t.Fatalf("the cgroup files of mem: working set %d, rss %d, want both ≥ %d", mem.MemoryWorkingSet, mem.MemoryRSS, held)
	}
	// kubectl top again: a cycle after the files showed it all.
	time.Sleep(5 * time.Second)
	top = k.must("top", "pod", "-n", "usage")
	row := topRow(t, top, "mem")
	if mi := parseMi(t, row[2]); math.Abs(mi-float64(mem.MemoryWorkingSet)/(1<<20)) > 4 {
		t.Errorf("top pod mem: %s, the cgroup's working set %.1f Mi", row[2], float64(mem.MemoryWorkingSet)/(1<<20))
	}
	if m := parseMilli(t, topRow(t, top, "burn")[1]); m > 230 || m < 20 {
		t.Errorf("top pod burn: %dm, held at 200m", m)
	}
	// --containers, -l, --sort-by.
	out := k.must("top", "pod", "-n", "usage", "--containers", "-l", "app=burn")
	if !regexpFields(out, "burn", "burn") || !regexpFields(out, "burn", "idle") || strings.Contains(out, "mem") {
		t.Errorf("top pod --containers -l app=burn:\n%s", out)
	}
	out = k.must("top", "pod", "-n", "usage", "--sort-by=memory", "--no-headers")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) < 2 || strings.Fields(lines[0])[0] != "mem" {
		t.Errorf("top pod --sort-by=memory: mem is not first:\n%s", out)
	}
	out = k.eventually("top node", func(s string) bool { return strings.Contains(s, "CPU(cores)") }, "top", "node")
	t.Logf("kubectl top node:\n%s", out)
	// The node's figure is its root group's working set (a test node's
	// own tree), give or take what changed since the cycle.
	if f := strings.Fields(strings.Split(strings.TrimSpace(out), "\n")[1]); len(f) == 5 {
		root := files("/")
		if mi := parseMi(t, f[3]); math.Abs(mi-float64(root.MemoryWorkingSet)/(1<<20)) > 32 {
			t.Errorf("top node memory %s, the root group's working set %.0f Mi", f[3], float64(root.MemoryWorkingSet)/(1<<20))
		}
	} else {
		t.Errorf("top node: %q", out)
	}
	if _, msg, err := k.kubectl("/pods/nosuch", "top", "pod", "nosuch", "-n", "usage"); err == nil || !strings.Contains(msg, `podmetrics.metrics.k8s.io "nosuch" not found`) {
		t.Errorf("top pod nosuch: %v %s", err, msg)
	}

	// Prometheus, scraping the listener.
	e.write("/var/tmp/prom/prometheus.yml", promConfig)
	e.prometheus("--config.file=/var/tmp/prom/prometheus.yml", "--storage.tsdb.path=/var/tmp/prom/data", "--web.listen-address=127.0.0.1:9090")
	q := func(query string) float64 { return e.promQuery(query) }

	// Memory: what the files say now (the pod holds still).
	got := q(`container_memory_working_set_bytes{namespace="usage",pod="mem",container="mem"}`)
	mem = files(memGroup)
	if math.Abs(got-float64(mem.MemoryWorkingSet)) > 2<<20 {
		t.Errorf("working set: Prometheus %.0f, the cgroup files %d", got, mem.MemoryWorkingSet)
	}
	if ws := q(`berth_namespace_memory_working_set_bytes{namespace="usage"}`); ws < held {
		t.Errorf("the namespace's working set: %.0f, want ≥ %d", ws, held)
	}
	if rss := q(`container_memory_rss{namespace="usage",pod="mem",container="mem"}`); rss < held {
		t.Errorf("rss: Prometheus %.0f, want ≥ %d", rss, held)
	}
	// CPU: the rate Prometheus computes is within the limit, and the
	// counter is the files' (it only grows: Prometheus' value is at most
	// the files' a moment later, and at least theirs 5 s before).
	before := files(burnGroup).CPUUsageNSec
	time.Sleep(5 * time.Second)
	total := q(`container_cpu_usage_seconds_total{namespace="usage",pod="burn",container="burn"}`)
	after := files(burnGroup).CPUUsageNSec
	if total*1e9 < float64(before) || total*1e9 > float64(after) {
		t.Errorf("cpu usage: Prometheus %.3f s, the files %.3f s 5 s before and %.3f s now", total, float64(before)/1e9, float64(after)/1e9)
	}
	if r := q(`rate(container_cpu_usage_seconds_total{namespace="usage",pod="burn",container="burn"}[10s])`); r > 0.23 || r < 0.02 {
		t.Errorf("cpu rate of burn: %.3f cores, held at 0.2", r)
	}
	if th := q(`container_cpu_cfs_throttled_periods_total{namespace="usage",pod="burn",container="burn"}`); th < 1 {
		t.Errorf("throttled periods of burn: %v", th)
	}
	// The quota, as the API says it.
	usedPods, _ := strconv.ParseFloat(k.must("get", "resourcequota", "q", "-n", "usage", "-o", "jsonpath={.status.used.pods}"), 64)
	if got := q(`kube_resourcequota{namespace="usage",resourcequota="q",resource="pods",type="used"}`); got != usedPods || got != 4 {
		t.Errorf("quota pods used: Prometheus %v, the API %v, want 4", got, usedPods)
	}
	if got := q(`kube_resourcequota{namespace="usage",resourcequota="q",resource="pods",type="hard"}`); got != 10 {
		t.Errorf("quota pods hard: %v", got)
	}
	// Restarts: at least one, never more than the API says afterwards.
	var restarts float64
	k.eventually("crash restarted", func(s string) bool { n, _ := strconv.Atoi(s); return n >= 1 },
		"get", "pod", "crash", "-n", "usage", "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && restarts < 1; time.Sleep(time.Second) {
		restarts = q(`kube_pod_container_status_restarts_total{namespace="usage",pod="crash",container="crash"}`)
	}
	api, _ := strconv.ParseFloat(k.must("get", "pod", "crash", "-n", "usage", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"), 64)
	if restarts < 1 || restarts > api {
		t.Errorf("restarts: Prometheus %v, the API %v", restarts, api)
	}
	// The refused image, counted by reason.
	var refused float64
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && refused < 1; time.Sleep(time.Second) {
		refused = q(`sum(berth_image_trust_rejections_total{scope="default",requirement="reject"})`)
	}
	if refused < 1 {
		t.Errorf("refused images counted: %v", refused)
	}
	if n := q(`sum(berth_image_pull_duration_seconds_count{failure="SignatureValidationFailed"})`); n < 1 {
		t.Errorf("failed pulls counted: %v", n)
	}
	if n := q(`sum(berth_events_total{type="Warning",reason="BackOff",kind="Pod"})`); n < 1 {
		t.Errorf("BackOff events counted: %v", n)
	}
	// And in the journal, a line a log pipeline can take.
	if j := e.run("journalctl", "-u", "berthd", "-o", "cat", "--no-pager"); !strings.Contains(j, "event: type=Warning reason=BackOff kind=Pod namespace=usage name=crash") {
		t.Errorf("no Warning event line in berthd's journal:\n%s", grepLines(j, "event:"))
	}
	// Admission's refusals by plugin: the quota allows 4 ConfigMaps.
	for i := range 5 {
		_, _, _ = k.kubectl("", "create", "configmap", fmt.Sprintf("c%d", i), "-n", "usage")
	}
	if n := q(`sum(berth_admission_rejections_total{plugin="ResourceQuota",resource="configmaps"})`); n < 1 {
		t.Errorf("quota refusals counted: %v", n)
	}
	if n := q(`berth_pod_start_duration_seconds_count`); n < 2 {
		t.Errorf("pod starts observed: %v (mem and burn at least)", n)
	}
	if n := q(`berth_pod_sync_duration_seconds_count`); n < 2 {
		t.Errorf("pod syncs observed: %v", n)
	}
	if n := q(`berth_systemd_reconnects_total`); n != 0 {
		t.Errorf("systemd reconnects: %v, want 0", n)
	}
	if ph := q(`kube_pod_status_phase{namespace="usage",pod="mem",phase="Running"}`); ph != 1 {
		t.Errorf("kube_pod_status_phase of mem Running: %v", ph)
	}
	// A dashboard's query: the namespace's CPU, pods' containers only.
	if r := q(`sum by (namespace) (rate(container_cpu_usage_seconds_total{namespace="usage",container!=""}[10s]))`); r <= 0 {
		t.Errorf("namespace CPU: %v", r)
	}
	if n := q(`count(container_memory_working_set_bytes{id="/"})`); n != 1 {
		t.Errorf("node series: %v", n)
	}
}

// containerGroup is a container's cgroup, as berth places it.
func (e *env) containerGroup(k *client, pod, container string) string {
	e.t.Helper()
	var p corev1.Pod
	if err := json.Unmarshal([]byte(k.must("get", "pod", pod, "-n", "usage", "-o", "json")), &p); err != nil {
		e.t.Fatal(err)
	}
	g, err := unitgen.PodCgroup(&p)
	if err != nil {
		e.t.Fatal(err)
	}
	return g + "/" + unitgen.UnitName(p.Namespace, p.Name, container)
}

// promQuery asks the node's Prometheus for an instant query's single
// value, waiting up to a minute for it to have one.
func (e *env) promQuery(query string) float64 {
	e.t.Helper()
	var last string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		base := e.promURL
		if base == "" {
			base = "http://127.0.0.1:9090"
		}
		out, err := e.n.Run(ctx, "curl", "-s", "--data-urlencode", "query="+query, base+"/api/v1/query")
		cancel()
		last = out
		if err != nil {
			continue
		}
		var resp struct {
			Status string
			Data   struct {
				Result []struct {
					Value [2]any
				}
			}
		}
		if json.Unmarshal([]byte(out), &resp) != nil || resp.Status != "success" || len(resp.Data.Result) != 1 {
			continue
		}
		s, _ := resp.Data.Result[0].Value[1].(string)
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			return v
		}
	}
	e.t.Fatalf("PromQL %s: no single value within a minute; last answer %s", query, last)
	return 0
}

// topRow is the fields of kubectl top's row for name.
func topRow(t *testing.T, out, name string) []string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == name {
			return f
		}
	}
	t.Fatalf("no row %s in:\n%s", name, out)
	return nil
}

func regexpFields(out string, fields ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= len(fields) && strings.Join(f[:len(fields)], " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}

func parseMi(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "Mi"), 64)
	if err != nil || !strings.HasSuffix(s, "Mi") {
		t.Fatalf("memory %q is not in Mi", s)
	}
	return v
}

func parseMilli(t *testing.T, s string) int {
	t.Helper()
	v, err := strconv.Atoi(strings.TrimSuffix(s, "m"))
	if err != nil || !strings.HasSuffix(s, "m") {
		t.Fatalf("cpu %q is not in m", s)
	}
	return v
}

// TestRemoteWrite pushes a node's series to the real Prometheus as a
// remote write receiver, through two endpoints: one whose queue holds a
// minute, one bounded below that. The receiver is stopped for a minute
// and started again: the first endpoint's series have no gap for that
// minute; the second's lost their oldest batches, and counted them.
func TestRemoteWrite(t *testing.T) {
	t.Parallel() // a node of its own
	_, err := exec.LookPath("prometheus")
	testenv.Require(t, err == nil, "needs prometheus (Debian's package); `make test` installs it")
	e := newEnv(t)
	const write = "http://127.0.0.1:9091/api/v1/write"
	e.run("sh", "-c", `cat >> /etc/berth/berthd.yaml <<'END'
metrics:
  interval: 2s
  remoteWrite:
    externalLabels: {site: test}
    endpoints:
    - {url: "`+write+`", labels: {via: big}}
    - {url: "`+write+`?small=1", queueMaxBytes: 8192, labels: {via: small}}
END
systemctl restart berthd`)
	k := e.stock()
	k.eventually("berthd back", func(s string) bool { return strings.Contains(s, "default") }, "get", "namespaces", "-o", "name")
	node := strings.TrimSpace(k.must("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"))

	e.write("/var/tmp/prom/prometheus.yml", "global: {}\n")
	start := func() (stop func()) {
		return e.prometheus("--config.file=/var/tmp/prom/prometheus.yml", "--storage.tsdb.path=/var/tmp/prom/data",
			"--web.listen-address=127.0.0.1:9091", "--web.enable-remote-write-receiver")
	}
	e.promURL = "http://127.0.0.1:9091"
	stop := start()
	// Arrived, with the external labels.
	q := func(query string) float64 { return e.promQuery(query) }
	q(`berth_usage_collections_total{via="big",site="test",node="` + node + `"}`)
	q(`berth_usage_collections_total{via="small"}`)

	stop()
	down := time.Now()
	if _, err := e.n.Run(context.Background(), "curl", "-s", "http://127.0.0.1:9091/-/ready"); err == nil {
		t.Fatal("Prometheus still answers after its stop")
	}
	time.Sleep(time.Minute)
	t.Logf("queued after the outage:\n%s", grepLines(e.run("curl", "-s", "--unix-socket", "/run/berth/berth.sock", "http://localhost/metrics"), "berth_remote_write_queue_bytes{"))
	up := time.Now()
	start()
	// Both queues drained (the small one of what it kept).
	e.eventually("queues drained", func() bool {
		out := e.run("curl", "-s", "--unix-socket", "/run/berth/berth.sock", "http://localhost/metrics")
		return strings.Contains(out, `berth_remote_write_queue_batches{url="`+write+`"} 0`) &&
			strings.Contains(out, `berth_remote_write_queue_batches{url="`+write+`?small=1"} 0`)
	})
	// Samples every 2 s throughout the outage: about 30 in its minute.
	at := fmt.Sprintf(" @ %d", up.Unix())
	window := fmt.Sprintf("[%ds]", int(up.Sub(down).Seconds()))
	if n := q(`count_over_time(berth_usage_collections_total{via="big"}` + window + at + `)`); n < 25 {
		t.Errorf("the big queue's series over the outage: %v samples, want about 30 (no gap)", n)
	}
	small := q(`count_over_time(berth_usage_collections_total{via="small"}` + window + at + `)`)
	if small >= 25 {
		t.Errorf("the small queue's series over the outage: %v samples, want a gap", small)
	}
	out := e.run("curl", "-s", "--unix-socket", "/run/berth/berth.sock", "http://localhost/metrics")
	if !strings.Contains(out, `berth_remote_write_dropped_samples_total{reason="queue_full",url="`+write+`"} 0`) ||
		strings.Contains(out, `berth_remote_write_dropped_samples_total{reason="queue_full",url="`+write+`?small=1"} 0`) {
		t.Errorf("dropped samples: want none for the big queue, some for the small one:\n%s", grepLines(out, "berth_remote_write_dropped"))
	}
	t.Logf("over the %s outage: big %v samples, small %v; %s", window, q(`count_over_time(berth_usage_collections_total{via="big"}`+window+at+`)`), small,
		grepLines(out, "berth_remote_write_dropped"))
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// eventually polls ok for two minutes.
func (e *env) eventually(what string, ok func() bool) {
	e.t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if ok() {
			return
		}
	}
	e.t.Fatalf("%s: never happened", what)
}

// prometheus runs the real Prometheus in the node as a transient unit
// (stopped by the returned function, and with the node in any case).
func (e *env) prometheus(args ...string) (stop func()) {
	e.t.Helper()
	e.run(append([]string{"systemd-run", "--unit", "berthtest-prometheus", "--collect", "prometheus", "--log.level=warn"}, args...)...)
	return func() { e.run("systemctl", "stop", "berthtest-prometheus") }
}
