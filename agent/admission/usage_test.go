package admission

import (
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func svc(typ corev1.ServiceType, ports int) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", ResourceVersion: "1"}, Spec: corev1.ServiceSpec{Type: typ}}
	for i := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: int32(80 + i)})
	}
	return s
}

func pvc(class *string, annotation, requests, allocated string) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", ResourceVersion: "1"},
		Spec:   corev1.PersistentVolumeClaimSpec{StorageClassName: class, Resources: corev1.VolumeResourceRequirements{Requests: rl(requests)}},
		Status: corev1.PersistentVolumeClaimStatus{AllocatedResources: rl(allocated)}}
	if annotation != "" {
		c.Annotations = map[string]string{betaStorageClassAnnotation: annotation}
	}
	return c
}

func ptr[T any](v T) *T { return &v }

func withPhase(p *corev1.Pod, phase corev1.PodPhase) *corev1.Pod {
	p.Status.Phase = phase
	return p
}

func deleting(p *corev1.Pod, ago time.Duration, grace int64) *corev1.Pod {
	ts := metav1.NewTime(now.Add(-ago))
	p.DeletionTimestamp = &ts
	p.DeletionGracePeriodSeconds = &grace
	return p
}

func TestUsage(t *testing.T) {
	burstable := func() *corev1.Pod {
		return pod([]corev1.Container{container("c", "cpu=100m,memory=64Mi", "cpu=200m,memory=128Mi")})
	}
	const burstableUsage = "count/pods=1,cpu=100m,limits.cpu=200m,limits.memory=128Mi,memory=64Mi,pods=1,requests.cpu=100m,requests.memory=64Mi"
	withOverhead := burstable()
	withOverhead.Spec.Overhead = rl("cpu=10m")
	podLevel := pod([]corev1.Container{container("c", "cpu=100m", "")})
	podLevel.Spec.Resources = &corev1.ResourceRequirements{Requests: rl("cpu=1,memory=1Gi"), Limits: rl("cpu=2,memory=1Gi")}

	for _, tc := range []struct {
		name string
		gr   GroupResource
		obj  runtime.Object
		want string
	}{
		{"pod", podsGR, burstable(), burstableUsage},
		{"best effort pod", podsGR, pod([]corev1.Container{container("c", "", "")}), "count/pods=1,pods=1"},
		{"pending pod", podsGR, withPhase(burstable(), corev1.PodPending), burstableUsage},
		{"succeeded pod: count only", podsGR, withPhase(burstable(), corev1.PodSucceeded), "count/pods=1"},
		{"failed pod: count only", podsGR, withPhase(burstable(), corev1.PodFailed), "count/pods=1"},
		{"deleting within grace", podsGR, deleting(burstable(), 10*time.Second, 30), burstableUsage},
		{"deleting, grace ends now", podsGR, deleting(burstable(), 30*time.Second, 30), burstableUsage},
		{"deleting past grace", podsGR, deleting(burstable(), 31*time.Second, 30), "count/pods=1"},
		{"deleting without grace period", podsGR, func() *corev1.Pod {
			p := deleting(burstable(), time.Hour, 0)
			p.DeletionGracePeriodSeconds = nil
			return p
		}(), burstableUsage},
		{
			// max(100m+100m+sidecar 50m, init 300m + sidecar before it 50m)
			"init and sidecar max rule", podsGR,
			pod([]corev1.Container{container("a", "cpu=100m", ""), container("b", "cpu=100m", "")}, sidecar("s", "cpu=50m", ""), container("i", "cpu=300m", "")),
			"count/pods=1,cpu=350m,pods=1,requests.cpu=350m",
		},
		{
			"sum above init", podsGR,
			pod([]corev1.Container{container("a", "memory=1Gi", ""), container("b", "memory=1Gi", "")}, container("i", "memory=1536Mi", "")),
			"count/pods=1,memory=2Gi,pods=1,requests.memory=2Gi",
		},
		{"overhead", podsGR, withOverhead, "count/pods=1,cpu=110m,limits.cpu=210m,limits.memory=128Mi,memory=64Mi,pods=1,requests.cpu=110m,requests.memory=64Mi"},
		{"pod-level resources", podsGR, podLevel, "count/pods=1,cpu=1,limits.cpu=2,limits.memory=1Gi,memory=1Gi,pods=1,requests.cpu=1,requests.memory=1Gi"},
		{
			"ephemeral storage, hugepages, extended", podsGR,
			pod([]corev1.Container{container("c", "cpu=1,memory=1Gi,ephemeral-storage=1Gi,hugepages-2Mi=4Mi,example.com/gpu=1", "cpu=1,memory=1Gi,ephemeral-storage=2Gi,hugepages-2Mi=4Mi,example.com/gpu=1")}),
			"count/pods=1,cpu=1,ephemeral-storage=1Gi,hugepages-2Mi=4Mi,limits.cpu=1,limits.ephemeral-storage=2Gi,limits.memory=1Gi,memory=1Gi,pods=1," +
				"requests.cpu=1,requests.ephemeral-storage=1Gi,requests.example.com/gpu=1,requests.hugepages-2Mi=4Mi,requests.memory=1Gi",
		},
		{"ClusterIP service", servicesGR, svc(corev1.ServiceTypeClusterIP, 2), "count/services=1,services=1,services.loadbalancers=0,services.nodeports=0"},
		{"NodePort service", servicesGR, svc(corev1.ServiceTypeNodePort, 2), "count/services=1,services=1,services.loadbalancers=0,services.nodeports=2"},
		{"LoadBalancer service", servicesGR, svc(corev1.ServiceTypeLoadBalancer, 3), "count/services=1,services=1,services.loadbalancers=1,services.nodeports=3"},
		{"claim without class", claimsGR, pvc(nil, "", "storage=1Gi", ""), "count/persistentvolumeclaims=1,persistentvolumeclaims=1,requests.storage=1Gi"},
		{"claim with class", claimsGR, pvc(ptr("gold"), "", "storage=1Gi", ""),
			"count/persistentvolumeclaims=1,gold.storageclass.storage.k8s.io/persistentvolumeclaims=1,gold.storageclass.storage.k8s.io/requests.storage=1Gi,persistentvolumeclaims=1,requests.storage=1Gi"},
		{"beta annotation wins", claimsGR, pvc(ptr("gold"), "silver", "storage=1Gi", ""),
			"count/persistentvolumeclaims=1,persistentvolumeclaims=1,requests.storage=1Gi,silver.storageclass.storage.k8s.io/persistentvolumeclaims=1,silver.storageclass.storage.k8s.io/requests.storage=1Gi"},
		{"empty class", claimsGR, pvc(ptr(""), "", "storage=1Gi", ""), "count/persistentvolumeclaims=1,persistentvolumeclaims=1,requests.storage=1Gi"},
		{"allocated above request", claimsGR, pvc(nil, "", "storage=1Gi", "storage=2Gi"), "count/persistentvolumeclaims=1,persistentvolumeclaims=1,requests.storage=2Gi"},
		{"allocated below request", claimsGR, pvc(nil, "", "storage=2Gi", "storage=1Gi"), "count/persistentvolumeclaims=1,persistentvolumeclaims=1,requests.storage=2Gi"},
		{"storage in whole bytes", claimsGR, pvc(nil, "", "storage=1500m", ""), "count/persistentvolumeclaims=1,persistentvolumeclaims=1,requests.storage=2"},
		{"claim without request", claimsGR, pvc(nil, "", "", ""), "count/persistentvolumeclaims=1,persistentvolumeclaims=1"},
		{"configmap", GroupResource{Resource: "configmaps"}, &corev1.ConfigMap{}, "configmaps=1,count/configmaps=1"},
		{"secret", GroupResource{Resource: "secrets"}, &corev1.Secret{}, "count/secrets=1,secrets=1"},
		{"quota", GroupResource{Resource: "resourcequotas"}, &corev1.ResourceQuota{}, "count/resourcequotas=1,resourcequotas=1"},
		{"other core kind", GroupResource{Resource: "serviceaccounts"}, &corev1.ServiceAccount{}, "count/serviceaccounts=1"},
		{"deployment", GroupResource{Group: "apps", Resource: "deployments"}, &appsv1.Deployment{}, "count/deployments.apps=1"},
		{"configmaps of another group", GroupResource{Group: "example.com", Resource: "configmaps"}, &corev1.ConfigMap{}, "count/configmaps.example.com=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := show(Usage(tc.gr, tc.obj, now)); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestCounted(t *testing.T) {
	for _, tc := range []struct {
		name string
		hard string
		want []GroupResource
	}{
		{"none", "", []GroupResource{}},
		{"pod names", "pods=1,cpu=1,limits.memory=1Gi,hugepages-2Mi=1Gi,requests.example.com/gpu=1,count/pods=1", []GroupResource{podsGR}},
		{"services", "services.nodeports=1,count/services=1", []GroupResource{servicesGR}},
		{"claims", "requests.storage=1Gi,gold.storageclass.storage.k8s.io/persistentvolumeclaims=1", []GroupResource{claimsGR}},
		{
			"everything, sorted", "pods=1,count/deployments.apps=1,requests.storage=1,services=1,configmaps=1,count/secrets=1,count/widgets.example.com=1,resourcequotas=1",
			[]GroupResource{{Resource: "configmaps"}, claimsGR, podsGR, {Resource: "resourcequotas"}, {Resource: "secrets"}, servicesGR,
				{Group: "apps", Resource: "deployments"}, {Group: "example.com", Resource: "widgets"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Counted(rl(tc.hard)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Counted = %v, want %v", got, tc.want)
			}
		})
	}
}

func quota(name, hard, used string) corev1.ResourceQuota {
	q := corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: corev1.ResourceQuotaSpec{Hard: rl(hard)}}
	q.Status.Hard = rl(hard)
	q.Status.Used = rl(used)
	return q
}

func scoped(q corev1.ResourceQuota, scopes ...corev1.ResourceQuotaScope) corev1.ResourceQuota {
	q.Spec.Scopes = scopes
	return q
}

func selected(q corev1.ResourceQuota, op corev1.ScopeSelectorOperator, values ...string) corev1.ResourceQuota {
	q.Spec.ScopeSelector = &corev1.ScopeSelector{MatchExpressions: []corev1.ScopedResourceSelectorRequirement{
		{ScopeName: corev1.ResourceQuotaScopePriorityClass, Operator: op, Values: values}}}
	return q
}

func TestMatches(t *testing.T) {
	plain := func() *corev1.Pod { return pod([]corev1.Container{container("c", "", "")}) }
	burstable := pod([]corev1.Container{container("c", "cpu=100m", "")})
	deadline := func(s int64) *corev1.Pod { p := plain(); p.Spec.ActiveDeadlineSeconds = &s; return p }
	priority := func(name string) *corev1.Pod { p := plain(); p.Spec.PriorityClassName = name; return p }
	crossNS := plain()
	crossNS.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{
		{Weight: 1, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "k", Namespaces: []string{"other"}}}}}}
	sameNS := plain()
	sameNS.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{TopologyKey: "k"}}}}
	pods := quota("q", "pods=10", "pods=0")
	unsynced := pods
	unsynced.Status = corev1.ResourceQuotaStatus{}

	for _, tc := range []struct {
		name string
		q    corev1.ResourceQuota
		gr   GroupResource
		obj  runtime.Object
		want bool
	}{
		{"unscoped", pods, podsGR, plain(), true},
		{"no tracked name", quota("q", "services=1", ""), podsGR, plain(), false},
		{"status not synced", unsynced, podsGR, plain(), false},
		{"Terminating: deadline 0", scoped(pods, "Terminating"), podsGR, deadline(0), true},
		{"Terminating: no deadline", scoped(pods, "Terminating"), podsGR, plain(), false},
		{"NotTerminating: no deadline", scoped(pods, "NotTerminating"), podsGR, plain(), true},
		{"NotTerminating: deadline", scoped(pods, "NotTerminating"), podsGR, deadline(30), false},
		{"BestEffort: best effort", scoped(pods, "BestEffort"), podsGR, plain(), true},
		{"BestEffort: burstable", scoped(pods, "BestEffort"), podsGR, burstable, false},
		{"NotBestEffort: burstable", scoped(pods, "NotBestEffort"), podsGR, burstable, true},
		{"NotBestEffort: best effort", scoped(pods, "NotBestEffort"), podsGR, plain(), false},
		{"every scope must match", scoped(pods, "NotBestEffort", "Terminating"), podsGR, burstable, false},
		{"PriorityClass scope: set", scoped(pods, "PriorityClass"), podsGR, priority("high"), true},
		{"PriorityClass scope: unset", scoped(pods, "PriorityClass"), podsGR, plain(), false},
		{"In: listed", selected(pods, "In", "high", "mid"), podsGR, priority("high"), true},
		{"In: other", selected(pods, "In", "high"), podsGR, priority("low"), false},
		{"In: none", selected(pods, "In", "high"), podsGR, plain(), false},
		{"NotIn: other", selected(pods, "NotIn", "high"), podsGR, priority("low"), true},
		{"NotIn: none", selected(pods, "NotIn", "high"), podsGR, plain(), true},
		{"NotIn: listed", selected(pods, "NotIn", "high"), podsGR, priority("high"), false},
		{"Exists: set", selected(pods, "Exists"), podsGR, priority("x"), true},
		{"Exists: none", selected(pods, "Exists"), podsGR, plain(), false},
		{"DoesNotExist: none", selected(pods, "DoesNotExist"), podsGR, plain(), true},
		{"DoesNotExist: set", selected(pods, "DoesNotExist"), podsGR, priority("x"), false},
		{"CrossNamespacePodAffinity: namespaces", scoped(pods, "CrossNamespacePodAffinity"), podsGR, crossNS, true},
		{"CrossNamespacePodAffinity: same namespace", scoped(pods, "CrossNamespacePodAffinity"), podsGR, sameNS, false},
		{"services are never scoped", scoped(quota("q", "services=1", "services=0"), "Terminating"), servicesGR, svc("", 0), false},
		{"services unscoped", quota("q", "services=1", "services=0"), servicesGR, svc("", 0), true},
		{"count of a group", quota("q", "count/deployments.apps=1", ""), GroupResource{Group: "apps", Resource: "deployments"}, &appsv1.Deployment{}, true},
		{"count of another group", quota("q", "count/deployments.apps=1", ""), GroupResource{Group: "example.com", Resource: "deployments"}, &appsv1.Deployment{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Matches(&tc.q, tc.gr, tc.obj); got != tc.want {
				t.Errorf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHelpText(t *testing.T) {
	for scope, want := range map[corev1.ResourceQuotaScope]string{
		"Terminating":    "Matches all pods that have an active deadline. These pods have a limited lifespan on a node before being actively terminated by the system.",
		"NotTerminating": "Matches all pods that do not have an active deadline. These pods usually include long running pods whose container command is not expected to terminate.",
		"BestEffort":     "Matches all pods that do not have resource requirements set. These pods have a best effort quality of service.",
		"NotBestEffort":  "Matches all pods that have at least one resource requirement set. These pods have a burstable or guaranteed quality of service.",
		"PriorityClass":  "",
	} {
		if got := HelpText(scope); got != want {
			t.Errorf("HelpText(%s) = %q, want %q", scope, got, want)
		}
	}
}
