package admission

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestValidateResourceQuota(t *testing.T) {
	sel := func(exprs ...corev1.ScopedResourceSelectorRequirement) *corev1.ScopeSelector {
		return &corev1.ScopeSelector{MatchExpressions: exprs}
	}
	expr := func(scope corev1.ResourceQuotaScope, op corev1.ScopeSelectorOperator, values ...string) corev1.ScopedResourceSelectorRequirement {
		return corev1.ScopedResourceSelectorRequirement{ScopeName: scope, Operator: op, Values: values}
	}
	const mustExists = "must be 'Exists' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"
	for _, tc := range []struct {
		name   string
		hard   string
		scopes []corev1.ResourceQuotaScope
		sel    *corev1.ScopeSelector
		want   []string
	}{
		{name: "standard names", hard: "pods=10,cpu=1,memory=1Gi,requests.cpu=1,limits.memory=2Gi,ephemeral-storage=1Gi,limits.ephemeral-storage=1Gi," +
			"services=5,services.nodeports=2,services.loadbalancers=0,configmaps=3,secrets=3,resourcequotas=1,replicationcontrollers=1," +
			"persistentvolumeclaims=2,requests.storage=10Gi,hugepages-2Mi=1Gi,requests.hugepages-1Gi=2Gi"},
		{name: "prefixed names", hard: "count/pods=2,count/deployments.apps=1,requests.example.com/gpu=2,gold.storageclass.storage.k8s.io/requests.storage=5Gi"},
		{name: "unknown name", hard: "foo=1", want: []string{
			`spec.hard[foo]: Invalid value: "foo": must be a standard resource type or fully qualified`,
			`spec.hard[foo]: Invalid value: "foo": must be a standard resource for quota`}},
		{name: "standard but not for quota", hard: "storage=1Gi", want: []string{
			`spec.hard[storage]: Invalid value: "storage": must be a standard resource for quota`}},
		{name: "negative", hard: "cpu=-1", want: []string{
			`spec.hard[cpu]: Invalid value: "-1": must be greater than or equal to 0`}},
		{name: "zero is valid", hard: "pods=0,cpu=0"},
		{name: "fraction of a count", hard: "pods=1500m", want: []string{
			`spec.hard[pods]: Invalid value: "1500m": must be an integer`}},
		{name: "fraction of count/", hard: "count/deployments.apps=500m", want: []string{
			`spec.hard[count/deployments.apps]: Invalid value: "500m": must be an integer`}},
		{name: "fraction of cpu", hard: "cpu=1500m"},
		{name: "bad qualified name", hard: "example.com/a/b=1", want: []string{
			`spec.hard[example.com/a/b]: Invalid value: "example.com/a/b": a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')`}},
		{name: "keys sorted", hard: "pods=-1,cpu=-1", want: []string{
			`spec.hard[cpu]: Invalid value: "-1": must be greater than or equal to 0`,
			`spec.hard[pods]: Invalid value: "-1": must be greater than or equal to 0`}},

		{name: "every scope with pods", hard: "pods=1", scopes: []corev1.ResourceQuotaScope{"Terminating", "BestEffort", "PriorityClass", "CrossNamespacePodAffinity"}},
		{name: "NotBestEffort with compute", hard: "pods=1,cpu=1,limits.memory=1Gi", scopes: []corev1.ResourceQuotaScope{"NotBestEffort", "NotTerminating"}},
		{name: "unknown scope", hard: "pods=1", scopes: []corev1.ResourceQuotaScope{"Foo"}, want: []string{
			`spec.scopes: Invalid value: ["Foo"]: unsupported scope`}},
		{name: "BestEffort with cpu", hard: "pods=1,cpu=1", scopes: []corev1.ResourceQuotaScope{"BestEffort"}, want: []string{
			`spec.scopes: Invalid value: ["BestEffort"]: unsupported scope applied to resource`}},
		{name: "Terminating with services", hard: "services=1", scopes: []corev1.ResourceQuotaScope{"Terminating"}, want: []string{
			`spec.scopes: Invalid value: ["Terminating"]: unsupported scope applied to resource`}},
		{name: "scopes with unchecked prefixed names", hard: "count/pods=1", scopes: []corev1.ResourceQuotaScope{"Terminating"}},
		{name: "Terminating and NotTerminating", hard: "pods=1", scopes: []corev1.ResourceQuotaScope{"Terminating", "NotTerminating"}, want: []string{
			`spec.scopes: Invalid value: ["Terminating","NotTerminating"]: conflicting scopes`}},
		{name: "BestEffort and NotBestEffort", hard: "pods=1", scopes: []corev1.ResourceQuotaScope{"NotBestEffort", "BestEffort"}, want: []string{
			`spec.scopes: Invalid value: ["NotBestEffort","BestEffort"]: conflicting scopes`}},

		{name: "selector: PriorityClass In", hard: "pods=1", sel: sel(expr("PriorityClass", "In", "high", "low"))},
		{name: "selector: PriorityClass DoesNotExist", hard: "pods=1", sel: sel(expr("PriorityClass", "DoesNotExist"))},
		{name: "selector: In without values", hard: "pods=1", sel: sel(expr("PriorityClass", "In")), want: []string{
			"spec.scopeSelector.matchExpressions.values: Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector"}},
		{name: "selector: Exists with values", hard: "pods=1", sel: sel(expr("PriorityClass", "Exists", "a")), want: []string{
			`spec.scopeSelector.matchExpressions.values: Invalid value: ["a"]: must be no value when ` + "`operator` is 'Exist' or 'DoesNotExist' for scope selector"}},
		{name: "selector: BestEffort In", hard: "pods=1", sel: sel(expr("BestEffort", "In", "x")), want: []string{
			`spec.scopeSelector.matchExpressions.operator: Invalid value: "In": ` + mustExists}},
		{name: "selector: unknown operator", hard: "pods=1", sel: sel(expr("PriorityClass", "Gt", "1")), want: []string{
			`spec.scopeSelector.matchExpressions.operator: Invalid value: "Gt": not a valid selector operator`}},
		{name: "selector: unknown scope", hard: "pods=1", sel: sel(expr("Foo", "Exists")), want: []string{
			`spec.scopeSelector.matchExpressions.scopeName: Invalid value: "Foo": unsupported scope`}},
		{name: "selector: BestEffort with cpu", hard: "cpu=1", sel: sel(expr("BestEffort", "Exists")), want: []string{
			`spec.scopeSelector.matchExpressions: Invalid value: {"MatchExpressions":[{"ScopeName":"BestEffort","Operator":"Exists","Values":null}]}: unsupported scope applied to resource`}},
		{name: "selector: conflicting", hard: "pods=1", scopes: []corev1.ResourceQuotaScope{"Terminating"}, sel: sel(expr("Terminating", "Exists"), expr("NotTerminating", "Exists")), want: []string{
			`spec.scopeSelector.matchExpressions: Invalid value: ["Terminating"]: conflicting scopes`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q"},
				Spec: corev1.ResourceQuotaSpec{Hard: rl(tc.hard), Scopes: tc.scopes, ScopeSelector: tc.sel}}
			if got, want := errs(ValidateResourceQuota(q)), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("\n got %s\nwant %s", got, want)
			}
		})
	}
	t.Run("status", func(t *testing.T) {
		q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q"},
			Status: corev1.ResourceQuotaStatus{Hard: rl("pods=1"), Used: rl("pods=-1")}}
		want := `status.used[pods]: Invalid value: "-1": must be greater than or equal to 0`
		if got := errs(ValidateResourceQuota(q)); got != want {
			t.Errorf("\n got %s\nwant %s", got, want)
		}
	})
	t.Run("namespace required", func(t *testing.T) {
		q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "q"}}
		want := `metadata.namespace: Required value`
		if got := errs(ValidateResourceQuota(q)); got != want {
			t.Errorf("\n got %s\nwant %s", got, want)
		}
	})
}
