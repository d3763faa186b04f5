package reconcile

import (
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/unitgen"
)

// The pause of a pod that shares its process namespace
// (berth-<ns>_<pod>_POD.service) is its pod's: kept with a stored pod,
// stopped with an orphan pod, also under a shortened key.
func TestPauseUnitGoesWithItsPod(t *testing.T) {
	for _, name := range []string{"web", strings.Repeat("a", 240)} {
		pause := unit("default", name, unitgen.PauseContainer, "active")
		h := &fakeHost{h: pods.Host{
			Pods:    []pods.HostPod{hostPod("default", name, "u1", "app")},
			Units:   []pods.HostUnit{unit("default", name, "app", "active"), pause},
			Bundles: []string{ck("default", name, "app")},
		}}
		rep, err, _ := run(t, fakeStore{storedPod("default", name, "u1", "app")}, h)
		if err != nil || len(h.ops) != 0 || len(rep.Adopted) != 1 {
			t.Fatalf("%s stored: %v, ops %v, report %+v", pause.Name, err, h.ops, rep)
		}
		rep, err, _ = run(t, fakeStore{}, h)
		if err != nil || len(rep.Removed) != 1 || !rep.Removed[0].Dirs || !slices.Contains(rep.Removed[0].Units, pause.Name) {
			t.Fatalf("%s orphaned: %v, removed %+v", pause.Name, err, rep.Removed)
		}
		if !slices.Contains(h.ops, "stop "+pause.Name) {
			t.Errorf("orphan's pause not stopped: ops %v", h.ops)
		}
	}
}
