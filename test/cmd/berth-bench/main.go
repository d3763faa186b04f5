// Command berth-bench measures container start-up inside a systemd node:
// N pods started through berth's runtime from a cached image, and, in the same
// run and interleaved with them, N raw transient units of /bin/sleep started
// over the same D-Bus connection (the floor), plus optionally N `podman run`
// of the same image and N units that start it with crun (peers). It prints
// p50/p99 of each and the ratios.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hashicorp/go-hclog"

	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
)

// podmanImage is the name the harness gives the same image in podman's store.
const podmanImage = "localhost/berth-bench:latest"

func main() {
	n := flag.Int("n", 100, "containers (and raw units) to start")
	layout := flag.String("layout", "/var/tmp/images", "OCI layout with the image")
	ref := flag.String("image", "busybox:bench", "image reference in the layout")
	initPath := flag.String("init", "/opt/berth/bin/berth-init", "berth-init")
	verbose := flag.Bool("v", false, "log each pod's phase timings")
	cpu := flag.String("cpu", "1", "CPU limit of every container and raw unit")
	podman := flag.Bool("podman", false, "also time `podman run -d --network none` of the image (tagged "+podmanImage+")")
	crun := flag.Bool("crun", false, "also time units of the same shape whose ExecStart is `crun run --detach` of the image")
	withNet := flag.Bool("network", true, "also time pods on berth's default pod network (CNI bridge), and podman's default network")
	flag.Parse()
	if err := run(*n, *layout, *ref, *initPath, *cpu, *podman, *crun, *withNet, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "berth-bench:", err)
		os.Exit(1)
	}
}

