package unitgen

import (
	"math"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/cgroup"
)

const (
	longNS  = "n23456789012345678901234567890123456789012345678901234567890123" // 63: the longest DNS label
	testUID = types.UID("ab-cd")
	uuid    = types.UID("0d2a51cf-0000-4000-8000-00000000000b") // 36, as the API server makes them
)

func TestSliceNames(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ns        string
		uid       types.UID
		qos       corev1.PodQOSClass
		qosSlice  string
		podSlice  string
		nsSlice   string
		wantInNS  bool // the pod slice sits directly in the namespace slice
		wantChain []string
	}{
		{"burstable", "shop", testUID, corev1.PodQOSBurstable,
			"berth-shop-burstable.slice", "berth-shop-burstable-podab_cd.slice", "berth-shop.slice", false,
			[]string{"berth.slice", "berth-shop.slice", "berth-shop-burstable.slice", "berth-shop-burstable-podab_cd.slice"}},
		{"besteffort", "shop", testUID, corev1.PodQOSBestEffort,
			"berth-shop-besteffort.slice", "berth-shop-besteffort-podab_cd.slice", "berth-shop.slice", false,
			[]string{"berth.slice", "berth-shop.slice", "berth-shop-besteffort.slice", "berth-shop-besteffort-podab_cd.slice"}},
		{"guaranteed: directly in the namespace slice", "shop", testUID, corev1.PodQOSGuaranteed,
			"", "berth-shop-podab_cd.slice", "berth-shop.slice", true,
			[]string{"berth.slice", "berth-shop.slice", "berth-shop-podab_cd.slice"}},
		{"dashed namespace does not nest in team", "team-a", uuid, corev1.PodQOSBurstable,
			"berth-team_a-burstable.slice", "berth-team_a-burstable-pod0d2a51cf_0000_4000_8000_00000000000b.slice", "berth-team_a.slice", false,
			[]string{"berth.slice", "berth-team_a.slice", "berth-team_a-burstable.slice", "berth-team_a-burstable-pod0d2a51cf_0000_4000_8000_00000000000b.slice"}},
		{"namespace named like a QoS class stays a namespace", "burstable", testUID, corev1.PodQOSGuaranteed,
			"", "berth-burstable-podab_cd.slice", "berth-burstable.slice", true,
			[]string{"berth.slice", "berth-burstable.slice", "berth-burstable-podab_cd.slice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := QoSSliceName(tc.ns, tc.qos); got != tc.qosSlice {
				t.Errorf("QoSSliceName = %q, want %q", got, tc.qosSlice)
			}
			got := PodSliceName(tc.ns, tc.uid, tc.qos)
			if got != tc.podSlice {
				t.Errorf("PodSliceName = %q, want %q", got, tc.podSlice)
			}
			if SliceName(tc.ns) != tc.nsSlice {
				t.Errorf("SliceName = %q, want %q", SliceName(tc.ns), tc.nsSlice)
			}
			if in := ParentSlice(got) == tc.nsSlice; in != tc.wantInNS {
				t.Errorf("ParentSlice(%s) = %s", got, ParentSlice(got))
			}
			var chain []string
			for s := got; s != "-.slice"; s = ParentSlice(s) {
				chain = append([]string{s}, chain...)
			}
			if strings.Join(chain, " ") != strings.Join(tc.wantChain, " ") {
				t.Errorf("nesting %v, want %v", chain, tc.wantChain)
			}
			// The cgroup systemd gives the slice: its chain as directories.
			if cg, want := SliceCgroup(got), "/"+strings.Join(tc.wantChain, "/"); cg != want {
				t.Errorf("SliceCgroup = %q, want %q", cg, want)
			}
		})
	}
}

