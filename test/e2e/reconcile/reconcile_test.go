// Package reconcile runs berth's start-up reconcile (agent/reconcile) on a
// real systemd node (test/node): pods started by the real runtime, then
// leftovers of every kind a killed berthd can leave, then reconcile, run
// inside the node by reconcilenode (the pods runtime over the node's
// systemd, in the node's mount namespace where the namespaces are pinned).
// Orphans must be gone to the last unit, mount and directory; the stored
// pods' containers must not have noticed anything.
package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/reconcile"
	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen"
)

// Paths inside the node.
const (
	layoutDir = "/var/tmp/images"
	policy    = "/var/tmp/policy.json" // reconcilenode reads the same
	podDir    = "/var/tmp/pods"
	storeFile = "/var/tmp/store.json"
	imageRef  = "busybox:e2e"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds berthd, berth-init, berth-verify and reconcilenode once.
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = testenv.TempDir("berth-reconcile-bin")
		if buildErr != nil {
			return
		}
		buildErr = testenv.BuildStatic(binDir, "./cmd/berthd", "./cmd/berth-init", "./cmd/berth-hook", "./cmd/berth-verify", "./test/e2e/reconcile/reconcilenode")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

type env struct {
	t *testing.T
	n *node.Node
}

func (e *env) host(p string) string {
	return filepath.Join(e.n.Dir, "var", strings.TrimPrefix(p, "/var/"))
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) try(args ...string) (string, error) { return e.n.Run(e.ctx(), args...) }

func (e *env) run(args ...string) string {
	e.t.Helper()
	out, err := e.try(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) show(unit, prop string) string {
	e.t.Helper()
	return strings.TrimSpace(e.run("systemctl", "show", "-P", prop, unit))
}

// writePod writes a manifest with the given uid into the node and returns
// its path there.
func (e *env) writePod(name, uid string, ctrs ...string) string {
	e.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: default\n  uid: %s\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n", name, uid)
	for _, c := range ctrs {
		fmt.Fprintf(&b, "  - name: %s\n    image: %s\n    command: [sleep, \"3600\"]\n    resources:\n      limits: {cpu: 500m, memory: 96Mi}\n", c, imageRef)
	}
	p := filepath.Join(podDir, name+".yaml")
	if err := os.WriteFile(e.host(p), []byte(b.String()), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) startPod(name, uid string, ctrs ...string) {
	e.t.Helper()
	e.startPodIn(berthA, name, uid, ctrs...)
}

// berth is one berth on the node: its state and run directories.
type berth struct{ state, run string }

var (
	berthA = berth{"/var/lib/berth", "/run/berth"} // the defaults
	berthB = berth{"/var/lib/berth-b", "/run/berth-b"}
	// C shares A's run directory, which it should not: A must still keep
	// its hands off C's pod directories there while C's units run.
	berthC = berth{"/var/lib/berth-c", "/run/berth"}
)

func (b berth) flags() []string { return []string{"--state-dir", b.state, "--run-dir", b.run} }

func (e *env) startPodIn(b berth, name, uid string, ctrs ...string) {
	e.t.Helper()
	args := append([]string{"berthd"}, b.flags()...)
	e.run(append(args, "--policy", policy, "pod", "run", "--layout", layoutDir, "-f", e.writePod(name, uid, ctrs...))...)
}

// units lists berth's container services the node's systemd has loaded.
func (e *env) units() []string {
	e.t.Helper()
	out := e.run("systemctl", "list-units", "--all", "--plain", "--no-legend", "--type=service", "berth-*")
	var us []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			us = append(us, f[0])
		}
	}
	sort.Strings(us)
	return us
}

// berthMounts lists the node's mount points under berth's directories.
func (e *env) berthMounts() []string {
	e.t.Helper()
	return e.mountsOf(berthA)
}

// mountsOf lists the node's mount points under b's directories.
func (e *env) mountsOf(b berth) []string {
	e.t.Helper()
	var ms []string
	for _, l := range strings.Split(e.run("cat", "/proc/self/mountinfo"), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (strings.HasPrefix(f[4], b.run+"/") || strings.HasPrefix(f[4], b.state+"/")) {
			ms = append(ms, f[4])
		}
	}
	sort.Strings(ms)
	return ms
}

// entries lists a directory inside the node.
func (e *env) entries(dir string) []string {
	e.t.Helper()
	out, err := e.try("ls", "-1", dir)
	if err != nil {
		return nil
	}
	return strings.Fields(out)
}

// running is what must survive reconcile untouched: MainPID, control group
// and the limits in its cgroup files.
type running struct {
	pid, group, mem, cpu string
}

func (e *env) observe(unit string) running {
	e.t.Helper()
	r := running{pid: e.show(unit, "MainPID"), group: e.show(unit, "ControlGroup")}
	if r.pid == "0" || r.pid == "" || e.show(unit, "ActiveState") != "active" {
		e.t.Fatalf("%s is not running: MainPID %q", unit, r.pid)
	}
	read := func(key, file string) string {
		p := e.n.CgroupPath(key, r.group, file)
		if p == "" {
			return ""
		}
		b, err := os.ReadFile(p)
		if err != nil {
			// cgroup v2 names the files otherwise; the v1 ones are what
			// these hosts have, the v2 ones are tried next.
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	r.mem = read("memory", "memory.limit_in_bytes") + read("unified", "memory.max")
	r.cpu = read("cpu", "cpu.cfs_quota_us") + read("unified", "cpu.max")
	if r.mem == "" || r.cpu == "" {
		e.t.Fatalf("%s: no limits read from its cgroup %s", unit, r.group)
	}
	return r
}

type result struct {
	Report reconcile.Report `json:"report"`
	Events []struct {
		Kind, Name, Type, Reason, Message string
	} `json:"events"`
	Error string `json:"error"`
}

func (e *env) reconcile(stored ...*corev1.Pod) result {
	e.t.Helper()
	return e.reconcileIn(berthA, stored...)
}

// reconcileIn runs reconcile as b's berthd would, against stored.
func (e *env) reconcileIn(bt berth, stored ...*corev1.Pod) result {
	e.t.Helper()
	b, err := json.Marshal(stored)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(e.host(storeFile), b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	cmd := e.n.Command(e.ctx(), append(append([]string{"reconcilenode"}, bt.flags()...), "reconcile", storeFile)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	e.t.Logf("reconcile log:\n%s", stderr.String())
	if err != nil {
		e.t.Fatalf("reconcilenode: %v\n%s", err, out)
	}
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		e.t.Fatalf("report: %v\n%s", err, out)
	}
	if r.Error != "" {
		e.t.Fatalf("reconcile failed: %s", r.Error)
	}
	return r
}

func stored(name, uid string, ctrs ...string) *corev1.Pod {
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + uid)}}
	for _, c := range ctrs {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: imageRef})
	}
	return p
}