func run(n int, layout, ref, initPath, cpu string, podman, crun, withNet, verbose bool) error {
	ctx := context.Background()
	conn, err := systemd.Dial(ctx)
	if err != nil {
		return err
	}
	store, err := image.New("/var/lib/berth/store")
	if err != nil {
		return err
	}
	v1img, err := image.OpenLayout(ctx, layout, ref)
	if err != nil {
		return err
	}
	img, err := store.Import(ctx, v1img, image.ImportOptions{}) // cached: the timed starts reuse its layers
	if err != nil {
		return err
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.Warn, Output: os.Stderr})
	if verbose {
		log.SetLevel(hclog.Debug)
	}
	// Judged like any image: the policy trusts the bench's layout directory.
	policy := "/var/tmp/berth-bench-policy.json"
	if err := os.WriteFile(policy, []byte(`{"default": [{"type": "reject"}], "transports": {"oci": {"`+layout+`": [{"type": "insecureAcceptAnything"}]}}}`), 0o644); err != nil {
		return err
	}
	rcfg := pods.Config{Init: initPath, Log: log, Policy: policy,
		Node: cgroup.NodeInfo{MemoryCapacity: 8 << 30, CgroupV2: cgroup.IsV2(), PidsLimit: 4096}}
	rt := pods.New(rcfg, pods.SystemdUnits(conn), store)
	// The same runtime on berth's default pod network (what berthd serve
	// runs): loopback-only pods above, attached ones here.
	var netRT *pods.Runtime
	if withNet {
		pn, err := network.Open(ctx, network.Config{ConfDir: "/var/tmp/berth-bench-cni", RunDir: "/run/berth/cni", Log: log})
		if err != nil {
			return err
		}
		ncfg := rcfg
		ncfg.Network = pn
		ncfg.DNS = network.DNS{ResolvConf: "/etc/resolv.conf"}
		netRT = pods.New(ncfg, pods.SystemdUnits(conn), store)
	}
	// The same limits for both sides. Note the CPU limit also applies to
	// berth-init's own set-up in the unit's cgroup (~25 ms of CPU, mostly
	// mounts and namespace clones): at 100m the CFS quota (10 ms per 100 ms)
	// throttles it for one or two periods; -cpu 100m shows that effect.
	cpuQ, err := resource.ParseQuantity(cpu)
	if err != nil {
		return fmt.Errorf("-cpu %q: %w", cpu, err)
	}
	limits := corev1.ResourceList{corev1.ResourceCPU: cpuQ, corev1.ResourceMemory: resource.MustParse("32Mi")}
	quota := uint64(cpuQ.MilliValue() * 1000)

	var crunBundle func(i int) (string, error)
	if crun {
		if crunBundle, err = crunBundles(store.LayerDirs(img)); err != nil {
			return err
		}
	}
	var floor, berth, berthNet, crunned []time.Duration
	// No cleanup here: the benchmark runs in a disposable node, whose
	// teardown removes every unit at once (stopping 100 sleeps that ignore
	// SIGTERM would take their grace periods).
	for i := 0; i < n; i++ {
		// The floor: what systemd itself costs for a unit with the same limits.
		name := fmt.Sprintf("berth-floor-%d.service", i)
		props := []unitgen.Property{
			{Name: "Type", Value: "exec"},
			{Name: "ExecStart", Value: []unitgen.ExecCommand{{Path: "/bin/sleep", Args: []string{"/bin/sleep", "3600"}}}},
			{Name: "MemoryMax", Value: uint64(32 << 20)},
			{Name: "CPUQuotaPerSecUSec", Value: quota},
		}
		t0 := time.Now()
		if err := conn.Start(ctx, name, props); err != nil {
			return fmt.Errorf("raw unit %d: %w", i, err)
		}
		floor = append(floor, time.Since(t0))

		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "bench"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "main", Image: ref, Command: []string{"sleep", "3600"},
				Resources: corev1.ResourceRequirements{Limits: limits},
			}}},
		}
		t0 = time.Now()
		if err := rt.RunPod(ctx, pod, map[string]pods.PodImage{"main": {Image: img, Layout: layout}}); err != nil {
			return fmt.Errorf("pod %d: %w", i, err)
		}
		berth = append(berth, time.Since(t0))

		if netRT != nil {
			pod := pod.DeepCopy()
			pod.Name = fmt.Sprintf("n%d", i)
			t0 = time.Now()
			if err := netRT.RunPod(ctx, pod, map[string]pods.PodImage{"main": {Image: img, Layout: layout}}); err != nil {
				return fmt.Errorf("pod %s: %w", pod.Name, err)
			}
			berthNet = append(berthNet, time.Since(t0))
		}
	}
	// crun after the interleaved loop, like podman: its detached starts
	// slowed the floor units started right after them.
	for i := 0; crun && i < n; i++ {
		b, err := crunBundle(i)
		if err != nil {
			return err
		}
		id := fmt.Sprintf("berth-bench-crun-%d", i)
		// The shape of berth's unit: Type=forking, the runtime writes the
		// container's PID and exits; the same limits. The container stays
		// in the unit's cgroup (crun's cgroup manager off), as berth's does.
		props := []unitgen.Property{
			{Name: "Type", Value: "forking"},
			{Name: "PIDFile", Value: b + "/pid"},
			{Name: "ExecStart", Value: []unitgen.ExecCommand{{Path: "/usr/bin/crun", Args: []string{"crun", "--cgroup-manager=disabled",
				"run", "--detach", "--bundle", b, "--pid-file", b + "/pid", id}}}},
			{Name: "MemoryMax", Value: uint64(32 << 20)},
			{Name: "CPUQuotaPerSecUSec", Value: quota},
		}
		t0 := time.Now()
		if err := conn.Start(ctx, id+".service", props); err != nil {
			return fmt.Errorf("crun unit %d: %w", i, err)
		}
		crunned = append(crunned, time.Since(t0))
	}
	// Each series also shows the p50 of its first and last quarter: every
	// container and unit stays up, so the last quarter starts beside ~3n/4
	// others (berth's pods each pin three namespaces in the mount table).
	report := func(name string, d []time.Duration) (p50, p99 time.Duration) {
		p50, p99 = pct(d, 50), pct(d, 99)
		q := len(d) / 4
		fmt.Printf("%-28s n=%-4d p50=%-10v p99=%-10v quarters: first p50=%-10v last p50=%v\n", name, len(d),
			p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond),
			pct(d[:max(q, 1)], 50).Round(10*time.Microsecond), pct(d[len(d)-max(q, 1):], 50).Round(10*time.Microsecond))
		return
	}
	fmt.Printf("limits: cpu %s, memory 32Mi\n", cpu)
	fp50, fp99 := report("raw transient unit (floor)", floor)
	bp50, bp99 := report("berth container", berth)
	fmt.Printf("ratio berth/floor            p50=%.2fx p99=%.2fx (goal <= 1.5x)\n", ratio(bp50, fp50), ratio(bp99, fp99))
	var np50, np99 time.Duration
	if netRT != nil {
		np50, np99 = report("berth container, pod network", berthNet)
		fmt.Printf("ratio network/loopback       p50=%.2fx p99=%.2fx\n", ratio(np50, bp50), ratio(np99, bp99))
	}
	if crun {
		cp50, cp99 := report("crun run -d in a unit (peer)", crunned)
		fmt.Printf("ratio crun/floor             p50=%.2fx p99=%.2fx\n", ratio(cp50, fp50), ratio(cp99, fp99))
		fmt.Printf("ratio berth/crun             p50=%.2fx p99=%.2fx\n", ratio(bp50, cp50), ratio(bp99, cp99))
	}
	if podman {
		var pd []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			// -d: like berth's figure, the time until the container runs.
			out, err := exec.Command("podman", "run", "-d", "--network", "none", "--cgroup-manager", "systemd",
				"--memory", "32m", "--cpus", cpu, podmanImage, "sleep", "3600").CombinedOutput()
			if err != nil {
				return fmt.Errorf("podman run: %w: %s", err, out)
			}
			pd = append(pd, time.Since(t0))
		}
		_ = exec.Command("podman", "rm", "-f", "-t", "0", "--all").Run()
		pp50, pp99 := report("podman run -d (peer)", pd)
		fmt.Printf("ratio berth/podman           p50=%.2fx p99=%.2fx\n", ratio(bp50, pp50), ratio(bp99, pp99))
		if netRT != nil {
			// podman's default network (a CNI bridge on 10.88.0.0/16 with
			// portmap and firewall, as berth's).
			var pn []time.Duration
			for i := 0; i < n; i++ {
				t0 := time.Now()
				out, err := exec.Command("podman", "run", "-d", "--cgroup-manager", "systemd",
					"--memory", "32m", "--cpus", cpu, podmanImage, "sleep", "3600").CombinedOutput()
				if err != nil {
					return fmt.Errorf("podman run (default network): %w: %s", err, out)
				}
				pn = append(pn, time.Since(t0))
			}
			_ = exec.Command("podman", "rm", "-f", "-t", "0", "--all").Run()
			qp50, qp99 := report("podman run -d, its network", pn)
			fmt.Printf("ratio berth/podman, network  p50=%.2fx p99=%.2fx\n", ratio(np50, qp50), ratio(np99, qp99))
		}
	}
	return nil
}