// The longest names: a 63-character namespace and a UUID, and the longest
// UID checkSliceUID lets through, fit systemd's 255 (UNIT_NAME_MAX - 1).
func TestSliceNameLengths(t *testing.T) {
	for _, tc := range []struct {
		name string
		uid  types.UID
		qos  corev1.PodQOSClass
		want int
	}{
		{"63-char namespace, UUID, besteffort (the longest class)", uuid, corev1.PodQOSBestEffort, 126},
		{"63-char namespace, UUID, burstable", uuid, corev1.PodQOSBurstable, 125},
		{"63-char namespace, UUID, guaranteed", uuid, corev1.PodQOSGuaranteed, 115},
		{"longest UID accepted, besteffort: exactly the limit", types.UID(strings.Repeat("u", 165)), corev1.PodQOSBestEffort, 255},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := PodSliceName(longNS, tc.uid, tc.qos)
			if len(n) != tc.want || len(n) > unitNameMax {
				t.Errorf("len(%s) = %d, want %d (≤ %d)", n, len(n), tc.want, unitNameMax)
			}
			if err := checkSliceUID(tc.uid); err != nil {
				t.Errorf("checkSliceUID: %v", err)
			}
		})
	}
}

func TestCheckSliceUID(t *testing.T) {
	for _, tc := range []struct {
		name string
		uid  types.UID
		ok   bool
	}{
		{"UUID", uuid, true},
		{"letters, digits, '.', ':', '_'", "a.b:c_D9", true},
		{"longest: 165", types.UID(strings.Repeat("u", 165)), true},
		{"longest+1: 166, the slice name would pass 255", types.UID(strings.Repeat("u", 166)), false},
		{"'/' is no unit name character", "a/b", false},
		{"space", "a b", false},
		{"'@' would make a template instance", "a@b", false},
		{"non-ASCII", "ü", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkSliceUID(tc.uid)
			if (err == nil) != tc.ok {
				t.Fatalf("checkSliceUID(%q) = %v, want ok=%v", tc.uid, err, tc.ok)
			}
			if err != nil && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "metadata.uid")) {
				t.Errorf("error %v: want invalid argument naming metadata.uid", err)
			}
		})
	}
}

func slicePod(ns string, uid types.UID, res ...corev1.ResourceRequirements) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, UID: uid}}
	for i, r := range res {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c" + string(rune('0'+i)), Image: "app", Resources: r})
	}
	if len(res) == 0 {
		p.Spec.Containers = []corev1.Container{{Name: "c0", Image: "app"}}
	}
	return p
}

func rr(req, lim map[corev1.ResourceName]string) corev1.ResourceRequirements {
	conv := func(m map[corev1.ResourceName]string) corev1.ResourceList {
		if m == nil {
			return nil
		}
		out := corev1.ResourceList{}
		for k, v := range m {
			out[k] = resource.MustParse(v)
		}
		return out
	}
	return corev1.ResourceRequirements{Requests: conv(req), Limits: conv(lim)}
}

func slicesOf(t *testing.T, pod *corev1.Pod, ns *NamespaceLimits, v2 bool) []Slice {
	t.Helper()
	node := cgroup.NodeInfo{MemoryCapacity: 4 << 30, CgroupV2: v2}
	// The pod alone in its namespace: the sums are its own requests.
	q, sum := cgroup.PodQOS(pod), cgroup.PodRequests(pod)
	share := cgroup.NamespaceShares(sum, node)
	ss, err := PodSlices(SlicesInput{Pod: pod, PodLimits: cgroup.PodLimits(pod, node), QoSLimits: cgroup.QoSLimits(q, sum, node), Namespace: ns, NamespaceShare: &share, CgroupV2: v2})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		for _, e := range dbusTypeErrors(&Unit{Name: s.Name, Properties: s.Properties}) {
			t.Errorf("%s: %s", s.Name, e)
		}
	}
	return ss
}

// props renders a slice's properties as "Name=Value" (Render's values),
// without Description and the accounting, which every slice has.
func props(s Slice) string {
	var out []string
	for _, p := range s.Properties {
		switch p.Name {
		case "Description", "CPUAccounting", "MemoryAccounting", "TasksAccounting":
			continue
		}
		out = append(out, p.Name+"="+renderValue(p.Value))
	}
	return strings.Join(out, " ")
}

