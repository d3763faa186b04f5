package berthinit

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/unitgen"
)

// berth-init cannot link unitgen (test/deptest): the pause's file names
// and command line are written twice, and must agree.
func TestPauseUnitMatches(t *testing.T) {
	if unitgen.PausePIDFile != pausePIDFile || unitgen.PIDNSPin != pidNSPin || unitgen.PauseUID != pauseUID {
		t.Errorf("unitgen's pause layout (%s, %s, uid %d) differs from berth-init's (%s, %s, uid %d)",
			unitgen.PausePIDFile, unitgen.PIDNSPin, unitgen.PauseUID, pausePIDFile, pidNSPin, pauseUID)
	}
	yes := true
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: corev1.PodSpec{ShareProcessNamespace: &yes}}
	u, err := unitgen.PauseUnit(unitgen.PauseInput{Pod: pod, Init: "/bin/berth-init", Dir: "/run/berth/pods/default_web", StateDir: "/var/lib/berth"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := u.Property("ExecStart")
	want := []unitgen.ExecCommand{{Path: "/bin/berth-init", Args: []string{"/bin/berth-init", "pause", "/run/berth/pods/default_web"}}}
	if !reflect.DeepEqual(p.Value, want) {
		t.Errorf("ExecStart = %+v, want %+v (what pauseMain takes)", p.Value, want)
	}
}
