package kubectl

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// podYAML is a pod of the signed image running cmd, with an optional
// resources block (indented for a container).
func podYAML(ns, name, image, cmd, resources string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: app
    image: %s
    command: [sh, -c, %q]
%s`, name, ns, image, cmd, resources)
}

// refused creates file and wants kubectl's error line exactly.
func (e *env) refused(k *client, file, want string) {
	e.t.Helper()
	_, msg, err := k.kubectl("", "create", "-f", file)
	if err == nil {
		e.t.Errorf("create -f %s was admitted; want %q", file, want)
		return
	}
	// kubectl's own line is the last; at -v=6 the Status comes before.
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	if got := lines[len(lines)-1]; got != want {
		e.t.Errorf("create -f %s:\n got %q\nwant %q", file, got, want)
	}
}

// cgroupFile reads file of a unit's cgroup on v1 (the controller's
// hierarchy) or v2.
func (e *env) cgroupFile(unit, controller, v1, v2 string) string {
	e.t.Helper()
	cg := strings.TrimSpace(e.run("systemctl", "show", "-P", "ControlGroup", unit))
	out := e.run("sh", "-c", fmt.Sprintf("cat /sys/fs/cgroup/%s%s/%s 2>/dev/null || cat /sys/fs/cgroup%s/%s", controller, cg, v1, cg, v2))
	return strings.TrimSpace(out)
}

// sliceLimits is what systemd says of a slice's memory and CPU limits.
func (e *env) sliceLimits(slice string) string {
	e.t.Helper()
	mem := strings.TrimSpace(e.run("systemctl", "show", "-P", "MemoryMax", slice))
	cpu := strings.TrimSpace(e.run("systemctl", "show", "-P", "CPUQuotaPerSecUSec", slice))
	return "MemoryMax=" + mem + " CPUQuotaPerSecUSec=" + cpu
}

// TestResourceQuota is issue 11's admission and kernel scenario on a real
// node with the stock kubectl: a pods quota refuses the third pod with the
// apiserver's words and gives usage back on delete; a compute quota
// refuses a pod without limits; 20 concurrent creates against pods: 5
// admit exactly 5; an object-count quota on configmaps; a LimitRange's
// defaults in the pod (annotation, spec, QoS) and in its unit's cgroup; its
// max refusing a container; and a namespace slice carrying the quota's
// limits, holding when the namespace's pods together use more memory than
// limits.memory while a neighbour namespace is unaffected.
func TestResourceQuota(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	img := e.signed.Ref
	sleep := "exec sleep 3600"

	// A pods quota: two pods, the third refused.
	k.must("create", "namespace", "quota")
	e.write("/var/tmp/q.yaml", "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: pod-count, namespace: quota}\nspec:\n  hard: {pods: \"2\"}\n")
	k.must("create", "-f", "/var/tmp/q.yaml")
	for _, n := range []string{"one", "two", "three"} {
		e.write("/var/tmp/q-"+n+".yaml", podYAML("quota", n, img, sleep, ""))
	}
	k.must("create", "-f", "/var/tmp/q-one.yaml")
	k.must("create", "-f", "/var/tmp/q-two.yaml")
	e.refused(k, "/var/tmp/q-three.yaml", `Error from server (Forbidden): error when creating "/var/tmp/q-three.yaml": pods "three" is forbidden: exceeded quota: pod-count, requested: pods=1, used: pods=2, limited: pods=2`)
	if out := k.must("get", "quota", "-n", "quota"); !regexp.MustCompile(`(?m)^NAME\s+AGE\s+REQUEST\s+LIMIT\n^pod-count\s+\S+\s+pods: 2/2\s*$`).MatchString(out) {
		t.Errorf("get quota:\n%s", out)
	}
	if out := k.must("describe", "quota", "pod-count", "-n", "quota"); !regexp.MustCompile(`(?m)^Resource\s+Used\s+Hard\n^--------\s+----\s+----\n^pods\s+2\s+2$`).MatchString(out) {
		t.Errorf("describe quota:\n%s", out)
	}
	// Deleting a pod gives its usage back: the third fits.
	k.must("delete", "pod", "one", "-n", "quota", "--wait=false")
	k.eventually("usage given back", func(s string) bool { return s == "1" },
		"get", "quota", "pod-count", "-n", "quota", "-o", "jsonpath={.status.used.pods}")
	k.must("create", "-f", "/var/tmp/q-three.yaml")

	// A compute quota: a pod without limits is refused, naming what it
	// misses; one within it is admitted and counted.
	k.must("create", "namespace", "compute")
	e.write("/var/tmp/compute.yaml", `apiVersion: v1
kind: ResourceQuota
metadata: {name: compute, namespace: compute}
spec:
  hard: {requests.cpu: "1", requests.memory: 1Gi, limits.cpu: "2", limits.memory: 2Gi}
`)
	k.must("create", "-f", "/var/tmp/compute.yaml")
	e.write("/var/tmp/bare.yaml", podYAML("compute", "bare", img, sleep, ""))
	e.refused(k, "/var/tmp/bare.yaml", `Error from server (Forbidden): error when creating "/var/tmp/bare.yaml": pods "bare" is forbidden: failed quota: compute: must specify limits.cpu for: app; limits.memory for: app; requests.cpu for: app; requests.memory for: app`)
	e.write("/var/tmp/fits.yaml", podYAML("compute", "fits", img, sleep, "    resources:\n      requests: {cpu: 250m, memory: 64Mi}\n      limits: {cpu: 500m, memory: 128Mi}\n"))
	k.must("create", "-f", "/var/tmp/fits.yaml")
	e.write("/var/tmp/greedy.yaml", podYAML("compute", "greedy", img, sleep, "    resources:\n      requests: {cpu: 900m, memory: 64Mi}\n      limits: {cpu: 900m, memory: 128Mi}\n"))
	e.refused(k, "/var/tmp/greedy.yaml", `Error from server (Forbidden): error when creating "/var/tmp/greedy.yaml": pods "greedy" is forbidden: exceeded quota: compute, requested: requests.cpu=900m, used: requests.cpu=250m, limited: requests.cpu=1`)
	if out := k.must("get", "quota", "compute", "-n", "compute", "--no-headers"); !regexp.MustCompile(`^compute\s+\S+\s+requests.cpu: 250m/1, requests.memory: 64Mi/1Gi\s+limits.cpu: 500m/2, limits.memory: 128Mi/2Gi\s*$`).MatchString(out) {
		t.Errorf("get quota compute: %q", out)
	}

	// 20 concurrent creates against pods: 5 admit exactly 5.
	k.must("create", "namespace", "burst")
	e.write("/var/tmp/burst-q.yaml", "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: five, namespace: burst}\nspec:\n  hard: {pods: \"5\"}\n")
	k.must("create", "-f", "/var/tmp/burst-q.yaml")
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted, refusedN := 0, 0
	for i := range 20 {
		name := "b" + strconv.Itoa(i)
		e.write("/var/tmp/"+name+".yaml", podYAML("burst", name, img, sleep, ""))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, msg, err := k.kubectl("", "create", "-f", "/var/tmp/"+name+".yaml")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				admitted++
			case strings.Contains(msg, "exceeded quota: five, requested: pods=1, used: pods=5, limited: pods=5"):
				refusedN++
			default:
				t.Errorf("create %s: %v %s", name, err, msg)
			}
		}()
	}
	wg.Wait()
	if admitted != 5 || refusedN != 15 {
		t.Errorf("20 concurrent creates against pods: 5: %d admitted, %d refused", admitted, refusedN)
	}
	if out := k.must("get", "pods", "-n", "burst", "--no-headers", "-o", "name"); len(strings.Fields(out)) != 5 {
		t.Errorf("pods stored in burst: %q", out)
	}

	// An object-count quota on configmaps.
	k.must("create", "namespace", "objects")
	e.write("/var/tmp/objects.yaml", "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: objects, namespace: objects}\nspec:\n  hard: {configmaps: \"2\", count/secrets: \"1\", count/events: \"1\"}\n")
	k.must("create", "-f", "/var/tmp/objects.yaml")
	k.must("create", "configmap", "c1", "-n", "objects")
	k.must("create", "configmap", "c2", "-n", "objects")
	if _, msg, err := k.kubectl("", "create", "configmap", "c3", "-n", "objects"); err == nil ||
		!strings.HasSuffix("\n"+strings.TrimSpace(msg), "\n"+`error: failed to create configmap: configmaps "c3" is forbidden: exceeded quota: objects, requested: configmaps=1, used: configmaps=2, limited: configmaps=2`) {
		t.Errorf("third configmap: %v %q", err, msg)
	}
	// berthd's own Events are admitted as the kubelet's are: a pod's
	// first one fits count/events, the rest are refused (and logged).
	e.write("/var/tmp/objects-pod.yaml", podYAML("objects", "noisy", img, sleep, ""))
	k.must("create", "-f", "/var/tmp/objects-pod.yaml")
	k.must("wait", "--for=condition=Ready", "pod/noisy", "-n", "objects", "--timeout=120s")
	if out := k.must("get", "events", "-n", "objects", "-o", "name"); strings.Count(out, "\n") != 1 {
		t.Errorf("events under count/events: \"1\":\n%s", out)
	}
	if got := k.must("get", "quota", "objects", "-n", "objects", "-o", "jsonpath={.status.used.count/events}"); got != "1" {
		t.Errorf("count/events used: %q, want 1", got)
	}
	k.must("delete", "pod", "noisy", "-n", "objects", "--wait=false")

	// A LimitRange: its defaults in the pod and in the unit's cgroup; its
	// max refuses.
	k.must("create", "namespace", "lr")
	e.write("/var/tmp/lr.yaml", `apiVersion: v1
kind: LimitRange
metadata: {name: defaults, namespace: lr}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 128Mi}
    defaultRequest: {cpu: 100m, memory: 64Mi}
    max: {cpu: "2"}
