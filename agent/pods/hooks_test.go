package pods

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// hooksFor resolves what the kubelet resolves when it runs a hook: named
// ports, the scheme, the default host; commands stay unexpanded.
func TestHooksFor(t *testing.T) {
	grace := int64(7)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u-1"},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace}}
	c := &corev1.Container{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}
	if h := hooksFor(pod, c, "10.0.0.1"); h != nil {
		t.Fatalf("no lifecycle: %+v", h)
	}
	c.Lifecycle = &corev1.Lifecycle{StopSignal: nil}
	if h := hooksFor(pod, c, ""); h != nil {
		t.Fatalf("lifecycle without hooks: %+v", h)
	}
	c.Lifecycle = &corev1.Lifecycle{
		PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"echo", "$(HOME)"}}},
		PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/stop", Port: intstr.FromString("http"),
			HTTPHeaders: []corev1.HTTPHeader{{Name: "X", Value: "1"}}}},
	}
	want := &bndl.Hooks{Pod: "web_shop(u-1)", Container: "app", GracePeriodSeconds: 7,
		PostStart: &bndl.Handler{Exec: &bndl.ExecHandler{Command: []string{"echo", "$(HOME)"}}},
		PreStop: &bndl.Handler{HTTPGet: &bndl.HTTPHandler{Scheme: "http", Host: "10.0.0.1", Port: 8080, Path: "/stop",
			Headers: []bndl.HTTPHeader{{Name: "X", Value: "1"}}}},
	}
	if got := hooksFor(pod, c, "10.0.0.1"); !reflect.DeepEqual(got, want) {
		t.Errorf("hooksFor = %+v\nwant %+v", got, want)
	}
	for _, tc := range []struct {
		port intstr.IntOrString
		host string
		want string // error; "" = port 9090
	}{
		{intstr.FromString("9090"), "h", ""},
		{intstr.FromInt32(9090), "h", ""},
		{intstr.FromString("nope"), "h", `strconv.Atoi: parsing "nope": invalid syntax`},
		{intstr.FromInt32(0), "h", "invalid port number: 0"},
	} {
		c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Host: tc.host, Scheme: corev1.URISchemeHTTPS, Port: tc.port, Path: "/p"}}}
		h := hooksFor(&corev1.Pod{}, c, "10.0.0.1").PreStop
		if h.Error != tc.want || h.HTTPGet == nil || h.HTTPGet.Path != "/p" {
			t.Errorf("port %v: %+v, want error %q", tc.port, h, tc.want)
		}
		if tc.want == "" && (h.HTTPGet.Port != 9090 || h.HTTPGet.Scheme != "https" || h.HTTPGet.Host != "h") {
			t.Errorf("port %v: %+v", tc.port, h.HTTPGet)
		}
	}
	c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 4}}}
	if h := hooksFor(&corev1.Pod{}, c, ""); h.GracePeriodSeconds != 30 || h.PreStop.Sleep.Seconds != 4 {
		t.Errorf("sleep, default grace: %+v", h)
	}
}
