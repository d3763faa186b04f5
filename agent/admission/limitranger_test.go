package admission

import (
	"sort"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// rl parses "name=quantity,name=quantity" ("" is nil).
func rl(s string) corev1.ResourceList {
	if s == "" {
		return nil
	}
	out := corev1.ResourceList{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		out[corev1.ResourceName(k)] = resource.MustParse(v)
	}
	return out
}

// show prints a list as the quota messages do: sorted "k=v" joined ",".
func show(l corev1.ResourceList) string { return prettyPrint(l) }

func container(name, requests, limits string) corev1.Container {
	return corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Requests: rl(requests), Limits: rl(limits)}}
}

func sidecar(name, requests, limits string) corev1.Container {
	c := container(name, requests, limits)
	always := corev1.ContainerRestartPolicyAlways
	c.RestartPolicy = &always
	return c
}

func pod(containers []corev1.Container, inits ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
		Spec:       corev1.PodSpec{Containers: containers, InitContainers: inits},
	}
}

func limitRange(name string, items ...corev1.LimitRangeItem) corev1.LimitRange {
	return corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: corev1.LimitRangeSpec{Limits: items}}
}

type item struct {
	typ                          corev1.LimitType
	min, max, def, defReq, ratio corev1.ResourceList
}

func (i item) lr() corev1.LimitRangeItem {
	return corev1.LimitRangeItem{Type: i.typ, Min: i.min, Max: i.max, Default: i.def, DefaultRequest: i.defReq, MaxLimitRequestRatio: i.ratio}
}

func TestDefaultLimitRange(t *testing.T) {
	for _, tc := range []struct {
		name                string
		in                  item
		wantDef, wantDefReq string
	}{
		{"max gives default and defaultRequest", item{typ: corev1.LimitTypeContainer, max: rl("cpu=2")}, "cpu=2", "cpu=2"},
		{"default gives defaultRequest", item{typ: corev1.LimitTypeContainer, max: rl("cpu=2"), def: rl("cpu=1")}, "cpu=1", "cpu=1"},
		{"min gives defaultRequest, no default", item{typ: corev1.LimitTypeContainer, min: rl("memory=64Mi")}, "", "memory=64Mi"},
		{"default before min", item{typ: corev1.LimitTypeContainer, min: rl("cpu=100m"), def: rl("cpu=500m")}, "cpu=500m", "cpu=500m"},
		{"set values kept", item{typ: corev1.LimitTypeContainer, min: rl("cpu=100m"), max: rl("cpu=2"), def: rl("cpu=1"), defReq: rl("cpu=200m")}, "cpu=1", "cpu=200m"},
		{"per key", item{typ: corev1.LimitTypeContainer, max: rl("cpu=2,memory=1Gi"), def: rl("memory=512Mi"), min: rl("cpu=100m")}, "cpu=2,memory=512Mi", "cpu=2,memory=512Mi"},
		{"rounded up to milli", item{typ: corev1.LimitTypeContainer, max: rl("cpu=0.0001")}, "cpu=1m", "cpu=1m"},
		{"Pod items are not defaulted", item{typ: corev1.LimitTypePod, max: rl("cpu=2")}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lr := limitRange("lr", tc.in.lr())
			DefaultLimitRange(&lr)
			got := lr.Spec.Limits[0]
			if show(got.Default) != tc.wantDef || show(got.DefaultRequest) != tc.wantDefReq {
				t.Errorf("default %q, defaultRequest %q; want %q, %q", show(got.Default), show(got.DefaultRequest), tc.wantDef, tc.wantDefReq)
			}
		})
	}
}

