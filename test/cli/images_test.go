package cli

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/api/berthv1"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/server"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/image/registrytest"
	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/unitgen"
)

// imageNode is api/server with berth's own endpoints over a real image
// store, pulling from a real registry (Debian's docker-registry) and judging
// by a policy file the test rewrites, served on a Unix socket to the berth
// binary the Makefile builds.
type imageNode struct {
	*node
	policy string
	store  *image.Store
}

func newImageNode(t *testing.T, reg *registrytest.Registry) *imageNode {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	dir := t.TempDir()
	srv := apiServer(t, dir)
	imgStore, err := image.New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { imgStore.Close() })
	regs, err := image.ParseRegistries([]byte(fmt.Sprintf("registries:\n  %q: {insecure: true}\n", reg.Host)), "test")
	if err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "policy.json")
	imgs := images.New(images.Config{Store: imgStore, Registries: regs, Policy: policy})
	rt := pods.New(pods.Config{
		StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"), Init: "/usr/libexec/berth/berth-init",
		Node: cgroup.NodeInfo{MemoryCapacity: 8 << 30, CgroupV2: true},
	}, nil, imgStore)
	mux := http.NewServeMux()
	mux.Handle("/berth/v1/", srv.Berth(server.BerthOptions{Images: images.Service{Images: imgs, Runtime: rt}, MaxLoadBytes: 64 << 20}))
	mux.Handle("/", srv)
	sock := serveSocket(t, dir, mux)
	n := &node{t: t, dir: dir, socket: sock}
	n.env = append(os.Environ(), "HOME="+filepath.Join(dir, "home"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"BERTH_SOCKET="+sock, "HTTP_PROXY=http://127.0.0.1:1", "HTTPS_PROXY=http://127.0.0.1:1")
	return &imageNode{node: n, policy: policy, store: imgStore}
}

