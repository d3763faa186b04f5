package admission

import (
	"sort"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// showUsed prints Check's result: "quota: k=v,...; quota: ...".
func showUsed(used map[string]corev1.ResourceList) string {
	var parts []string
	for name, l := range used {
		parts = append(parts, name+": "+show(l))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func TestCheck(t *testing.T) {
	guaranteed := func(name string) *corev1.Pod {
		return pod([]corev1.Container{container(name, "cpu=500m,memory=512Mi", "cpu=500m,memory=512Mi")})
	}
	bestEffort := pod([]corev1.Container{container("c", "", "")})
	withPriority := func(name string) *corev1.Pod { p := guaranteed("c"); p.Spec.PriorityClassName = name; return p }
	claim := func(class, size string) *corev1.PersistentVolumeClaim {
		return pvc(ptr(class), "", "storage="+size, "")
	}
	noRV := svc(corev1.ServiceTypeClusterIP, 1)
	noRV.ResourceVersion = ""

	for _, tc := range []struct {
		name     string
		quotas   []corev1.ResourceQuota
		gr       GroupResource
		obj, old runtime.Object
		want     string // refusal; "" admitted
		wantUsed string
	}{
		{
			name:   "must specify: containers and init containers by resource",
			quotas: []corev1.ResourceQuota{quota("q", "cpu=10,limits.memory=10Gi,pods=10", "cpu=0,limits.memory=0,pods=0")},
			gr:     podsGR,
			obj:    pod([]corev1.Container{container("b", "cpu=100m", ""), container("a", "", "")}, container("init", "", "")),
			want:   "failed quota: q: must specify cpu for: a,init; limits.memory for: a,b,init",
		},
		{
			name:   "must specify: requests.memory",
			quotas: []corev1.ResourceQuota{quota("q", "requests.memory=1Gi", "requests.memory=0")},
			gr:     podsGR,
			obj:    pod([]corev1.Container{container("app", "cpu=1", "cpu=1")}),
			want:   "failed quota: q: must specify requests.memory for: app",
		},
		{
			name:     "must specify: satisfied by every container",
			quotas:   []corev1.ResourceQuota{quota("q", "cpu=10,limits.memory=10Gi", "cpu=0,limits.memory=0")},
			gr:       podsGR,
			obj:      pod([]corev1.Container{container("a", "cpu=100m", "memory=1Gi")}, container("i", "cpu=1", "memory=1Gi")),
			wantUsed: "q: cpu=1,limits.memory=1Gi",
		},
		{
			name:     "no constraint for names outside the validation set",
			quotas:   []corev1.ResourceQuota{quota("q", "ephemeral-storage=1Gi,pods=2", "ephemeral-storage=0,pods=0")},
			gr:       podsGR,
			obj:      bestEffort,
			wantUsed: "q: ephemeral-storage=0,pods=1",
		},
		{
			name:   "pod-level resources lift the constraint",
			quotas: []corev1.ResourceQuota{quota("q", "cpu=10", "cpu=0")},
			gr:     podsGR,
			obj: func() *corev1.Pod {
				p := pod([]corev1.Container{container("a", "", "")})
				p.Spec.Resources = &corev1.ResourceRequirements{Requests: rl("cpu=1")}
				return p
			}(),
			wantUsed: "q: cpu=1",
		},
		{
			name:   "status unknown",
			quotas: []corev1.ResourceQuota{quota("q", "pods=10,cpu=10", "pods=0")},
			gr:     podsGR,
			obj:    guaranteed("c"),
			want:   "status unknown for quota: q, resources: cpu,pods",
		},
		{
			name:   "exceeded pods",
			quotas: []corev1.ResourceQuota{quota("q", "pods=2", "pods=2")},
			gr:     podsGR,
			obj:    bestEffort,
			want:   "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2",
		},
		{
			name:     "pods up to the limit",
			quotas:   []corev1.ResourceQuota{quota("q", "pods=2", "pods=1")},
			gr:       podsGR,
			obj:      bestEffort,
			wantUsed: "q: pods=2",
		},
		{
			name:   "exceeded memory: only exceeded names",
			quotas: []corev1.ResourceQuota{quota("q", "pods=10,requests.memory=1Gi,limits.memory=2Gi", "pods=1,requests.memory=768Mi,limits.memory=768Mi")},
			gr:     podsGR,
			obj:    guaranteed("c"),
			want:   "exceeded quota: q, requested: requests.memory=512Mi, used: requests.memory=768Mi, limited: requests.memory=1Gi",
		},
		{
			name:   "exceeded several names, sorted",
			quotas: []corev1.ResourceQuota{quota("q", "limits.cpu=1,limits.memory=1Gi,requests.cpu=1", "limits.cpu=800m,limits.memory=1000Mi,requests.cpu=0")},
			gr:     podsGR,
			obj:    guaranteed("c"),
			want:   "exceeded quota: q, requested: limits.cpu=500m,limits.memory=512Mi, used: limits.cpu=800m,limits.memory=1000Mi, limited: limits.cpu=1,limits.memory=1Gi",
		},
		{
			name:     "memory sum keeps the used format",
			quotas:   []corev1.ResourceQuota{quota("q", "requests.memory=2Gi,requests.cpu=2", "requests.memory=768Mi,requests.cpu=0")},
			gr:       podsGR,
			obj:      guaranteed("c"),
			wantUsed: "q: requests.cpu=500m,requests.memory=1280Mi",
		},
		{
			name:   "first failing quota in name order",
			quotas: []corev1.ResourceQuota{quota("a", "pods=1", "pods=1"), quota("b", "pods=1", "pods=1")},
			gr:     podsGR,
			obj:    bestEffort,
			want:   "exceeded quota: a, requested: pods=1, used: pods=1, limited: pods=1",
		},
		{
			name:   "constraints of all quotas before capacity",
			quotas: []corev1.ResourceQuota{quota("a", "pods=1", "pods=1"), quota("b", "cpu=10", "cpu=0")},
			gr:     podsGR,
			obj:    bestEffort,
			want:   "failed quota: b: must specify cpu for: c",
		},
		{
			name:     "every covering quota charged",
			quotas:   []corev1.ResourceQuota{quota("a", "pods=5", "pods=1"), quota("b", "requests.cpu=2,pods=3", "requests.cpu=1,pods=1"), quota("c", "services=1", "services=0")},
			gr:       podsGR,
			obj:      guaranteed("c"),
			wantUsed: "a: pods=2; b: pods=2,requests.cpu=1500m",
		},
		{
			name:   "negative usage",
			quotas: []corev1.ResourceQuota{quota("q", "pods=10", "pods=0")},
			gr:     podsGR,
			obj:    pod([]corev1.Container{container("c", "cpu=-1", "")}),
			want:   "quota usage is negative for resource(s): cpu,requests.cpu",
		},
		{
			name:   "terminal pod: count only",
			quotas: []corev1.ResourceQuota{quota("q", "pods=1,count/pods=5", "pods=1,count/pods=1")},
			gr:     podsGR,
			obj:    withPhase(guaranteed("c"), corev1.PodSucceeded), wantUsed: "q: count/pods=2,pods=1",
		},
		{
			name:   "BestEffort quota: burstable pod not covered",
			quotas: []corev1.ResourceQuota{scoped(quota("q", "pods=1", "pods=1"), "BestEffort")},
			gr:     podsGR,
			obj:    guaranteed("c"),
		},
		{
			name:   "BestEffort quota: best effort pod",
			quotas: []corev1.ResourceQuota{scoped(quota("q", "pods=1", "pods=1"), "BestEffort")},
			gr:     podsGR,
			obj:    bestEffort,
			want:   "exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1",
		},
		{
			name:   "PriorityClass In: listed",
			quotas: []corev1.ResourceQuota{selected(quota("q", "pods=1", "pods=1"), "In", "high")},
			gr:     podsGR,
			obj:    withPriority("high"),
			want:   "exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1",
		},
		{
			name:   "PriorityClass In: other",
			quotas: []corev1.ResourceQuota{selected(quota("q", "pods=1", "pods=1"), "In", "high")},
			gr:     podsGR,
			obj:    withPriority("low"),
		},
		{
			name:   "pod update not evaluated",
			quotas: []corev1.ResourceQuota{quota("q", "pods=1", "pods=1")},
			gr:     podsGR,
			obj:    bestEffort, old: bestEffort,
		},
		{
			name:   "services.nodeports",
			quotas: []corev1.ResourceQuota{quota("q", "services=5,services.nodeports=2", "services=1,services.nodeports=1")},
			gr:     servicesGR,
			obj:    svc(corev1.ServiceTypeNodePort, 2),
			want:   "exceeded quota: q, requested: services.nodeports=2, used: services.nodeports=1, limited: services.nodeports=2",
		},
		{
			name:     "ClusterIP service charges no node port",
			quotas:   []corev1.ResourceQuota{quota("q", "services=5,services.nodeports=0", "services=1,services.nodeports=0")},
			gr:       servicesGR,
			obj:      svc(corev1.ServiceTypeClusterIP, 2),
			wantUsed: "q: services=2,services.nodeports=0",
		},
		{
			name:     "service update: the delta",
			quotas:   []corev1.ResourceQuota{quota("q", "services=1,services.nodeports=1", "services=1,services.nodeports=0")},
			gr:       servicesGR,
			obj:      svc(corev1.ServiceTypeNodePort, 1),
			old:      svc(corev1.ServiceTypeClusterIP, 1),
			wantUsed: "q: services=1,services.nodeports=1",
		},
		{
			name:   "service update: delta exceeds",
			quotas: []corev1.ResourceQuota{quota("q", "services=1,services.nodeports=1,services.loadbalancers=1", "services=1,services.nodeports=0,services.loadbalancers=0")},
			gr:     servicesGR,
			obj:    svc(corev1.ServiceTypeLoadBalancer, 2),
			old:    svc(corev1.ServiceTypeClusterIP, 2),
			want:   "exceeded quota: q, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1",
		},
		{
			name:   "service update: fewer node ports charge nothing",
			quotas: []corev1.ResourceQuota{quota("q", "services=1,services.nodeports=2", "services=1,services.nodeports=2")},
			gr:     servicesGR,
			obj:    svc(corev1.ServiceTypeNodePort, 1),
			old:    svc(corev1.ServiceTypeNodePort, 2),
		},
		{
			name:   "service update without resource version pays in full",
			quotas: []corev1.ResourceQuota{quota("q", "services=1", "services=1")},
			gr:     servicesGR,
			obj:    svc(corev1.ServiceTypeClusterIP, 1),
			old:    noRV,
			want:   "exceeded quota: q, requested: services=1, used: services=1, limited: services=1",
		},
		{
			name:   "per storage class",
			quotas: []corev1.ResourceQuota{quota("q", "gold.storageclass.storage.k8s.io/requests.storage=10Gi", "gold.storageclass.storage.k8s.io/requests.storage=8Gi")},
			gr:     claimsGR,
			obj:    claim("gold", "5Gi"),
			want:   "exceeded quota: q, requested: gold.storageclass.storage.k8s.io/requests.storage=5Gi, used: gold.storageclass.storage.k8s.io/requests.storage=8Gi, limited: gold.storageclass.storage.k8s.io/requests.storage=10Gi",
		},
		{
			name:   "another storage class",
			quotas: []corev1.ResourceQuota{quota("q", "gold.storageclass.storage.k8s.io/requests.storage=10Gi", "gold.storageclass.storage.k8s.io/requests.storage=8Gi")},
			gr:     claimsGR,
			obj:    claim("silver", "5Gi"),
		},
		{
			name:     "claim expansion: the delta",
			quotas:   []corev1.ResourceQuota{quota("q", "requests.storage=10Gi", "requests.storage=8Gi")},
			gr:       claimsGR,
			obj:      claim("gold", "10Gi"),
			old:      claim("gold", "8Gi"),
			wantUsed: "q: requests.storage=10Gi",
		},
		{
			name:   "count/<resource>.<group>",
			quotas: []corev1.ResourceQuota{quota("q", "count/deployments.apps=1", "count/deployments.apps=1")},
			gr:     GroupResource{Group: "apps", Resource: "deployments"},
			obj:    &appsv1.Deployment{},
			want:   "exceeded quota: q, requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1",
		},
		{
			name:     "legacy configmaps name",
			quotas:   []corev1.ResourceQuota{quota("q", "configmaps=2,count/configmaps=5", "configmaps=1,count/configmaps=1")},
			gr:       GroupResource{Resource: "configmaps"},
			obj:      &corev1.ConfigMap{},
			wantUsed: "q: configmaps=2,count/configmaps=2",
		},
		{
			name:   "configmap update not evaluated",
			quotas: []corev1.ResourceQuota{quota("q", "configmaps=1", "configmaps=1")},
			gr:     GroupResource{Resource: "configmaps"},
			obj:    &corev1.ConfigMap{}, old: &corev1.ConfigMap{},
		},
		{
			name:   "scoped quota never covers a configmap",
			quotas: []corev1.ResourceQuota{scoped(quota("q", "count/configmaps=1", "count/configmaps=1"), "Terminating")},
			gr:     GroupResource{Resource: "configmaps"},
			obj:    &corev1.ConfigMap{},
		},
		{name: "no quotas", gr: podsGR, obj: bestEffort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			used, err := Check(tc.quotas, tc.gr, tc.obj, tc.old, now)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("admitted (used %s); want %q", showUsed(used), tc.want)
			case err != nil && !errdefs.IsPermissionDenied(err):
				t.Errorf("error class of %v is not PermissionDenied", err)
			case err != nil && err.Error() != tc.want:
				t.Errorf("\n got %q\nwant %q", err.Error(), tc.want)
			}
			if got := showUsed(used); got != tc.wantUsed {
				t.Errorf("used %q, want %q", got, tc.wantUsed)
			}
		})
	}
}

// The used map has a formatted quantity a stored status keeps.
func TestCheckUsedFormats(t *testing.T) {
	q := quota("q", "requests.memory=4Gi,limits.cpu=4", "requests.memory=0,limits.cpu=0")
	used, err := Check([]corev1.ResourceQuota{q}, podsGR, pod([]corev1.Container{container("c", "memory=1536Mi,cpu=1", "cpu=1500m,memory=1536Mi")}), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	m, c := used["q"]["requests.memory"], used["q"]["limits.cpu"]
	if m.String() != "1536Mi" || c.String() != "1500m" {
		t.Errorf("used memory %s cpu %s", m.String(), c.String())
	}
}

func TestRecalculate(t *testing.T) {
	mk := func(name, requests, limits string) *corev1.Pod {
		p := pod([]corev1.Container{container("c", requests, limits)})
		p.Name = name
		return p
	}
	objects := map[GroupResource][]runtime.Object{
		podsGR: {
			mk("p1", "memory=512Mi,cpu=100m", "cpu=500m,memory=512Mi"),
			mk("p2", "memory=1Gi,cpu=1", "memory=1Gi"),
			withPhase(mk("done", "memory=1Gi", "memory=1Gi"), corev1.PodSucceeded),
			mk("free", "", ""),
		},
		servicesGR:                               {svc(corev1.ServiceTypeNodePort, 3), svc(corev1.ServiceTypeClusterIP, 1)},
		{Group: "apps", Resource: "deployments"}: {&appsv1.Deployment{}, &appsv1.Deployment{}},
	}
	list := func(gr GroupResource) []runtime.Object { return objects[gr] }
	for _, tc := range []struct {
		name string
		q    corev1.ResourceQuota
		want string
	}{
		{
			"terminal pods release pods but count/pods stays",
			quota("q", "pods=10,count/pods=10", ""),
			"count/pods=4,pods=3",
		},
		{
			"sums in the first addend's format",
			quota("q", "requests.memory=4Gi,requests.cpu=4,limits.cpu=4,limits.memory=4Gi", ""),
			"limits.cpu=500m,limits.memory=1536Mi,requests.cpu=1100m,requests.memory=1536Mi",
		},
		{
			"a hard name nothing charges is 0",
			quota("q", "configmaps=3,count/secrets=1,requests.storage=1Gi,limits.ephemeral-storage=1Gi", ""),
			"configmaps=0,count/secrets=0,limits.ephemeral-storage=0,requests.storage=0",
		},
		{
			"services and node ports",
			quota("q", "services=10,services.nodeports=10,services.loadbalancers=1", ""),
			"services=2,services.loadbalancers=0,services.nodeports=3",
		},
		{"count of a group", quota("q", "count/deployments.apps=5", ""), "count/deployments.apps=2"},
		{"BestEffort scope", scoped(quota("q", "pods=10", ""), "BestEffort"), "pods=1"},
		{"NotBestEffort scope", scoped(quota("q", "pods=10,requests.cpu=10", ""), "NotBestEffort"), "pods=2,requests.cpu=1100m"},
		{"scoped quota counts no services", scoped(quota("q", "pods=10,services=2", ""), "Terminating"), "pods=0,services=0"},
		{"only spec.hard counts", func() corev1.ResourceQuota {
			q := quota("q", "pods=10", "")
			q.Status.Hard = rl("pods=10,services=2")
			return q
		}(), "pods=3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := show(Recalculate(&tc.q, list, now)); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
	t.Run("format of the first addend", func(t *testing.T) {
		l := func(GroupResource) []runtime.Object {
			return []runtime.Object{mk("a", "memory=1G", ""), mk("b", "memory=1Gi", "")}
		}
		q := quota("q", "requests.memory=10Gi", "")
		if got := Recalculate(&q, l, now)["requests.memory"]; got.String() != "2073741824" {
			t.Errorf("1G + 1Gi = %s, want 2073741824", got.String())
		}
	})
	t.Run("zero is DecimalSI 0", func(t *testing.T) {
		q := quota("q", "requests.memory=10Gi", "")
		got := Recalculate(&q, func(GroupResource) []runtime.Object { return nil }, now)["requests.memory"]
		if got.String() != "0" {
			t.Errorf("nothing = %s, want 0", got.String())
		}
	})
}