func TestLimitPod(t *testing.T) {
	defaults := func(name, def, defReq string) corev1.LimitRange {
		lr := limitRange(name, corev1.LimitRangeItem{Type: corev1.LimitTypeContainer, Default: rl(def), DefaultRequest: rl(defReq)})
		DefaultLimitRange(&lr)
		return lr
	}
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		ranges     []corev1.LimitRange
		annotation string // "" : none
		want       map[string][2]string
	}{
		{
			name:   "containers and init containers",
			pod:    pod([]corev1.Container{container("app", "", ""), container("side", "cpu=1", "cpu=1")}, container("init", "", "")),
			ranges: []corev1.LimitRange{defaults("lr", "cpu=500m,memory=256Mi", "cpu=100m,memory=128Mi")},
			annotation: "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app; " +
				"memory request for container side; memory limit for container side; " +
				"cpu, memory request for init container init; cpu, memory limit for init container init",
			want: map[string][2]string{
				"app":  {"cpu=100m,memory=128Mi", "cpu=500m,memory=256Mi"},
				"side": {"cpu=1,memory=128Mi", "cpu=1,memory=256Mi"},
				"init": {"cpu=100m,memory=128Mi", "cpu=500m,memory=256Mi"},
			},
		},
		{
			// API defaulting copied the limit into the request: the
			// defaultRequest does not apply.
			name:       "declared limit only",
			pod:        pod([]corev1.Container{container("app", "memory=1Gi", "memory=1Gi")}),
			ranges:     []corev1.LimitRange{defaults("lr", "memory=512Mi", "memory=256Mi")},
			annotation: "",
			want:       map[string][2]string{"app": {"memory=1Gi", "memory=1Gi"}},
		},
		{
			name:       "limits only from default",
			pod:        pod([]corev1.Container{container("app", "cpu=100m", "")}),
			ranges:     []corev1.LimitRange{defaults("lr", "cpu=1", "")},
			annotation: "LimitRanger plugin set: cpu limit for container app",
			want:       map[string][2]string{"app": {"cpu=100m", "cpu=1"}},
		},
		{
			// The first LimitRange's keys are present for the second; the
			// second rewrites the annotation with what it set.
			name:       "first LimitRange wins",
			pod:        pod([]corev1.Container{container("app", "", "")}),
			ranges:     []corev1.LimitRange{defaults("a", "cpu=1", ""), defaults("b", "cpu=2,memory=1Gi", "")},
			annotation: "LimitRanger plugin set: memory request for container app; memory limit for container app",
			want:       map[string][2]string{"app": {"cpu=1,memory=1Gi", "cpu=1,memory=1Gi"}},
		},
		{
			name:       "a later LimitRange that sets nothing keeps the annotation",
			pod:        pod([]corev1.Container{container("app", "", "")}),
			ranges:     []corev1.LimitRange{defaults("a", "cpu=1", ""), defaults("b", "cpu=2", "")},
			annotation: "LimitRanger plugin set: cpu request for container app; cpu limit for container app",
			want:       map[string][2]string{"app": {"cpu=1", "cpu=1"}},
		},
		{
			name:       "Pod items give no defaults",
			pod:        pod([]corev1.Container{container("app", "", "")}),
			ranges:     []corev1.LimitRange{limitRange("lr", item{typ: corev1.LimitTypePod, max: rl("cpu=2")}.lr())},
			annotation: "",
			want:       map[string][2]string{"app": {"", ""}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			LimitPod(tc.pod, tc.ranges)
			got, ok := tc.pod.Annotations[limitRangerAnnotation]
			if got != tc.annotation || ok != (tc.annotation != "") {
				t.Errorf("annotation\n got %q\nwant %q", got, tc.annotation)
			}
			for _, c := range append(tc.pod.Spec.Containers, tc.pod.Spec.InitContainers...) {
				w := tc.want[c.Name]
				if r, l := show(c.Resources.Requests), show(c.Resources.Limits); r != w[0] || l != w[1] {
					t.Errorf("%s: requests %q limits %q; want %q %q", c.Name, r, l, w[0], w[1])
				}
			}
		})
	}
}

