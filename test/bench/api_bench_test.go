package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/test/testenv"
)

// BenchmarkAPI measures issue 9's figures on a real node with berthd as a
// service, in one run: list of BERTH_BENCH_PODS (default 500) running pods
// over the socket as JSON and as a Table (p50/p99), sustained gets and
// creates per second, berthd's RSS idle and with the pods, the time from a
// berthd restart to every pod reconciled, and `berth apply` of 50 pods
// against 50 raw transient units (the floor) and 50 `podman run -d` (a
// peer, when podman is installed) of the same image. RSS is split into
// anon and file-backed pages; BERTH_BENCH_GODEBUG (e.g. gctrace=1) runs
// berthd with that GODEBUG and adds its last GC lines (the live heap) to
// each RSS figure.
func BenchmarkAPI(b *testing.B) {
	testenv.RequireRoot(b)
	pods := 500
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_PODS")); err == nil && v > 0 {
		pods = v
	}
	bin := b.TempDir()
	if err := nodeberthd.Build(bin); err != nil {
		b.Fatal(err)
	}
	if err := nodereg.CopyCosign(bin); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		dropCaches(b)
		nd := nodetest.New(b, node.Options{Name: "apibench", BinDir: bin})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		signed, err := nodereg.SignedImages(ctx, nd, 5000)
		if err != nil {
			b.Fatal(err)
		}
		if err := nodeberthd.Install(ctx, nd, ""); err != nil {
			b.Fatal(err)
		}
		a := &apiBench{b: b, n: nd, c: nodeberthd.Client(nd), image: signed.Ref, ctx: ctx}
		if v := os.Getenv("BERTH_BENCH_GODEBUG"); v != "" {
			// berthd's GC in the report (BERTH_BENCH_GODEBUG=gctrace=1):
			// the live heap against what RSS counts.
			a.godebug = true
			if err := os.WriteFile(nd.HostPath("/etc/systemd/system/berthd.service.d/20-bench.conf"), []byte("[Service]\nEnvironment=GODEBUG="+v+"\n"), 0o644); err != nil {
				b.Fatal(err)
			}
			a.sh("systemctl", "daemon-reload")
			a.sh("systemctl", "restart", "berthd.service")
			if err := nodeberthd.WaitReady(ctx, nd); err != nil {
				b.Fatal(err)
			}
		}
		a.run(pods)
		cancel()
	}
}

type apiBench struct {
	b     *testing.B
	n     *node.Node
	c     *http.Client
	image string
	ctx   context.Context
	// godebug: berthd runs with BERTH_BENCH_GODEBUG; its last GC lines go
	// in the report with each RSS.
	godebug bool
}

func (a *apiBench) sh(args ...string) string {
	a.b.Helper()
	out, err := a.n.Run(a.ctx, args...)
	if err != nil {
		a.b.Fatal(err)
	}
	return out
}

// rss is berthd's resident memory, split as the kernel counts it: anon
// (the Go heap and stacks: what berthd itself holds) and file (mapped
// files: the binary's text and bbolt's memory map, pages the kernel may
// drop and read again).
func (a *apiBench) rss() string {
	pid := strings.TrimSpace(a.sh("systemctl", "show", "-P", "MainPID", "berthd.service"))
	st := a.sh("cat", "/proc/"+pid+"/status")
	kb := func(field string) float64 {
		m := regexp.MustCompile(field + `:\s+(\d+) kB`).FindStringSubmatch(st)
		if m == nil {
			a.b.Fatalf("no %s in %s", field, st)
		}
		v, _ := strconv.Atoi(m[1])
		return float64(v) / 1024
	}
	// Of the file part, how much is the state file's memory map.
	var db float64
	if m := regexp.MustCompile(`(?m)state\.db\n(?:.*\n)*?Rss:\s+(\d+) kB`).FindStringSubmatch(a.sh("cat", "/proc/"+pid+"/smaps")); m != nil {
		v, _ := strconv.Atoi(m[1])
		db = float64(v) / 1024
	}
	out := fmt.Sprintf("%.1f MB (anon %.1f MB, file %.1f MB of which state.db %.1f MB, shmem %.1f MB)", kb("VmRSS"), kb("RssAnon"), kb("RssFile"), db, kb("RssShmem"))
	if a.godebug {
		out += "\n" + a.sh("sh", "-c", "journalctl -o cat _PID="+pid+" | grep -E '^(gc|scvg) ' | tail -3")
	}
	return out
}

func (a *apiBench) pod(ns, name string) []byte {
	grace := int64(1)
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"bench": ns}},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: a.image, Command: []string{"sleep", "100000"}}}},
	}
	data, _ := json.Marshal(p)
	return data
}

