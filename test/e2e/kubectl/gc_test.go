package kubectl

import (
	"strings"
	"testing"
)

// TestDeletePropagation: kubectl delete's --cascade on a real node, as
// the garbage collector answers it (agent/controllers/gc): orphan leaves
// the ReplicaSet and its pods running, released; foreground deletes the
// pods before their ReplicaSet, which kubectl waits for; background (the
// default) takes the owner at once and its dependents after.
func TestDeletePropagation(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	img := e.signed.Ref
	k.must("create", "namespace", "gc")
	e.write("/var/tmp/gc.yaml", deployYAML("gc", "web", img, "{}", "one", 2))
	k.must("create", "-f", "/var/tmp/gc.yaml")
	if out, msg, err := k.kubectl("", "rollout", "status", "deployment/web", "-n", "gc", "--timeout=2m"); err != nil || !strings.Contains(out, "successfully rolled out") {
		t.Fatalf("rollout status: %v\n%s%s", err, out, msg)
	}
	rs := strings.TrimSpace(k.must("get", "rs", "-n", "gc", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"))
	pods := activePods(k, "gc", "app=web")

	// Orphan: the Deployment goes, its ReplicaSet stays, released, and
	// keeps its pods.
	if out, msg, err := k.kubectl("deployments/web", "delete", "deployment", "web", "-n", "gc", "--cascade=orphan"); err != nil || !strings.Contains(out, `deployment.apps "web" deleted`) {
		t.Fatalf("delete --cascade=orphan: %v %s%s", err, out, msg)
	}
	k.eventually("the deployment gone", func(s string) bool { return strings.TrimSpace(s) == "" }, "get", "deployments", "-n", "gc", "-o", "name")
	k.eventually("the replicaset released", func(s string) bool { return s == rs+"|" },
		"get", "rs", "-n", "gc", "-o", `jsonpath={range .items[*]}{.metadata.name}|{.metadata.ownerReferences}{end}`)
	if got := activePods(k, "gc", "app=web"); strings.Join(got, " ") != strings.Join(pods, " ") {
		t.Errorf("pods after orphaning: %v, were %v", got, pods)
	}

	// Foreground: kubectl waits while the pods go first, then the
	// ReplicaSet.
	if out, msg, err := k.kubectl("replicasets/"+rs, "delete", "rs", rs, "-n", "gc", "--cascade=foreground", "--wait=false"); err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("delete --cascade=foreground: %v %s%s", err, out, msg)
	}
	if got := k.must("get", "rs", rs, "-n", "gc", "-o", "jsonpath={.metadata.finalizers} {.metadata.deletionTimestamp}"); !strings.HasPrefix(got, `["foregroundDeletion"] 20`) {
		t.Errorf("a replicaset deleted in the foreground: %q", got)
	}
	if out, msg, err := k.kubectl("replicasets/"+rs, "wait", "--for=delete", "rs/"+rs, "-n", "gc", "--timeout=2m"); err != nil {
		t.Fatalf("wait for the replicaset: %v %s%s", err, out, msg)
	}
	if out := k.must("get", "pods", "-n", "gc", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("pods left after their replicaset went in the foreground:\n%s", out)
	}
}