`)
	k.must("create", "-f", "/var/tmp/lr.yaml")
	if out := k.must("get", "limits", "-n", "lr"); !regexp.MustCompile(`(?m)^NAME\s+CREATED AT\n^defaults\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`).MatchString(out) {
		t.Errorf("get limits:\n%s", out)
	}
	e.write("/var/tmp/web.yaml", podYAML("lr", "web", img, sleep, ""))
	k.must("create", "-f", "/var/tmp/web.yaml")
	got := k.must("get", "pod", "web", "-n", "lr", "-o",
		`jsonpath={.metadata.annotations.kubernetes\.io/limit-ranger}|{.spec.containers[0].resources.requests.cpu} {.spec.containers[0].resources.requests.memory} {.spec.containers[0].resources.limits.cpu} {.spec.containers[0].resources.limits.memory}|{.status.qosClass}`)
	if want := "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app|100m 64Mi 500m 128Mi|Burstable"; got != want {
		t.Errorf("the LimitRange's defaults in the pod:\n got %q\nwant %q", got, want)
	}
	k.eventually("web running", func(s string) bool { return s == "Running" }, "get", "pod", "web", "-n", "lr", "-o", "jsonpath={.status.phase}")
	if out := k.must("describe", "pod", "web", "-n", "lr"); !regexp.MustCompile(`(?m)^QoS Class:\s+Burstable$`).MatchString(out) || !strings.Contains(out, "kubernetes.io/limit-ranger: LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app") {
		t.Errorf("describe pod web:\n%s", out)
	}
	unit := "berth-lr_web_app.service"
	if mem := e.cgroupFile(unit, "memory", "memory.limit_in_bytes", "memory.max"); mem != "134217728" {
		t.Errorf("memory limit in web's cgroup: %q, want 134217728 (128Mi)", mem)
	}
	quota := e.cgroupFile(unit, "cpu", "cpu.cfs_quota_us", "cpu.max")
	if quota != "50000" && quota != "50000 100000" {
		t.Errorf("cpu quota in web's cgroup: %q, want 50 ms per 100 ms (500m)", quota)
	}
	e.write("/var/tmp/big.yaml", podYAML("lr", "big", img, sleep, "    resources:\n      limits: {cpu: \"3\"}\n"))
	e.refused(k, "/var/tmp/big.yaml", `Error from server (Forbidden): error when creating "/var/tmp/big.yaml": pods "big" is forbidden: maximum cpu usage per Container is 2, but limit is 3`)

	// The kernel holds the line: two pods in "tight" and one in
	// "neighbour" each wait for /tmp/go, then hold 40 MiB. tight's quota
	// (limits.memory 64Mi, made after its pods, as a quota may be) becomes
	// its slice's MemoryMax: once both of its pods allocate, the kernel
	// OOM-kills one of them inside the slice; the neighbour keeps running.
	hold := `while [ ! -e /tmp/go ]; do sleep 0.2; done; awk 'BEGIN { s = sprintf("%41943040s", ""); system("sleep 3600") }'`
	for _, p := range []struct{ ns, name string }{{"tight", "a"}, {"tight", "b"}, {"neighbour", "nb"}} {
		if p.name != "b" {
			k.must("create", "namespace", p.ns)
		}
		e.write("/var/tmp/hold-"+p.name+".yaml", podYAML(p.ns, p.name, img, hold, ""))
		k.must("create", "-f", "/var/tmp/hold-"+p.name+".yaml")
		k.eventually(p.name+" running", func(s string) bool { return s == "Running" }, "get", "pod", p.name, "-n", p.ns, "-o", "jsonpath={.status.phase}")
	}
	e.write("/var/tmp/tight-q.yaml", "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: mem, namespace: tight}\nspec:\n  hard: {limits.memory: 64Mi, limits.cpu: \"1\"}\n")
	k.must("create", "-f", "/var/tmp/tight-q.yaml")
	for deadline := 0; ; deadline++ {
		props := e.sliceLimits("berth-tight.slice")
		if props == "MemoryMax=67108864 CPUQuotaPerSecUSec=1s" {
			break
		}
		if deadline == 100 {
			t.Fatalf("tight's slice never carried the quota's limits: %q", props)
		}
		e.run("sleep", "0.3")
	}
	for _, p := range []struct{ ns, name string }{{"tight", "a"}, {"tight", "b"}, {"neighbour", "nb"}} {
		k.must("exec", p.name, "-n", p.ns, "--", "touch", "/tmp/go")
	}
	phases := `jsonpath={range .items[*]}{.metadata.name}={.status.phase}/{.status.containerStatuses[0].state.terminated.reason} {end}`
	out := k.eventually("one of tight's pods OOM-killed", func(s string) bool {
		return strings.Count(s, "=Failed/OOMKilled") == 1 && strings.Count(s, "=Running/") == 1
	}, "get", "pods", "-n", "tight", "-o", phases)
	t.Logf("tight: %s", out)
	if st := k.must("get", "pod", "nb", "-n", "neighbour", "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount}"); st != "Running 0" {
		t.Errorf("the neighbour was touched: %q", st)
	}

	// A quota deleted: its slice's limits go with it.
	if _, msg, err := k.kubectl("/resourcequotas/mem", "delete", "quota", "mem", "-n", "tight"); err != nil {
		t.Fatalf("delete quota: %v %s", err, msg)
	}
	for deadline := 0; ; deadline++ {
		props := e.sliceLimits("berth-tight.slice")
		if props == "MemoryMax=infinity CPUQuotaPerSecUSec=infinity" {
			break
		}
		if deadline == 100 {
			t.Fatalf("tight's slice kept its limits after the quota went: %q", props)
		}
		e.run("sleep", "0.3")
	}
}