func (a *apiBench) do(method, path, accept string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(a.ctx, method, "http://berth"+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// parallel runs f from 8 clients until n calls (n > 0) or d elapsed, and
// returns calls per second; any error fails the benchmark.
func (a *apiBench) parallel(n int, d time.Duration, f func(i int) error) float64 {
	var next, done atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if (n > 0 && i >= n) || (n == 0 && time.Since(start) > d) {
					return
				}
				if err := f(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		a.b.Fatal(err)
	}
	return float64(done.Load()) / time.Since(start).Seconds()
}

func (a *apiBench) waitRunning(ns string, want int) time.Duration {
	start := time.Now()
	for time.Since(start) < 20*time.Minute {
		req, _ := http.NewRequestWithContext(a.ctx, http.MethodGet, "http://berth/api/v1/namespaces/"+ns+"/pods?fieldSelector=status.phase%3DRunning", nil)
		resp, err := a.c.Do(req)
		if err == nil {
			var l corev1.PodList
			err = json.NewDecoder(resp.Body).Decode(&l)
			resp.Body.Close()
			if err == nil && len(l.Items) == want {
				return time.Since(start)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.b.Fatalf("%d pods in %s never all Running", want, ns)
	return 0
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2], ds[len(ds)*99/100]
}

func (a *apiBench) run(pods int) {
	b := a.b
	report := &strings.Builder{}
	fmt.Fprintf(report, "berthd RSS idle: %s\n", a.rss())
	a.sh("berth", "create", "namespace", "bench")

	// Creates: sustained, 8 clients, until every pod is stored.
	createRate := a.parallel(pods, 0, func(i int) error {
		code, err := a.do(http.MethodPost, "/api/v1/namespaces/bench/pods", "", a.pod("bench", fmt.Sprintf("p%04d", i)))
		if err == nil && code != http.StatusCreated {
			err = fmt.Errorf("create: HTTP %d", code)
		}
		return err
	})
	fmt.Fprintf(report, "creates: %.0f/s (8 clients, %d pods)\n", createRate, pods)
	fmt.Fprintf(report, "%d pods Running %v after the last create\n", pods, a.waitRunning("bench", pods).Round(time.Millisecond))
	fmt.Fprintf(report, "berthd RSS with %d pods: %s\n", pods, a.rss())

	for _, f := range []struct{ name, accept string }{
		{"JSON", "application/json"},
		{"Table", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"},
	} {
		var ds []time.Duration
		for i := 0; i < 200; i++ {
			t0 := time.Now()
			if code, err := a.do(http.MethodGet, "/api/v1/namespaces/bench/pods", f.accept, nil); err != nil || code != 200 {
				b.Fatalf("list: %v %d", err, code)
			}
			ds = append(ds, time.Since(t0))
		}
		p50, p99 := percentiles(ds)
		fmt.Fprintf(report, "list of %d pods as %s: p50 %v p99 %v (goal p99 ≤ 20ms)\n", pods, f.name, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond))
	}
	getRate := a.parallel(0, 5*time.Second, func(i int) error {
		code, err := a.do(http.MethodGet, fmt.Sprintf("/api/v1/namespaces/bench/pods/p%04d", i%pods), "", nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("get: HTTP %d", code)
		}
		return err
	})
	fmt.Fprintf(report, "gets: %.0f/s sustained for 5s, 8 clients, no error (goal ≥ 1000/s on 2 cores)\n", getRate)

	// A berthd that died under the load would have been restarted by
	// systemd: the figures above would then not be one process's.
	if n := strings.TrimSpace(a.sh("systemctl", "show", "-P", "NRestarts", "berthd.service")); n != "0" {
		fmt.Fprintf(report, "berthd was restarted %s times by systemd during the run; its journal:\n%s", n,
			a.sh("sh", "-c", "journalctl -o cat -u berthd.service -p warning | tail -20"))
	}
	// Restart: from the restart to every pod reconciled, as berthd logs it.
	t0 := time.Now()
	a.sh("systemctl", "restart", "berthd.service")
	if err := nodeberthd.WaitReady(a.ctx, a.n); err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(report, "restart to ready: %v\n", time.Since(t0).Round(time.Millisecond))
	// Reconcile runs once the API serves: wait for its line of this start.
	var line string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && !strings.Contains(line, "adopted="+strconv.Itoa(pods)); time.Sleep(100 * time.Millisecond) {
		line = a.sh("sh", "-c", "journalctl -o short-precise -u berthd.service --since=@"+strconv.FormatInt(t0.Unix(), 10)+" | grep -E 'Started berthd|reconciled:' | tail -2")
	}
	fmt.Fprintf(report, "berthd's journal from the restart to reconciled (timestamps give the time):\n%s", line)

	// 50 pods by berth apply, 50 raw transient units, 50 podman run -d.
	var manifest bytes.Buffer
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&manifest, "---\n%s\n", a.pod("apply", fmt.Sprintf("a%02d", i)))
	}
	if err := os.WriteFile(a.n.HostPath("/root/apply.yaml"), manifest.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	a.sh("berth", "create", "namespace", "apply")
	t0 = time.Now()
	a.sh("berth", "apply", "-f", "/root/apply.yaml")
	a.waitRunning("apply", 50)
	berthApply := time.Since(t0)
	t0 = time.Now()
	a.sh("sh", "-c", "for i in $(seq 1 50); do systemd-run --quiet --unit=floor-$i /bin/busybox sleep 100000 || exit 1; done")
	floor := time.Since(t0)
	fmt.Fprintf(report, "50 pods: berth apply until all Running %v; 50 raw transient units %v (ratio %.1fx)\n",
		berthApply.Round(time.Millisecond), floor.Round(time.Millisecond), berthApply.Seconds()/floor.Seconds())
	if out, err := a.n.Run(a.ctx, "sh", "-c", "podman pull -q oci:/var/tmp/images:busybox:signed >/dev/null && podman images -q | head -1"); err != nil {
		fmt.Fprintf(report, "podman peer not measured: %v %s\n", err, out)
	} else {
		img := strings.TrimSpace(out)
		t0 = time.Now()
		a.sh("sh", "-c", "for i in $(seq 1 50); do podman run -d --name peer-$i "+img+" sleep 100000 >/dev/null || exit 1; done")
		peer := time.Since(t0)
		fmt.Fprintf(report, "50 podman run -d: %v (berth/podman %.2fx)\n", peer.Round(time.Millisecond), berthApply.Seconds()/peer.Seconds())
		a.sh("sh", "-c", "podman rm -f -t 0 $(podman ps -aq) >/dev/null")
	}
	// Printed, not logged: the testing package cuts a benchmark's log short.
	fmt.Print(report.String())
}
