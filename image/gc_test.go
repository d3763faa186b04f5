package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/test/testenv"
)

// gcFixture: three images with one layer of their own each; B and C also
// share a layer. Use times: B oldest, then C, then A (A was touched last).
type gcFixture struct {
	s               *Store
	a, b, c         string // manifest digests
	la, lb, lc, lsh string // DiffIDs
	clock           time.Time
}

func newGCFixture(t *testing.T) *gcFixture {
	t.Helper()
	f := &gcFixture{s: newStore(t), clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f.s.now = func() time.Time { return f.clock }
	shared := mkLayer(t, tFile("shared", "sh", 0o644))
	imgA := mkImage(t, HostPlatform(), mkLayer(t, tFile("a", "a", 0o644)))
	imgB := mkImage(t, HostPlatform(), mkLayer(t, tFile("b", "b", 0o644)), shared)
	imgC := mkImage(t, HostPlatform(), mkLayer(t, tFile("c", "c", 0o644)), shared)
	imp := func(img v1.Image) *Image {
		f.clock = f.clock.Add(time.Hour)
		im, err := f.s.Import(context.Background(), img, ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
	a, b, c := imp(imgA), imp(imgB), imp(imgC)
	f.a, f.b, f.c = a.Digest, b.Digest, c.Digest
	f.la, f.lb, f.lc, f.lsh = a.DiffIDs[0], b.DiffIDs[0], c.DiffIDs[0], b.DiffIDs[1]
	f.clock = f.clock.Add(time.Hour)
	if err := f.s.Touch(f.a); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{f.a, f.b, f.c} {
		if err := f.s.PutMeta(d, "trust", []byte("ok "+d)); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// layerStatfs is a filesystem of 1000 units where base units are used by
// others and each layer directory of the store takes 100: usage follows
// what GC actually removes.
func layerStatfs(t *testing.T, s *Store, base uint64) func(string) (uint64, uint64, error) {
	return func(path string) (uint64, uint64, error) {
		if path != s.Root() {
			t.Errorf("statfs(%s), want the store root", path)
		}
		n := uint64(len(dirNames(t, filepath.Join(s.Root(), "layers", "sha256"))))
		return 1000, 1000 - base - 100*n, nil
	}
}

func TestGCThresholds(t *testing.T) {
	cases := []struct {
		name       string
		base       uint64 // with 4 layers: usage = base/10 + 40 %
		inUse      func(f *gcFixture) []string
		force      bool
		high, low  int
		removed    func(f *gcFixture) []string
		keptLayers func(f *gcFixture) []string
		before     int
		after      int
		triggered  bool
	}{
		{name: "below high", base: 440, before: 84, after: 84,
			removed:    func(f *gcFixture) []string { return nil },
			keptLayers: func(f *gcFixture) []string { return []string{f.la, f.lb, f.lc, f.lsh} }},
		{name: "at high: least recently used until low", base: 450, before: 85, after: 75, triggered: true,
			// B goes (its own layer frees 10%: 75% <= 80%); A is older by
			// pull time but was touched last.
			removed:    func(f *gcFixture) []string { return []string{f.b} },
			keptLayers: func(f *gcFixture) []string { return []string{f.la, f.lc, f.lsh} }},
		{name: "in use is skipped", base: 550, before: 95, after: 75, triggered: true,
			inUse: func(f *gcFixture) []string { return []string{f.b} },
			// C (85%: its shared layer stays with B), then A (75%).
			removed:    func(f *gcFixture) []string { return []string{f.c, f.a} },
			keptLayers: func(f *gcFixture) []string { return []string{f.lb, f.lsh} }},
		{name: "custom thresholds", base: 300, high: 70, low: 50, before: 70, after: 40, triggered: true,
			// B (60% > 50%), then C, whose layers include the shared one.
			removed:    func(f *gcFixture) []string { return []string{f.b, f.c} },
			keptLayers: func(f *gcFixture) []string { return []string{f.la} }},
		{name: "force removes every unused image", base: 0, force: true, before: 40, after: 10, triggered: true,
			inUse:      func(f *gcFixture) []string { return []string{f.a} },
			removed:    func(f *gcFixture) []string { return []string{f.b, f.c} },
			keptLayers: func(f *gcFixture) []string { return []string{f.la} }},
		{name: "nothing unused", base: 600, before: 100, after: 100, triggered: true,
			inUse:      func(f *gcFixture) []string { return []string{f.a, f.b, f.c} },
			removed:    func(f *gcFixture) []string { return nil },
			keptLayers: func(f *gcFixture) []string { return []string{f.la, f.lb, f.lc, f.lsh} }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newGCFixture(t)
			o := GCOptions{Force: c.force, HighPercent: c.high, LowPercent: c.low, InUse: map[string]bool{}, statfs: layerStatfs(t, f.s, c.base)}
			if c.inUse != nil {
				for _, d := range c.inUse(f) {
					o.InUse[d] = true
				}
			}
			rep, err := f.s.GC(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if rep.UsageBefore != c.before || rep.UsageAfter != c.after || rep.Triggered != c.triggered {
				t.Errorf("usage %d%% → %d%%, triggered %v; want %d%% → %d%%, %v", rep.UsageBefore, rep.UsageAfter, rep.Triggered, c.before, c.after, c.triggered)
			}
			if want := c.removed(f); !slices.Equal(rep.RemovedImages, want) {
				t.Errorf("removed images %v, want %v", rep.RemovedImages, want)
			}
			var layers []string
			for _, n := range dirNames(t, filepath.Join(f.s.Root(), "layers", "sha256")) {
				layers = append(layers, "sha256:"+n)
			}
			if want := c.keptLayers(f); !slices.Equal(sortedStrings(layers...), sortedStrings(want...)) {
				t.Errorf("layers left %v, want %v", layers, want)
			}
			if rep.FreedBytes != int64(len(rep.RemovedLayers))*100 {
				t.Errorf("freed %d units for %d layers", rep.FreedBytes, len(rep.RemovedLayers))
			}
			// Every remaining image is whole; every removed one is gone
			// with its record, blobs and sidecars.
			for _, d := range []string{f.a, f.b, f.c} {
				gone := slices.Contains(rep.RemovedImages, d)
				im, err := f.s.Image(d)
				if gone {
					if !errors.Is(err, errdefs.ErrNotFound) {
						t.Errorf("removed %s still there: %v", d, err)
					}
					if _, err := f.s.GetMeta(d, "trust"); !errors.Is(err, errdefs.ErrNotFound) {
						t.Errorf("meta of removed %s: %v", d, err)
					}
					h, _ := v1.NewHash(d)
					if _, err := os.Stat(f.s.blobPath(h.Hex)); !os.IsNotExist(err) {
						t.Errorf("manifest blob of removed %s: %v", d, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("kept %s: %v", d, err)
					continue
				}
				for _, dir := range f.s.LayerDirs(im) {
					if _, err := os.Stat(dir); err != nil {
						t.Errorf("kept %s lost a layer: %v", d, err)
					}
				}
				if b, err := f.s.GetMeta(d, "trust"); err != nil || string(b) != "ok "+d {
					t.Errorf("meta of kept %s: %q, %v", d, b, err)
				}
			}
			if n := dirNames(t, filepath.Join(f.s.Root(), "tmp")); len(n) != 0 {
				t.Errorf("tmp holds %v", n)
			}
		})
	}
}

func TestGCBadThresholds(t *testing.T) {
	s := newStore(t)
	for _, o := range []GCOptions{{HighPercent: 80, LowPercent: 85}, {HighPercent: 101, LowPercent: 80}, {HighPercent: 85, LowPercent: -1}} {
		if _, err := s.GC(context.Background(), o); err == nil || !strings.Contains(err.Error(), "threshold") {
			t.Errorf("GC(%+v) = %v, want a threshold error", o, err)
		}
	}
}

// TestGCSweepsLeftovers: files no record references (a crash between a
// layer's commit and its image's record, or after a record's removal) are
// removed by any GC; those an import or pull in progress holds are not.
func TestGCSweepsLeftovers(t *testing.T) {
	f := newGCFixture(t)
	s := f.s
	orphans := map[string]string{
		"layers": filepath.Join(s.Root(), "layers", "sha256", strings.Repeat("1", 64)),
		"blobs":  filepath.Join(s.Root(), "blobs", "sha256", strings.Repeat("2", 64)),
		"meta":   filepath.Join(s.Root(), "meta", "sha256", strings.Repeat("3", 64)),
	}
	held := map[string]string{
		"layers": filepath.Join(s.Root(), "layers", "sha256", strings.Repeat("4", 64)),
		"blobs":  filepath.Join(s.Root(), "blobs", "sha256", strings.Repeat("5", 64)),
		"meta":   filepath.Join(s.Root(), "meta", "sha256", strings.Repeat("6", 64)),
	}
	for _, m := range []map[string]string{orphans, held} {
		for kind, p := range m {
			var err error
			if kind == "blobs" {
				err = os.WriteFile(p, []byte("x"), 0o600)
			} else if err = os.MkdirAll(filepath.Join(p, "sub"), 0o700); err == nil {
				err = os.WriteFile(filepath.Join(p, "sub", "f"), []byte("x"), 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	lease := []string{strings.Repeat("4", 64), strings.Repeat("5", 64), strings.Repeat("6", 64)}
	s.acquire(lease)
	// A "crash" after image C's record was removed: its own layer and
	// blobs are unreferenced now.
	h, _ := v1.NewHash(f.c)
	if err := os.Remove(s.recordPath(h.Hex)); err != nil {
		t.Fatal(err)
	}

	rep, err := s.GC(context.Background(), GCOptions{statfs: layerStatfs(t, s, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Triggered || len(rep.RemovedImages) != 0 {
		t.Errorf("report %+v: nothing should have been triggered", rep)
	}
	for kind, p := range orphans {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("orphan %s %s survived: %v", kind, p, err)
		}
	}
	for kind, p := range held {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("held %s %s was removed: %v", kind, p, err)
		}
	}
	wantLayers := sortedStrings("sha256:"+strings.Repeat("1", 64), f.lc)
	if !slices.Equal(sortedStrings(rep.RemovedLayers...), wantLayers) {
		t.Errorf("removed layers %v, want %v", rep.RemovedLayers, wantLayers)
	}
	// C's manifest and config, and the orphan blob.
	if rep.RemovedBlobs != 3 || rep.RemovedMeta != 2 {
		t.Errorf("removed %d blobs and %d meta dirs, want 3 and 2", rep.RemovedBlobs, rep.RemovedMeta)
	}
	for _, d := range []string{f.a, f.b} {
		if _, err := s.Image(d); err != nil {
			t.Errorf("image %s: %v", d, err)
		}
	}
	s.release(lease)
	if _, err := s.GC(context.Background(), GCOptions{statfs: layerStatfs(t, s, 0)}); err != nil {
		t.Fatal(err)
	}
	for kind, p := range held {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("released %s %s survived: %v", kind, p, err)
		}
	}
}

// TestGCTmpfs runs GC against the real statfs of a small tmpfs.
func TestGCTmpfs(t *testing.T) {
	testenv.RequireRoot(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	s, err := New(filepath.Join(mnt, "store"))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { clock = clock.Add(time.Minute); return clock }
	var digests []string
	for i := range 3 {
		img := mkImage(t, HostPlatform(), randomLayer(t, fmt.Sprintf("data%d", i), 1<<20))
		im, err := s.Import(context.Background(), img, ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, im.Digest)
	}
	// Fill the rest to 90% with a file GC cannot remove.
	capacity, avail, err := statfs(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	fill := int64(avail) - int64(capacity)/10
	if err := os.WriteFile(filepath.Join(mnt, "filler"), make([]byte, fill), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(context.Background(), GCOptions{InUse: map[string]bool{digests[0]: true}})
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB of 8 is 12.5%: removing the oldest unused image (the first
	// is in use) gets from 90% to about 77%.
	if rep.UsageBefore < 89 || rep.UsageBefore > 91 || rep.UsageAfter > DefaultGCLowPercent || !rep.Triggered {
		t.Errorf("usage %d%% → %d%%", rep.UsageBefore, rep.UsageAfter)
	}
	if !slices.Equal(rep.RemovedImages, []string{digests[1]}) || len(rep.RemovedLayers) != 1 {
		t.Errorf("removed %v (layers %v), want just %s", rep.RemovedImages, rep.RemovedLayers, digests[1])
	}
	if rep.FreedBytes < 1<<20 {
		t.Errorf("freed %d bytes, want at least 1 MiB", rep.FreedBytes)
	}
	if got := listed(t, s); !slices.Equal(got, sortedStrings(digests[0], digests[2])) {
		t.Errorf("listed %v", got)
	}
	// Below the high threshold now: nothing happens without Force.
	rep, err = s.GC(context.Background(), GCOptions{InUse: map[string]bool{digests[0]: true}})
	if err != nil || rep.Triggered || len(rep.RemovedImages) != 0 {
		t.Errorf("second GC: %+v, %v", rep, err)
	}
	rep, err = s.GC(context.Background(), GCOptions{InUse: map[string]bool{digests[0]: true}, Force: true})
	if err != nil || !slices.Equal(rep.RemovedImages, []string{digests[2]}) {
		t.Errorf("forced GC: %+v, %v", rep, err)
	}
	if got := listed(t, s); !slices.Equal(got, []string{digests[0]}) {
		t.Errorf("listed %v after forced GC", got)
	}
}

func TestMeta(t *testing.T) {
	s := newStore(t)
	d := "sha256:" + strings.Repeat("ab", 32)
	if _, err := s.GetMeta(d, "sig"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetMeta before PutMeta = %v", err)
	}
	for _, data := range []string{"one", "two, longer"} {
		if err := s.PutMeta(d, "sig", []byte(data)); err != nil {
			t.Fatal(err)
		}
		if b, err := s.GetMeta(d, "sig"); err != nil || string(b) != data {
			t.Errorf("GetMeta = %q, %v; want %q", b, err, data)
		}
	}
	for _, name := range []string{"", ".hidden", "a/b", "..", "x y", strings.Repeat("n", 129)} {
		if err := s.PutMeta(d, name, nil); err == nil {
			t.Errorf("PutMeta name %q accepted", name)
		}
	}
	for _, bad := range []string{"", "abc", "sha512:" + strings.Repeat("ab", 64), "sha256:../../x"} {
		if err := s.PutMeta(bad, "sig", nil); err == nil {
			t.Errorf("PutMeta digest %q accepted", bad)
		}
	}
	if err := s.PutMeta(d, "big", make([]byte, MaxMetaBytes+1)); err == nil {
		t.Error("oversized meta accepted")
	}
	if n := dirNames(t, filepath.Join(s.Root(), "tmp")); len(n) != 0 {
		t.Errorf("tmp holds %v", n)
	}
	if err := s.Touch(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Touch of an unknown image = %v", err)
	}
}

// TestGCConcurrentWithImports: a GC sweeping all the time never takes the
// layers, config or manifest of an import in progress: every image is
// whole when its Import returns, and stays so.
func TestGCConcurrentWithImports(t *testing.T) {
	s := newStore(t)
	shared := mkLayer(t, tFile("shared", "sh", 0o644))
	var imgs []v1.Image
	inUse := map[string]bool{}
	for i := range 40 {
		img := mkImage(t, HostPlatform(), shared, mkLayer(t, tFile("own", fmt.Sprint(i), 0o644)))
		imgs = append(imgs, img)
		inUse[mustDigest(t, img)] = true
	}
	stop := make(chan struct{})
	gcDone := make(chan error, 1)
	sweeps := 0
	go func() {
		for {
			select {
			case <-stop:
				gcDone <- nil
				return
			default:
			}
			// Force with everything in use: only the sweep of unreferenced
			// files runs, as often as possible.
			if _, err := s.GC(context.Background(), GCOptions{Force: true, InUse: inUse, statfs: layerStatfs(t, s, 0)}); err != nil {
				gcDone <- err
				return
			}
			sweeps++
		}
	}()
	for i, img := range imgs {
		im, err := s.Import(context.Background(), img, ImportOptions{})
		if err != nil {
			t.Errorf("import %d during GC: %v", i, err)
			continue
		}
		if _, err := s.Image(im.Digest); err != nil {
			t.Errorf("image %d right after Import: %v", i, err)
		}
		if b, err := s.ReadFile(im, "/own"); err != nil || string(b) != fmt.Sprint(i) {
			t.Errorf("image %d /own = %q, %v", i, b, err)
		}
	}
	close(stop)
	if err := <-gcDone; err != nil {
		t.Fatalf("GC: %v", err)
	}
	if sweeps < 10 {
		t.Errorf("only %d sweeps ran during the imports", sweeps)
	}
	left, err := s.Images()
	if err != nil || len(left) != len(imgs) {
		t.Fatalf("Images() after concurrent GC: %d, %v", len(left), err)
	}
	for _, im := range left {
		for _, d := range s.LayerDirs(im) {
			if _, err := os.Stat(d); err != nil {
				t.Errorf("image %s lost layer %s", im.Digest, d)
			}
		}
	}
}
