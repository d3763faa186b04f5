package server

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/store"
)

// finishDeletions plays the pod worker's part of a graceful deletion (no
// worker runs in these tests): every pod that is or becomes terminating is
// finished with store.FinishDeletion, as the worker does once it has
// stopped the pod's containers.
func finishDeletions(t *testing.T, st *store.Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	finish := func(data []byte) {
		var p corev1.Pod
		if json.Unmarshal(data, &p) == nil && p.DeletionTimestamp != nil {
			_ = st.FinishDeletion("pods", p.Namespace, p.Name, p.UID)
		}
	}
	var existing [][]byte
	rv, err := st.List("pods", "", func(data []byte) error {
		existing = append(existing, data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Watch(ctx, "pods", "", rv)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for _, data := range existing {
			finish(data)
		}
		for ev := range w.Events() {
			if ev.Type != store.Deleted {
				finish(ev.Object)
			}
		}
	}()
}

// The verbs beyond get/create with the stock kubectl: label, annotate,
// patch of each type, replace (and its Conflict), server-side apply's
// refusal, graceful and forced delete, delete by label.
func TestStockKubectlVerbs(t *testing.T) {
	k, st := newKubectl(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	podYAML := func(name, labels string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", labels: {" + labels + "}}\nspec:\n  containers: [{name: app, image: busybox}]\n"
	}
	pod := write("pod.yaml", podYAML("web", "app: web"))
	k.ok("create", "--validate=false", "-f", pod)

	if out := k.ok("label", "pod", "web", "tier=front"); out != "pod/web labeled\n" {
		t.Errorf("label: %q", out)
	}
	if out := k.ok("annotate", "pod", "web", "note=hello"); out != "pod/web annotated\n" {
		t.Errorf("annotate: %q", out)
	}
	if out := k.ok("patch", "pod", "web", "--type", "strategic", "-p", `{"spec":{"containers":[{"name":"app","image":"busybox:1.36"}]}}`); out != "pod/web patched\n" {
		t.Errorf("patch strategic: %q", out)
	}
	if out := k.ok("patch", "pod", "web", "--type", "merge", "-p", `{"metadata":{"labels":{"tier":null}}}`); out != "pod/web patched\n" {
		t.Errorf("patch merge: %q", out)
	}
	if out := k.ok("patch", "pod", "web", "--type", "json", "-p", `[{"op":"add","path":"/spec/activeDeadlineSeconds","value":600}]`); out != "pod/web patched\n" {
		t.Errorf("patch json: %q", out)
	}
	if out := k.ok("patch", "pod", "web", "--type", "merge", "-p", `{"metadata":{"labels":{"app":"web"}}}`); out != "pod/web patched (no change)\n" {
		t.Errorf("patch without a change: %q", out)
	}
	got := k.ok("get", "pod", "web", "-o", "jsonpath={.metadata.labels} {.metadata.annotations.note} {.spec.containers[0].image} {.spec.activeDeadlineSeconds} {.metadata.generation} {.status.qosClass}")
	if got != `{"app":"web"} hello busybox:1.36 600 3 BestEffort` {
		t.Errorf("after the patches: %q", got)
	}
	if msg := k.fails("", "patch", "pod", "web", "--type", "merge", "-p", `{"spec":{"restartPolicy":"Never"}}`); !strings.Contains(msg, `The Pod "web" is invalid: spec: Forbidden: pod updates may not change fields other than`) {
		t.Errorf("immutable patch: %s", msg)
	}

	// replace: from a fresh copy it works; from a stale one it is the
	// apiserver's Conflict.
	stale := write("stale.yaml", k.ok("get", "pod", "web", "-o", "yaml"))
	fresh := write("fresh.yaml", strings.Replace(k.ok("get", "pod", "web", "-o", "yaml"), "image: busybox:1.36", "image: busybox:1.37", 1))
	if out := k.ok("replace", "-f", fresh); out != "pod/web replaced\n" {
		t.Errorf("replace: %q", out)
	}
	if msg := k.fails("", "replace", "-f", stale); !strings.Contains(msg, `Error from server (Conflict): error when replacing "`+stale+`": Operation cannot be fulfilled on pods "web": the object has been modified; please apply your changes to the latest version and try again`) {
		t.Errorf("stale replace: %s", msg)
	}

	// edit: kubectl's strategic merge patch of what the editor changed.
	editor := write("editor.sh", "#!/bin/sh\nsed -i 's/image: busybox:1.37/image: busybox:1.38/' \"$1\"\n")
	if err := os.Chmod(editor, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBE_EDITOR", editor)
	if out := k.ok("edit", "pod", "web"); out != "pod/web edited\n" {
		t.Errorf("edit: %q", out)
	}
	if out := k.ok("get", "pod", "web", "-o", "jsonpath={.spec.containers[0].image}"); out != "busybox:1.38" {
		t.Errorf("after edit: %q", out)
	}

	// Server-side apply: the apiserver's answer for a patch type it does not
	// serve.
	if msg := k.fails("", "apply", "--server-side", "--validate=false", "-f", pod); !strings.Contains(msg, "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json") {
		t.Errorf("apply --server-side: %s", msg)
	}

	// Graceful delete: without --wait the pod stays, Terminating, until
	// the worker has finished it.
	if out := k.ok("delete", "pod", "web", "--grace-period=45", "--wait=false"); out != "pod \"web\" deleted\n" {
		t.Errorf("delete --wait=false: %q", out)
	}
	if out := k.ok("get", "pod", "web", "-o", "jsonpath={.metadata.deletionGracePeriodSeconds} {.metadata.deletionTimestamp}"); !regexp.MustCompile(`^45 \d{4}-\d\d-\d\dT`).MatchString(out) {
		t.Errorf("terminating pod: %q", out)
	}
	if out := k.ok("get", "pods"); !regexp.MustCompile(`(?m)^web\s+0/1\s+Terminating\s`).MatchString(out) {
		t.Errorf("get pods:\n%s", out)
	}
	finishDeletions(t, st)
	if _, stderr, err := k.run("/pods/web", "wait", "--for=delete", "pod/web", "--timeout=50s"); err != nil {
		t.Errorf("wait --for=delete: %v %s", err, stderr)
	}
	// With the worker running, kubectl delete's own wait returns.
	k.ok("create", "--validate=false", "-f", write("web2.yaml", podYAML("web2", "app: web")))
	if out, stderr, err := k.run("/pods/web2", "delete", "pod", "web2", "--grace-period=5"); err != nil || out != "pod \"web2\" deleted\n" {
		t.Errorf("delete --grace-period=5: %q %v %s", out, err, stderr)
	}
	// --force --grace-period=0 removes at once, worker or not.
	k.ok("create", "--validate=false", "-f", write("web3.yaml", podYAML("web3", "app: web")))
	if out, stderr, err := k.run("/pods/web3", "delete", "pod", "web3", "--force", "--grace-period=0"); err != nil || out != "pod \"web3\" force deleted\n" {
		t.Errorf("delete --force: %q %v %s", out, err, stderr)
	}
	// By label.
	for _, n := range []string{"a", "b", "c"} {
		lbl := "x: one"
		if n == "c" {
			lbl = "x: two"
		}
		k.ok("create", "--validate=false", "-f", write(n+".yaml", podYAML(n, lbl)))
	}
	if out, stderr, err := k.run("/pods/", "delete", "pods", "-l", "x=one"); err != nil || out != "pod \"a\" deleted\npod \"b\" deleted\n" {
		t.Errorf("delete -l: %q %v %s", out, err, stderr)
	}
	if out := k.ok("get", "pods", "-o", "name"); out != "pod/c\n" {
		t.Errorf("left after delete -l: %q", out)
	}
}
