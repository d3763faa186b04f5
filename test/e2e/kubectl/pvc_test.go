package kubectl

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

const pvcClaim = `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: %s, namespace: pv}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
%s`

// pvcPod is a pod of the signed image running cmd with the claim at /data.
func pvcPod(name, image, claim, restart, cmd string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: pv}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: %s
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: %s}
  containers:
  - name: app
    image: %s
    command: [sh, -c, %q]
    volumeMounts:
    - {name: data, mountPath: /data}
`, name, restart, claim, image, cmd)
}

// TestPersistentVolumeClaims is issue 11 §3 on a real node with the stock
// kubectl: the default StorageClass local-path; a claim provisioned and
// Bound (kubectl get pvc,pv); a pod writes to it, a later pod reads it,
// also after berthd was SIGKILLed and came back; a pod whose claim does not
// exist yet waits in ContainerCreating with FailedMount, then runs once the
// claim is bound; a claim of an unknown class stays Pending with the PV
// controller's warning; deleting a claim a pod uses leaves it Terminating
// until the pod is gone; then reclaim policy Delete removes the volume and
// its directory.
func TestPersistentVolumeClaims(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	img := e.signed.Ref

	if out := k.must("get", "sc"); !regexp.MustCompile(`^NAME\s+PROVISIONER\s+RECLAIMPOLICY\s+VOLUMEBINDINGMODE\s+ALLOWVOLUMEEXPANSION\s+AGE\nlocal-path \(default\)\s+berth.dev/local-path\s+Delete\s+Immediate\s+false\s+\S+\n$`).MatchString(out) {
		t.Errorf("get sc:\n%s", out)
	}

	k.must("create", "namespace", "pv")
	e.write("/var/tmp/pvc-data.yaml", fmt.Sprintf(pvcClaim, "data", ""))
	k.must("create", "-f", "/var/tmp/pvc-data.yaml")
	k.eventually("the claim to be bound", func(s string) bool { return s == "Bound" }, "get", "pvc", "data", "-n", "pv", "-o", "jsonpath={.status.phase}")
	vol := k.must("get", "pvc", "data", "-n", "pv", "-o", "jsonpath={.spec.volumeName}")
	if !regexp.MustCompile(`^pvc-[0-9a-f-]{36}$`).MatchString(vol) {
		t.Fatalf("volume name %q", vol)
	}
	dir := "/var/lib/berth/volumes/" + vol
	out := k.must("get", "pvc,pv", "-n", "pv")
	if !regexp.MustCompile(`(?m)^NAME\s+STATUS\s+VOLUME\s+CAPACITY\s+ACCESS MODES\s+STORAGECLASS\s+VOLUMEATTRIBUTESCLASS\s+AGE\n` +
		`persistentvolumeclaim/data\s+Bound\s+` + vol + `\s+64Mi\s+RWO\s+local-path\s+<unset>\s+\S+\n\n` +
		`NAME\s+CAPACITY\s+ACCESS MODES\s+RECLAIM POLICY\s+STATUS\s+CLAIM\s+STORAGECLASS\s+VOLUMEATTRIBUTESCLASS\s+REASON\s+AGE\n` +
		`persistentvolume/` + vol + `\s+64Mi\s+RWO\s+Delete\s+Bound\s+pv/data\s+local-path\s+<unset>\s+\S+\n$`).MatchString(out) {
		t.Errorf("get pvc,pv:\n%s", out)
	}
	if got := e.run("stat", "-c", "%a %F", dir); got != "777 directory\n" {
		t.Errorf("volume directory: %q", got)
	}

	// A pod writes, ends and goes; the next one reads what it wrote.
	e.write("/var/tmp/pvc-writer.yaml", pvcPod("writer", img, "data", "Never", "echo kept-$(cat /proc/sys/kernel/random/uuid) > /data/f"))
	e.apply(k, "/namespaces/pv/pods/writer", "/var/tmp/pvc-writer.yaml")
	k.eventually("writer to finish", func(s string) bool { return s == "Succeeded" }, "get", "pod", "writer", "-n", "pv", "-o", "jsonpath={.status.phase}")
	written := strings.TrimSpace(e.run("cat", dir+"/f"))
	if !strings.HasPrefix(written, "kept-") {
		t.Fatalf("the writer's file on the host: %q", written)
	}
	k.del("/pods/writer", "pod", "writer", "-n", "pv")
	e.write("/var/tmp/pvc-reader.yaml", pvcPod("reader", img, "data", "Always", "exec sleep 3600"))
	e.apply(k, "/namespaces/pv/pods/reader", "/var/tmp/pvc-reader.yaml")
	k.must("wait", "--for=condition=Ready", "pod/reader", "-n", "pv", "--timeout=120s")
	if got := strings.TrimSpace(k.must("exec", "reader", "-n", "pv", "--", "cat", "/data/f")); got != written {
		t.Errorf("the reader sees %q, the writer wrote %q", got, written)
	}

	// berthd dies and comes back: the claim stays bound to the same
	// volume, the data is there, and the running pod still has it.
	e.kill()
	e.waitBerthd()
	k.eventually("the claim after a restart", func(s string) bool { return s == "Bound "+vol }, "get", "pvc", "data", "-n", "pv", "-o", "jsonpath={.status.phase} {.spec.volumeName}")
	if got := strings.TrimSpace(k.must("exec", "reader", "-n", "pv", "--", "cat", "/data/f")); got != written {
		t.Errorf("after a restart the reader sees %q, want %q", got, written)
	}
	if out := k.must("get", "pv", "-o", "name"); out != "persistentvolume/"+vol+"\n" {
		t.Errorf("volumes after a restart: %q", out)
	}

	// A pod whose claim does not exist yet waits, as the kubelet's pods
	// wait for their volumes, and runs once the claim is bound.
	e.write("/var/tmp/pvc-early.yaml", pvcPod("early", img, "later", "Always", "echo early > /data/e; exec sleep 3600"))
	e.apply(k, "/namespaces/pv/pods/early", "/var/tmp/pvc-early.yaml")
	k.eventually("early's FailedMount", regexp.MustCompile(`(?m)^FailedMount\s+persistentvolumeclaim "later" not found$`).MatchString,
		"get", "events", "-n", "pv", "--field-selector", "involvedObject.name=early", "-o", "custom-columns=R:.reason,M:.message", "--no-headers")
	if out := k.must("get", "pod", "early", "-n", "pv", "--no-headers"); !regexp.MustCompile(`^early\s+0/1\s+ContainerCreating\s`).MatchString(out) {
		t.Errorf("a pod waiting for its claim: %q", out)
	}
	e.write("/var/tmp/pvc-later.yaml", fmt.Sprintf(pvcClaim, "later", ""))
	k.must("create", "-f", "/var/tmp/pvc-later.yaml")
	k.must("wait", "--for=condition=Ready", "pod/early", "-n", "pv", "--timeout=120s")

	// A class that does not exist: Pending, with the PV controller's words.
	e.write("/var/tmp/pvc-lost.yaml", fmt.Sprintf(pvcClaim, "nowhere", "  storageClassName: nope\n"))
	k.must("create", "-f", "/var/tmp/pvc-lost.yaml")
	k.eventually("the unknown class's warning", regexp.MustCompile(`(?m)^ProvisioningFailed\s+storageclass.storage.k8s.io "nope" not found$`).MatchString,
		"get", "events", "-n", "pv", "--field-selector", "involvedObject.name=nowhere", "-o", "custom-columns=R:.reason,M:.message", "--no-headers")
	if out := k.must("get", "pvc", "nowhere", "-n", "pv", "--no-headers"); !regexp.MustCompile(`^nowhere\s+Pending\s+nope\s+<unset>\s`).MatchString(out) {
		t.Errorf("claim of an unknown class: %q", out)
	}

	// An administrator's volume: a claim of no class binds the smallest
	// that fits, as the PV controller binds it; Retain keeps it, and its
	// directory, after the claim.
	e.run("mkdir", "-p", "/srv/static-big", "/srv/static-small")
	for _, v := range []struct{ name, size string }{{"static-big", "1Gi"}, {"static-small", "128Mi"}} {
		e.write("/var/tmp/"+v.name+".yaml", fmt.Sprintf("apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: %s}\nspec:\n  capacity: {storage: %s}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"\"\n  hostPath: {path: /srv/%s}\n", v.name, v.size, v.name))
		k.must("create", "-f", "/var/tmp/"+v.name+".yaml")
	}
	k.eventually("the volumes to be Available", func(s string) bool { return s == "Available Available" }, "get", "pv", "static-big", "static-small", "-o", "jsonpath={.items[*].status.phase}")
	e.write("/var/tmp/pvc-manual.yaml", fmt.Sprintf(pvcClaim, "manual", "  storageClassName: \"\"\n"))
	k.must("create", "-f", "/var/tmp/pvc-manual.yaml")
	k.eventually("the claim of no class to bind", func(s string) bool { return s == "Bound static-small" }, "get", "pvc", "manual", "-n", "pv", "-o", "jsonpath={.status.phase} {.spec.volumeName}")
	if out := k.must("get", "pv", "static-small", "--no-headers"); !regexp.MustCompile(`^static-small\s+128Mi\s+RWO\s+Retain\s+Bound\s+pv/manual\s+<unset>\s+\S+$`).MatchString(strings.TrimSpace(out)) {
		t.Errorf("get pv static-small: %q", out)
	}
	// No volume left for a second one: the PV controller's words.
	e.write("/var/tmp/pvc-manual2.yaml", strings.Replace(fmt.Sprintf(pvcClaim, "manual2", "  storageClassName: \"\"\n"), "64Mi", "2Gi", 1))
	k.must("create", "-f", "/var/tmp/pvc-manual2.yaml")
	k.eventually("FailedBinding", regexp.MustCompile(`(?m)^FailedBinding\s+no persistent volumes available for this claim and no storage class is set$`).MatchString,
		"get", "events", "-n", "pv", "--field-selector", "involvedObject.name=manual2", "-o", "custom-columns=R:.reason,M:.message", "--no-headers")

	// A class that binds on first use: Pending until a pod uses the claim.
	e.write("/var/tmp/sc-lazy.yaml", "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: lazy}\nprovisioner: berth.dev/local-path\nvolumeBindingMode: WaitForFirstConsumer\n")
	k.must("create", "-f", "/var/tmp/sc-lazy.yaml")
	e.write("/var/tmp/pvc-lazy.yaml", fmt.Sprintf(pvcClaim, "lazy", "  storageClassName: lazy\n"))
	k.must("create", "-f", "/var/tmp/pvc-lazy.yaml")
	k.eventually("WaitForFirstConsumer", regexp.MustCompile(`(?m)^WaitForFirstConsumer\s+waiting for first consumer to be created before binding$`).MatchString,
		"get", "events", "-n", "pv", "--field-selector", "involvedObject.name=lazy", "-o", "custom-columns=R:.reason,M:.message", "--no-headers")
	if got := k.must("get", "pvc", "lazy", "-n", "pv", "-o", "jsonpath={.status.phase}"); got != "Pending" {
		t.Errorf("a WaitForFirstConsumer claim without a pod: %q", got)
	}
	e.write("/var/tmp/pvc-lazy-user.yaml", pvcPod("lazy-user", img, "lazy", "Never", "echo used > /data/u"))
	e.apply(k, "/namespaces/pv/pods/lazy-user", "/var/tmp/pvc-lazy-user.yaml")
	k.eventually("the lazy claim's pod to finish", func(s string) bool { return s == "Succeeded" }, "get", "pod", "lazy-user", "-n", "pv", "-o", "jsonpath={.status.phase}")
	if got := k.must("get", "pvc", "lazy", "-n", "pv", "-o", "jsonpath={.status.phase}"); got != "Bound" {
		t.Errorf("a WaitForFirstConsumer claim once a pod used it: %q", got)
	}

	// A class that allows expansion: a bound claim grows (the resize
	// admitted, then carried out as the external resizer does).
	e.write("/var/tmp/sc-grow.yaml", "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: grow}\nprovisioner: berth.dev/local-path\nallowVolumeExpansion: true\n")
	k.must("create", "-f", "/var/tmp/sc-grow.yaml")
	e.write("/var/tmp/pvc-grow.yaml", fmt.Sprintf(pvcClaim, "grow", "  storageClassName: grow\n"))
	k.must("create", "-f", "/var/tmp/pvc-grow.yaml")
	k.eventually("the expandable claim to be bound", func(s string) bool { return s == "Bound" }, "get", "pvc", "grow", "-n", "pv", "-o", "jsonpath={.status.phase}")
	k.must("patch", "pvc", "grow", "-n", "pv", "-p", `{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`)
	k.eventually("the claim to grow", func(s string) bool { return s == "128Mi 128Mi" }, "get", "pvc", "grow", "-n", "pv", "-o", "jsonpath={.status.capacity.storage} {.status.allocatedResources.storage}")
	growVol := k.must("get", "pvc", "grow", "-n", "pv", "-o", "jsonpath={.spec.volumeName}")
	if got := k.must("get", "pv", growVol, "-o", "jsonpath={.spec.capacity.storage}"); got != "128Mi" {
		t.Errorf("the grown claim's volume: %q, want 128Mi", got)
	}
	k.eventually("VolumeResizeSuccessful", regexp.MustCompile(`(?m)^VolumeResizeSuccessful\s+Resize volume succeeded$`).MatchString,
		"get", "events", "-n", "pv", "--field-selector", "involvedObject.name=grow", "-o", "custom-columns=R:.reason,M:.message", "--no-headers")
	// local-path does not allow it: refused with the admission plugin's words.
	if _, msg, err := k.kubectl("", "patch", "pvc", "later", "-n", "pv", "-p", `{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`); err == nil ||
		!strings.Contains(msg, `Error from server (Forbidden): persistentvolumeclaims "later" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize`) {
		t.Errorf("resize of a local-path claim: %v %q", err, msg)
	}

	// Deleting a claim a pod uses: Terminating until the pod is gone.
	k.must("delete", "pvc", "data", "-n", "pv", "--wait=false")
	time.Sleep(3 * time.Second) // a few of the controller's passes
	if out := k.must("get", "pvc", "data", "-n", "pv", "--no-headers"); !regexp.MustCompile(`^data\s+Terminating\s+` + vol).MatchString(out) {
		t.Errorf("a claim in use, deleted: %q", out)
	}
	if got := strings.TrimSpace(k.must("exec", "reader", "-n", "pv", "--", "cat", "/data/f")); got != written {
		t.Errorf("the pod lost its data while its claim was Terminating: %q", got)
	}
	k.del("/pods/reader", "pod", "reader", "-n", "pv")
	k.eventually("the claim to go", func(s string) bool { return !strings.Contains(s, "persistentvolumeclaim/data\n") }, "get", "pvc", "-n", "pv", "-o", "name")
	k.eventually("its volume to go", func(s string) bool { return !strings.Contains(s, vol) }, "get", "pv", "-o", "name")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
		if _, err := e.n.Run(t.Context(), "test", "-e", dir); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reclaim policy Delete left %s", dir)
		}
	}

	// The namespace goes with its claims and volumes, leaving no mount.
	if _, msg, err := k.kubectl("/api/v1/namespaces/", "delete", "namespace", "pv", "--timeout=180s"); err != nil {
		t.Fatalf("delete namespace: %v\n%s", err, msg)
	}
	k.eventually("every provisioned volume to go", func(s string) bool { return s == "persistentvolume/static-big\npersistentvolume/static-small\n" }, "get", "pv", "-o", "name")
	if got := k.must("get", "pv", "static-small", "-o", "jsonpath={.status.phase}"); got != "Released" {
		t.Errorf("a Retain volume after its claim went: %q, want Released", got)
	}
	k.del("/api/v1/persistentvolumes/", "pv", "static-big", "static-small")
	if got := e.run("stat", "-c", "%F", "/srv/static-small"); got != "directory\n" {
		t.Errorf("an administrator's volume directory after its volume went: %q", got)
	}
	if m := e.run("sh", "-c", "grep -E '/var/lib/berth/(pods|volumes)' /proc/mounts || true"); strings.TrimSpace(m) != "" {
		t.Errorf("mounts left:\n%s", m)
	}
	if left := e.run("sh", "-c", "ls -A /var/lib/berth/volumes"); strings.TrimSpace(left) != ".default-class" {
		t.Errorf("volume directories left: %q", left)
	}
}

// del is kubectl delete, which waits for the object and ends on its 404.
func (c *client) del(allow404 string, args ...string) {
	c.e.t.Helper()
	if _, msg, err := c.kubectl(allow404, append([]string{"delete"}, args...)...); err != nil {
		c.e.t.Fatalf("delete %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
}