// newEnv boots a node with the busybox layout and a policy admitting it.
func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t)
	_, err := os.Stat(imagetest.Busybox)
	testenv.Require(t, err == nil, "needs busybox-static (/bin/busybox); `make test` installs it")
	e := &env{t: t, n: nodetest.New(t, node.Options{Name: "reconcile", BinDir: binaries(t)})}
	img, err := imagetest.BusyboxImage(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagetest.WriteLayout(e.host(layoutDir), imageRef, img); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(e.host(podDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.host(policy), []byte(`{"default": [{"type": "reject"}], "transports": {"oci": {"`+layoutDir+`": [{"type": "insecureAcceptAnything"}]}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestReconcileRemovesOrphansAndKeepsStoredPods(t *testing.T) {
	e := newEnv(t)

	// Stored and running: must not notice anything.
	e.startPod("keep", "uid-keep", "app")
	e.startPod("pair", "uid-pair", "a", "b")
	// Running, but the store no longer has it.
	e.startPod("gone", "uid-gone", "app")
	// Running, but the store's pod of that name is a later one.
	e.startPod("again", "uid-old", "app")
	// berthd SIGKILLed while starting the second container of a stored pod:
	// the first runs, the second's bundle waits with its release FIFO.
	if out, err := e.try("reconcilenode", "die-at", "b", e.writePod("half", "uid-half", "a", "b"), layoutDir); err == nil {
		t.Fatalf("die-at survived: %s", out)
	}
	if s := e.show(unitgen.UnitName("default", "half", "a"), "ActiveState"); s != "active" {
		t.Fatalf("half-started pod: first container %s", s)
	}
	if e.entries("/var/lib/berth/containers/default_half_b") == nil {
		t.Fatal("half-started pod: no bundle for the container being started")
	}
	// Killed at its first container: a record and a bundle, no unit; its
	// namespaces pinned, or any part of them (they are made meanwhile).
	if out, err := e.try("reconcilenode", "die-at", "app", e.writePod("early", "uid-early", "app"), layoutDir); err == nil {
		t.Fatalf("die-at survived: %s", out)
	}
	if e.entries("/var/lib/berth/pods/default_early") == nil {
		t.Fatal("pod killed at its first container: no record")
	}
	// Namespaces pinned for a pod that has no record at all.
	pinned := "/run/berth/pods/default_pinned/ns"
	e.run("mkdir", "-p", pinned)
	e.run("touch", pinned+"/net", pinned+"/ipc", pinned+"/uts")
	e.run("unshare", "--net="+pinned+"/net", "--ipc="+pinned+"/ipc", "--uts="+pinned+"/uts", "true")
	// A unit with berth's name, this state directory's mark and no pod;
	// one from before the mark whose bundle is in this state directory;
	// and a bundle of nobody's.
	stray := unitgen.UnitName("default", "stray", "app")
	e.run("systemd-run", "--unit", stray, "--property", "CollectMode=inactive-or-failed",
		"--property", "Documentation="+unitgen.InstanceDoc("/var/lib/berth"), "sleep", "3600")
	legacy := unitgen.UnitName("default", "legacy", "app")
	e.run("systemd-run", "--unit", legacy, "--property", "CollectMode=inactive-or-failed",
		"sh", "-c", "exec sleep 3600", "/var/lib/berth/containers/default_legacy_app")
	// Berth's name, but neither a mark nor a bundle: not this berth's.
	unmarked := unitgen.UnitName("default", "unmarked", "app")
	e.run("systemd-run", "--unit", unmarked, "sleep", "3600")
	e.run("mkdir", "-p", "/var/lib/berth/containers/default_nobody_app/upper/etc")
	e.run("touch", "/var/lib/berth/containers/default_nobody_app/upper/etc/x")
	// Not berth's container units: never touched whatever their names.
	e.run("systemd-run", "--unit", "berth-helper.service", "sleep", "3600")

	keepUnits := []string{unitgen.UnitName("default", "keep", "app"), unitgen.UnitName("default", "pair", "a"), unitgen.UnitName("default", "pair", "b")}
	before := map[string]running{}
	for _, u := range keepUnits {
		before[u] = e.observe(u)
	}
	if ms := e.berthMounts(); len(ms) < 6*3 {
		t.Fatalf("before reconcile: %d pinned namespaces, want at least 18: %v", len(ms), ms)
	}

	store := []*corev1.Pod{stored("keep", "keep", "app"), stored("pair", "pair", "a", "b"), stored("again", "new", "app"), stored("half", "half", "a", "b"), stored("early", "early", "app")}
	r := e.reconcile(store...)

	var adopted []string
	for _, a := range r.Report.Adopted {
		adopted = append(adopted, a.Namespace+"/"+a.Name+"/"+string(a.UID))
	}
	sort.Strings(adopted)
	if want := []string{"default/keep/uid-keep", "default/pair/uid-pair"}; strings.Join(adopted, " ") != strings.Join(want, " ") {
		t.Errorf("adopted %v, want %v", adopted, want)
	}
	var reasons []string
	for _, ev := range r.Events {
		if ev.Kind != "Node" || ev.Name != "e2e-node" || ev.Type != corev1.EventTypeNormal {
			t.Errorf("event %+v", ev)
		}
		reasons = append(reasons, ev.Reason+": "+ev.Message)
	}
	all := strings.Join(reasons, "\n")
	t.Logf("events:\n%s", all)
	for _, want := range []string{
		`Removing orphaned pod "default/gone" (uid uid-gone): it is not in the store`,
		`Removing orphaned pod "default/again" (uid uid-old): the store's pod of that name has uid uid-new`,
		`Removing orphaned pod "default/half" (uid uid-half): its start never completed (1 of 2 containers released)`,
		`Removing orphaned pod "default/early" (uid uid-early): its start never completed (0 of 1 containers released)`,
		`Removing orphaned pod directory default_pinned: it has no pod record`,
		`Removing orphaned unit ` + stray,
		`Removing orphaned unit ` + legacy,
		`Removing orphaned bundle default_nobody_app`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no event %q", want)
		}
	}

	// Only the stored pods are left: units, mounts, directories.
	wantUnits := append(append([]string{}, keepUnits...), "berth-helper.service", unmarked)
	sort.Strings(wantUnits)
	if got := e.units(); strings.Join(got, " ") != strings.Join(wantUnits, " ") {
		t.Errorf("units after reconcile: %v, want %v", got, wantUnits)
	}
	if len(r.Report.Foreign) != 1 || r.Report.Foreign[0] != (reconcile.Foreign{Unit: unmarked}) {
		t.Errorf("foreign units %+v, want %s of no state directory", r.Report.Foreign, unmarked)
	}
	var wantMounts []string
	for _, k := range []string{"default_keep", "default_pair"} {
		for _, ns := range []string{"ipc", "net", "uts"} {
			wantMounts = append(wantMounts, "/run/berth/pods/"+k+"/ns/"+ns)
		}
	}
	// Each kept pod's shared /dev/shm, a tmpfs in its state directory.
	for _, k := range []string{"default_keep", "default_pair"} {
		wantMounts = append(wantMounts, "/var/lib/berth/pods/"+k+"/volumes/shm")
	}
	if got := e.berthMounts(); strings.Join(got, " ") != strings.Join(wantMounts, " ") {
		t.Errorf("mounts after reconcile:\n%v\nwant\n%v", got, wantMounts)
	}
	for dir, want := range map[string][]string{
		"/var/lib/berth/pods":       {"default_keep", "default_pair"},
		"/run/berth/pods":           {"default_keep", "default_pair"},
		"/var/lib/berth/containers": {"default_keep_app", "default_pair_a", "default_pair_b"},
	} {
		if got := e.entries(dir); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s after reconcile: %v, want %v", dir, got, want)
		}
	}
	for _, u := range keepUnits {
		if got := e.observe(u); got != before[u] {
			t.Errorf("%s changed: %+v, was %+v", u, got, before[u])
		}
	}

	// Again, as a berthd restarted at once would: nothing left to change.
	r = e.reconcile(store...)
	if len(r.Report.Removed) != 0 || len(r.Events) != 0 || len(r.Report.Adopted) != 2 {
		t.Errorf("second reconcile: %+v, events %+v", r.Report, r.Events)
	}
	for _, u := range keepUnits {
		if got := e.observe(u); got != before[u] {
			t.Errorf("%s changed by the second reconcile: %+v, was %+v", u, got, before[u])
		}
	}
	// The store now empty: everything of berth goes, the helper unit stays.
	r = e.reconcile()
	if len(r.Report.Removed) != 2 {
		t.Errorf("emptied store: removed %+v", r.Report.Removed)
	}
	if got := e.units(); strings.Join(got, " ") != unmarked+" berth-helper.service" {
		t.Errorf("units left: %v", got)
	}
	if ms := e.berthMounts(); len(ms) != 0 {
		t.Errorf("mounts left: %v", ms)
	}
	e.run("systemctl", "stop", "berth-helper.service", unmarked)
}