func TestCheckLimits(t *testing.T) {
	containerLR := func(it item) []corev1.LimitRange {
		it.typ = corev1.LimitTypeContainer
		return []corev1.LimitRange{limitRange("lr", it.lr())}
	}
	podLR := func(it item) []corev1.LimitRange {
		it.typ = corev1.LimitTypePod
		return []corev1.LimitRange{limitRange("lr", it.lr())}
	}
	claimLR := func(it item) []corev1.LimitRange {
		it.typ = corev1.LimitTypePersistentVolumeClaim
		return []corev1.LimitRange{limitRange("lr", it.lr())}
	}
	one := func(requests, limits string) *corev1.Pod {
		return pod([]corev1.Container{container("c", requests, limits)})
	}
	claim := func(requests string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c"},
			Spec: corev1.PersistentVolumeClaimSpec{Resources: corev1.VolumeResourceRequirements{Requests: rl(requests)}}}
	}
	// Sidecar-aware pod rule: regular 300m+300m plus sidecar 200m = 800m;
	// the init container after the sidecar needs 500m+200m = 700m.
	sidecarPod := pod([]corev1.Container{container("a", "cpu=300m", "cpu=300m"), container("b", "cpu=300m", "cpu=300m")},
		sidecar("log", "cpu=200m", "cpu=200m"), container("init", "cpu=500m", "cpu=500m"))
	bigInitPod := pod([]corev1.Container{container("a", "cpu=300m", "cpu=300m")},
		sidecar("log", "cpu=200m", "cpu=200m"), container("init", "cpu=1500m", "cpu=1500m"))

	for _, tc := range []struct {
		name   string
		obj    runtime.Object
		ranges []corev1.LimitRange
		want   string // "": admitted
	}{
		{"min: no request", one("", ""), containerLR(item{min: rl("cpu=100m")}), "minimum cpu usage per Container is 100m.  No request is specified"},
		{"min: request below", one("cpu=50m", ""), containerLR(item{min: rl("cpu=100m")}), "minimum cpu usage per Container is 100m, but request is 50m"},
		{"min: request at min", one("cpu=100m", ""), containerLR(item{min: rl("cpu=100m")}), ""},
		{"min: limit below", one("cpu=200m", "cpu=50m"), containerLR(item{min: rl("cpu=100m")}), "minimum cpu usage per Container is 100m, but limit is 50m"},
		{"max: no limit", one("memory=64Mi", ""), containerLR(item{max: rl("memory=1Gi")}), "maximum memory usage per Container is 1Gi.  No limit is specified"},
		{"max: limit above", one("", "memory=2Gi"), containerLR(item{max: rl("memory=1Gi")}), "maximum memory usage per Container is 1Gi, but limit is 2Gi"},
		{"max: limit at max", one("", "memory=1Gi"), containerLR(item{max: rl("memory=1Gi")}), ""},
		{"max: request above, limit at max", one("memory=2Gi", "memory=1Gi"), containerLR(item{max: rl("memory=1Gi")}), "maximum memory usage per Container is 1Gi, but request is 2Gi"},
		{"max: one milli above", one("", "cpu=1001m"), containerLR(item{max: rl("cpu=1")}), "maximum cpu usage per Container is 1, but limit is 1001m"},
		{"ratio: no request", one("", "cpu=1"), containerLR(item{ratio: rl("cpu=2")}), "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0"},
		{"ratio: request 0", one("cpu=0", "cpu=1"), containerLR(item{ratio: rl("cpu=2")}), "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0"},
		{"ratio: no limit", one("cpu=1", ""), containerLR(item{ratio: rl("cpu=2")}), "cpu max limit to request ratio per Container is 2, but no limit is specified or limit is 0"},
		{"ratio: above", one("cpu=250m", "cpu=1"), containerLR(item{ratio: rl("cpu=2")}), "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"},
		{"ratio: fraction above", one("cpu=100m", "cpu=250m"), containerLR(item{ratio: rl("cpu=2")}), "cpu max limit to request ratio per Container is 2, but provided ratio is 2.500000"},
		{"ratio: at ratio", one("cpu=500m", "cpu=1"), containerLR(item{ratio: rl("cpu=2")}), ""},
		{"ratio: memory", one("memory=256Mi", "memory=1Gi"), containerLR(item{ratio: rl("memory=1500m")}), "memory max limit to request ratio per Container is 1500m, but provided ratio is 4.000000"},
		{
			"aggregate, keys sorted", one("", ""), containerLR(item{min: rl("memory=64Mi,cpu=100m"), max: rl("memory=1Gi")}),
			"[minimum cpu usage per Container is 100m.  No request is specified, minimum memory usage per Container is 64Mi.  No request is specified, maximum memory usage per Container is 1Gi.  No limit is specified]",
		},
		{
			"duplicates dropped", pod([]corev1.Container{container("a", "", ""), container("b", "", "")}), containerLR(item{min: rl("cpu=100m")}),
			"minimum cpu usage per Container is 100m.  No request is specified",
		},
		{
			"init containers too", pod([]corev1.Container{container("a", "cpu=1", "")}, container("init", "cpu=50m", "")), containerLR(item{min: rl("cpu=100m")}),
			"minimum cpu usage per Container is 100m, but request is 50m",
		},
		{"Pod: sum with sidecar", sidecarPod, podLR(item{min: rl("cpu=1")}), "minimum cpu usage per Pod is 1, but request is 800m"},
		{"Pod: limit sum with sidecar", sidecarPod, podLR(item{max: rl("cpu=700m")}), "maximum cpu usage per Pod is 700m, but limit is 800m"},
		{"Pod: sum at max", sidecarPod, podLR(item{max: rl("cpu=800m")}), ""},
		{"Pod: init plus earlier sidecars", bigInitPod, podLR(item{max: rl("cpu=1")}), "maximum cpu usage per Pod is 1, but limit is 1700m"},
		{"Pod: no limit", one("cpu=1", ""), podLR(item{max: rl("cpu=2")}), "maximum cpu usage per Pod is 2.  No limit is specified"},
		{"Container items ignore claims", claim(""), containerLR(item{min: rl("cpu=1")}), ""},
		{"claim: no request", claim(""), claimLR(item{min: rl("storage=1Gi")}), "minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified"},
		{"claim: below min", claim("storage=500Mi"), claimLR(item{min: rl("storage=1Gi")}), "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"},
		{"claim: at min", claim("storage=1Gi"), claimLR(item{min: rl("storage=1Gi"), max: rl("storage=10Gi")}), ""},
		{"claim: above max", claim("storage=20Gi"), claimLR(item{max: rl("storage=10Gi")}), "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"},
		{"claim: max, no request", claim(""), claimLR(item{max: rl("storage=10Gi")}), "maximum storage usage per PersistentVolumeClaim is 10Gi.  No request is specified"},
		{"claim items ignore pods", one("", ""), claimLR(item{max: rl("storage=10Gi")}), ""},
		{
			"the first LimitRange with violations refuses", one("cpu=50m", ""),
			[]corev1.LimitRange{limitRange("a", item{typ: corev1.LimitTypeContainer, max: rl("memory=1Gi")}.lr()), limitRange("b", item{typ: corev1.LimitTypeContainer, min: rl("cpu=100m")}.lr())},
			"maximum memory usage per Container is 1Gi.  No limit is specified",
		},
		{
			"later LimitRanges when the first passes", one("cpu=50m", ""),
			[]corev1.LimitRange{limitRange("a", item{typ: corev1.LimitTypeContainer, min: rl("cpu=10m")}.lr()), limitRange("b", item{typ: corev1.LimitTypeContainer, min: rl("cpu=100m")}.lr())},
			"minimum cpu usage per Container is 100m, but request is 50m",
		},
		{"other kinds pass", &corev1.Service{}, containerLR(item{min: rl("cpu=1")}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckLimits(tc.obj, tc.ranges)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "":
				return
			case err == nil:
				t.Fatalf("admitted; want %q", tc.want)
			case !errdefs.IsPermissionDenied(err):
				t.Errorf("error class of %v is not PermissionDenied", err)
			}
			if err.Error() != tc.want {
				t.Errorf("\n got %q\nwant %q", err.Error(), tc.want)
			}
		})
	}
}

func TestSortedNames(t *testing.T) {
	got := sortedNames(rl("memory=1,cpu=1,requests.cpu=1,count/pods=1"))
	if !sort.SliceIsSorted(got, func(i, j int) bool { return got[i] < got[j] }) || len(got) != 4 || got[0] != "count/pods" {
		t.Errorf("sortedNames = %v", got)
	}
}
