package kubectl

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/testenv"
)

// The volume scenario's pod: a configMap (one item with its own mode), a
// secret (defaultMode 0400), a downwardAPI file, an emptyDir shared by two
// containers, a read-only hostPath under the allowed prefix, a subPath of
// the configMap, and the pod's shared /dev/shm.
const volPod = `apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: vol}
data: {greeting: hello-1, other: x}
---
apiVersion: v1
kind: Secret
metadata: {name: sec, namespace: vol}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
  namespace: vol
  labels: {app: vols}
spec:
  volumes:
  - name: cfg
    configMap:
      name: cfg
      items: [{key: greeting, path: greeting}, {key: other, path: sub/other, mode: 0600}]
  - name: sec
    secret: {secretName: sec, defaultMode: 0400}
  - name: meta
    downwardAPI:
      items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]
  - name: scratch
    emptyDir: {}
  - name: host
    hostPath: {path: /srv/berth/shared, type: Directory}
  containers:
  - name: main
    image: %[1]s
    command: [sh, -c, 'echo FILES; stat -L -c "%%a %%n" /etc/sec/token /etc/cfg/greeting /etc/cfg/sub/other; awk "\$2==\"/etc/sec\"{print \"SECFS\", \$3}" /proc/mounts; cat /etc/meta/labels; echo; cat /host/hello; echo GREETING-$(cat /etc/greeting); echo x > /host/w 2>/dev/null || echo HOST-RO; echo shared > /scratch/f; echo shm > /dev/shm/s; while true; do echo NOW-$(cat /etc/cfg/greeting); sleep 1; done']
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: cfg, mountPath: /etc/greeting, subPath: greeting}
    - {name: sec, mountPath: /etc/sec}
    - {name: meta, mountPath: /etc/meta}
    - {name: scratch, mountPath: /scratch}
    - {name: host, mountPath: /host, readOnly: true}
  - name: peer
    image: %[1]s
    command: [sh, -c, 'until [ -s /data/f ] && [ -s /dev/shm/s ]; do sleep 0.2; done; echo PEER-$(cat /data/f)-$(cat /dev/shm/s); sleep 3600']
    volumeMounts:
    - {name: scratch, mountPath: /data}
`

// Pods whose volumes must be refused, each with the reason's words.
var volRefused = []struct{ name, volume, mount, want string }{
	{"outside", `hostPath: {path: /etc}`, `{name: v, mountPath: /v}`, "/etc"},
	{"via-link", `hostPath: {path: /srv/berth/link}`, `{name: v, mountPath: /v}`, "/srv/berth/link"},
	{"dotdot", `emptyDir: {}`, `{name: v, mountPath: /v, subPath: ../../etc}`, ".."},
}

const volRefusedPod = `apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: vol}
spec:
  volumes:
  - name: v
    %[2]s
  containers:
  - name: c
    image: %[4]s
    command: [sleep, "3600"]
    volumeMounts:
    - %[3]s
`

// A pod whose memory-backed emptyDir is filled past its memory limit.
const volMemory = `apiVersion: v1
kind: Pod
metadata: {name: memfill, namespace: vol}
spec:
  restartPolicy: Never
  volumes:
  - name: cache
    emptyDir: {medium: Memory}
  containers:
  - name: c
    image: %s
    command: [sh, -c, 'dd if=/dev/zero of=/cache/fill bs=1M count=96; sleep 5']
    resources:
      limits: {memory: 48Mi}
    volumeMounts:
    - {name: cache, mountPath: /cache}
`

// A pod that leaves a termination message, with a read-only root.
const volTermination = `apiVersion: v1
kind: Pod
metadata: {name: bye, namespace: vol}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'echo -n "gone: disk full" > /dev/termination-log; exit 3']
    securityContext: {readOnlyRootFilesystem: true}
---
apiVersion: v1
kind: Pod
metadata: {name: fallback, namespace: vol}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'echo first; echo boom: no config; exit 2']
    terminationMessagePolicy: FallbackToLogsOnError
`

