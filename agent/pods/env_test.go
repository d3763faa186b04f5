package pods

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type objects map[string]any // "configmap/name", "secret/name"

func (o objects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	if cm, ok := o["configmap/"+name].(*corev1.ConfigMap); ok {
		return cm, nil
	}
	return nil, fmt.Errorf("configmaps %q: %w", name, errdefs.ErrNotFound)
}

func (o objects) Secret(ns, name string) (*corev1.Secret, error) {
	if s, ok := o["secret/"+name].(*corev1.Secret); ok {
		return s, nil
	}
	return nil, fmt.Errorf("secrets %q: %w", name, errdefs.ErrNotFound)
}

// The kubelet's makeEnvironmentVariables: envFrom then env, valueFrom of
// every kind resolved, resolved values escaped for $(VAR) expansion.
func TestResolveEnv(t *testing.T) {
	yes := true
	r := New(Config{Objects: objects{
		"configmap/cfg": &corev1.ConfigMap{Data: map[string]string{"MODE": "fast", "bad-name": "x", "cost": "$(HOME)"}},
		"secret/sec":    &corev1.Secret{Data: map[string][]byte{"TOKEN": []byte("s3")}},
	}, HostIP: "192.0.2.10"}, nil, nil)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{
			Name:      "c",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
			EnvFrom:   []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "CFG_"}, {ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Optional: &yes}}},
			Env: []corev1.EnvVar{
				{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
				{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
				{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "HOSTIP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
				{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
				{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "TOKEN"}}},
				{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nope", Optional: &yes}}},
				{Name: "PLAIN", Value: "$(POD)-x"},
			},
		}}}}
	c, err := r.resolveEnv(pod, &pod.Spec.Containers[0], envInput{podIPs: []string{"10.85.0.9"}, hostIP: "192.0.2.10"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range c.Env {
		got = append(got, e.Name+"="+e.Value)
	}
	// Keys of any printable name are valid variable names (relaxed
	// validation, GA in 1.34).
	want := "CFG_MODE=fast CFG_bad-name=x CFG_cost=$$(HOME) POD=web APP=web NODE=n1 IP=10.85.0.9 HOSTIP=192.0.2.10 MEM=64 TOKEN=s3 PLAIN=$(POD)-x"
	if strings.Join(got, " ") != want {
		t.Errorf("env\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
	if len(c.EnvFrom) != 0 || len(pod.Spec.Containers[0].EnvFrom) != 2 {
		t.Errorf("envFrom not consumed, or the pod changed")
	}
	// Missing, not optional: the kubelet's words.
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nope"}}}}
	if _, err := r.resolveEnv(pod, &pod.Spec.Containers[0], envInput{}); err == nil || err.Error() != "couldn't find key nope in ConfigMap shop/cfg: not found" && !strings.HasPrefix(err.Error(), "couldn't find key nope in ConfigMap shop/cfg") {
		t.Errorf("missing key: %v", err)
	}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "other"}, Key: "k"}}}}
	if _, err := r.resolveEnv(pod, &pod.Spec.Containers[0], envInput{}); err == nil || err.Error() != `secret "other" not found` || !errdefs.IsNotFound(err) {
		t.Errorf("missing secret: %v", err)
	}
}
