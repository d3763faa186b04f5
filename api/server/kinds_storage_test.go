package server

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/agent/storage"
)

const claimYAML = `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
`

// The stock kubectl against PersistentVolumeClaims, PersistentVolumes and
// StorageClasses: the apiserver's defaults, admission (default class,
// protection finalizer, resize), validation and columns, with
// agent/storage's controller making the volume over the same store.
func TestStockKubectlStorage(t *testing.T) {
	k, st := newKubectl(t)
	dir := t.TempDir()
	ctl := storage.New(storage.Config{Store: st, StateDir: dir, FreshStore: true})
	if err := ctl.EnsureDefaultClass(); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	if out := k.ok("get", "sc"); !regexp.MustCompile(`^NAME\s+PROVISIONER\s+RECLAIMPOLICY\s+VOLUMEBINDINGMODE\s+ALLOWVOLUMEEXPANSION\s+AGE\nlocal-path \(default\)\s+berth.dev/local-path\s+Delete\s+Immediate\s+false\s+\S+\n$`).MatchString(out) {
		t.Errorf("get sc:\n%s", out)
	}
	if out := k.ok("create", "-f", write("pvc.yaml", claimYAML)); out != "persistentvolumeclaim/data created\n" {
		t.Errorf("create pvc: %q", out)
	}
	// DefaultStorageClass, StorageObjectInUseProtection and the defaults.
	if out := k.ok("get", "pvc", "data", "-o", "jsonpath={.spec.storageClassName} {.metadata.finalizers} {.spec.volumeMode} {.status.phase}"); out != `local-path ["kubernetes.io/pvc-protection"] Filesystem Pending` {
		t.Errorf("created claim: %q", out)
	}
	if out := k.ok("get", "pvc"); !regexp.MustCompile(`^NAME\s+STATUS\s+VOLUME\s+CAPACITY\s+ACCESS MODES\s+STORAGECLASS\s+VOLUMEATTRIBUTESCLASS\s+AGE\ndata\s+Pending\s+local-path\s+<unset>\s+\S+\n$`).MatchString(out) {
		t.Errorf("get pvc (pending):\n%s", out)
	}

	// Validation in the apiserver's words.
	bad := write("bad.yaml", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: bad}\nspec:\n  accessModes: [ReadWriteSometimes]\n  resources: {requests: {storage: \"0\"}}\n")
	// (kubectl lists several causes one a line.)
	if msg := k.fails("", "create", "-f", bad); !strings.Contains(msg, "The PersistentVolumeClaim \"bad\" is invalid: \n"+
		"* spec.accessModes: Unsupported value: \"ReadWriteSometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"\n"+
		"* spec.resources[storage]: Invalid value: \"0\": must be greater than zero") {
		t.Errorf("invalid claim: %s", msg)
	}
	none := write("none.yaml", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: none}\nspec: {}\n")
	if msg := k.fails("", "create", "-f", none); !strings.Contains(msg, "* spec.accessModes: Required value: at least 1 access mode is required\n* spec.resources[storage]: Required value") {
		t.Errorf("empty claim: %s", msg)
	}

	// The provisioner binds it.
	if err := ctl.Sync(); err != nil {
		t.Fatal(err)
	}
	volume := k.ok("get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}")
	if !regexp.MustCompile(`^pvc-[0-9a-f-]{36}$`).MatchString(volume) {
		t.Fatalf("volume name: %q", volume)
	}
	if out := k.ok("get", "pvc", "-o", "wide"); !regexp.MustCompile(`^NAME\s+STATUS\s+VOLUME\s+CAPACITY\s+ACCESS MODES\s+STORAGECLASS\s+VOLUMEATTRIBUTESCLASS\s+AGE\s+VOLUMEMODE\ndata\s+Bound\s+` + volume + `\s+1Gi\s+RWO\s+local-path\s+<unset>\s+\S+\s+Filesystem\n$`).MatchString(out) {
		t.Errorf("get pvc -o wide:\n%s", out)
	}
	if out := k.ok("get", "pv"); !regexp.MustCompile(`^NAME\s+CAPACITY\s+ACCESS MODES\s+RECLAIM POLICY\s+STATUS\s+CLAIM\s+STORAGECLASS\s+VOLUMEATTRIBUTESCLASS\s+REASON\s+AGE\n` + volume + `\s+1Gi\s+RWO\s+Delete\s+Bound\s+default/data\s+local-path\s+<unset>\s+\S+\n$`).MatchString(out) {
		t.Errorf("get pv:\n%s", out)
	}

	// Updates: the spec is immutable but for a bound claim's request,
	// which the class must allow to grow.
	if msg := k.fails("", "patch", "pvc", "data", "--type=merge", "-p", `{"spec":{"accessModes":["ReadWriteMany"]}}`); !strings.Contains(msg,
		`The PersistentVolumeClaim "data" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims`) {
		t.Errorf("patch accessModes: %s", msg)
	}
	if msg := k.fails("", "patch", "pvc", "data", "--type=merge", "-p", `{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}`); !strings.Contains(msg,
		`Error from server (Forbidden): persistentvolumeclaims "data" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize`) {
		t.Errorf("resize: %s", msg)
	}
	if msg := k.fails("", "patch", "pvc", "data", "--type=merge", "-p", `{"spec":{"resources":{"requests":{"storage":"512Mi"}}}}`); !strings.Contains(msg,
		`spec.resources.requests.storage: Forbidden: field can not be less than status.capacity`) {
		t.Errorf("shrink: %s", msg)
	}
	if msg := k.fails("", "patch", "sc", "local-path", "--type=merge", "-p", `{"provisioner":"example.com/other","reclaimPolicy":"Retain"}`); !strings.Contains(msg,
		"The StorageClass \"local-path\" is invalid: \n* provisioner: Forbidden: updates to provisioner are forbidden.\n* reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.") {
		t.Errorf("patch sc: %s", msg)
	}
	if msg := k.fails("", "patch", "pv", volume, "--type=merge", "-p", `{"spec":{"hostPath":{"path":"/etc"}}}`); !strings.Contains(msg,
		`spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation`) {
		t.Errorf("patch pv source: %s", msg)
	}

	// Delete: the finalizer holds the claim (Terminating) until the
	// controller has seen no pod use it.
	k.ok("delete", "pvc", "data", "--wait=false")
	if out := k.ok("get", "pvc", "data", "--no-headers"); !regexp.MustCompile(`^data\s+Terminating\s+` + volume).MatchString(out) {
		t.Errorf("claim being deleted:\n%s", out)
	}
	for range 2 { // the claim goes; then its volume
		if err := ctl.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if out, stderr, _ := k.run("", "get", "pvc,pv"); out != "" || !strings.Contains(stderr, "No resources found") {
		t.Errorf("after delete: %q %q", out, stderr)
	}
}