func TestPodSlices(t *testing.T) {
	cpuMem := func(cpu, mem string) map[corev1.ResourceName]string {
		return map[corev1.ResourceName]string{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem}
	}
	type want struct{ names, props []string }
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		ns   *NamespaceLimits
		v2   bool
		want want
	}{
		{"guaranteed v1: no QoS slice; shares, quota, memory on the pod slice",
			slicePod("shop", testUID, rr(nil, cpuMem("500m", "128Mi")), rr(nil, cpuMem("1500m", "128Mi"))), nil, false,
			want{[]string{"berth-shop.slice", "berth-shop-podab_cd.slice"},
				[]string{"CPUShares=2048", "CPUShares=2048 CPUQuotaPerSecUSec=2000000 CPUQuotaPeriodUSec=100000 MemoryMax=268435456"}}},
		{"guaranteed v2: weight and memory.min",
			slicePod("shop", testUID, rr(nil, cpuMem("1", "256Mi"))), nil, true,
			want{[]string{"berth-shop.slice", "berth-shop-podab_cd.slice"},
				[]string{"CPUWeight=100 MemoryMin=268435456", "CPUWeight=100 CPUQuotaPerSecUSec=1000000 CPUQuotaPeriodUSec=100000 MemoryMax=268435456 MemoryMin=268435456"}}},
		{"burstable, every container limited: the pod's sums; the burstable and namespace slices weigh its request",
			slicePod("shop", testUID, rr(cpuMem("250m", "64Mi"), cpuMem("500m", "128Mi"))), nil, false,
			want{[]string{"berth-shop.slice", "berth-shop-burstable.slice", "berth-shop-burstable-podab_cd.slice"},
				[]string{"CPUShares=256", "CPUShares=256", "CPUShares=256 CPUQuotaPerSecUSec=500000 CPUQuotaPeriodUSec=100000 MemoryMax=134217728"}}},
		{"burstable, one container unlimited: shares only (v2: and memory.min, on every slice above too)",
			slicePod("shop", testUID, rr(cpuMem("250m", "64Mi"), cpuMem("500m", "128Mi")), rr(nil, nil)), nil, true,
			want{[]string{"berth-shop.slice", "berth-shop-burstable.slice", "berth-shop-burstable-podab_cd.slice"},
				[]string{"CPUWeight=35 MemoryMin=67108864", "CPUWeight=35 MemoryMin=67108864", "CPUWeight=35 MemoryMin=67108864"}}},
		{"besteffort v1: shares 2 on the class and the pod",
			slicePod("shop", testUID), nil, false,
			want{[]string{"berth-shop.slice", "berth-shop-besteffort.slice", "berth-shop-besteffort-podab_cd.slice"},
				[]string{"CPUShares=2", "CPUShares=2", "CPUShares=2"}}},
		{"besteffort v2: weight 1 on the class and the pod",
			slicePod("shop", testUID), nil, true,
			want{[]string{"berth-shop.slice", "berth-shop-besteffort.slice", "berth-shop-besteffort-podab_cd.slice"},
				[]string{"CPUWeight=1 MemoryMin=0", "CPUWeight=1", "CPUWeight=1"}}},
		{"namespace limits known: on the namespace slice",
			slicePod("shop", testUID), &NamespaceLimits{CPUMilli: 2000, MemoryBytes: 1 << 30}, false,
			want{[]string{"berth-shop.slice", "berth-shop-besteffort.slice", "berth-shop-besteffort-podab_cd.slice"},
				[]string{"CPUShares=2 CPUQuotaPerSecUSec=2000000 CPUQuotaPeriodUSec=100000 MemoryMax=1073741824", "CPUShares=2", "CPUShares=2"}}},
		{"namespace limits known to be none: infinity lifts earlier ones",
			slicePod("shop", testUID), &NamespaceLimits{}, false,
			want{[]string{"berth-shop.slice", "berth-shop-besteffort.slice", "berth-shop-besteffort-podab_cd.slice"},
				[]string{"CPUShares=2 CPUQuotaPerSecUSec=infinity MemoryMax=infinity", "CPUShares=2", "CPUShares=2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss := slicesOf(t, tc.pod, tc.ns, tc.v2)
			var names, ps []string
			for _, s := range ss {
				names = append(names, s.Name)
				ps = append(ps, props(s))
			}
			if strings.Join(names, " ") != strings.Join(tc.want.names, " ") {
				t.Errorf("slices %v, want %v", names, tc.want.names)
			}
			if strings.Join(ps, "|") != strings.Join(tc.want.props, "|") {
				t.Errorf("properties\n  %q\nwant\n  %q", ps, tc.want.props)
			}
			// Each slice is in the one before it; the units' Slice= is the last.
			for i := 1; i < len(ss); i++ {
				if ParentSlice(ss[i].Name) != ss[i-1].Name {
					t.Errorf("%s is not in %s", ss[i].Name, ss[i-1].Name)
				}
			}
			if s, err := unitSlice(tc.pod); err != nil || s != ss[len(ss)-1].Name {
				t.Errorf("units' slice %q (%v), want %q", s, err, ss[len(ss)-1].Name)
			}
		})
	}
}

func TestNamespaceSliceLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		lim  *NamespaceLimits
		want string
	}{
		{"unknown: nothing said, the slice keeps what it has", nil, ""},
		{"none: infinity for both", &NamespaceLimits{}, "CPUQuotaPerSecUSec=infinity MemoryMax=infinity"},
		{"cpu only", &NamespaceLimits{CPUMilli: 500}, "CPUQuotaPerSecUSec=500000 CPUQuotaPeriodUSec=100000 MemoryMax=infinity"},
		{"1m: the kernel's 1 ms per period", &NamespaceLimits{CPUMilli: 1}, "CPUQuotaPerSecUSec=10000 CPUQuotaPeriodUSec=100000 MemoryMax=infinity"},
		{"memory only", &NamespaceLimits{MemoryBytes: 64 << 20}, "CPUQuotaPerSecUSec=infinity MemoryMax=67108864"},
		{"memory 1 byte", &NamespaceLimits{MemoryBytes: 1}, "CPUQuotaPerSecUSec=infinity MemoryMax=1"},
		{"negative is none", &NamespaceLimits{CPUMilli: -1, MemoryBytes: -1}, "CPUQuotaPerSecUSec=infinity MemoryMax=infinity"},
		{"largest memory", &NamespaceLimits{MemoryBytes: math.MaxInt64}, "CPUQuotaPerSecUSec=infinity MemoryMax=9223372036854775807"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := NamespaceSliceProperties("shop", tc.lim, nil, true)
			if got := props(Slice{Properties: ps}); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			for _, e := range dbusTypeErrors(&Unit{Properties: ps}) {
				t.Error(e)
			}
		})
	}
}

func TestPodSlicesRefuses(t *testing.T) {
	node := cgroup.NodeInfo{}
	ok := slicePod("shop", testUID)
	lim := cgroup.PodLimits(ok, node)
	qos := cgroup.QoSLimits(lim.QOS, cgroup.PodRequests(ok), node)
	for _, tc := range []struct {
		name    string
		in      SlicesInput
		invalid bool
	}{
		{"no pod", SlicesInput{}, false},
		{"no uid", SlicesInput{Pod: slicePod("shop", ""), PodLimits: lim, QoSLimits: qos}, false},
		{"uid that cannot name a slice", SlicesInput{Pod: slicePod("shop", "a/b"), PodLimits: lim, QoSLimits: qos}, true},
		{"invalid namespace", SlicesInput{Pod: slicePod("Shop", testUID), PodLimits: lim, QoSLimits: qos}, true},
		{"limits of another class", SlicesInput{Pod: ok, PodLimits: cgroup.SliceLimits{QOS: corev1.PodQOSGuaranteed}, QoSLimits: qos}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PodSlices(tc.in)
			if err == nil || errdefs.IsInvalidArgument(err) != tc.invalid {
				t.Errorf("err = %v, want an error, invalid argument: %v", err, tc.invalid)
			}
		})
	}
	// Generate and PauseUnit refuse the same UID.
	in := basicInput(t)
	in.Pod.UID = "a/b"
	if _, err := Generate(in); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Generate with UID a/b: %v", err)
	}
	p := sharingPod()
	p.UID = "a/b"
	if _, err := PauseUnit(PauseInput{Pod: p, Init: "/i", Dir: "/d", StateDir: "/s"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("PauseUnit with UID a/b: %v", err)
	}
}

