package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/test/testenv"
)

const execBenchPod = `apiVersion: v1
kind: Pod
metadata:
  name: box
spec:
  containers:
  - name: c
    image: %s
    command: [sleep, "3600"]
`

// BenchmarkExec times `kubectl exec box -- true` (berth's embedded
// kubectl over the socket, a whole command each time, as a user runs it)
// against `podman exec <ctr> true` on the same node, BERTH_BENCH_N (default
// 50) of each, interleaved, and reports p50 and p99 and their ratios
// (berth/podman; b.ReportMetric).
func BenchmarkExec(b *testing.B) {
	testenv.RequireRoot(b)
	_, err := exec.LookPath("podman")
	testenv.Require(b, err == nil, "needs podman for the peer")
	n := 50
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	bin := b.TempDir()
	if err := nodeberthd.Build(bin); err != nil {
		b.Fatal(err)
	}
	if err := nodereg.CopyCosign(bin); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		nd := nodetest.New(b, node.Options{Name: "execbench", BinDir: bin})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		sh := func(args ...string) string {
			b.Helper()
			out, err := nd.Run(ctx, args...)
			if err != nil {
				b.Fatal(err)
			}
			return out
		}
		signed, err := nodereg.SignedImages(ctx, nd, 5000)
		if err != nil {
			b.Fatal(err)
		}
		if err := nodeberthd.Install(ctx, nd, ""); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(nd.HostPath("/var/tmp/box.yaml"), []byte(fmt.Sprintf(execBenchPod, signed.Ref)), 0o644); err != nil {
			b.Fatal(err)
		}
		sh("berth", "apply", "-f", "/var/tmp/box.yaml")
		sh("berth", "wait", "--for=condition=Ready", "pod/box", "--timeout=120s")

		img, err := imagetest.BusyboxImage(nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := imagetest.WriteLayout(filepath.Join(nd.Dir, "var/tmp/images"), "busybox:bench", img); err != nil {
			b.Fatal(err)
		}
		sh("sh", "-c", "podman pull -q oci:/var/tmp/images:busybox:bench && podman tag $(podman images -q | head -1) localhost/berth-bench:latest")
		sh("podman", "run", "-d", "--name", "box", "--network", "none", "--cgroup-manager", "systemd", "localhost/berth-bench:latest", "sleep", "3600")

		timeOne := func(args ...string) time.Duration {
			start := time.Now()
			sh(args...)
			return time.Since(start)
		}
		// One of each first: caches, the embedded kubectl's discovery.
		timeOne("berth", "exec", "box", "--", "true")
		timeOne("podman", "exec", "box", "true")
		var berth, podman []time.Duration
		for range n {
			berth = append(berth, timeOne("berth", "exec", "box", "--", "true"))
			podman = append(podman, timeOne("podman", "exec", "box", "true"))
		}
		_, _ = nd.Run(ctx, "podman", "rm", "-f", "-t", "0", "--all")
		cancel()
		bp50, bp99 := percentiles(berth)
		pp50, pp99 := percentiles(podman)
		b.Logf("kubectl exec -- true (berth exec): p50 %v p99 %v; podman exec: p50 %v p99 %v; n=%d", bp50, bp99, pp50, pp99, n)
		b.ReportMetric(float64(bp50.Microseconds())/1000, "berth-p50-ms")
		b.ReportMetric(float64(pp50.Microseconds())/1000, "podman-p50-ms")
		b.ReportMetric(float64(bp50)/float64(pp50), "ratio-p50")
		b.ReportMetric(float64(bp99)/float64(pp99), "ratio-p99")
	}
}
