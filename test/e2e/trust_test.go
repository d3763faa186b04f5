package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen"
)

// Images from a real registry inside the node, signed by the real cosign
// CLI: a signed image runs and is judged again before every (re)start; an
// unsigned one is refused before any layer is fetched; a tag moved to an
// unsigned digest leaves the running digest alone and is refused; a policy
// change refuses the next restart.
func TestTrustPolicyOnRegistryImages(t *testing.T) {
	testenv.RequireCommand(t, "cosign")
	testenv.RequireCommand(t, "skopeo")
	_, err := os.Stat("/usr/bin/docker-registry")
	testenv.Require(t, err == nil, "needs Debian's docker-registry; `make test` installs it")
	if err := nodereg.CopyCosign(binaries(t)); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	ctx := e.ctx()
	reg, err := nodereg.Start(ctx, e.n, 5000)
	if err != nil {
		t.Fatal(err)
	}
	// A second, different image (another config) for the unsigned cases.
	other, err := imagetest.BusyboxImage(func(c *v1.Config) { c.Env = append(c.Env, "VARIANT=unsigned") })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagetest.WriteLayout(e.host(layoutDir), "busybox:other", other); err != nil {
		t.Fatal(err)
	}
	signed, err := reg.PushLayout(ctx, layoutDir, imageRef, "demo/app", "1")
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := reg.PushLayout(ctx, layoutDir, "busybox:other", "demo/app", "unsigned")
	if err != nil {
		t.Fatal(err)
	}
	if err := nodereg.GenerateKey(ctx, e.n, "/var/tmp/keys"); err != nil {
		t.Fatal(err)
	}
	if err := nodereg.Sign(ctx, e.n, "/var/tmp/keys", reg.Host+"/demo/app@"+signed); err != nil {
		t.Fatal(err)
	}
	trusting := `{"default": [{"type": "reject"}], "transports": {"docker": {"` + reg.Host + `/demo": [{"type": "sigstoreSigned", "keyPath": "/var/tmp/keys/cosign.pub"}]}}}`
	e.writePolicy(trusting)

	registryPod := func(name, tag, command string) string {
		return pod(name, "  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: "+reg.Host+"/demo/app:"+tag+"\n    command: [\"sh\", \"-c\", \""+command+"\"]\n")
	}
	// Signed by the trusted key: runs, from the digest it was resolved to.
	if _, err := e.startRegistryPod("signed", registryPod("signed", "1", "sleep 3600")); err != nil {
		t.Fatal(err)
	}
	unit := unitgen.UnitName("default", "signed", "main")
	if s := e.show(unit, "ActiveState"); s != "active" {
		t.Fatalf("signed pod's unit is %s", s)
	}
	if start := e.show(unit, "ExecStart"); !strings.Contains(start, "berth-init start --verify-image") {
		t.Errorf("unit does not judge the image at start: %q", start)
	}
	if desc := e.show(unit, "Description"); !strings.Contains(desc, signed) {
		t.Errorf("unit does not run the resolved digest %s: %q", signed, desc)
	}

	// Unsigned: refused, with the policy's reason, and no unit.
	out, err := e.startRegistryPod("unsigned", registryPod("unsigned", "unsigned", "sleep 3600"))
	if err == nil {
		t.Fatalf("unsigned image started:\n%s", out)
	}
	for _, want := range []string{"rejected by policy", unsigned, reg.Host + "/demo", "no signatures found"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not say %q: %v", want, err)
		}
	}
	if out, _ := e.n.Run(ctx, "systemctl", "list-units", "--all", "--no-legend", "berth-default_unsigned*"); strings.TrimSpace(out) != "" {
		t.Errorf("a unit exists for the refused pod: %s", out)
	}

	// The tag moves to the unsigned digest: a new pull is refused, the
	// running container keeps its digest and still passes its pre-start check.
	if _, err := reg.PushLayout(ctx, layoutDir, "busybox:other", "demo/app", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.n.Run(ctx, "berthd", "--policy", policy, "image", "pull", reg.Host+"/demo/app:1"); err == nil || !strings.Contains(err.Error(), unsigned) {
		t.Errorf("pull of the moved tag: want a refusal naming %s, got %v", unsigned, err)
	}
	e.run("systemctl", "restart", unit)
	if s := e.show(unit, "ActiveState"); s != "active" {
		t.Errorf("restart of the signed container after the tag moved: %s\n%s", s, e.journal(unit))
	}

	// The policy now rejects the scope: the next restart is refused by the
	// unit's start, from the local store.
	e.writePolicy(`{"default": [{"type": "reject"}], "transports": {"docker": {"` + reg.Host + `/demo": [{"type": "reject"}]}}}`)
	restartAt := time.Now()
	if _, err := e.n.Run(ctx, "systemctl", "restart", unit); err == nil {
		t.Errorf("restart under a rejecting policy succeeded")
	}
	j := e.journal(unit)
	if !strings.Contains(j, "rejected by policy") || !strings.Contains(j, signed) {
		t.Errorf("journal does not show the policy's refusal of %s:\n%s", signed, j)
	}
	if s := e.show(unit, "ActiveState"); s == "active" {
		t.Errorf("container runs under a policy that rejects it")
	}
	t.Logf("restart refused in %v", time.Since(restartAt).Round(time.Millisecond))
}

// Image GC removes what no container uses and keeps what one does.
func TestImageGCKeepsImagesInUse(t *testing.T) {
	e := newEnv(t)
	other, err := imagetest.BusyboxImage(func(c *v1.Config) { c.Env = append(c.Env, "VARIANT=gc") })
	if err != nil {
		t.Fatal(err)
	}
	otherDigest, err := imagetest.WriteLayout(e.host(layoutDir), "busybox:gc", other)
	if err != nil {
		t.Fatal(err)
	}
	e.mustStartPod("keep", pod("keep", "  terminationGracePeriodSeconds: 2\n"+sleeper))
	e.mustStartPod("drop", pod("drop", "  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: busybox:gc\n    command: [\"sleep\", \"3600\"]\n"))
	e.run("berthd", "pod", "rm", "default/drop")
	ls := e.run("berthd", "image", "ls")
	if !strings.Contains(ls, otherDigest) {
		t.Fatalf("image of the removed pod not stored before gc:\n%s", ls)
	}
	out := e.run("berthd", "image", "gc", "--force")
	if !strings.Contains(out, "removed "+otherDigest) {
		t.Errorf("gc did not remove the unused image %s:\n%s", otherDigest, out)
	}
	ls = e.run("berthd", "image", "ls")
	if strings.Contains(ls, otherDigest) || len(strings.Split(strings.TrimSpace(ls), "\n")) != 2 {
		t.Errorf("after gc, want only the image in use:\n%s", ls)
	}
	if s := e.show(unitgen.UnitName("default", "keep", "main"), "ActiveState"); s != "active" {
		t.Errorf("the container using the kept image is %s", s)
	}
}
