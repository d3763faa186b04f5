package kubectl

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// deployYAML is a Deployment of the signed image sleeping, selecting
// app=<name>; note is an environment variable, a template change.
func deployYAML(ns, name, image, strategy, note string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  replicas: %[5]d
  selector: {matchLabels: {app: %[2]s}}
  strategy: %[4]s
  template:
    metadata: {labels: {app: %[2]s}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: %[3]s
        command: [sleep, "3600"]
        env: [{name: NOTE, value: %[6]q}]
`, ns, name, image, strategy, replicas, note)
}

// TestDeployments: the Deployment controller on a real node with the
// stock kubectl: a Deployment's ReplicaSet named <deployment>-<hash>, its
// pods <replicaset>-<5>, kubectl rollout status finishing; a template
// change rolled out to a second ReplicaSet (revision 2) while the first is
// scaled to 0, with upstream's events; rollout history and undo; pause,
// set image, resume, restart; scale; Recreate; a rollout past its
// progressDeadlineSeconds; deleting the Deployment takes its ReplicaSets
// and pods.
func TestDeployments(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	img := e.signed.Ref
	k.must("create", "namespace", "dep")
	e.write("/var/tmp/web1.yaml", deployYAML("dep", "web", img, "{}", "one", 3))
	e.write("/var/tmp/web2.yaml", deployYAML("dep", "web", img, "{}", "two", 3))
	k.must("create", "-f", "/var/tmp/web1.yaml")
	if out, msg, err := k.kubectl("", "rollout", "status", "deployment/web", "-n", "dep", "--timeout=2m"); err != nil || !strings.Contains(out, `deployment "web" successfully rolled out`) {
		t.Fatalf("rollout status: %v\n%s%s", err, out, msg)
	}
	rs1 := strings.TrimSpace(k.must("get", "rs", "-n", "dep", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"))
	if !regexp.MustCompile(`^web-[bcdfghjklmnpqrstvwxz2456789]+$`).MatchString(rs1) {
		t.Errorf("replicaset name %q", rs1)
	}
	hash := strings.TrimPrefix(rs1, "web-")
	if got := k.must("get", "rs", rs1, "-n", "dep", "-o", `jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.metadata.annotations.deployment\.kubernetes\.io/revision} {.spec.selector.matchLabels.pod-template-hash} {.spec.replicas}`); got != "Deployment/web 1 "+hash+" 3" {
		t.Errorf("replicaset %s: %q", rs1, got)
	}
	pods := activePods(k, "dep", "app=web")
	if len(pods) != 3 || !podName(rs1).MatchString(pods[0]) {
		t.Errorf("pods %v, want 3 named %s-<5>", pods, rs1)
	}
	got := k.must("get", "deploy", "web", "-n", "dep", "-o", `jsonpath={.status.replicas} {.status.updatedReplicas} {.status.readyReplicas} {.status.availableReplicas} {.status.observedGeneration} {.metadata.annotations.deployment\.kubernetes\.io/revision}`)
	if got != "3 3 3 3 1 1" {
		t.Errorf("status: %q", got)
	}
	conds := k.must("get", "deploy", "web", "-n", "dep", "-o", `jsonpath={range .status.conditions[*]}{.type}={.status}/{.reason}: {.message}{"\n"}{end}`)
	for _, want := range []string{"Available=True/MinimumReplicasAvailable: Deployment has minimum availability.",
		`Progressing=True/NewReplicaSetAvailable: ReplicaSet "` + rs1 + `" has successfully progressed.`} {
		if !strings.Contains(conds, want) {
			t.Errorf("conditions:\n%s\nlack %s", conds, want)
		}
	}
	if out := k.must("get", "deploy", "-n", "dep"); !regexp.MustCompile(`(?m)^web\s+3/3\s+3\s+3\s+\S+$`).MatchString(out) {
		t.Errorf("get deploy:\n%s", out)
	}

	// A new template: a second ReplicaSet, revision 2, the first scaled
	// to 0 within maxSurge and maxUnavailable (25% of 3: 1 and 0).
	k.must("apply", "-f", "/var/tmp/web2.yaml")
	if out, msg, err := k.kubectl("", "rollout", "status", "deployment/web", "-n", "dep", "--timeout=2m"); err != nil || !strings.Contains(out, `deployment "web" successfully rolled out`) {
		t.Fatalf("rollout status after the change: %v\n%s%s", err, out, msg)
	}
	sets := k.must("get", "rs", "-n", "dep", "-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.replicas} {.metadata.annotations.deployment\.kubernetes\.io/revision}{"\n"}{end}`)
	if !strings.Contains(sets, rs1+" 0 1\n") || !regexp.MustCompile(`(?m)^web-\S+ 3 2$`).MatchString(sets) {
		t.Errorf("replicasets after the rollout:\n%s", sets)
	}
	for _, p := range activePods(k, "dep", "app=web") {
		if env := k.must("get", "pod", p, "-n", "dep", "-o", "jsonpath={.spec.containers[0].env[0].value}"); env != "two" {
			t.Errorf("pod %s runs the old template (%s)", p, env)
		}
	}
	ev := k.must("get", "events", "-n", "dep", "--field-selector", "involvedObject.kind=Deployment", "-o", `jsonpath={range .items[*]}{.source.component}: {.message}{"\n"}{end}`)
	for _, want := range []string{"deployment-controller: Scaled up replica set " + rs1 + " to 3",
		"deployment-controller: Scaled down replica set " + rs1 + " to 2 from 3"} {
		if !strings.Contains(ev, want) {
			t.Errorf("events:\n%s\nlack %s", ev, want)
		}
	}
	if out := k.must("rollout", "history", "deployment/web", "-n", "dep"); !regexp.MustCompile(`(?m)^1\s+<none>\n2\s+<none>`).MatchString(out) {
		t.Errorf("rollout history:\n%s", out)
	}
	// Undo: the first template again, as revision 3.
	k.must("rollout", "undo", "deployment/web", "-n", "dep")
	k.must("rollout", "status", "deployment/web", "-n", "dep", "--timeout=2m")
	if got := k.must("get", "rs", rs1, "-n", "dep", "-o", `jsonpath={.spec.replicas} {.metadata.annotations.deployment\.kubernetes\.io/revision}`); got != "3 3" {
		t.Errorf("after undo, %s: %q, want 3 replicas at revision 3", rs1, got)
	}

	// Paused: a new image makes no ReplicaSet until the rollout resumes.
	k.must("rollout", "pause", "deployment/web", "-n", "dep")
	byDigest := strings.TrimSuffix(img, ":1") + "@" + e.signed.Digest
	k.must("set", "image", "deployment/web", "app="+byDigest, "-n", "dep")
	k.eventually("the Deployment paused", contains("Progressing=Unknown/DeploymentPaused: Deployment is paused"),
		"get", "deploy", "web", "-n", "dep", "-o", `jsonpath={range .status.conditions[*]}{.type}={.status}/{.reason}: {.message}{"\n"}{end}`)
	if n := len(strings.Fields(k.must("get", "rs", "-n", "dep", "-l", "app=web", "-o", "name"))); n != 2 {
		t.Errorf("%d replicasets while paused, want 2", n)
	}
	k.must("rollout", "resume", "deployment/web", "-n", "dep")
	k.must("rollout", "status", "deployment/web", "-n", "dep", "--timeout=2m")
	for _, p := range activePods(k, "dep", "app=web") {
		if im := k.must("get", "pod", p, "-n", "dep", "-o", "jsonpath={.spec.containers[0].image}"); im != byDigest {
			t.Errorf("pod %s after set image: %s", p, im)
		}
	}
	// Restart: the same template with kubectl's restartedAt annotation, a
	// new ReplicaSet at revision 5.
	k.must("rollout", "restart", "deployment/web", "-n", "dep")
	k.must("rollout", "status", "deployment/web", "-n", "dep", "--timeout=2m")
	if got := k.must("get", "deploy", "web", "-n", "dep", "-o", `jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision} {.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}`); !regexp.MustCompile(`^5 \d{4}-\d\d-\d\dT`).MatchString(got) {
		t.Errorf("after rollout restart: %q, want revision 5 and restartedAt", got)
	}
	if n := len(strings.Fields(k.must("get", "rs", "-n", "dep", "-l", "app=web", "-o", "name"))); n != 4 {
		t.Errorf("%d replicasets after the restart, want 4", n)
	}

	// Scale: the ReplicaSet follows.
	k.must("scale", "deployment", "web", "-n", "dep", "--replicas=1")
	k.eventually("scaled to 1", func(s string) bool { return s == "1 1" },
		"get", "deploy", "web", "-n", "dep", "-o", "jsonpath={.status.replicas} {.status.availableReplicas}")

	// Recreate: the old pods go before the new ones come.
	e.write("/var/tmp/re1.yaml", deployYAML("dep", "re", img, "{type: Recreate}", "one", 2))
	e.write("/var/tmp/re2.yaml", deployYAML("dep", "re", img, "{type: Recreate}", "two", 2))
	k.must("create", "-f", "/var/tmp/re1.yaml")
	k.must("rollout", "status", "deployment/re", "-n", "dep", "--timeout=2m")
	k.must("apply", "-f", "/var/tmp/re2.yaml")
	k.must("rollout", "status", "deployment/re", "-n", "dep", "--timeout=2m")
	if got := k.must("get", "deploy", "re", "-n", "dep", "-o", "jsonpath={.status.updatedReplicas} {.status.availableReplicas}"); got != "2 2" {
		t.Errorf("recreate: %q", got)
	}

	// A rollout that cannot progress (its pods never ready): kubectl's
	// rollout status ends with the deadline, as on a cluster.
	e.write("/var/tmp/stuck.yaml", `apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck, namespace: dep}
spec:
  replicas: 1
  progressDeadlineSeconds: 5
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: `+img+`
        command: [sleep, "3600"]
        readinessProbe: {exec: {command: ["false"]}, periodSeconds: 1}
`)
	k.must("create", "-f", "/var/tmp/stuck.yaml")
	if out, msg, err := k.kubectl("", "rollout", "status", "deployment/stuck", "-n", "dep", "--timeout=2m"); err == nil || !strings.Contains(msg, `deployment "stuck" exceeded its progress deadline`) {
		t.Errorf("rollout status of a stuck Deployment: %v\n%s%s", err, out, msg)
	}
	if got := k.must("get", "deploy", "stuck", "-n", "dep", "-o", `jsonpath={.status.conditions[?(@.type=="Progressing")].reason}`); got != "ProgressDeadlineExceeded" {
		t.Errorf("stuck's Progressing reason: %q", got)
	}

	// Deleting a Deployment takes its ReplicaSets and their pods.
	if _, msg, err := k.kubectl("/deployments/web", "delete", "deployment", "web", "-n", "dep"); err != nil {
		t.Fatalf("delete: %v %s", err, msg)
	}
	k.eventually("web's replicasets and pods gone", func(s string) bool { return strings.TrimSpace(s) == "" },
		"get", "rs,pods", "-n", "dep", "-l", "app=web", "-o", "name")
}

