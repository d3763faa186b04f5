package server

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The stock kubectl against ResourceQuota and LimitRange: the apiserver's
// refusals word for word (kubectl adds its own prefix), get and describe
// as against a cluster, and a LimitRange's defaults in the stored pod.
// The same on a real node, with the kernel's part: test/e2e/kubectl.
func TestStockKubectlQuotaAndLimits(t *testing.T) {
	k, _ := newKubectl(t)
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pod := func(name, resources string) string {
		return file(name+".yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: "+name+"}\nspec:\n  containers:\n  - name: app\n    image: busybox\n"+resources)
	}
	refused := func(f, want string) {
		t.Helper()
		// kubectl's own line is the last; at -v=6 the Status comes before.
		lines := strings.Split(strings.TrimSpace(k.fails("", "create", "-f", f)), "\n")
		if got := lines[len(lines)-1]; got != want {
			t.Errorf("create -f %s:\n got %q\nwant %q", filepath.Base(f), got, want)
		}
	}

	k.ok("create", "-f", file("quota.yaml", `apiVersion: v1
kind: ResourceQuota
metadata: {name: compute}
spec:
  hard: {pods: "2", requests.cpu: "1", requests.memory: 1Gi, limits.cpu: "2", limits.memory: 2Gi}
`))
	if out := k.ok("get", "quota"); !regexp.MustCompile(`^NAME\s+AGE\s+REQUEST\s+LIMIT\ncompute\s+\S+\s+pods: 0/2, requests.cpu: 0/1, requests.memory: 0/1Gi\s+limits.cpu: 0/2, limits.memory: 0/2Gi\n$`).MatchString(out) {
		t.Errorf("get quota:\n%s", out)
	}
	bare := pod("bare", "")
	refused(bare, `Error from server (Forbidden): error when creating "`+bare+`": pods "bare" is forbidden: failed quota: compute: must specify limits.cpu for: app; limits.memory for: app; requests.cpu for: app; requests.memory for: app`)

	// A LimitRange gives the pod what the quota asks for.
	k.ok("create", "-f", file("limits.yaml", `apiVersion: v1
kind: LimitRange
metadata: {name: defaults}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 256Mi}
    defaultRequest: {cpu: 250m, memory: 128Mi}
    max: {cpu: "1"}
    maxLimitRequestRatio: {memory: "4"}
`))
	k.ok("create", "-f", bare)
	got := k.ok("get", "pod", "bare", "-o",
		`jsonpath={.metadata.annotations.kubernetes\.io/limit-ranger}|{.spec.containers[0].resources.requests.cpu} {.spec.containers[0].resources.requests.memory} {.spec.containers[0].resources.limits.cpu} {.spec.containers[0].resources.limits.memory}|{.status.qosClass}`)
	if want := "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app|250m 128Mi 500m 256Mi|Burstable"; got != want {
		t.Errorf("bare after the LimitRange:\n got %q\nwant %q", got, want)
	}
	if out := k.ok("describe", "quota", "compute"); !strings.Contains(out, `Resource         Used   Hard
--------         ----   ----
limits.cpu       500m   2
limits.memory    256Mi  2Gi
pods             1      2
requests.cpu     250m   1
requests.memory  128Mi  1Gi`) {
		t.Errorf("describe quota:\n%s", out)
	}
	if out := k.ok("describe", "limits", "defaults"); !regexp.MustCompile(`(?m)^Container\s+cpu\s+-\s+1\s+250m\s+500m\s+-$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^Container\s+memory\s+-\s+-\s+128Mi\s+256Mi\s+4$`).MatchString(out) {
		t.Errorf("describe limits:\n%s", out)
	}

	big := pod("big", "    resources:\n      limits: {cpu: \"3\", memory: 64Mi}\n")
	refused(big, `Error from server (Forbidden): error when creating "`+big+`": pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 3`)
	ratio := pod("ratio", "    resources:\n      requests: {memory: 16Mi}\n      limits: {cpu: 500m, memory: 128Mi}\n")
	refused(ratio, `Error from server (Forbidden): error when creating "`+ratio+`": pods "ratio" is forbidden: memory max limit to request ratio per Container is 4, but provided ratio is 8.000000`)

	greedy := pod("greedy", "    resources:\n      requests: {cpu: 800m, memory: 64Mi}\n      limits: {cpu: 800m, memory: 64Mi}\n")
	refused(greedy, `Error from server (Forbidden): error when creating "`+greedy+`": pods "greedy" is forbidden: exceeded quota: compute, requested: requests.cpu=800m, used: requests.cpu=250m, limited: requests.cpu=1`)
	fits := pod("fits", "    resources:\n      requests: {cpu: 100m, memory: 64Mi}\n      limits: {cpu: 100m, memory: 64Mi}\n")
	k.ok("create", "-f", fits)
	third := pod("third", "    resources:\n      limits: {cpu: 100m, memory: 64Mi}\n")
	refused(third, `Error from server (Forbidden): error when creating "`+third+`": pods "third" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2`)
	// A dry run is checked too, and charges nothing.
	if msg := k.fails("", "create", "-f", third, "--dry-run=server"); !strings.Contains(msg, "exceeded quota: compute") {
		t.Errorf("dry run of a pod over quota: %s", msg)
	}
	if out := k.ok("get", "quota", "compute", "-o", "jsonpath={.status.used.pods}"); out != "2" {
		t.Errorf("pods used after the refusals: %q", out)
	}

	// Claims: a storage quota and a LimitRange of type PersistentVolumeClaim.
	k.ok("create", "namespace", "claims")
	k.ok("create", "-f", file("storage-quota.yaml", "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: storage, namespace: claims}\nspec:\n  hard: {requests.storage: 1Gi, persistentvolumeclaims: \"2\"}\n"))
	k.ok("create", "-f", file("claim-limits.yaml", "apiVersion: v1\nkind: LimitRange\nmetadata: {name: claims, namespace: claims}\nspec:\n  limits:\n  - type: PersistentVolumeClaim\n    max: {storage: 5Gi}\n"))
	claim := func(name, size string) string {
		return file(name+".yaml", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: "+name+", namespace: claims}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: "+size+"}}\n")
	}
	k.ok("create", "-f", claim("small", "512Mi"))
	large := claim("large", "1Gi")
	refused(large, `Error from server (Forbidden): error when creating "`+large+`": persistentvolumeclaims "large" is forbidden: exceeded quota: storage, requested: requests.storage=1Gi, used: requests.storage=512Mi, limited: requests.storage=1Gi`)
	huge := claim("huge", "6Gi")
	refused(huge, `Error from server (Forbidden): error when creating "`+huge+`": persistentvolumeclaims "huge" is forbidden: maximum storage usage per PersistentVolumeClaim is 5Gi, but request is 6Gi`)

	// Updates are admitted too: a bound claim of a class that allows
	// expansion grows within its quota and its LimitRange, and is charged
	// the growth (upstream's quota evaluator on UPDATE).
	k.ok("create", "-f", file("expandable.yaml", "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: expandable}\nprovisioner: berth.dev/local-path\nallowVolumeExpansion: true\n"))
	k.ok("create", "-f", file("grow.yaml", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: grow, namespace: claims}\nspec:\n  storageClassName: expandable\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 256Mi}}\n"))
	k.ok("-n", "claims", "patch", "pvc", "grow", "--subresource=status", "--type=merge", "-p", `{"status":{"phase":"Bound","capacity":{"storage":"256Mi"}}}`)
	used := func() string {
		return k.ok("-n", "claims", "get", "quota", "storage", "-o", "jsonpath={.status.used.requests\\.storage}")
	}
	if got := used(); got != "768Mi" {
		t.Errorf("requests.storage used before the resize: %q, want 768Mi", got)
	}
	resize := func(size string) string {
		return `{"spec":{"resources":{"requests":{"storage":"` + size + `"}}}}`
	}
	k.ok("-n", "claims", "patch", "pvc", "grow", "--dry-run=server", "-p", resize("512Mi"))
	if got := used(); got != "768Mi" {
		t.Errorf("requests.storage used after a dry-run resize: %q, want 768Mi", got)
	}
	k.ok("-n", "claims", "patch", "pvc", "grow", "-p", resize("512Mi"))
	if got := used(); got != "1Gi" {
		t.Errorf("requests.storage used after a resize to 512Mi: %q, want 1Gi", got)
	}
	patchRefused := func(size, want string) {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(k.fails("", "-n", "claims", "patch", "pvc", "grow", "-p", resize(size))), "\n")
		if got := lines[len(lines)-1]; got != want {
			t.Errorf("resize to %s:\n got %q\nwant %q", size, got, want)
		}
	}
	patchRefused("768Mi", `Error from server (Forbidden): persistentvolumeclaims "grow" is forbidden: exceeded quota: storage, requested: requests.storage=256Mi, used: requests.storage=1Gi, limited: requests.storage=1Gi`)
	patchRefused("6Gi", `Error from server (Forbidden): persistentvolumeclaims "grow" is forbidden: maximum storage usage per PersistentVolumeClaim is 5Gi, but request is 6Gi`)
	if got := used(); got != "1Gi" {
		t.Errorf("requests.storage used after refused resizes: %q, want 1Gi", got)
	}
	if got := k.ok("-n", "claims", "get", "pvc", "grow", "-o", "jsonpath={.spec.resources.requests.storage}"); got != "512Mi" {
		t.Errorf("claim's request after refused resizes: %q, want 512Mi", got)
	}
}
