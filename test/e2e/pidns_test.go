package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berth-dev/berth/unitgen"
)

const sharedPIDPod = `  shareProcessNamespace: true
  containers:
  - name: sleeper
    image: busybox:e2e
    command: ["sleep", "1234"]
  - name: looker
    image: busybox:e2e
    command: ["sleep", "3600"]
`

// nsPIDs is the NSpid line of a process in the node: its PID in each PID
// namespace it is in, the outermost first.
func (e *env) nsPIDs(pid int) []string {
	e.t.Helper()
	for _, line := range strings.Split(e.run("cat", fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			return strings.Fields(v)
		}
	}
	e.t.Fatalf("no NSpid for %d", pid)
	return nil
}

// gone reports whether systemd no longer has unit, or has it dead.
func (e *env) gone(unit string) bool {
	switch e.show(unit, "ActiveState") {
	case "inactive", "failed":
		return true
	}
	return e.show(unit, "LoadState") == "not-found"
}

// spec.shareProcessNamespace: true on a real node: the pod's containers
// share one PID namespace whose PID 1 is the pod's pause (a unit of its
// own), see each other's processes and are not PID 1; a pod without the
// field keeps a PID namespace per container; removing the pod removes the
// pause and its pin; killing the pause kills the pod's containers, which
// stay down.
func TestPIDNSShared(t *testing.T) {
	e := newEnv(t)
	e.mustStartPod("shared", pod("shared", sharedPIDPod))
	e.mustStartPod("solo", pod("solo", sleeper))
	pauseUnit := unitgen.PauseUnitName("default", "shared")
	pin := "/run/berth/pods/" + unitgen.PodKey("default", "shared") + "/" + unitgen.PIDNSPin

	if s := e.show(pauseUnit, "ActiveState"); s != "active" {
		t.Fatalf("%s is %s, want active\n%s", pauseUnit, s, e.journal(pauseUnit))
	}
	for prop, want := range map[string]string{"Restart": "no", "Type": "forking", "NoNewPrivileges": "yes"} {
		if got := e.show(pauseUnit, prop); got != want {
			t.Errorf("%s %s=%s, want %s", pauseUnit, prop, got, want)
		}
	}
	pause := e.mainPID(pauseUnit)
	if got := e.nsPIDs(pause); len(got) != 2 || got[1] != "1" {
		t.Errorf("pause NSpid %v, want PID 1 of a namespace of its own", got)
	}
	sleeperUnit := unitgen.UnitName("default", "shared", "sleeper")
	lookerUnit := unitgen.UnitName("default", "shared", "looker")
	for _, u := range []string{sleeperUnit, lookerUnit} {
		if got := e.show(u, "BindsTo"); got != pauseUnit {
			t.Errorf("%s BindsTo=%q, want %s", u, got, pauseUnit)
		}
	}
	sleeperPID, lookerPID := e.mainPID(sleeperUnit), e.mainPID(lookerUnit)
	sleeperNS := e.nsPIDs(sleeperPID)
	if len(sleeperNS) != 2 || sleeperNS[1] == "1" {
		t.Errorf("sleeper NSpid %v, want not PID 1 of the pod's namespace", sleeperNS)
	}
	for _, pid := range []int{sleeperPID, lookerPID} {
		same := e.run("sh", "-c", fmt.Sprintf("[ $(readlink /proc/%d/ns/pid) = $(readlink /proc/%d/ns/pid) ] && echo same", pid, pause))
		if strings.TrimSpace(same) != "same" {
			t.Errorf("process %d is not in the pause's PID namespace", pid)
		}
	}
	// What the looker sees in its /proc: the pause as PID 1, the other
	// container's process, itself not PID 1.
	if got := strings.TrimSpace(e.inContainer(lookerPID, "cat", "/proc/1/comm")); got != "pause" {
		t.Errorf("PID 1 in the looker's /proc is %q, want the pause", got)
	}
	ps := e.inContainer(lookerPID, "ps", "-o", "pid,args")
	if !strings.Contains(ps, "sleep 1234") || !strings.Contains(ps, sleeperNS[1]+" ") {
		t.Errorf("ps in the looker does not show the sleeper (PID %s):\n%s", sleeperNS[1], ps)
	}
	if got := e.nsPIDs(lookerPID); len(got) != 2 || got[1] == "1" {
		t.Errorf("looker NSpid %v, want not PID 1", got)
	}
	// The pod without the field: the workload is PID 1 of its own.
	soloPID := e.mainPID(unitgen.UnitName("default", "solo", "main"))
	if got := e.nsPIDs(soloPID); len(got) != 2 || got[1] != "1" {
		t.Errorf("solo NSpid %v, want PID 1 of its own namespace", got)
	}
	if s := e.show(unitgen.PauseUnitName("default", "solo"), "LoadState"); s != "not-found" {
		t.Errorf("a pod without shareProcessNamespace has a pause unit (%s)", s)
	}
	if mounts := e.run("findmnt", "-rn", "-o", "TARGET"); !strings.Contains(mounts, pin+"\n") {
		t.Errorf("the pause's namespace is not pinned at %s:\n%s", pin, mounts)
	}

	// Removal takes the pause and its pin with it.
	e.run("berthd", "pod", "rm", "default/shared")
	for _, u := range []string{pauseUnit, sleeperUnit, lookerUnit} {
		if !e.gone(u) {
			t.Errorf("%s still there after pod rm", u)
		}
	}
	if mounts := e.run("findmnt", "-rn", "-o", "TARGET"); strings.Contains(mounts, "/run/berth/pods/"+unitgen.PodKey("default", "shared")) {
		t.Errorf("mounts of the pod left after pod rm:\n%s", mounts)
	}

	// A dead pause takes the pod's processes with it, and systemd stops
	// its containers' units (BindsTo=) instead of restarting them.
	e.mustStartPod("doomed", pod("doomed", sharedPIDPod))
	doomedPause := unitgen.PauseUnitName("default", "doomed")
	ctrs := []string{unitgen.UnitName("default", "doomed", "sleeper"), unitgen.UnitName("default", "doomed", "looker")}
	e.run("kill", "-TERM", fmt.Sprint(e.mainPID(doomedPause)))
	e.waitFor("the pause and the containers to stop", func() bool {
		for _, u := range append([]string{doomedPause}, ctrs...) {
			if !e.gone(u) {
				return false
			}
		}
		return true
	})
	for _, st := range e.status("doomed") {
		if st.State.Running != nil {
			t.Errorf("container %s of a dead pause runs: %+v", st.Name, st.State)
		}
	}
	e.run("berthd", "pod", "rm", "default/doomed")
	if mounts := e.run("findmnt", "-rn", "-o", "TARGET"); strings.Contains(mounts, "/run/berth/pods/") && strings.Contains(mounts, "doomed") {
		t.Errorf("mounts of the pod left after pod rm:\n%s", mounts)
	}
	e.run("berthd", "pod", "rm", "default/solo")
}