func pct(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	if i < 0 {
		i = 0
	}
	return s[i]
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// crunBundles prepares what crun needs to run the image: one read-only root
// shared by all (the image's layers under an overlay mounted once, with the
// mount points crun needs; berth mounts a writable overlay per container,
// inside its timed start), and per container a bundle whose config.json is
// crun's default spec with the workload, the hostname and Docker's default
// seccomp profile, which crun compiles at every start.
func crunBundles(layers []string) (func(i int) (string, error), error) {
	base := "/var/tmp/berth-bench-crun"
	root, upper, work := base+"/rootfs", base+"/upper", base+"/work"
	for _, d := range []string{root, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(layers, ":"), upper, work)
	if err := syscall.Mount("overlay", root, "overlay", 0, data); err != nil {
		return nil, fmt.Errorf("mount image layers: %w", err)
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc"} {
		if err := os.MkdirAll(root+"/"+d, 0o755); err != nil {
			return nil, err
		}
	}
	tmpl := base + "/spec"
	if err := os.MkdirAll(tmpl, 0o755); err != nil {
		return nil, err
	}
	_ = os.Remove(tmpl + "/config.json")
	if out, err := exec.Command("crun", "spec", "--bundle", tmpl).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("crun spec: %w: %s", err, out)
	}
	raw, err := os.ReadFile(tmpl + "/config.json")
	if err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, err
	}
	spec.Process.Terminal = false
	spec.Process.Args = []string{"sleep", "3600"}
	spec.Root = &specs.Root{Path: root, Readonly: true}
	spec.Linux.CgroupsPath = ""
	if spec.Linux.Seccomp, err = mobyseccomp.GetDefaultProfile(&spec); err != nil {
		return nil, err
	}
	return func(i int) (string, error) {
		s := spec
		s.Hostname = fmt.Sprintf("c%d", i)
		b := fmt.Sprintf("%s/c%d", base, i)
		if err := os.MkdirAll(b, 0o755); err != nil {
			return "", err
		}
		out, err := json.Marshal(&s)
		if err != nil {
			return "", err
		}
		return b, os.WriteFile(b+"/config.json", out, 0o644)
	}, nil
}
