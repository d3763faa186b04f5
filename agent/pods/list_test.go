package pods

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen"
)

// listingUnits is the fake units that also lists, as systemd lists loaded
// units: what it runs, with the Documentation= and ExecStart= systemd keeps
// of each (what Host reads to tell whose a unit is), and others'.
type listingUnits struct {
	*fakeUnits
	mu      sync.Mutex
	origins map[string]UnitSummary
	others  []UnitSummary // loaded, but started by someone else
}

// listing makes f's runtime list its units (before anything is started).
func listing(f *fixture) *listingUnits {
	lu := &listingUnits{fakeUnits: f.units, origins: map[string]UnitSummary{}}
	f.rt = New(f.rt.cfg, lu, f.images)
	return lu
}

func (l *listingUnits) Start(ctx context.Context, name string, props []unitgen.Property) error {
	var o UnitSummary
	for _, p := range props {
		switch p.Name {
		case "Documentation":
			o.Documentation = p.Value.([]string)
		case "ExecStart":
			for _, c := range p.Value.([]unitgen.ExecCommand) {
				o.ExecStart = append(o.ExecStart, c.Args)
			}
		}
	}
	l.mu.Lock()
	l.origins[name] = o
	l.mu.Unlock()
	return l.fakeUnits.Start(ctx, name, props)
}

