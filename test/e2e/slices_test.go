package e2e

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/cgroup/own"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
)

// The kubelet's slice layout on a real systemd (docs/cgroups.md, "Slices"):
// each pod's units in its pod slice, in its QoS class's slice (Guaranteed:
// directly in the namespace's), the pod slice holding the pod-level
// values, gone with the pod; the namespace's limits on its slice, set live
// and kept across daemon-reload. One node for all of it.
func TestSlices(t *testing.T) {
	e := newEnv(t)
	v2 := own.Unified()
	type podCase struct {
		name, uid, body string
		slice           string            // the pod slice
		parents         []string          // its ControlGroup above it
		files           map[string]string // cgroup file of the pod slice → value
	}
	const mi = 1 << 20
	unlimitedV1 := "unlimited" // memory.limit_in_bytes ≥ 2^62 (docs/cgroups.md)
	cases := []podCase{
		{name: "gua", uid: "0e2e0000-0000-4000-8000-000000000001", body: `  containers:
  - {name: a, image: busybox:e2e, command: ["sleep", "3600"], resources: {limits: {cpu: 300m, memory: 96Mi}}}
  - {name: b, image: busybox:e2e, command: ["sleep", "3600"], resources: {limits: {cpu: 200m, memory: 32Mi}}}
`, slice: "berth-default-pod0e2e0000_0000_4000_8000_000000000001.slice",
			parents: []string{"berth.slice", "berth-default.slice"}},
		{name: "bur", uid: "0e2e0000-0000-4000-8000-000000000002", body: `  containers:
  - {name: a, image: busybox:e2e, command: ["sleep", "3600"], resources: {requests: {cpu: 100m, memory: 32Mi}, limits: {cpu: 250m, memory: 64Mi}}}
  - {name: b, image: busybox:e2e, command: ["sleep", "3600"], resources: {requests: {cpu: 100m, memory: 32Mi}, limits: {cpu: 250m, memory: 64Mi}}}
`, slice: "berth-default-burstable-pod0e2e0000_0000_4000_8000_000000000002.slice",
			parents: []string{"berth.slice", "berth-default.slice", "berth-default-burstable.slice"}},
		{name: "bes", uid: "0e2e0000-0000-4000-8000-000000000003", body: `  containers:
  - {name: a, image: busybox:e2e, command: ["sleep", "3600"]}
`, slice: "berth-default-besteffort-pod0e2e0000_0000_4000_8000_000000000003.slice",
			parents: []string{"berth.slice", "berth-default.slice", "berth-default-besteffort.slice"}},
	}
	// The pod-level values: ResourceConfigForPod over the containers'
	// sums (cgroup.PodLimits); v2 weights by SharesToWeight.
	if v2 {
		cases[0].files = map[string]string{"cpu.weight": strconv.FormatUint(cgroup.SharesToWeight(512), 10), "cpu.max": "50000 100000", "memory.max": strconv.Itoa(128 * mi), "memory.min": strconv.Itoa(128 * mi)}
		cases[1].files = map[string]string{"cpu.weight": strconv.FormatUint(cgroup.SharesToWeight(204), 10), "cpu.max": "50000 100000", "memory.max": strconv.Itoa(128 * mi), "memory.min": strconv.Itoa(64 * mi)}
		cases[2].files = map[string]string{"cpu.weight": "1", "cpu.max": "max 100000", "memory.max": "max", "memory.min": "0"}
	} else {
		cases[0].files = map[string]string{"cpu.shares": "512", "cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000", "memory.limit_in_bytes": strconv.Itoa(128 * mi)}
		cases[1].files = map[string]string{"cpu.shares": "204", "cpu.cfs_quota_us": "50000", "memory.limit_in_bytes": strconv.Itoa(128 * mi)}
		cases[2].files = map[string]string{"cpu.shares": "2", "cpu.cfs_quota_us": "-1", "memory.limit_in_bytes": unlimitedV1}
	}
	for _, c := range cases {
		// sleep as PID 1 ignores SIGTERM: the kubelet's 2 s minimum grace
		// keeps the removal below short.
		e.mustStartPod(c.name, "apiVersion: v1\nkind: Pod\nmetadata: {name: "+c.name+", namespace: default, uid: "+c.uid+"}\nspec:\n  terminationGracePeriodSeconds: 2\n"+c.body)
	}
	for _, c := range cases {
		group := "/" + path.Join(append(append([]string{}, c.parents...), c.slice)...)
		units := []string{unitgen.UnitName("default", c.name, "a")}
		if c.name != "bes" {
			units = append(units, unitgen.UnitName("default", c.name, "b"))
		}
		for _, u := range units {
			if got := e.show(u, "Slice"); got != c.slice {
				t.Errorf("%s: Slice=%s, want %s", u, got, c.slice)
			}
			if got, want := e.show(u, "ControlGroup"), group+"/"+u; got != want {
				t.Errorf("%s: ControlGroup=%s, want %s", u, got, want)
			}
		}
		t.Logf("pod %s: %s", c.name, group)
		for file, want := range c.files {
			key := controller(file)
			got := e.readCgroup(key, group, file)
			t.Logf("  %s = %s", file, got)
			if want == unlimitedV1 {
				if n, err := strconv.ParseUint(got, 10, 64); err != nil || n < 1<<62 {
					t.Errorf("pod %s: %s = %s, want unlimited", c.name, file, got)
				}
				continue
			}
			if got != want {
				t.Errorf("pod %s: %s of %s = %s, want %s", c.name, file, group, got, want)
			}
		}
	}
	// The BestEffort class runs on what the others leave.
	be := "/berth.slice/berth-default.slice/berth-default-besteffort.slice"
	if v2 {
		if got := e.readCgroup("unified", be, "cpu.weight"); got != "1" {
			t.Errorf("%s cpu.weight = %s, want 1", be, got)
		}
	} else if got := e.readCgroup("cpu", be, "cpu.shares"); got != "2" {
		t.Errorf("%s cpu.shares = %s, want 2", be, got)
	}

	// The Burstable and namespace slices weigh (and on v2 protect) by
	// their pods' summed requests, berth.slice protects every pod's: each
	// `berthd pod` command is a new process, which finds the pods already
	// running in their records. Gua requests 500m/128Mi, bur 200m/64Mi.
	bu, ns := "/berth.slice/berth-default.slice/berth-default-burstable.slice", "/berth.slice/berth-default.slice"
	sums := func(when string, burstMilli, nsMilli, burstMem, nsMem int64) {
		t.Helper()
		want := map[[2]string]string{}
		if v2 {
			weight := func(m int64) string { return strconv.FormatUint(cgroup.SharesToWeight(cgroup.MilliCPUToShares(m)), 10) }
			want[[2]string{bu, "cpu.weight"}] = weight(burstMilli)
			want[[2]string{ns, "cpu.weight"}] = weight(nsMilli)
			want[[2]string{bu, "memory.min"}] = strconv.FormatInt(burstMem, 10)
			want[[2]string{ns, "memory.min"}] = strconv.FormatInt(nsMem, 10)
			want[[2]string{"/berth.slice", "memory.min"}] = strconv.FormatInt(nsMem, 10)
		} else {
			want[[2]string{bu, "cpu.shares"}] = strconv.FormatUint(cgroup.MilliCPUToShares(burstMilli), 10)
			want[[2]string{ns, "cpu.shares"}] = strconv.FormatUint(cgroup.MilliCPUToShares(nsMilli), 10)
		}
		for k, w := range want {
			if got := e.readCgroup(controller(k[1]), k[0], k[1]); got != w {
				t.Errorf("%s: %s of %s = %s, want %s", when, k[1], k[0], got, w)
			} else {
				t.Logf("%s: %s %s = %s", when, k[0], k[1], got)
			}
		}
	}
	sums("three pods", 200, 700, 64*mi, 192*mi)

	// Deleting a pod stops its slice: no cgroup of it is left, in any
	// hierarchy.
	gone := cases[1]
	e.run("berthd", "pod", "rm", "default/"+gone.name)
	// Its requests leave the sums: no Burstable pod is left.
	sums("the Burstable pod removed", 0, 500, 0, 128*mi)
	if s := e.show(gone.slice, "ActiveState"); s == "active" {
		t.Errorf("%s still active after pod rm", gone.slice)
	}
	group := "/" + path.Join(append(append([]string{}, gone.parents...), gone.slice)...)
	for _, key := range []string{"cpu", "memory", "pids", "systemd", "unified"} {
		if p := e.n.CgroupPath(key, group, ""); p != "" {
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s cgroup of the removed pod's slice is left: %s (%v)", key, p, err)
			}
		}
	}

	// Namespace limits, set through the node's systemd over its bus by a
	// runtime in this process, as berthd's would.
	ctx := e.ctx()
	conn, err := systemd.Dial(ctx, systemd.WithBusAddress("unix:path="+e.n.HostPath("/run/dbus/system_bus_socket")), systemd.WithPrivateAddress(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := pods.New(pods.Config{StateDir: t.TempDir(), RunDir: t.TempDir(), Node: cgroup.NodeInfo{CgroupV2: v2}}, pods.SystemdUnits(conn), nil)
	nsGroup := "/berth.slice/berth-default.slice"
	nsFiles := func(cpu, mem string) map[[2]string]string {
		if v2 {
			return map[[2]string]string{{"unified", "cpu.max"}: cpu + " 100000", {"unified", "memory.max"}: mem}
		}
		if cpu == "max" {
			cpu = "-1"
		}
		return map[[2]string]string{{"cpu", "cpu.cfs_quota_us"}: cpu, {"memory", "memory.limit_in_bytes"}: mem}
	}
	checkNS := func(when string, want map[[2]string]string) {
		t.Helper()
		for f, w := range want {
			got := e.readCgroup(f[0], nsGroup, f[1])
			t.Logf("%s: %s %s = %s", when, nsGroup, f[1], got)
			if w == unlimitedV1 {
				if n, err := strconv.ParseUint(got, 10, 64); err != nil || n < 1<<62 {
					t.Errorf("%s: %s = %s, want unlimited", when, f[1], got)
				}
			} else if got != w {
				t.Errorf("%s: %s of %s = %s, want %s", when, f[1], nsGroup, got, w)
			}
		}
	}
	// daemon-reload, bounded: a reload that does not return is a failure
	// with systemd's state in the log, not a hung test.
	reload := func(when string) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		start := time.Now()
		out, err := e.n.Run(rctx, "timeout", "60", "systemctl", "daemon-reload")
		t.Logf("%s: daemon-reload took %v", when, time.Since(start).Round(time.Millisecond))
		if err != nil {
			st, _ := e.n.Run(rctx, "timeout", "10", "systemctl", "status", "--no-pager", "berth-default.slice")
			jobs, _ := e.n.Run(rctx, "timeout", "10", "systemctl", "list-jobs", "--no-pager")
			t.Fatalf("%s: daemon-reload: %v %s\nslice:\n%s\njobs:\n%s", when, err, out, st, jobs)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(rt.SetNamespaceLimits(ctx, "default", 1500, 512*mi))
	limited := nsFiles("150000", strconv.Itoa(512*mi))
	checkNS("set live", limited)
	for prop, want := range map[string]string{"CPUQuotaPerSecUSec": "1.500000s", "MemoryMax": strconv.Itoa(512 * mi)} {
		if got := e.show("berth-default.slice", prop); got != want {
			t.Errorf("berth-default.slice %s=%s, want %s", prop, got, want)
		}
	}
	// systemd 252 keeps runtime properties set on a transient unit as
	// drop-ins next to its unit file, /run/systemd/transient/<unit>.d/
	// 50-<setting>.conf (logged here), which daemon-reload reads again.
	t.Logf("systemctl cat berth-default.slice:\n%s", e.run("systemctl", "cat", "berth-default.slice"))
	reload("limited")
	checkNS("after daemon-reload", limited)
	sums("after daemon-reload", 0, 500, 0, 128*mi) // berth.slice's too, not a transient unit
	for prop, want := range map[string]string{"CPUQuotaPerSecUSec": "1.500000s", "MemoryMax": strconv.Itoa(512 * mi)} {
		if got := e.show("berth-default.slice", prop); got != want {
			t.Errorf("after daemon-reload: berth-default.slice %s=%s, want %s", prop, got, want)
		}
	}
	// The pods inside are untouched by all of it.
	if s := e.show(unitgen.UnitName("default", "gua", "a"), "ActiveState"); s != "active" {
		t.Errorf("a pod of the namespace is %s after the limits and the reload", s)
	}
	must(rt.SetNamespaceLimits(ctx, "default", 0, 0))
	unlimited := nsFiles("max", "max")
	if !v2 {
		unlimited = nsFiles("max", unlimitedV1)
	}
	checkNS("lifted", unlimited)
	for _, prop := range []string{"CPUQuotaPerSecUSec", "MemoryMax"} {
		if got := e.show("berth-default.slice", prop); got != "infinity" {
			t.Errorf("lifted: %s=%s, want infinity", prop, got)
		}
	}

	// A namespace without a slice: no limits is nothing to do; a limit
	// makes the slice, with it.
	idle := unitgen.SliceName("quota-ns")
	must(rt.SetNamespaceLimits(ctx, "quota-ns", 0, 0))
	if s := e.show(idle, "ActiveState"); s == "active" {
		t.Errorf("zero limits made %s", idle)
	}
	must(rt.SetNamespaceLimits(ctx, "quota-ns", 250, 64*mi))
	if s := e.show(idle, "ActiveState"); s != "active" {
		t.Errorf("%s is %s after a limit was set, want active", idle, s)
	}
	nsGroup = "/berth.slice/" + idle
	checkNS("made with limits", nsFiles("25000", strconv.Itoa(64*mi)))
	// The other pods and slices go with the node.
}

// controller is the hierarchy key of a cgroup file ("unified" on cgroup v2).
func controller(file string) string {
	if own.Unified() {
		return "unified"
	}
	return strings.SplitN(file, ".", 2)[0]
}
