package store

import (
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A list through Decoded is what is stored: an object unchanged since the
// last list is the same decoded object, a changed one is decoded again, a
// deleted one is gone, and a namespace's list holds that namespace only.
func TestDecoded(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pod := func(ns, name string) *corev1.Pod {
		return &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	for _, p := range []*corev1.Pod{pod("a", "one"), pod("a", "two"), pod("b", "three")} {
		if err := s.Create("pods", p); err != nil {
			t.Fatal(err)
		}
	}
	d := &Decoded[corev1.Pod]{Resource: "pods"}
	first, _, err := d.List(s, "")
	if err != nil || len(first) != 3 {
		t.Fatalf("%d pods, %v", len(first), err)
	}
	if _, err := s.Modify("pods", "a", "two", &corev1.Pod{}, func(cur Object) (Decision, error) {
		cur.(*corev1.Pod).Labels = map[string]string{"x": "y"}
		return Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete("pods", "b", "three", "", ""); err != nil {
		t.Fatal(err)
	}
	second, _, err := d.List(s, "")
	if err != nil || len(second) != 2 {
		t.Fatalf("%d pods after a deletion, %v", len(second), err)
	}
	if second[0] != first[0] {
		t.Errorf("an unchanged pod was decoded again")
	}
	if second[1] == first[1] || second[1].Labels["x"] != "y" {
		t.Errorf("the changed pod: %+v", second[1].ObjectMeta)
	}
	if _, ok := d.objs["b/three"]; ok {
		t.Errorf("the deleted pod is still cached")
	}
	ns, _, err := d.List(s, "a")
	if err != nil || len(ns) != 2 || ns[0] != first[0] {
		t.Errorf("namespace a: %d pods, %v", len(ns), err)
	}
}
