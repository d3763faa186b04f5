package unitgen

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Hooks become ExecStartPost= (postStart: its failure fails the start) and
// ExecStop= (preStop: its failure is ignored), both `<Init> hook <kind>
// <Bundle>`, each only when the container has that hook; every one has a Why.
func TestHookProperties(t *testing.T) {
	exec := &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}
	sleep := &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 3}}
	for _, tc := range []struct {
		name            string
		lc              *corev1.Lifecycle
		postStart, stop bool
	}{
		{"none", nil, false, false},
		{"stopSignal only", &corev1.Lifecycle{StopSignal: ptrSignal(corev1.SIGINT)}, false, false},
		{"postStart", &corev1.Lifecycle{PostStart: exec}, true, false},
		{"preStop", &corev1.Lifecycle{PreStop: sleep}, false, true},
		{"both", &corev1.Lifecycle{PostStart: exec, PreStop: sleep}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := basicInput(t)
			in.Pod.Spec.Containers[0].Lifecycle = tc.lc
			u, err := Generate(in)
			if err != nil {
				t.Fatal(err)
			}
			check := func(name, kind string, want, ignore bool) {
				t.Helper()
				p, ok := u.Property(name)
				if ok != want {
					t.Fatalf("%s present %v, want %v", name, ok, want)
				}
				if !ok {
					return
				}
				hook := "/usr/libexec/berth/berth-hook" // next to berth-init
				wantCmd := []ExecCommand{{Path: hook, Args: []string{hook, kind, in.Paths.Bundle}, IgnoreFailure: ignore}}
				if !reflect.DeepEqual(p.Value, wantCmd) {
					t.Errorf("%s = %#v, want %#v", name, p.Value, wantCmd)
				}
				if p.Why == "" {
					t.Errorf("%s has no Why", name)
				}
			}
			check("ExecStartPost", "poststart", tc.postStart, false)
			check("ExecStop", "prestop", tc.stop, true)
			// The start and the exit record stay as they are.
			if p, _ := u.Property("ExecStart"); len(p.Value.([]ExecCommand)) != 1 {
				t.Errorf("ExecStart = %#v", p.Value)
			}
			if p, _ := u.Property("ExecStopPost"); len(p.Value.([]ExecCommand)) != 1 {
				t.Errorf("ExecStopPost = %#v", p.Value)
			}
			// Rendered for `berth plan` like every other property.
			if r := u.Render(); tc.stop != strings.Contains(r, "ExecStop=-/usr/libexec/berth/berth-hook prestop") {
				t.Errorf("rendered unit:\n%s", r)
			}
		})
	}
}

func ptrSignal(s corev1.Signal) *corev1.Signal { return &s }
