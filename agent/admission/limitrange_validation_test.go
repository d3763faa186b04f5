package admission

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// errs prints a field.ErrorList one error a line.
func errs(l field.ErrorList) string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

func TestValidateLimitRange(t *testing.T) {
	c := corev1.LimitTypeContainer
	for _, tc := range []struct {
		name  string
		items []corev1.LimitRangeItem
		want  []string
	}{
		{"valid container item", []corev1.LimitRangeItem{item{typ: c, min: rl("cpu=100m,memory=64Mi"), max: rl("cpu=2,memory=1Gi"), def: rl("cpu=1,memory=512Mi"), defReq: rl("cpu=200m,memory=128Mi"), ratio: rl("cpu=10")}.lr()}, nil},
		{"equal bounds are valid", []corev1.LimitRangeItem{item{typ: c, min: rl("cpu=1"), max: rl("cpu=1"), def: rl("cpu=1"), defReq: rl("cpu=1"), ratio: rl("cpu=1")}.lr()}, nil},
		{"valid pod and claim items", []corev1.LimitRangeItem{
			item{typ: corev1.LimitTypePod, max: rl("cpu=4")}.lr(),
			item{typ: corev1.LimitTypePersistentVolumeClaim, min: rl("storage=1Gi")}.lr()}, nil},
		{"extended resource", []corev1.LimitRangeItem{item{typ: c, max: rl("example.com/gpu=2"), def: rl("example.com/gpu=1"), defReq: rl("example.com/gpu=1")}.lr()}, nil},
		{"unknown type", []corev1.LimitRangeItem{{Type: "Foo"}}, []string{
			`spec.limits[0].type: Invalid value: "Foo": must be a standard limit type or fully qualified`}},
		{"qualified type", []corev1.LimitRangeItem{{Type: "example.com/Foo"}}, nil},
		{"duplicate type", []corev1.LimitRangeItem{{Type: c}, {Type: c}}, []string{
			`spec.limits[1].type: Duplicate value: "Container"`}},
		{"pod default", []corev1.LimitRangeItem{item{typ: corev1.LimitTypePod, def: rl("cpu=1"), defReq: rl("cpu=1")}.lr()}, []string{
			"spec.limits[0].default: Forbidden: may not be specified when `type` is 'Pod'",
			"spec.limits[0].defaultRequest: Forbidden: may not be specified when `type` is 'Pod'"}},
		{"min above max", []corev1.LimitRangeItem{item{typ: c, min: rl("cpu=2"), max: rl("cpu=1"), def: rl("cpu=1"), defReq: rl("cpu=1")}.lr()}, []string{
			`spec.limits[0].min[cpu]: Invalid value: "2": min value 2 is greater than max value 1`,
			`spec.limits[0].defaultRequest[cpu]: Invalid value: "1": min value 2 is greater than default request value 1`,
			`spec.limits[0].default[cpu]: Invalid value: "2": min value 2 is greater than default value 1`}},
		{"defaultRequest above max and default", []corev1.LimitRangeItem{item{typ: c, max: rl("memory=1Gi"), def: rl("memory=512Mi"), defReq: rl("memory=2Gi")}.lr()}, []string{
			`spec.limits[0].defaultRequest[memory]: Invalid value: "2Gi": default request value 2Gi is greater than max value 1Gi`,
			`spec.limits[0].defaultRequest[memory]: Invalid value: "2Gi": default request value 2Gi is greater than default limit value 512Mi`}},
		{"default above max reports the max", []corev1.LimitRangeItem{item{typ: c, max: rl("cpu=1"), def: rl("cpu=2"), defReq: rl("cpu=1")}.lr()}, []string{
			`spec.limits[0].default[cpu]: Invalid value: "1": default value 2 is greater than max value 1`}},
		{"ratio below 1", []corev1.LimitRangeItem{item{typ: c, ratio: rl("cpu=500m")}.lr()}, []string{
			`spec.limits[0].maxLimitRequestRatio[cpu]: Invalid value: "500m": ratio 500m is less than 1`}},
		{"ratio above max/min", []corev1.LimitRangeItem{item{typ: c, min: rl("cpu=100m"), max: rl("cpu=1"), def: rl("cpu=1"), defReq: rl("cpu=100m"), ratio: rl("cpu=20")}.lr()}, []string{
			`spec.limits[0].maxLimitRequestRatio[cpu]: Invalid value: "20": ratio 20 is greater than max/min = 10.000000`}},
		{"ratio at max/min", []corev1.LimitRangeItem{item{typ: c, min: rl("cpu=100m"), max: rl("cpu=1"), def: rl("cpu=1"), defReq: rl("cpu=100m"), ratio: rl("cpu=10")}.lr()}, nil},
		{"claim without storage bounds", []corev1.LimitRangeItem{item{typ: corev1.LimitTypePersistentVolumeClaim, max: rl("requests.storage=1Gi")}.lr()}, []string{
			`spec.limits[0].limits: Required value: either minimum or maximum storage value is required, but neither was provided`}},
		{"storage on containers", []corev1.LimitRangeItem{item{typ: c, max: rl("storage=1Gi"), def: rl("storage=1Gi"), defReq: rl("storage=1Gi")}.lr()}, []string{
			`spec.limits[0].max[storage]: Invalid value: "storage": must be a standard resource for containers`,
			`spec.limits[0].default[storage]: Invalid value: "storage": must be a standard resource for containers`,
			`spec.limits[0].defaultRequest[storage]: Invalid value: "storage": must be a standard resource for containers`}},
		{"unknown name", []corev1.LimitRangeItem{item{typ: c, min: rl("foo=1"), defReq: rl("foo=1")}.lr()}, []string{
			`spec.limits[0].min[foo]: Invalid value: "foo": must be a standard resource type or fully qualified`,
			`spec.limits[0].min[foo]: Invalid value: "foo": must be a standard resource for containers`,
			`spec.limits[0].defaultRequest[foo]: Invalid value: "foo": must be a standard resource type or fully qualified`,
			`spec.limits[0].defaultRequest[foo]: Invalid value: "foo": must be a standard resource for containers`}},
		{"requests.-prefixed extended name", []corev1.LimitRangeItem{item{typ: c, max: rl("requests.example.com/gpu=1")}.lr()}, []string{
			`spec.limits[0].max[requests.example.com/gpu]: Invalid value: "requests.example.com/gpu": doesn't follow extended resource name standard`}},
		{"hugepages cannot overcommit", []corev1.LimitRangeItem{item{typ: c, def: rl("hugepages-2Mi=4Mi"), defReq: rl("hugepages-2Mi=2Mi")}.lr()}, []string{
			`spec.limits[0].defaultRequest[hugepages-2Mi]: Invalid value: "2Mi": default value 4Mi must equal to defaultRequest value 2Mi in hugepages-2Mi`}},
		{"keys in sorted order", []corev1.LimitRangeItem{item{typ: c, ratio: rl("memory=500m,cpu=500m")}.lr()}, []string{
			`spec.limits[0].maxLimitRequestRatio[cpu]: Invalid value: "500m": ratio 500m is less than 1`,
			`spec.limits[0].maxLimitRequestRatio[memory]: Invalid value: "500m": ratio 500m is less than 1`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lr := limitRange("lr", tc.items...)
			if got, want := errs(ValidateLimitRange(&lr)), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("\n got %s\nwant %s", got, want)
			}
		})
	}
	t.Run("metadata", func(t *testing.T) {
		lr := corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "Bad_Name"}}
		want := `metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`
		if got := errs(ValidateLimitRange(&lr)); got != want {
			t.Errorf("\n got %s\nwant %s", got, want)
		}
	})
}
