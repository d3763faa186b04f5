package kubectl

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/test/testenv"
)

// Issue 12's and 13's benchmarks on a real node, each run once:
//
//	go test -run '^$' -bench 'DeploymentReady|SelectorSwitch|ClusterIPThroughput|MetricsOnNode' -benchtime 1x -timeout 40m ./test/e2e/kubectl

// benchNode is a node named name with berthd installed (config as its
// berthd.yaml) and the signed image in its registry; sh runs a command in
// it that must succeed.
type benchNode struct {
	b      *testing.B
	n      *node.Node
	signed *nodereg.Signed
	ctx    context.Context
}

func newBenchNode(b *testing.B, name, config string) *benchNode {
	b.Helper()
	testenv.RequireRoot(b)
	bin := b.TempDir()
	if err := nodeberthd.Build(bin); err != nil {
		b.Fatal(err)
	}
	if err := nodereg.CopyCosign(bin); err != nil {
		b.Fatal(err)
	}
	n := nodetest.New(b, node.Options{Name: name, BinDir: bin})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel)
	signed, err := nodereg.SignedImages(ctx, n, 5000)
	if err != nil {
		b.Fatal(err)
	}
	if err := nodeberthd.Install(ctx, n, config); err != nil {
		b.Fatal(err)
	}
	return &benchNode{b: b, n: n, signed: signed, ctx: ctx}
}