func (n *imageNode) setPolicy(s string) {
	n.t.Helper()
	if err := os.WriteFile(n.policy, []byte(s), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// fails runs berth, wants it to fail, and returns its standard error.
func (n *imageNode) fails(args ...string) string {
	n.t.Helper()
	r := n.berth(args...)
	if r.code == 0 {
		n.t.Fatalf("berth %s succeeded:\n%s", strings.Join(args, " "), r.out)
	}
	return r.err
}

// stagingLeft lists what the store's tmp/ holds: a load, refused or not,
// must leave nothing there.
func (n *imageNode) stagingLeft() []string {
	n.t.Helper()
	ents, err := os.ReadDir(filepath.Join(n.store.Root(), "tmp"))
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func (n *imageNode) list() berthv1.ImageList {
	n.t.Helper()
	var l berthv1.ImageList
	if err := json.Unmarshal([]byte(n.berthOK("image", "ls", "-o", "json")), &l); err != nil {
		n.t.Fatal(err)
	}
	return l
}

// TestImagePullListPlanRemove: berth image pull judges before it fetches
// (a refused image leaves nothing and says why, as the apiserver words a
// Forbidden), ls shows what was pulled, plan renders the pod's unit from the
// stored image without starting anything, rm removes.
func TestImagePullListPlanRemove(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	img, err := imagetest.BusyboxImage(nil)
	if err != nil {
		t.Fatal(err)
	}
	digest := reg.Push(t, "app:1", img)
	reg.Push(t, "other:1", img)
	n := newImageNode(t, reg)
	n.setPolicy(fmt.Sprintf(`{"default": [{"type": "reject"}], "transports": {"docker": {%q: [{"type": "insecureAcceptAnything"}]}}}`, reg.Host+"/app"))

	stderr := n.fails("image", "pull", reg.Ref("other:1"))
	if !strings.Contains(stderr, "Error from server (Forbidden)") || !strings.Contains(stderr, "rejects every image") {
		t.Errorf("refused pull: stderr %q, want the apiserver's Forbidden with the policy's reason", stderr)
	}
	if l := n.list(); len(l.Items) != 0 {
		t.Fatalf("a refused pull stored %v", l.Items)
	}

	r := n.berth("image", "pull", reg.Ref("app:1"))
	if r.code != 0 || r.err != "" {
		// Not a terminal: no progress, only the result.
		t.Fatalf("pull: exit %d, stderr %q", r.code, r.err)
	}
	out := r.out
	if want := reg.Ref("app:1") + ": " + digest.String() + " (accepted by " + reg.Host + "/app"; !strings.HasPrefix(out, want) {
		t.Errorf("pull printed %q, want it to start with %q", out, want)
	}
	l := n.list()
	if len(l.Items) != 1 || l.Items[0].Digest != digest.String() || l.Items[0].Layers == 0 || !strings.HasPrefix(l.Items[0].Platform, "linux/") {
		t.Fatalf("image ls -o json = %+v, want the pulled image %s", l.Items, digest)
	}
	table := n.berthOK("image", "ls")
	if !strings.HasPrefix(table, "IMAGE ") || !strings.Contains(table, reg.Ref("app:1")) || !strings.Contains(table, digest.Hex[:12]) {
		t.Errorf("image ls:\n%s", table)
	}

	pod := filepath.Join(n.dir, "pod.yaml")
	// Beside the pod, kinds without units of their own: skipped.
	manifest := fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: b}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    image: %s
    command: ["/bin/sh", "-c", "echo planned"]
    resources: {limits: {memory: 64Mi}}
`, reg.Ref("app:1"))
	if err := os.WriteFile(pod, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	plan := n.berthOK("plan", "-f", pod)
	if c := strings.Count(plan, "# pod "); c != 1 {
		t.Errorf("plan shows %d pods, want 1 (the ConfigMap has no units):\n%s", c, plan)
	}
	for _, want := range []string{
		"# pod default/web (" + pod + ")",
		"# " + unitgen.UnitName("default", "web", "main"),
		"ExecStart=",
		"MemoryMax=67108864",
		`"echo planned"`,
		digest.String(),
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan lacks %q:\n%s", want, plan)
		}
	}
	// Nothing was stored: plan is not a create.
	if r := n.berth("get", "pod", "web"); r.code == 0 || !strings.Contains(r.err, `pods "web" not found`) {
		t.Errorf("after plan, get pod web: exit %d %q", r.code, r.err)
	}
	// The apiserver's validation, and a pointed message for what plan
	// cannot show.
	bad := strings.Replace(manifest, "name: web", "name: Web_1", 1)
	if err := os.WriteFile(pod, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if stderr := n.fails("plan", "-f", pod); !strings.Contains(stderr, `The Pod "Web_1" is invalid: metadata.name: Invalid value: "Web_1"`) {
		t.Errorf("invalid pod: %q", stderr)
	}
	missing := strings.Replace(manifest, reg.Ref("app:1"), reg.Ref("nope:1"), 1)
	if err := os.WriteFile(pod, []byte(missing), 0o644); err != nil {
		t.Fatal(err)
	}
	if stderr := n.fails("plan", "-f", pod); !strings.Contains(stderr, "Error from server (NotFound)") || !strings.Contains(stderr, "berth image pull "+reg.Ref("nope:1")) {
		t.Errorf("image not pulled: %q", stderr)
	}
	deploy := filepath.Join(n.dir, "deploy.yaml")
	if err := os.WriteFile(deploy, []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if stderr := n.fails("plan", "-f", deploy); !strings.Contains(stderr, `Deployment "d" (apps/v1): berth plan shows the units of Pods only`) {
		t.Errorf("deployment: %q", stderr)
	}

	if out := n.berthOK("image", "rm", digest.Hex[:12]); !strings.Contains(out, "removed "+digest.Hex[:12]+" ("+digest.String()+")") {
		t.Errorf("rm printed %q", out)
	}
	if l := n.list(); len(l.Items) != 0 {
		t.Fatalf("after rm: %+v", l.Items)
	}
	if layers, _ := os.ReadDir(filepath.Join(n.store.Root(), "layers", "sha256")); len(layers) != 0 {
		t.Errorf("rm left %d layer directories", len(layers))
	}
	if stderr := n.fails("image", "rm", reg.Ref("app:1")); !strings.Contains(stderr, "Error from server (NotFound)") {
		t.Errorf("rm of what is gone: %q", stderr)
	}
	// On a terminal (script(1) gives it one), a pull draws its progress on
	// one line, redrawn in place.
	big, err := imagetest.BusyboxImage(func(c *v1.Config) { c.Env = append(c.Env, "BIG=1") })
	if err != nil {
		t.Fatal(err)
	}
	noise := make([]byte, 4<<20)
	rand.Read(noise)
	layer, err := imagetest.Layer([]imagetest.Entry{{Name: "noise", Type: tar.TypeReg, Mode: 0o644, Body: noise}})
	if err != nil {
		t.Fatal(err)
	}
	if big, err = mutate.AppendLayers(big, layer); err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "app:big", big)
	cmd := exec.Command("script", "-qec", berthBin+" image pull "+reg.Ref("app:big"), "/dev/null")
	cmd.Env = n.env
	tty, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pull on a terminal: %v\n%q", err, tty)
	}
	if !regexp.MustCompile(`\r\x1b\[Kpulling ` + regexp.QuoteMeta(reg.Ref("app:big")) + `: [0-9.]+ [KM]iB / [0-9.]+ MiB \([0-9]+%\)`).Match(tty) {
		t.Errorf("no progress line on a terminal:\n%q", tty)
	}
	if _, err := n.store.Remove(context.Background(), mustDigest(t, big)); err != nil {
		t.Fatal(err)
	}

	// berth's own verbs exist only on the socket.
	if r := n.berth("image", "ls", "--server", "http://127.0.0.1:1"); r.code == 0 || !strings.Contains(r.err, "asks berthd on its socket") {
		t.Errorf("image ls --server: exit %d %q", r.code, r.err)
	}
}

// TestImageLoad: an OCI layout directory or an oci-archive is judged by the
// policy's oci-archive default before any layer is unpacked; hostile
// archives are refused by name; nothing is left in staging either way.
func TestImageLoad(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	n := newImageNode(t, reg)
	img, err := imagetest.BusyboxImage(func(c *v1.Config) { c.Env = append(c.Env, "LOADED=1") })
	if err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(n.dir, "layout")
	digest, err := imagetest.WriteLayout(layoutDir, "app:2", img)
	if err != nil {
		t.Fatal(err)
	}
	// What docker save (25+) writes beside the OCI layout: ignored.
	for name, body := range map[string]string{"manifest.json": `[{"Config":"x","RepoTags":["app:2"],"Layers":[]}]`, "repositories": `{"app":{"2":"x"}}`} {
		if err := os.WriteFile(filepath.Join(layoutDir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	archive := filepath.Join(n.dir, "app.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.LayoutArchive(layoutDir, f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The policy of a fresh node: nothing trusted, archives included.
	n.setPolicy(`{"default": [{"type": "reject"}], "transports": {"oci": {"": [{"type": "insecureAcceptAnything"}]}}}`)
	stderr := n.fails("image", "load", layoutDir)
	if !strings.Contains(stderr, "Error from server (Forbidden)") || !strings.Contains(stderr, digest) {
		t.Errorf("refused load: %q", stderr)
	}
	if l := n.list(); len(l.Items) != 0 {
		t.Fatalf("a refused load stored %+v", l.Items)
	}
	if left := n.stagingLeft(); len(left) != 0 {
		t.Errorf("staging after a refused load: %v", left)
	}

	n.setPolicy(`{"default": [{"type": "reject"}], "transports": {"oci-archive": {"": [{"type": "insecureAcceptAnything"}]}}}`)
	out := n.berthOK("image", "load", archive)
	if want := "loaded " + digest + " (accepted by oci-archive:default"; !strings.HasPrefix(out, want) {
		t.Errorf("load printed %q, want %q", out, want)
	}
	// The directory form sends the same image: already stored, judged again.
	if out := n.berthOK("image", "load", layoutDir, "--ref", "app:2"); !strings.HasPrefix(out, "loaded "+digest) {
		t.Errorf("load of the layout printed %q", out)
	}
	// Named as the layout names it (app:2), as a pull of that reference
	// would record it.
	if l := n.list(); len(l.Items) != 1 || l.Items[0].Digest != digest || strings.Join(l.Items[0].Refs, " ") != "docker.io/library/app:2 docker.io/library/app@"+digest {
		t.Fatalf("after load: %+v", l.Items)
	}
	if stderr := n.fails("image", "load", layoutDir, "--ref", "absent:9"); !strings.Contains(stderr, `no descriptor annotated org.opencontainers.image.ref.name="absent:9"`) || strings.Contains(stderr, "archive-") {
		t.Errorf("unknown ref: %q (the staging path must not show)", stderr)
	}

	for _, c := range []struct {
		name    string
		entries []tar.Header
		want    string
	}{
		{"symlink", []tar.Header{{Name: "index.json", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}}, `entry "index.json" is not a regular file or directory`},
		{"dotdot", []tar.Header{{Name: "blobs/../../escape", Typeflag: tar.TypeReg}}, `entry "blobs/../../escape"`},
		{"absolute", []tar.Header{{Name: "/etc/cron.d/x", Typeflag: tar.TypeReg}}, `entry "/etc/cron.d/x"`},
		{"device", []tar.Header{{Name: "blobs/sha256/aa", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 5}}, "is not a regular file or directory"},
		{"stray file", []tar.Header{{Name: "run.sh", Typeflag: tar.TypeReg}}, "an OCI layout holds only"},
		{"stray directory", []tar.Header{{Name: "index.json/x/", Typeflag: tar.TypeDir}}, `directory "index.json/x/" is not part of an OCI layout`},
		{"no index", []tar.Header{{Name: "oci-layout", Typeflag: tar.TypeReg}}, "no index.json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(n.dir, c.name+".tar")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			tw := tar.NewWriter(f)
			for _, h := range c.entries {
				h.Mode = 0o644
				if err := tw.WriteHeader(&h); err != nil {
					t.Fatal(err)
				}
			}
			tw.Close()
			f.Close()
			stderr := n.fails("image", "load", p)
			if !strings.Contains(stderr, "Error from server (BadRequest)") || !strings.Contains(stderr, c.want) {
				t.Errorf("stderr %q, want BadRequest with %q", stderr, c.want)
			}
			if left := n.stagingLeft(); len(left) != 0 {
				t.Errorf("staging left %v", left)
			}
		})
	}
	// Past the bound (64 MiB here): 413, as the apiserver answers an
	// oversized body, and nothing kept; the entry's declared size says so
	// before its bytes are read.
	big := filepath.Join(n.dir, "big.tar")
	f, err = os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + strings.Repeat("0", 64), Typeflag: tar.TypeReg, Mode: 0o644, Size: 65 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(make([]byte, 65<<20)); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	f.Close()
	if stderr := n.fails("image", "load", big); !strings.Contains(stderr, "Error from server (RequestEntityTooLarge): Request entity too large: limit is 67108864") {
		t.Errorf("oversized archive: %q", stderr)
	}
	if left := n.stagingLeft(); len(left) != 0 {
		t.Errorf("staging after an oversized load: %v", left)
	}
}

func mustDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// Paths and methods berth does not serve under /berth/v1/ get a Status, as
// the API's own unknown paths do.
func TestBerthEndpointsUnknown(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	n := newImageNode(t, reg)
	c := client.NewHTTPClient(n.socket)
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/berth/v1/nothing", 404},
		{"PUT", "/berth/v1/images", 405},
		{"GET", "/berth/v1/images/pull", 405},
	} {
		req, _ := http.NewRequest(tc.method, client.Host+tc.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var st metav1.Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.code || st.Kind != "Status" || int(st.Code) != tc.code {
			t.Errorf("%s %s: %d %+v (%v), want a Status %d", tc.method, tc.path, resp.StatusCode, st, err, tc.code)
		}
	}
}
