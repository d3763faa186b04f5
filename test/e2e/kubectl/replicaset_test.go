package kubectl

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// rsYAML is a ReplicaSet of the signed image sleeping, selecting app=<name>.
func rsYAML(ns, name, image string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  replicas: %[4]d
  selector: {matchLabels: {app: %[2]s}}
  template:
    metadata: {labels: {app: %[2]s}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: app, image: %[3]s, command: [sleep, "3600"]}]
`, ns, name, image, replicas)
}

// activePods are the names of the pods of a label selector that are not
// being deleted.
func activePods(k *client, ns, selector string) []string {
	out := k.must("get", "pods", "-n", ns, "-l", selector, "-o", `jsonpath={range .items[*]}{.metadata.name}{" "}{.metadata.deletionTimestamp}{"\n"}{end}`)
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 1 {
			names = append(names, f[0])
		}
	}
	return names
}

// podName is the upstream name of a ReplicaSet's pod: the generateName
// "<rs>-" and 5 characters of the apiserver's alphabet.
func podName(rs string) *regexp.Regexp {
	return regexp.MustCompile(`^` + rs + `-[bcdfghjklmnpqrstvwxz2456789]{5}$`)
}

// TestReplicaSets: the ReplicaSet controller on a real node with the
// stock kubectl: its pods made, named and owned as upstream makes them,
// running and counted in its status; a deleted pod replaced; scaled down;
// an orphan it selects adopted (and the surplus deleted); a quota's
// refusal as the FailedCreate Event and the ReplicaFailure condition in
// the apiserver's words; deleting it takes its pods.
func TestReplicaSets(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	img := e.signed.Ref
	k.must("create", "namespace", "rs")
	e.write("/var/tmp/front.yaml", rsYAML("rs", "front", img, 3))
	if out := k.must("create", "-f", "/var/tmp/front.yaml"); out != "replicaset.apps/front created\n" {
		t.Errorf("create: %q", out)
	}
	k.eventually("three ready pods", func(s string) bool { return s == "3 3 3" },
		"get", "rs", "front", "-n", "rs", "-o", "jsonpath={.status.replicas} {.status.readyReplicas} {.status.availableReplicas}")
	names := activePods(k, "rs", "app=front")
	if len(names) != 3 {
		t.Fatalf("pods of front: %v", names)
	}
	for _, n := range names {
		if !podName("front").MatchString(n) {
			t.Errorf("pod name %q is not front-<5 of bcdfghjklmnpqrstvwxz2456789>", n)
		}
	}
	if got := k.must("get", "pod", names[0], "-n", "rs", "-o", "jsonpath={.metadata.ownerReferences[0].apiVersion}/{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}/{.metadata.ownerReferences[0].blockOwnerDeletion} {.status.phase}"); got != "apps/v1/ReplicaSet/front/true/true Running" {
		t.Errorf("pod %s: %q", names[0], got)
	}
	if out := k.must("get", "rs", "-n", "rs"); !regexp.MustCompile(`(?m)^NAME\s+DESIRED\s+CURRENT\s+READY\s+AGE\n^front\s+3\s+3\s+3\s+\S+$`).MatchString(out) {
		t.Errorf("get rs:\n%s", out)
	}
	if out := k.must("get", "events", "-n", "rs", "--field-selector", "involvedObject.kind=ReplicaSet,reason=SuccessfulCreate", "-o", "jsonpath={range .items[*]}{.source.component}: {.message}{\"\\n\"}{end}"); strings.Count(out, "replicaset-controller: Created pod: front-") != 3 {
		t.Errorf("SuccessfulCreate events:\n%s", out)
	}

	// A pod deleted is replaced by a new one.
	k.must("delete", "pod", names[0], "-n", "rs", "--wait=false")
	k.eventually("a replacement", func(string) bool {
		now := activePods(k, "rs", "app=front")
		return len(now) == 3 && !strings.Contains(strings.Join(now, " "), names[0])
	}, "get", "rs", "front", "-n", "rs")

	// Scaled down: two pods go.
	k.must("scale", "rs", "front", "-n", "rs", "--replicas=1")
	k.eventually("scaled to 1", func(s string) bool { return s == "1" && len(activePods(k, "rs", "app=front")) == 1 },
		"get", "rs", "front", "-n", "rs", "-o", "jsonpath={.status.replicas}")

	// An orphan it selects is adopted, and the surplus deleted.
	e.write("/var/tmp/orphan.yaml", `apiVersion: v1
