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

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
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
		dropCaches(b)
		nd := nodetest.New(b, node.Options{Name: "bench", BinDir: bin})
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

// dropCaches releases the memory cgroups that units removed earlier (by
// earlier runs, or tests) left behind: a removed cgroup stays, dying, as
// long as page cache or slab objects charged to it live, which on a host
// with free memory is until the next reboot. They slow down every cgroup
// operation: on this machine each run of this benchmark added ~300 and
// ran ~15 % slower than the one before. Every run starts from the same
// state instead, at the price of a cold page cache (the image is imported
// again before the timed starts).
func dropCaches(b *testing.B) {
	b.Helper()
	before := memoryCgroups()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		b.Fatalf("drop caches: %v", err)
	}
	b.Logf("memory cgroups (live and dying) before the run: %d, after dropping caches: %d", before, memoryCgroups())
}

// memoryCgroups is num_cgroups of the memory controller in /proc/cgroups
// (-1 if unknown).
func memoryCgroups() int {
	raw, err := os.ReadFile("/proc/cgroups")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "memory" {
			if n, err := strconv.Atoi(f[2]); err == nil {
				return n
			}
		}
	}
	return -1
}
