package berthinit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bndl "github.com/berth-dev/berth/agent/bundle"
	"github.com/berth-dev/berth/agent/seccomp"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/unitgen"
)

// notActedOn are the spec fields unitgen writes that LoadSpec may drop,
// each with the reason berth-init has nothing to do with it. Anything else
// unitgen writes must reach stage-2.
var notActedOn = map[string]string{
	"ociVersion": "the format's version, not a property of the container; berthd and berth-init are built from one tree",
}

// TestLoadSpecKeepsWhatUnitgenWrites feeds what unitgen.Generate writes
// for representative pods, prepared as the agent writes the bundle
// (seccomp.Prepare), through LoadSpec: every value of config.json must come
// through unchanged. LoadSpec decodes into a narrow struct of the fields
// berth-init acts on (for start-up time), so a field unitgen starts writing
// would otherwise be dropped in silence and the container would run
// without it.
func TestLoadSpecKeepsWhatUnitgenWrites(t *testing.T) {
	for _, tc := range unitgenPods() {
		t.Run(tc.name, func(t *testing.T) {
			c := &tc.pod.Spec.Containers[0]
			unit, err := unitgen.Generate(unitgen.Input{
				Pod: tc.pod, Container: c.Name,
				Image: unitgen.ImageInfo{
					Ref: c.Image, Digest: "sha256:" + fmt.Sprintf("%064x", 1),
					Config: ocispec.ImageConfig{
						Entrypoint: []string{"/bin/sh"}, Cmd: []string{"-c", "exec app"},
						Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"},
						WorkingDir: "/srv", User: "app",
					},
					Passwd: []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
					Group:  []byte("root:x:0:\nwheel:x:10:root\napp:x:1000:\nextra:x:2000:app\n"),
				},
				Paths:   dummyPaths(),
				Limits:  cgroup.ContainerLimits(tc.pod, c, cgroup.NodeInfo{MemoryCapacity: 8 << 30, PidsLimit: 4096}),
				Options: unitgen.Options{AllowPrivileged: true, VerifyImage: true},
			})
			if err != nil {
				t.Fatalf("unitgen.Generate: %v", err)
			}
			prepared, _, err := seccomp.Prepare(unit.Spec)
			must(t, err)
			written, err := json.Marshal(prepared)
			must(t, err)
			dir := t.TempDir()
			must(t, os.WriteFile(filepath.Join(dir, bndl.ConfigFile), written, 0o600))
			got, err := LoadSpec(dir)
			if err != nil {
				t.Fatalf("LoadSpec of unitgen's spec: %v\n%s", err, written)
			}
			read, err := json.Marshal(got)
			must(t, err)

			var w, r map[string]any
			must(t, json.Unmarshal(written, &w))
			must(t, json.Unmarshal(read, &r))
			for k := range notActedOn {
				delete(w, k)
			}
			if lost := lostJSON("", w, r); len(lost) > 0 {
				sort.Strings(lost)
				for _, l := range lost {
					t.Errorf("unitgen writes %s, LoadSpec drops it: berth-init must act on it, or unitgen must not write it", l)
				}
			}
		})
	}
}

// lostJSON lists the paths of want's values that have is missing or
// different (is may hold more).
func lostJSON(path string, want, is any) []string {
	switch w := want.(type) {
	case map[string]any:
		i, ok := is.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s (read as %v)", path, is)}
		}
		var out []string
		for k, v := range w {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if iv, ok := i[k]; !ok {
				out = append(out, fmt.Sprintf("%s=%s", p, compact(v)))
			} else {
				out = append(out, lostJSON(p, v, iv)...)
			}
		}
		return out
	case []any:
		i, ok := is.([]any)
		if !ok || len(i) != len(w) {
			return []string{fmt.Sprintf("%s=%s (read as %s)", path, compact(want), compact(is))}
		}
		var out []string
		for n := range w {
			out = append(out, lostJSON(fmt.Sprintf("%s[%d]", path, n), w[n], i[n])...)
		}
		return out
	}
	if !reflect.DeepEqual(want, is) {
		return []string{fmt.Sprintf("%s=%s (read as %s)", path, compact(want), compact(is))}
	}
	return nil
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

type unitgenPod struct {
	name string
	pod  *corev1.Pod
}

// unitgenPods are pods that between them make unitgen write every part of
// a spec it knows: a hardened non-root container with resources, env,
// workingDir, a read-only root, capabilities and RuntimeDefault seccomp;
// a root one with the image's defaults and added capabilities; a
// privileged one (no masks, no seccomp).
func unitgenPods() []unitgenPod {
	yes, no := true, false
	uid, gid := int64(1000), int64(2000)
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: "shop", UID: "0d2a51cf-0000-4000-8000-000000000002"}
	}
	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	return []unitgenPod{
		{"hardened non-root", &corev1.Pod{ObjectMeta: meta("api-7d4b9c-x2x5z"), Spec: corev1.PodSpec{
			Hostname: "api",
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: &yes, SupplementalGroups: []int64{3000},
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "server", Image: "registry.example/shop/api:2.1",
				Command: []string{"/app/server"}, Args: []string{"--port=8080", "--mode=$(MODE)"},
				WorkingDir: "/app",
				Env:        []corev1.EnvVar{{Name: "MODE", Value: "prod"}, {Name: "URL", Value: "http://localhost/$(MODE)"}},
				Resources:  resources,
				SecurityContext: &corev1.SecurityContext{
					RunAsUser: &uid, RunAsGroup: &gid,
					ReadOnlyRootFilesystem: &yes, AllowPrivilegeEscalation: &no,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}},
				},
			}},
		}}},
		{"root with image defaults", &corev1.Pod{ObjectMeta: meta("worker"), Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "worker", Image: "registry.example/shop/worker:1",
				SecurityContext: &corev1.SecurityContext{
					RunAsUser:    new(int64),
					Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}, Drop: []corev1.Capability{"MKNOD"}},
				},
			}},
		}}},
		{"privileged", &corev1.Pod{ObjectMeta: meta("agent"), Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "agent", Image: "registry.example/shop/agent:1", Resources: resources,
				SecurityContext: &corev1.SecurityContext{Privileged: &yes},
			}},
		}}},
	}
}

// dummyPaths are absolute paths of a container and its pod, as the agent
// would pass them; nothing is created there.
func dummyPaths() unitgen.Paths {
	c, p := "/var/lib/berth/containers/shop_api_server", "/run/berth/pods/shop_api"
	return unitgen.Paths{
		Init: "/usr/libexec/berth/berth-init", Bundle: c,
		Lowers: []string{"/var/lib/berth/layers/sha256-bbbb", "/var/lib/berth/layers/sha256-aaaa"},
		Upper:  c + "/upper", Work: c + "/work", Rootfs: c + "/rootfs", PIDFile: c + "/pid",
		NetNS: p + "/ns/net", IPCNS: p + "/ns/ipc", UTSNS: p + "/ns/uts",
		Hosts: p + "/hosts", Hostname: p + "/hostname", ResolvConf: p + "/resolv.conf",
	}
}