// Two berths on one node, with their own state and run directories (two
// berthds, or berthd and `berthd --state-dir DIR pod run`): each one's
// reconcile removes its own orphans and leaves the other's units, bundles,
// directories and namespaces alone, even with an empty store. A third with
// its own state directory but A's run directory (`berthd --state-dir DIR
// pod run` without --run-dir) keeps its pod too.
func TestReconcileLeavesOtherStateDirAlone(t *testing.T) {
	e := newEnv(t)
	e.startPod("a-keep", "uid-a-keep", "app")
	e.startPod("a-gone", "uid-a-gone", "app")
	e.startPodIn(berthC, "c-pod", "uid-c-pod", "app")
	cUnit := unitgen.UnitName("default", "c-pod", "app")
	cBefore := e.observe(cUnit)
	var cMounts []string
	for _, ns := range []string{"ipc", "net", "uts"} {
		cMounts = append(cMounts, "/run/berth/pods/default_c-pod/ns/"+ns)
	}
	checkC := func(when string) {
		t.Helper()
		if got := e.observe(cUnit); got != cBefore {
			t.Errorf("%s: %s changed: %+v, was %+v", when, cUnit, got, cBefore)
		}
		ms := map[string]bool{}
		for _, m := range e.mountsOf(berthC) {
			ms[m] = true
		}
		for _, m := range cMounts {
			if !ms[m] {
				t.Errorf("%s: C's namespace %s is no longer pinned", when, m)
			}
		}
		if got := e.entries(berthC.state + "/pods"); strings.Join(got, " ") != "default_c-pod" {
			t.Errorf("%s: C's pods %v", when, got)
		}
	}
	e.startPodIn(berthB, "b-keep", "uid-b-keep", "app")
	e.startPodIn(berthB, "b-gone", "uid-b-gone", "one", "two")
	// B's, from before the mark: its bundle is in B's state directory.
	bLegacy := unitgen.UnitName("default", "b-legacy", "app")
	e.run("systemd-run", "--unit", bLegacy, "--property", "CollectMode=inactive-or-failed",
		"sh", "-c", "exec sleep 3600", berthB.state+"/containers/default_b-legacy_app")

	aKeep := unitgen.UnitName("default", "a-keep", "app")
	aGone := unitgen.UnitName("default", "a-gone", "app")
	bKeep := unitgen.UnitName("default", "b-keep", "app")
	bBerthd := []string{unitgen.UnitName("default", "b-gone", "one"), unitgen.UnitName("default", "b-gone", "two"), bKeep}
	bUnits := append([]string{bLegacy}, bBerthd...)
	sort.Strings(bUnits)
	for _, u := range append([]string{aKeep, aGone}, bUnits...) {
		if s := e.show(u, "ActiveState"); s != "active" {
			t.Fatalf("%s is %s before reconcile", u, s)
		}
	}
	if got := e.show(aKeep, "Documentation"); got != "file:///var/lib/berth" {
		t.Errorf("%s Documentation=%q", aKeep, got)
	}
	if got := e.show(bKeep, "Documentation"); got != "file:///var/lib/berth-b" {
		t.Errorf("%s Documentation=%q", bKeep, got)
	}
	before := map[string]running{}
	for _, u := range bBerthd {
		before[u] = e.observe(u)
	}
	bMounts := e.mountsOf(berthB)
	if len(bMounts) < 2*3 {
		t.Fatalf("B's pinned namespaces: %v", bMounts)
	}
	bDirs := map[string][]string{}
	for _, d := range []string{berthB.state + "/pods", berthB.run + "/pods", berthB.state + "/containers"} {
		bDirs[d] = e.entries(d)
	}

	// A with a store that has a-keep only: a-gone goes, B is not looked at.
	r := e.reconcileIn(berthA, stored("a-keep", "a-keep", "app"))
	if len(r.Report.Removed) != 1 || r.Report.Removed[0].Pod == nil || r.Report.Removed[0].Pod.Name != "a-gone" {
		t.Errorf("A removed %+v", r.Report.Removed)
	}
	var foreign []string
	for _, f := range r.Report.Foreign {
		foreign = append(foreign, f.Unit+"@"+f.StateDir)
	}
	var wantForeign []string
	for _, u := range bUnits {
		wantForeign = append(wantForeign, u+"@"+berthB.state)
	}
	wantForeign = append(wantForeign, cUnit+"@"+berthC.state)
	sort.Strings(foreign)
	sort.Strings(wantForeign)
	if strings.Join(foreign, " ") != strings.Join(wantForeign, " ") {
		t.Errorf("A's foreign units %v, want %v", foreign, wantForeign)
	}
	for _, ev := range r.Events {
		if strings.Contains(ev.Message, "b-") {
			t.Errorf("A's reconcile spoke of B's: %+v", ev)
		}
	}
	checkB := func(when string) {
		t.Helper()
		for u, was := range before {
			if got := e.observe(u); got != was {
				t.Errorf("%s: %s changed: %+v, was %+v", when, u, got, was)
			}
		}
		if s := e.show(bLegacy, "ActiveState"); s != "active" {
			t.Errorf("%s: %s is %s", when, bLegacy, s)
		}
		if got := e.mountsOf(berthB); strings.Join(got, " ") != strings.Join(bMounts, " ") {
			t.Errorf("%s: B's mounts %v, were %v", when, got, bMounts)
		}
		for d, was := range bDirs {
			if got := e.entries(d); strings.Join(got, " ") != strings.Join(was, " ") {
				t.Errorf("%s: %s has %v, had %v", when, d, got, was)
			}
		}
	}
	checkB("after A's reconcile")
	checkC("after A's reconcile")
	if len(r.Report.Kept) != 1 || r.Report.Kept[0].Key != "default_c-pod" {
		t.Errorf("A kept %+v, want C's pod directory in the shared run directory", r.Report.Kept)
	}
	if s, _ := e.try("systemctl", "is-active", aGone); strings.TrimSpace(s) == "active" {
		t.Errorf("%s still active", aGone)
	}
	// A's with an empty store: a-keep goes too, B still untouched.
	if r := e.reconcileIn(berthA); len(r.Report.Removed) != 1 || len(r.Report.Foreign) != len(bUnits)+1 {
		t.Errorf("A with an empty store: %+v", r.Report)
	}
	checkB("after A's reconcile with an empty store")
	checkC("after A's reconcile with an empty store")
	if ms := e.mountsOf(berthA); strings.Join(ms, " ") != strings.Join(cMounts, " ") {
		t.Errorf("A's mounts left: %v", ms)
	}

	// B, with b-keep stored, now with an A pod running: its own orphans go
	// (the legacy unit among them), A's pod stays.
	e.startPod("a-new", "uid-a-new", "app")
	aNew := unitgen.UnitName("default", "a-new", "app")
	aBefore := e.observe(aNew)
	r = e.reconcileIn(berthB, stored("b-keep", "b-keep", "app"))
	var removed []string
	for _, g := range r.Report.Removed {
		removed = append(removed, strings.Join(g.Units, ","))
	}
	sort.Strings(removed)
	wantRemoved := []string{bLegacy, unitgen.UnitName("default", "b-gone", "one") + "," + unitgen.UnitName("default", "b-gone", "two")}
	sort.Strings(wantRemoved)
	if strings.Join(removed, " ") != strings.Join(wantRemoved, " ") {
		t.Errorf("B removed %v, want %v", removed, wantRemoved)
	}
	if len(r.Report.Adopted) != 1 || r.Report.Adopted[0].Name != "b-keep" {
		t.Errorf("B adopted %+v", r.Report.Adopted)
	}
	if want := []reconcile.Foreign{{Unit: aNew, StateDir: berthA.state}, {Unit: cUnit, StateDir: berthC.state}}; !reflect.DeepEqual(r.Report.Foreign, want) {
		t.Errorf("B's foreign units %+v, want %+v", r.Report.Foreign, want)
	}
	if got := e.observe(aNew); got != aBefore {
		t.Errorf("%s changed by B's reconcile: %+v, was %+v", aNew, got, aBefore)
	}
	if got := e.units(); strings.Join(got, " ") != strings.Join([]string{aNew, bKeep, cUnit}, " ") {
		t.Errorf("units after B's reconcile: %v", got)
	}
	checkC("after B's reconcile")

	// All emptied: nothing of any is left.
	e.reconcileIn(berthA)
	checkC("after A's last reconcile")
	e.reconcileIn(berthB)
	if r := e.reconcileIn(berthC); len(r.Report.Removed) != 1 || r.Report.Removed[0].Key != "default_c-pod" {
		t.Errorf("C with an empty store: %+v", r.Report)
	}
	if got := e.units(); len(got) != 0 {
		t.Errorf("units left: %v", got)
	}
	if ms := append(append(e.mountsOf(berthA), e.mountsOf(berthB)...), e.mountsOf(berthC)...); len(ms) != 0 {
		t.Errorf("mounts left: %v", ms)
	}
}