// TestRolloutSurvivesKill: berthd is SIGKILLed in the middle of a
// 50-pod rolling update and restarted; the rollout finishes with exactly
// 50 pods, all of the new template (no duplicate, none lost), the old
// ReplicaSet at 0, and no pod of it left.
func TestRolloutSurvivesKill(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	img := e.signed.Ref
	k.must("create", "namespace", "big")
	e.write("/var/tmp/big1.yaml", deployYAML("big", "big", img, "{}", "one", 50))
	e.write("/var/tmp/big2.yaml", deployYAML("big", "big", img, "{}", "two", 50))
	k.must("create", "-f", "/var/tmp/big1.yaml")
	if out, msg, err := k.kubectl("", "rollout", "status", "deployment/big", "-n", "big", "--timeout=5m"); err != nil || !strings.Contains(out, "successfully rolled out") {
		t.Fatalf("rollout status: %v\n%s%s", err, out, msg)
	}
	rs1 := strings.TrimSpace(k.must("get", "rs", "-n", "big", "-o", "jsonpath={.items[0].metadata.name}"))
	k.must("apply", "-f", "/var/tmp/big2.yaml")
	// Killed once the new ReplicaSet has some pods, before it has all.
	k.eventually("the rollout under way", func(s string) bool {
		f := strings.Fields(s)
		return len(f) == 2 && f[0] != "" && f[0] != "0" && f[0] != "50"
	}, "get", "deployment", "big", "-n", "big", "-o", "jsonpath={.status.updatedReplicas} {.status.replicas}")
	e.kill()
	e.waitBerthd()
	if out, msg, err := k.kubectl("", "rollout", "status", "deployment/big", "-n", "big", "--timeout=5m"); err != nil || !strings.Contains(out, "successfully rolled out") {
		t.Fatalf("rollout status after the kill: %v\n%s%s", err, out, msg)
	}
	k.eventually("the old pods gone", func(s string) bool { return strings.TrimSpace(s) == "" },
		"get", "pods", "-n", "big", "-l", "pod-template-hash="+strings.TrimPrefix(rs1, "big-"), "-o", "name")
	pods := activePods(k, "big", "app=big")
	rs2 := strings.TrimSpace(k.must("get", "deploy", "big", "-n", "big", "-o", `jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}`))
	if len(pods) != 50 || rs2 != "2" {
		t.Errorf("%d pods at revision %s, want 50 at 2", len(pods), rs2)
	}
	for _, p := range pods {
		if strings.HasPrefix(p, rs1+"-") {
			t.Errorf("pod %s of the old ReplicaSet", p)
		}
	}
	if got := k.must("get", "rs", rs1, "-n", "big", "-o", "jsonpath={.spec.replicas} {.status.replicas}"); got != "0 0" {
		t.Errorf("old replicaset: %q", got)
	}
	if got := k.must("get", "deploy", "big", "-n", "big", "-o", "jsonpath={.status.replicas} {.status.updatedReplicas} {.status.availableReplicas}"); got != "50 50 50" {
		t.Errorf("status: %q", got)
	}
}