func (l *listingUnits) ListUnits(_ context.Context, prefix string) ([]UnitSummary, error) {
	l.fakeUnits.mu.Lock()
	var names []string
	for name, running := range l.started {
		if running && strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	l.fakeUnits.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []UnitSummary
	for _, name := range names {
		o := l.origins[name]
		out = append(out, UnitSummary{Name: name, LoadState: "loaded", ActiveState: "active", SubState: "running",
			Documentation: o.Documentation, ExecStart: o.ExecStart})
	}
	for _, u := range l.others {
		if strings.HasPrefix(u.Name, prefix) {
			out = append(out, u)
		}
	}
	// Not berth's container units: never listed as such.
	if strings.HasPrefix("berth-default.slice", prefix) {
		out = append(out, UnitSummary{Name: "berth-default.slice", ActiveState: "active"}, UnitSummary{Name: "berth-gc.service", ActiveState: "active"})
	}
	return out, nil
}

func TestUnitKey(t *testing.T) {
	long := strings.Repeat("a", 240)
	for name, want := range map[string]bool{
		unitgen.UnitName("default", "web", "app"): true,
		unitgen.UnitName("default", long, "app"):  true, // shortened: three '_'
		"berth-default.slice":                     false,
		"berth.slice":                             false,
		"berthd.service":                          false,
		"berth-gc.service":                        false,
		"berth-a_b.service":                       false,
		"other-a_b_c.service":                     false,
	} {
		if got := IsContainerUnit(name); got != want {
			t.Errorf("IsContainerUnit(%q) = %v, want %v", name, got, want)
		}
	}
	if k, ok := ContainerKeyPodKey("default_web.v1_app"); !ok || k != "default_web.v1" {
		t.Errorf("ContainerKeyPodKey: %q %v", k, ok)
	}
	if _, ok := ContainerKeyPodKey(unitgen.ContainerKey("default", long, "app")); ok {
		t.Error("a shortened key gave a pod key")
	}
}

// Host sees a started pod whole, a half-started one as such, and leftovers
// without records; the removals take each away, mounts included.
func TestHostAndRemovals(t *testing.T) {
	f := newFixture(t)
	listing(f)
	ctx := context.Background()
	pod, imgs := f.pod("web", "app", "side")
	must(t, f.rt.RunPod(ctx, pod, imgs))
	long := strings.Repeat("b", 240)
	lpod, limgs := f.pod(long, "app")
	must(t, f.rt.RunPod(ctx, lpod, limgs))

	// A half-written bundle of "web"'s side container: the FIFO of a start
	// that was never released.
	side := filepath.Join(f.state, "containers", "default_web_side")
	must(t, unix.Mkfifo(filepath.Join(side, bndl.ReleaseFile), 0o600))
	// A run directory whose namespace is pinned but which has no record.
	orphanNS := filepath.Join(f.run, "pods", "default_gone", "ns")
	must(t, createNamespaces(orphanNS, "gone", false))
	// A stray bundle with a mount in it.
	stray := filepath.Join(f.state, "containers", "default_gone_app")
	must(t, os.MkdirAll(filepath.Join(stray, bndl.UpperDir), 0o700))
	must(t, unix.Mount("tmpfs", filepath.Join(stray, bndl.UpperDir), "tmpfs", 0, ""))
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(stray, bndl.UpperDir), unix.MNT_DETACH) })

	h, err := f.rt.Host(ctx)
	must(t, err)
	byKey := map[string]HostPod{}
	for _, p := range h.Pods {
		byKey[p.Key] = p
	}
	web := byKey["default_web"]
	if web.RecordErr != nil || web.UID == "" || !web.Pinned || web.Started() || len(web.Released) != 1 || web.Released[0] != "app" {
		t.Errorf("web: %+v", web)
	}
	lk := unitgen.PodKey("default", long)
	if lp := byKey[lk]; lp.RecordErr != nil || lp.Name != long || !lp.Started() || !lp.Pinned {
		t.Errorf("long: %+v", lp)
	}
	gone := byKey["default_gone"]
	if !errdefs.IsNotFound(gone.RecordErr) || gone.State || !gone.Run || !gone.Pinned {
		t.Errorf("gone: %+v", gone)
	}
	if len(h.Units) != 3 {
		t.Errorf("units: %+v", h.Units)
	}
	for _, u := range h.Units {
		if !u.Running() || !IsContainerUnit(u.Name) {
			t.Errorf("unit %+v", u)
		}
	}
	want := []string{unitgen.ContainerKey("default", long, "app"), "default_gone_app", "default_web_app", "default_web_side"}
	if strings.Join(h.Bundles, " ") != strings.Join(want, " ") {
		t.Errorf("bundles %v, want %v", h.Bundles, want)
	}
	mounts := map[string]int{}
	for _, m := range h.Mounts {
		mounts[m.Key+" "+m.Kind+" "+m.Type]++
	}
	for _, k := range []string{"default_web pod nsfs", "default_gone pod nsfs", "default_gone_app container tmpfs"} {
		if mounts[k] == 0 {
			t.Errorf("mount %s not listed: %v", k, h.Mounts)
		}
	}

	// The removals, in the reconciler's order.
	must(t, f.rt.StopUnit(ctx, unitgen.UnitName("default", "web", "app")))
	must(t, f.rt.StopUnit(ctx, unitgen.UnitName("default", "web", "app"))) // already gone: done
	if err := f.rt.StopUnit(ctx, "berthd.service"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("stopping berthd.service: %v", err)
	}
	for _, b := range []string{"default_gone_app", "default_web_app", "default_web_side"} {
		must(t, f.rt.RemoveBundle(b))
		must(t, f.rt.RemoveBundle(b))
	}
	for _, k := range []string{"default_gone", "default_web"} {
		must(t, f.rt.RemovePodDirs(context.Background(), k))
		must(t, f.rt.RemovePodDirs(context.Background(), k))
	}
	if err := f.rt.RemoveBundle("../pods"); err == nil {
		t.Error("RemoveBundle left its directory")
	}
	h, err = f.rt.Host(ctx)
	must(t, err)
	if len(h.Pods) != 1 || h.Pods[0].Key != lk || len(h.Bundles) != 1 {
		t.Errorf("left: %+v", h)
	}
	for _, m := range h.Mounts {
		if m.Key != lk {
			t.Errorf("mount left: %+v", m)
		}
	}
	for _, p := range []string{filepath.Join(f.run, "pods", "default_gone"), stray, filepath.Join(f.state, "pods", "default_web")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	must(t, f.rt.RemovePod(ctx, "default", long))
}

// A record filed under another pod's key is corrupt: never trusted.
func TestHostMisfiledRecord(t *testing.T) {
	f := newFixture(t)
	listing(f)
	ctx := context.Background()
	pod, imgs := f.pod("web", "app")
	must(t, f.rt.RunPod(ctx, pod, imgs))
	defer f.rt.RemovePod(ctx, "default", "web")
	other := filepath.Join(f.state, "pods", "default_other")
	must(t, os.MkdirAll(other, 0o700))
	b, err := os.ReadFile(filepath.Join(f.state, "pods", "default_web", podRecord))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(other, podRecord), b, 0o600))
	must(t, os.WriteFile(filepath.Join(f.state, "pods", "default_web", podRecord+".tmp"), nil, 0o600))
	h, err := f.rt.Host(ctx)
	must(t, err)
	for _, p := range h.Pods {
		if p.Key == "default_other" && !errdefs.IsDataLoss(p.RecordErr) {
			t.Errorf("misfiled record: %+v", p)
		}
	}
	must(t, os.RemoveAll(other))
}

