package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berth-dev/berth/unitgen"
)

// One answer to "what is this pod called": a pod name that is a DNS
// subdomain runs, spec.hostname and spec.subdomain reach the UTS namespace,
// $HOSTNAME, /etc/hostname and /etc/hosts alike, and a name that is not a
// valid pod name is refused before any path is built from it.
func TestPodNamesAndHostname(t *testing.T) {
	e := newEnv(t)
	e.mustStartPod("web.v1", pod("web.v1", "  hostname: db-0\n  subdomain: db\n"+sleeper))
	unit := unitgen.UnitName("default", "web.v1", "main")
	if unit != "berth-default_web.v1_main.service" {
		t.Fatalf("unit name %s", unit)
	}
	pid := e.mainPID(unit)
	if got := strings.TrimSpace(e.inContainer(pid, "hostname")); got != "db-0" {
		t.Errorf("UTS hostname = %q, want spec.hostname", got)
	}
	env := e.run("cat", fmt.Sprintf("/proc/%d/environ", pid))
	if !strings.Contains("\x00"+env, "\x00HOSTNAME=db-0\x00") {
		t.Errorf("environment lacks HOSTNAME=db-0: %q", env)
	}
	if got := strings.TrimSpace(e.inContainer(pid, "cat", "/etc/hostname")); got != "db-0" {
		t.Errorf("/etc/hostname = %q", got)
	}
	hosts := e.inContainer(pid, "cat", "/etc/hosts")
	if !strings.Contains(hosts, "db-0.db.default.svc.cluster.local\tdb-0\n") {
		t.Errorf("/etc/hosts lacks the pod's FQDN line:\n%s", hosts)
	}

	// Hostile names: refused with the apiserver's words, nothing touched.
	e.run("mkdir", "-p", "/var/tmp/victim/keep")
	for _, name := range []string{"default/x/../../../../var/tmp/victim", "../../../var/tmp/victim", "default/Web_1"} {
		out, err := e.n.Run(e.ctx(), "berthd", "pod", "rm", name)
		if err == nil || !strings.Contains(out+err.Error(), "Invalid value") {
			t.Errorf("pod rm %q: %v\n%s", name, err, out)
		}
	}
	e.run("test", "-d", "/var/tmp/victim/keep")
	e.run("berthd", "pod", "rm", "default/web.v1")
}