// The container units and the pause go into the pod slice, which sits in
// the QoS class's slice (Guaranteed: the namespace's).
func TestUnitsInPodSlice(t *testing.T) {
	in := basicInput(t)
	in.Pod.UID = uuid
	in.Pod.Spec.Containers[0].Resources = rr(nil, map[corev1.ResourceName]string{corev1.ResourceCPU: "1", corev1.ResourceMemory: "64Mi"})
	u, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	want := "berth-default-pod0d2a51cf_0000_4000_8000_00000000000b.slice"
	if p, _ := u.Property("Slice"); u.Slice != want || p.Value != want {
		t.Errorf("container: Slice %q, property %v, want %s", u.Slice, p.Value, want)
	}
	p := sharingPod()
	p.UID = uuid
	pu, err := PauseUnit(PauseInput{Pod: p, Init: "/i", Dir: "/d", StateDir: "/s"})
	if err != nil {
		t.Fatal(err)
	}
	want = "berth-default-besteffort-pod0d2a51cf_0000_4000_8000_00000000000b.slice"
	if pp, _ := pu.Property("Slice"); pu.Slice != want || pp.Value != want {
		t.Errorf("pause: Slice %q, property %v, want %s", pu.Slice, pp.Value, want)
	}
}

// What `berth plan` shows of a pod's slices (testdata/slices-*.golden).
func TestSlicesRender(t *testing.T) {
	for _, tc := range []struct {
		file string
		pod  *corev1.Pod
		ns   *NamespaceLimits
		v2   bool
	}{
		{"slices-burstable-v1", slicePod("team-a", uuid, rr(map[corev1.ResourceName]string{corev1.ResourceCPU: "250m", corev1.ResourceMemory: "64Mi"}, map[corev1.ResourceName]string{corev1.ResourceCPU: "500m", corev1.ResourceMemory: "128Mi"})), &NamespaceLimits{CPUMilli: 2000, MemoryBytes: 1 << 30}, false},
		{"slices-besteffort-v2", slicePod("team-a", uuid), nil, true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var b strings.Builder
			for _, s := range slicesOf(t, tc.pod, tc.ns, tc.v2) {
				b.WriteString(s.Render() + "\n")
			}
			golden := "testdata/" + tc.file + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != string(want) {
				t.Errorf("Render differs from %s (run `go test ./unitgen -update` and review the diff):\n%s", golden, b.String())
			}
		})
	}
}

// The root slice protects every namespace's requests on cgroup v2 and has
// nothing to say on v1; 0 takes an earlier protection off.
func TestRootSliceProperties(t *testing.T) {
	if got := props(Slice{Properties: RootSliceProperties(3<<20, true)}); got != "MemoryMin=3145728" {
		t.Errorf("v2: %q", got)
	}
	if got := props(Slice{Properties: RootSliceProperties(0, true)}); got != "MemoryMin=0" {
		t.Errorf("v2, no requests: %q", got)
	}
	if ps := RootSliceProperties(3<<20, false); len(ps) != 0 {
		t.Errorf("v1: %v", ps)
	}
	for _, e := range dbusTypeErrors(&Unit{Name: RootSlice, Properties: RootSliceProperties(1, true)}) {
		t.Error(e)
	}
	if ParentSlice(SliceName("shop")) != RootSlice {
		t.Errorf("a namespace slice is not in %s", RootSlice)
	}
}