func (bn *benchNode) sh(args ...string) string {
	bn.b.Helper()
	out, err := bn.n.Run(bn.ctx, args...)
	if err != nil {
		bn.b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (bn *benchNode) write(path, content string) {
	bn.b.Helper()
	if err := os.WriteFile(bn.n.HostPath(path), []byte(content), 0o644); err != nil {
		bn.b.Fatal(err)
	}
}

// goBuild builds a test command into the node's /var/tmp.
func (bn *benchNode) goBuild(cmd string) string {
	bn.b.Helper()
	dst := "/var/tmp/" + cmd
	build := exec.Command("go", "build", "-o", bn.n.HostPath(dst), "../../cmd/"+cmd)
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		bn.b.Fatalf("build %s: %v\n%s", cmd, err, out)
	}
	return dst
}

// httpdDeployment is a Deployment of busybox httpd pods answering
// "<name>-<pod>", ready once httpd answers.
func httpdDeployment(image, ns, name string, replicas int, labels string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[3]s, namespace: %[2]s}
spec:
  replicas: %[4]d
  selector: {matchLabels: %[5]s}
  template:
    metadata: {labels: %[5]s}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: %[1]s
        command: [sh, -c, 'mkdir -p /tmp/www && echo %[3]s-$(hostname) > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /index.html, port: http}
          periodSeconds: 1
`, image, ns, name, replicas, labels)
}

// BenchmarkDeploymentReady: a 100-replica (BERTH_BENCH_REPLICAS)
// Deployment of busybox httpd with an httpGet readiness probe, from a
// cached image, from `berth apply` until `berth rollout status` says all
// are available (ready), against 100 `podman run -d` of the same image
// (on podman's default network, as berth's pods are on theirs) one after
// the other, and 4 at a time, in the same node; reported in seconds and as
// ratios.
func BenchmarkDeploymentReady(b *testing.B) {
	replicas := 100
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_REPLICAS")); err == nil && v > 0 {
		replicas = v
	}
	bn := newBenchNode(b, "depbench", "")
	bn.sh("berth", "create", "namespace", "bench")
	// The image pulled and verified once: the timed Deployment starts
	// from the cache, as the podman runs do.
	bn.write("/var/tmp/warm.yaml", httpdDeployment(bn.signed.Ref, "bench", "warm", 1, "{app: warm}"))
	bn.sh("berth", "apply", "-f", "/var/tmp/warm.yaml")
	bn.sh("berth", "rollout", "status", "deployment/warm", "-n", "bench", "--timeout=5m")
	bn.sh("berth", "delete", "deployment", "warm", "-n", "bench", "--wait")
	bn.write("/var/tmp/web.yaml", httpdDeployment(bn.signed.Ref, "bench", "web", replicas, "{app: web}"))
	podmanImage := "localhost/berth-bench:latest"
	bn.sh("sh", "-c", "podman pull -q --tls-verify=false "+bn.signed.Ref+" && podman tag "+bn.signed.Ref+" "+podmanImage)

	var berth, seq, par []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		bn.sh("berth", "apply", "-f", "/var/tmp/web.yaml")
		bn.sh("berth", "rollout", "status", "deployment/web", "-n", "bench", "--timeout=10m")
		berth = append(berth, time.Since(start))
		bn.sh("berth", "delete", "deployment", "web", "-n", "bench", "--wait", "--timeout=10m")
		bn.sh("sh", "-c", "until [ -z \"$(berth get pods -n bench -o name)\" ]; do sleep 1; done")

		for _, parallel := range []int{1, 4} {
			start = time.Now()
			bn.sh("sh", "-c", fmt.Sprintf("seq %d | xargs -P %d -I{} podman run -d --cgroup-manager systemd %s httpd -f -p 8080 >/dev/null", replicas, parallel, podmanImage))
			d := time.Since(start)
			if parallel == 1 {
				seq = append(seq, d)
			} else {
				par = append(par, d)
			}
			bn.sh("podman", "rm", "-f", "-t", "0", "--all")
		}
	}
	b.StopTimer()
	mean := func(ds []time.Duration) float64 {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return sum.Seconds() / float64(len(ds))
	}
	b.ReportMetric(mean(berth), "berth-s")
	b.ReportMetric(mean(seq), "podman-seq-s")
	b.ReportMetric(mean(par), "podman-4par-s")
	b.ReportMetric(mean(berth)/mean(seq), "berth/podman-seq")
	b.ReportMetric(mean(berth)/mean(par), "berth/podman-4par")
}

// BenchmarkSelectorSwitch: a Service in front of two Deployments (blue
// and green, 2 pods each) has its selector patched 20 times, alternately;
// test/cmd/berth-switch, in the node, times each from the patch's
// response until every new connection to the cluster IP is answered by
// the new colour (20 in a row), and counts failed requests.
func BenchmarkSelectorSwitch(b *testing.B) {
	bn := newBenchNode(b, "swbench", "")
	sw := bn.goBuild("berth-switch")
	bn.sh("berth", "create", "namespace", "sw")
	y := httpdDeployment(bn.signed.Ref, "sw", "blue", 2, "{app: web, version: blue}") + "---\n" +
		httpdDeployment(bn.signed.Ref, "sw", "green", 2, "{app: web, version: green}") + `---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: sw}
spec:
  selector: {app: web, version: blue}
  ports: [{name: http, port: 80, targetPort: http}]
`
	bn.write("/var/tmp/sw.yaml", y)
	bn.sh("berth", "apply", "-f", "/var/tmp/sw.yaml")
	bn.sh("berth", "rollout", "status", "deployment/blue", "-n", "sw", "--timeout=5m")
	bn.sh("berth", "rollout", "status", "deployment/green", "-n", "sw", "--timeout=5m")
	cip := bn.sh("berth", "get", "svc", "web", "-n", "sw", "-o", "jsonpath={.spec.clusterIP}")
	bn.sh("sh", "-c", "until [ \"$(berth get endpoints web -n sw -o jsonpath='{.subsets[*].addresses[*].ip}' | wc -w)\" = 2 ]; do sleep 0.2; done")

	var rep struct {
		LatenciesMS        []float64
		P50MS, P99MS       float64
		Requests, Failures int
		Errors             []string
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := bn.sh(sw, "-namespace", "sw", "-service", "web", "-url", "http://"+cip+"/index.html", "-switches", "20")
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			b.Fatalf("berth-switch: %v\n%s", err, out)
		}
	}
	b.StopTimer()
	b.Logf("switch latencies (ms): %v; %d requests, %d failed %v", rep.LatenciesMS, rep.Requests, rep.Failures, rep.Errors)
	b.ReportMetric(rep.P50MS, "p50-ms")
	b.ReportMetric(rep.P99MS, "p99-ms")
	b.ReportMetric(float64(rep.Failures), "failed-requests")
}

// BenchmarkClusterIPThroughput: what the Service's translation costs. A
// busybox httpd pod serves a 256 MiB file and a small page; from the node,
// the same downloads (curl, 7 of each) and the same request load
// (test/cmd/berth-load for 3 s, 5 of each, kept-alive and new connections)
// go to the pod's IP and to the Service's cluster IP; reported as medians
// in MB/s and requests/s, and the ratios cluster IP / pod IP.
func BenchmarkClusterIPThroughput(b *testing.B) {
	bn := newBenchNode(b, "tpbench", "")
	load := bn.goBuild("berth-load")
	bn.sh("berth", "create", "namespace", "tp")
	bn.write("/var/tmp/tp.yaml", fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: big, namespace: tp, labels: {app: big}}
spec:
  containers:
  - name: httpd
    image: %s
    command: [sh, -c, 'mkdir -p /tmp/www && echo big > /tmp/www/index.html && dd if=/dev/zero of=/tmp/www/big bs=1M count=256 2>/dev/null && exec httpd -f -p 8080 -h /tmp/www']
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /big, port: http}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: big, namespace: tp}
spec:
  selector: {app: big}
  ports: [{name: http, port: 80, targetPort: http}]
`, bn.signed.Ref))
	bn.sh("berth", "apply", "-f", "/var/tmp/tp.yaml")
	bn.sh("berth", "wait", "pod/big", "-n", "tp", "--for=condition=Ready", "--timeout=5m")
	podURL := "http://" + bn.sh("berth", "get", "pod", "big", "-n", "tp", "-o", "jsonpath={.status.podIP}") + ":8080"
	svcURL := "http://" + bn.sh("berth", "get", "svc", "big", "-n", "tp", "-o", "jsonpath={.spec.clusterIP}") + ":80"
	bn.sh("sh", "-c", "until [ -n \"$(berth get endpoints big -n tp -o jsonpath='{.subsets[*].addresses[*].ip}')\" ]; do sleep 0.2; done")

	// Rounds interleave the two paths, so that what else the machine does
	// weighs on both alike; medians of each.
	speed, rate := map[string][]float64{}, map[string][]float64{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for round := 0; round < 7; round++ {
			for _, u := range []string{podURL, svcURL} {
				out := bn.sh("curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download}", u+"/big")
				v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
				if err != nil {
					b.Fatalf("curl: %q", out)
				}
				speed[u] = append(speed[u], v/1e6)
			}
		}
		for round := 0; round < 5; round++ {
			for _, u := range []string{podURL, svcURL} {
				stop := "/var/tmp/tp.stop"
				out := bn.sh("sh", "-c", fmt.Sprintf("rm -f %[1]s; (sleep 3; touch %[1]s) & %[2]s -url %[3]s/index.html -workers 2 -stop %[1]s", stop, load, u))
				var rep loadReport
				if err := json.Unmarshal([]byte(out), &rep); err != nil {
					b.Fatalf("berth-load: %v\n%s", err, out)
				}
				if rep.Failures != 0 {
					b.Errorf("%s: %d failed requests: %v", u, rep.Failures, rep.Errors)
				}
				rate[u] = append(rate[u], float64(rep.Requests)/rep.Seconds)
			}
		}
	}
	b.StopTimer()
	median := func(v []float64) float64 {
		s := append([]float64(nil), v...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	b.Logf("MB/s pod IP %.0f, cluster IP %.0f; requests/s pod IP %.0f, cluster IP %.0f", speed[podURL], speed[svcURL], rate[podURL], rate[svcURL])
	b.ReportMetric(median(speed[podURL]), "podIP-MB/s")
	b.ReportMetric(median(speed[svcURL]), "clusterIP-MB/s")
	b.ReportMetric(median(speed[svcURL])/median(speed[podURL]), "bulk-ratio")
	b.ReportMetric(median(rate[podURL]), "podIP-req/s")
	b.ReportMetric(median(rate[svcURL]), "clusterIP-req/s")
	b.ReportMetric(median(rate[svcURL])/median(rate[podURL]), "req-ratio")
}

// BenchmarkMetricsOnNode is issue 13's cost on a real berthd with 500
// pods (BERTH_BENCH_PODS): once they run and two collection cycles have
// passed, berthd's CPU time per scrape of /metrics (20 scrapes through
// the socket, from /proc/<pid>/stat), the last collection cycle's
// duration (berth_usage_collection_duration_seconds), and berthd's RSS
// before the first scrape (the series are built lazily) and after.
func BenchmarkMetricsOnNode(b *testing.B) {
	pods := 500
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_PODS")); err == nil && v > 0 {
		pods = v
	}
	bn := newBenchNode(b, "metbench", "")
	bn.sh("berth", "create", "namespace", "bench")
	bn.write("/var/tmp/many.yaml", fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: many, namespace: bench}
spec:
  replicas: %d
  selector: {matchLabels: {app: many}}
  template:
    metadata: {labels: {app: many}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: app, image: %s, command: [sleep, "100000"]}
`, pods, bn.signed.Ref))
	bn.sh("berth", "apply", "-f", "/var/tmp/many.yaml")
	bn.sh("berth", "rollout", "status", "deployment/many", "-n", "bench", "--timeout=20m")
	time.Sleep(25 * time.Second) // two cycles at the default 10 s
	pid := strings.TrimSpace(strings.TrimPrefix(bn.sh("systemctl", "show", "-p", "MainPID", "berthd"), "MainPID="))
	rss := func() float64 {
		for _, l := range strings.Split(bn.sh("cat", "/proc/"+pid+"/status"), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
		bn.b.Fatal("no VmRSS")
		return 0
	}
	cpu := func() float64 { // utime+stime, seconds (USER_HZ 100)
		f := strings.Fields(bn.sh("cat", "/proc/"+pid+"/stat"))
		u, _ := strconv.ParseFloat(f[13], 64)
		s, _ := strconv.ParseFloat(f[14], 64)
		return (u + s) / 100
	}
	before := rss()
	const scrapes = 20
	var body string
	c0 := cpu()
	t0 := time.Now()
	for range scrapes {
		body = bn.sh("curl", "-s", "--unix-socket", "/run/berth/berth.sock", "http://localhost/metrics")
	}
	wall := time.Since(t0) / scrapes
	perScrape := (cpu() - c0) / scrapes
	after := rss()
	var cycle float64
	for _, l := range strings.Split(body, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "berth_usage_collection_duration_seconds" {
			cycle, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if !strings.Contains(body, `container_memory_working_set_bytes{container="app"`) || cycle == 0 {
		b.Fatalf("the scrape lacks the pods' series or the cycle's duration")
	}
	// The peer: prometheus-node-exporter (Debian's) in the same node, its
	// default collectors, scraped as often; its CPU per scrape from its
	// own /proc/<pid>/stat.
	bn.sh("systemd-run", "--unit", "berthbench-node-exporter", "--collect", "prometheus-node-exporter", "--web.listen-address=127.0.0.1:9100")
	var nePID string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, err := bn.n.Run(bn.ctx, "curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:9100/metrics"); err == nil {
			nePID = strings.TrimSpace(strings.TrimPrefix(bn.sh("systemctl", "show", "-p", "MainPID", "berthbench-node-exporter"), "MainPID="))
			break
		}
	}
	if nePID == "" {
		b.Fatal("the node exporter never answered")
	}
	neCPU := func() float64 {
		f := strings.Fields(bn.sh("cat", "/proc/"+nePID+"/stat"))
		u, _ := strconv.ParseFloat(f[13], 64)
		s, _ := strconv.ParseFloat(f[14], 64)
		return (u + s) / 100
	}
	var neBody string
	n0 := neCPU()
	for range scrapes {
		neBody = bn.sh("curl", "-s", "http://127.0.0.1:9100/metrics")
	}
	nePerScrape := (neCPU() - n0) / scrapes
	bn.sh("systemctl", "stop", "berthbench-node-exporter")
	b.ReportMetric(nePerScrape*1000, "node-exporter-cpu-ms/scrape")
	if nePerScrape > 0 {
		b.ReportMetric(perScrape/nePerScrape, "ratio-to-node-exporter")
	}
	b.Logf("prometheus-node-exporter in the same node: %.1f ms of CPU per scrape (%.1f KiB)", nePerScrape*1000, float64(len(neBody))/1024)
	b.ReportMetric(perScrape*1000, "cpu-ms/scrape")
	b.ReportMetric(float64(wall.Milliseconds()), "wall-ms/scrape")
	b.ReportMetric(cycle*1000, "ms/cycle")
	b.ReportMetric(before, "rss-MiB-before-scrape")
	b.ReportMetric(after, "rss-MiB-after")
	b.ReportMetric(float64(len(body))/(1<<20), "MiB/scrape")
	b.Logf("%d pods: berthd CPU %.1f ms per scrape (wall %v, %.1f MiB), collection cycle %.0f ms, RSS %.0f MiB before the first scrape, %.0f after %d",
		pods, perScrape*1000, wall, float64(len(body))/(1<<20), cycle*1000, before, after, scrapes)
}