kind: Pod
metadata: {name: orphan, namespace: rs, labels: {app: front}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: app, image: `+img+`, command: [sleep, "3600"]}]
`)
	k.must("create", "-f", "/var/tmp/orphan.yaml")
	k.eventually("one pod after the adoption", func(s string) bool { return len(activePods(k, "rs", "app=front")) == 1 },
		"get", "pods", "-n", "rs")
	if out, _, err := k.kubectl("orphan", "get", "pod", "orphan", "-n", "rs", "-o", "jsonpath={.metadata.ownerReferences[0].name}"); err == nil && out != "front" {
		t.Errorf("the orphan, still there, is owned by %q, want front", out)
	}

	// A quota stops it: two pods, the third refused in the apiserver's
	// words, as the FailedCreate Event and the ReplicaFailure condition.
	k.must("create", "namespace", "rsq")
	e.write("/var/tmp/rsq.yaml", "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: two, namespace: rsq}\nspec:\n  hard: {pods: \"2\"}\n")
	k.must("create", "-f", "/var/tmp/rsq.yaml")
	e.write("/var/tmp/capped.yaml", rsYAML("rsq", "capped", img, 3))
	k.must("create", "-f", "/var/tmp/capped.yaml")
	cond := k.eventually("the ReplicaFailure condition", contains("ReplicaFailure True FailedCreate"),
		"get", "rs", "capped", "-n", "rsq", "-o", "jsonpath={range .status.conditions[*]}{.type} {.status} {.reason} {.message}{end}")
	if !regexp.MustCompile(`FailedCreate pods "capped-[bcdfghjklmnpqrstvwxz2456789]{5}" is forbidden: exceeded quota: two, requested: pods=1, used: pods=2, limited: pods=2$`).MatchString(cond) {
		t.Errorf("condition: %q", cond)
	}
	if got := k.must("get", "rs", "capped", "-n", "rsq", "-o", "jsonpath={.status.replicas}"); got != "2" {
		t.Errorf("capped has %s pods, want the quota's 2", got)
	}
	ev := k.eventually("the FailedCreate event", contains("Error creating: "),
		"get", "events", "-n", "rsq", "--field-selector", "reason=FailedCreate", "-o", "jsonpath={range .items[*]}{.type} {.source.component} {.message}{\"\\n\"}{end}")
	if !regexp.MustCompile(`(?m)^Warning replicaset-controller Error creating: pods "capped-[bcdfghjklmnpqrstvwxz2456789]{5}" is forbidden: exceeded quota: two, requested: pods=1, used: pods=2, limited: pods=2$`).MatchString(ev) {
		t.Errorf("FailedCreate events:\n%s", ev)
	}
	// Room made: the third comes, the condition goes.
	k.must("patch", "quota", "two", "-n", "rsq", "--type", "merge", "-p", `{"spec":{"hard":{"pods":"3"}}}`)
	k.eventually("three pods and no failure", func(s string) bool { return s == "3 " },
		"get", "rs", "capped", "-n", "rsq", "-o", "jsonpath={.status.replicas} {.status.conditions}")

	// Deleting the ReplicaSet takes its pods (background propagation).
	if _, msg, err := k.kubectl("/replicasets/front", "delete", "rs", "front", "-n", "rs"); err != nil {
		t.Fatalf("delete rs: %v %s", err, msg)
	}
	k.eventually("front's pods gone", func(s string) bool { return strings.TrimSpace(s) == "" },
		"get", "pods", "-n", "rs", "-l", "app=front", "-o", "name")
}