// TestRollingUpdateAvailability: a rolling update of 6 pods with
// maxUnavailable 1 and maxSurge 2, watched from start to end with the
// stock kubectl's `get pods -w --output-watch-events`: at no event are
// fewer than 5 pods ready and not being deleted, nor more than 8 pods not
// being deleted; the rollout ends with 6 pods of the new template. Then
// scale to 0 (no pod left, the ReplicaSet at 0) and back to 6.
func TestRollingUpdateAvailability(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	img := e.signed.Ref
	const replicas, minAvailable, maxPods = 6, 5, 8
	strategy := "{type: RollingUpdate, rollingUpdate: {maxUnavailable: 1, maxSurge: 2}}"
	k.must("create", "namespace", "ru")
	e.write("/var/tmp/ru1.yaml", deployYAML("ru", "ru", img, strategy, "one", replicas))
	e.write("/var/tmp/ru2.yaml", deployYAML("ru", "ru", img, strategy, "two", replicas))
	k.must("create", "-f", "/var/tmp/ru1.yaml")
	k.must("rollout", "status", "deployment/ru", "-n", "ru", "--timeout=2m")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	watch := e.follow(ctx, "get", "pods", "-n", "ru", "-l", "app=ru", "-w", "--output-watch-events", "-o",
		`jsonpath={.type} {.object.metadata.name} deleting={.object.metadata.deletionTimestamp} ready={.object.status.conditions[?(@.type=="Ready")].status}{"\n"}`)
	events := &lockedBuffer{}
	watch.Stdout = events
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
	waitFor(t, "the watch to list the first pods", func() bool { return strings.Count(events.String(), "\n") >= replicas })
	k.must("apply", "-f", "/var/tmp/ru2.yaml")
	k.must("rollout", "status", "deployment/ru", "-n", "ru", "--timeout=3m")
	k.eventually("the old pods gone", func(s string) bool { return len(strings.Fields(s)) == replicas },
		"get", "pods", "-n", "ru", "-l", "app=ru", "-o", "name")
	_ = watch.Process.Kill()
	_ = watch.Wait()

	// Replay the events: a pod counts as available while it is Ready and
	// has no deletionTimestamp, as the Deployment controller counts it.
	type state struct{ ready, deleting bool }
	pods := map[string]state{}
	lines := strings.Split(strings.TrimSpace(events.String()), "\n")
	lowest, highest := replicas, 0
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) != 4 || !strings.HasPrefix(f[2], "deleting=") || !strings.HasPrefix(f[3], "ready=") {
			t.Fatalf("watch line %q", line)
		}
		switch f[0] {
		case "ADDED", "MODIFIED":
			pods[f[1]] = state{ready: f[3] == "ready=True", deleting: f[2] != "deleting="}
		case "DELETED":
			delete(pods, f[1])
		default:
			t.Fatalf("watch line %q", line)
		}
		if i < replicas-1 { // the initial listing, pod by pod
			continue
		}
		available, live := 0, 0
		for _, s := range pods {
			if !s.deleting {
				live++
				if s.ready {
					available++
				}
			}
		}
		lowest, highest = min(lowest, available), max(highest, live)
		if available < minAvailable || live > maxPods {
			t.Errorf("event %d (%s): %d pods available, %d not deleting; want at least %d and at most %d", i, line, available, live, minAvailable, maxPods)
		}
	}
	t.Logf("%d watch events; available pods never below %d, pods never above %d", len(lines), lowest, highest)
	if len(lines) < 4*replicas {
		t.Errorf("only %d watch events for a rollout of %d pods:\n%s", len(lines), replicas, events.String())
	}
	for _, p := range activePods(k, "ru", "app=ru") {
		if env := k.must("get", "pod", p, "-n", "ru", "-o", "jsonpath={.spec.containers[0].env[0].value}"); env != "two" {
			t.Errorf("pod %s runs the old template (%s)", p, env)
		}
	}

	// Scale to 0 and back.
	k.must("scale", "deployment", "ru", "-n", "ru", "--replicas=0")
	k.eventually("no pod left", func(s string) bool { return strings.TrimSpace(s) == "" },
		"get", "pods", "-n", "ru", "-l", "app=ru", "-o", "name")
	if got := k.must("get", "deploy", "ru", "-n", "ru", "-o", "jsonpath={.spec.replicas} {.status.replicas} {.status.availableReplicas}"); got != "0  " { // replicas and availableReplicas are omitempty
		t.Errorf("scaled to 0: %q", got)
	}
	k.must("scale", "deployment", "ru", "-n", "ru", "--replicas=6")
	k.must("rollout", "status", "deployment/ru", "-n", "ru", "--timeout=2m")
	if pods := activePods(k, "ru", "app=ru"); len(pods) != replicas {
		t.Errorf("scaled back: %d pods, want %d", len(pods), replicas)
	}
	if got := k.must("get", "rs", "-n", "ru", "-o", `jsonpath={range .items[*]}{.spec.replicas} {end}`); strings.Count(got, "6") != 1 || strings.Count(got, "0") != 1 {
		t.Errorf("replicasets after scaling back: %q, want one at 6 and one at 0", got)
	}
}