// Units of another state directory share berth's names but are not this
// berth's: listed apart, never stopped. A unit from before the mark is this
// berth's only when its bundle is in this state directory.
func TestHostForeignUnits(t *testing.T) {
	f := newFixture(t)
	lu := listing(f)
	ctx := context.Background()
	pod, imgs := f.pod("web", "app")
	must(t, f.rt.RunPod(ctx, pod, imgs))
	defer f.rt.RemovePod(ctx, "default", "web")

	own := unitgen.UnitName("default", "web", "app")
	initPath := "/usr/libexec/berth/berth-init"
	other := filepath.Join(filepath.Dir(f.state), "other")
	unit := func(name string, docs []string, argv ...string) UnitSummary {
		return UnitSummary{Name: name, LoadState: "loaded", ActiveState: "active", SubState: "running", Documentation: docs, ExecStart: [][]string{argv}}
	}
	lu.others = []UnitSummary{
		unit(unitgen.UnitName("default", "b", "marked"), []string{unitgen.InstanceDoc(other)}, initPath, "start", "--verify-image", filepath.Join(other, "containers", "default_b_marked")),
		// The mark wins over the bundle's path.
		unit(unitgen.UnitName("default", "b", "lies"), []string{"man:berthd(8)", unitgen.InstanceDoc(other)}, initPath, "start", filepath.Join(f.state, "containers", "default_b_lies")),
		unit(unitgen.UnitName("default", "old", "mine"), nil, initPath, "start", filepath.Join(f.state, "containers", "default_old_mine")),
		unit(unitgen.UnitName("default", "old", "theirs"), nil, initPath, "start", filepath.Join(other, "containers", "default_old_theirs")),
		unit(unitgen.UnitName("default", "x", "nobody"), nil, "/bin/sleep", "3600"),
	}
	h, err := f.rt.Host(ctx)
	must(t, err)
	var mine, theirs []string
	for _, u := range h.Units {
		mine = append(mine, u.Name+"@"+u.StateDir)
	}
	for _, u := range h.Foreign {
		theirs = append(theirs, u.Name+"@"+u.StateDir)
	}
	sort.Strings(mine)
	sort.Strings(theirs)
	wantMine := []string{own + "@" + f.state, unitgen.UnitName("default", "old", "mine") + "@" + f.state}
	sort.Strings(wantMine)
	wantTheirs := []string{
		unitgen.UnitName("default", "b", "lies") + "@" + other, unitgen.UnitName("default", "b", "marked") + "@" + other,
		unitgen.UnitName("default", "old", "theirs") + "@" + other, unitgen.UnitName("default", "x", "nobody") + "@",
	}
	if strings.Join(mine, " ") != strings.Join(wantMine, " ") {
		t.Errorf("own units %v, want %v", mine, wantMine)
	}
	if strings.Join(theirs, " ") != strings.Join(wantTheirs, " ") {
		t.Errorf("foreign units %v, want %v", theirs, wantTheirs)
	}
	for _, u := range h.Foreign {
		if err := f.rt.StopUnit(ctx, u.Name); !errdefs.IsPermissionDenied(err) {
			t.Errorf("StopUnit(%s) = %v, want permission denied", u.Name, err)
		}
	}
	for _, c := range f.units.calls {
		if strings.HasPrefix(c, "stop ") {
			t.Errorf("a foreign unit was stopped: %s", c)
		}
	}
	must(t, f.rt.StopUnit(ctx, own))
}

// A state directory reached through a symlink (state moved to a bigger
// disk): removing an orphan's directories unmounts its volume pins first,
// as the mount table names them resolved, and never deletes through them.
func TestRemovePodDirsThroughSymlinkedState(t *testing.T) {
	testenv.RequireRoot(t)
	real := t.TempDir()
	state := filepath.Join(t.TempDir(), "state")
	must(t, os.Symlink(real, state))
	rt := New(Config{StateDir: state, RunDir: t.TempDir()}, nil, nil)
	pin := filepath.Join(state, "pods", "default_web", "volumes", "host-path", "data")
	must(t, os.MkdirAll(pin, 0o700))
	host := t.TempDir()
	must(t, os.WriteFile(filepath.Join(host, "keep"), []byte("host data"), 0o644))
	must(t, unix.Mount(host, pin, "", unix.MS_BIND, ""))
	t.Cleanup(func() {
		_ = unix.Unmount(filepath.Join(real, "pods", "default_web", "volumes", "host-path", "data"), unix.MNT_DETACH)
	})
	must(t, rt.RemovePodDirs(context.Background(), "default_web"))
	if b, err := os.ReadFile(filepath.Join(host, "keep")); err != nil || string(b) != "host data" {
		t.Fatalf("the host's file behind a pin: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(real, "pods", "default_web")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the pod's directory is left: %v", err)
	}
}
