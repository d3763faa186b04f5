// Package bench measures container start-up on a real systemd node against
// the floor (raw transient units) and a peer (podman), in one run.
//
//	make bench     (= go test -run '^$' -bench . -benchtime 1x ./test/bench/)
package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/testenv"
)

func build(b *testing.B, dir string) {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range []string{"cmd/berth-init", "test/cmd/berth-bench"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(p)), "./"+p)
		cmd.Dir = strings.TrimSpace(string(root))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("build %s: %v\n%s", p, err, out)
		}
	}
}

// BenchmarkContainerStart starts BERTH_BENCH_N (default 100) containers and
// as many raw transient units, interleaved, and reports p50/p99 and ratios;
// with podman installed, podman's `run -d` of the same image and crun (its
// runtime) started in units of berth's shape too.
func BenchmarkContainerStart(b *testing.B) {
	testenv.RequireRoot(b)
	n := 100
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	bin := b.TempDir()
	build(b, bin)
	for i := 0; i < b.N; i++ {
		nd := node.New(b, node.Options{Name: "bench", BinDir: bin})
		img, err := imagetest.BusyboxImage(nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := imagetest.WriteLayout(filepath.Join(nd.Dir, "var/tmp/images"), "busybox:bench", img); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		args := []string{"berth-bench", "-n", strconv.Itoa(n)}
		if _, err := exec.LookPath("crun"); err == nil { // podman's runtime, installed with it
			args = append(args, "-crun")
		}
		if _, err := exec.LookPath("podman"); err == nil {
			if out, err := nd.Run(ctx, "sh", "-c", "podman pull -q oci:/var/tmp/images:busybox:bench && podman tag $(podman images -q | head -1) localhost/berth-bench:latest"); err != nil {
				b.Logf("podman peer skipped: %v %s", err, out)
			} else {
				args = append(args, "-podman")
			}
		}
		out, err := nd.Run(ctx, args...)
		cancel()
		b.Logf("\n%s", out)
		if err != nil {
			b.Fatal(err)
		}
	}
}