// TestVolumes is issue 10's volume scenario on a real node with the
// stock kubectl.
func TestVolumes(t *testing.T) {
	t.Parallel() // a node of its own
	testenv.RequireRoot(t)
	n, signed := nodeberthd.Setup(t, "vol", "https:\n  enabled: true\nvolumes:\n  hostPathPrefixes: [/srv/berth]\n")
	e := &env{t: t, n: n, signed: signed}
	e.run("berth", "kubeconfig", "-o", kubeconfig)
	k := e.stock()
	e.run("mkdir", "-p", "/srv/berth/shared")
	e.run("sh", "-c", "echo from-host > /srv/berth/shared/hello; ln -s /etc /srv/berth/link")

	k.must("create", "namespace", "vol")
	e.write("/var/tmp/vol.yaml", fmt.Sprintf(volPod, e.signed.Ref))
	e.apply(k, "/namespaces/vol/", "/var/tmp/vol.yaml")
	k.must("wait", "--for=condition=Ready", "pod/vols", "-n", "vol", "--timeout=120s")

	out := e.journal("vols/main", "NOW-hello-1")
	for _, want := range []string{
		"400 /etc/sec/token", "644 /etc/cfg/greeting", "600 /etc/cfg/sub/other", // modes
		"SECFS tmpfs",      // secrets never on disk
		`app="vols"`,       // downwardAPI
		"from-host",        // hostPath
		"GREETING-hello-1", // subPath of a configMap key
		"HOST-RO",          // readOnly
	} {
		if !strings.Contains(out, want) {
			t.Errorf("main's output lacks %q:\n%s", want, out)
		}
	}
	if peer := e.journal("vols/peer", "PEER-"); !strings.Contains(peer, "PEER-shared-shm") {
		t.Errorf("the emptyDir or /dev/shm is not shared: %q", peer)
	}
	if _, err := e.n.Run(t.Context(), "test", "-e", "/srv/berth/shared/w"); err == nil {
		t.Errorf("a readOnly hostPath was written")
	}

	// A configMap update reaches the running pod (the atomic ..data swap).
	k.must("patch", "configmap", "cfg", "-n", "vol", "--type=merge", "-p", `{"data":{"greeting":"hello-2"}}`)
	e.journal("vols/main", "NOW-hello-2")
	// A label change reaches the downwardAPI file.
	k.must("label", "pod", "vols", "-n", "vol", "tier=web")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
		out, _ := e.n.Run(t.Context(), "sh", "-c", "cat /var/lib/berth/pods/vol_vols/volumes/*/meta/labels")
		if strings.Contains(out, `tier="web"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the downwardAPI labels did not follow the pod's: %q", out)
		}
	}

	// Escapes are refused, with the reason in the pod's events.
	for _, r := range volRefused {
		f := "/var/tmp/refused-" + r.name + ".yaml"
		e.write(f, fmt.Sprintf(volRefusedPod, r.name, r.volume, r.mount, e.signed.Ref))
		e.apply(k, "/namespaces/vol/pods/"+r.name, f)
	}
	for _, r := range volRefused {
		k.eventually("pod "+r.name+"'s volume to be refused", func(s string) bool {
			return strings.Contains(s, r.want)
		}, "get", "events", "-n", "vol", "--field-selector", "involvedObject.name="+r.name, "-o", "custom-columns=MSG:.message")
		if ph := k.must("get", "pod", r.name, "-n", "vol", "-o", "jsonpath={.status.phase}"); ph != "Pending" {
			t.Errorf("pod %s with a refused volume is %s", r.name, ph)
		}
	}
	if out := e.run("cat", "/etc/hostname"); out == "" {
		t.Errorf("the node's /etc was touched")
	}

	// A memory-backed emptyDir is charged to the pod's memory: filling it
	// past the limit is an OOM kill.
	e.write("/var/tmp/memfill.yaml", fmt.Sprintf(volMemory, e.signed.Ref))
	e.apply(k, "/namespaces/vol/pods/memfill", "/var/tmp/memfill.yaml")
	k.eventually("memfill to be OOM-killed", regexp.MustCompile(`^OOMKilled$`).MatchString,
		"get", "pod", "memfill", "-n", "vol", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.reason}")

	// terminationMessagePath: the message in the terminated state.
	e.write("/var/tmp/bye.yaml", fmt.Sprintf(volTermination, e.signed.Ref))
	e.apply(k, "/namespaces/vol/pods/", "/var/tmp/bye.yaml")
	k.eventually("bye's termination message", func(s string) bool { return s == "3 gone: disk full" },
		"get", "pod", "bye", "-n", "vol", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.message}")
	// FallbackToLogsOnError: a failed run without a message gets its logs' tail.
	k.eventually("fallback's message from its logs", func(s string) bool { return s == "2 first\nboom: no config\n" },
		"get", "pod", "fallback", "-n", "vol", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.message}")

	// Deleting everything leaves no mount behind and the host's files.
	if _, msg, err := k.kubectl("/api/v1/namespaces/", "delete", "namespace", "vol", "--timeout=180s"); err != nil {
		t.Fatalf("delete namespace: %v\n%s", err, msg)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
		m := e.run("sh", "-c", "grep /var/lib/berth/pods /proc/mounts || true")
		if strings.TrimSpace(m) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mounts left after the pods are gone:\n%s", m)
		}
	}
	if out := e.run("cat", "/srv/berth/shared/hello"); out != "from-host\n" {
		t.Errorf("the hostPath's files after the pod: %q", out)
	}
}
