package storage

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/test/testenv"
)

// TestIdsIn reads /etc/projid (name:id) and /etc/projects (id:path).
func TestIdsIn(t *testing.T) {
	dir := t.TempDir()
	projid := filepath.Join(dir, "projid")
	projects := filepath.Join(dir, "projects")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(projid, []byte("# comment\nlogs:1048577\n\nweird\nbig:4294967296\n"), 0o644))
	must(os.WriteFile(projects, []byte("1048578:/srv/data\n7:/x:y\n"), 0o644))
	used := map[uint32]bool{}
	must(idsIn(projid, 1, used))
	must(idsIn(projects, 0, used))
	must(idsIn(filepath.Join(dir, "absent"), 0, used))
	want := map[uint32]bool{1048577: true, 1048578: true, 7: true}
	if len(used) != len(want) {
		t.Errorf("ids %v, want %v", used, want)
	}
	for id := range want {
		if !used[id] {
			t.Errorf("ids %v lack %d", used, id)
		}
	}
}

// mountProjectQuotaFS mounts a new 64 MiB ext4 with project quotas
// (mkfs.ext4 -O quota,project; mount -o prjquota) for the test and
// returns its mount point; it is unmounted, and its loop device freed, at
// the test's end.
func mountProjectQuotaFS(t *testing.T) string {
	t.Helper()
	mkfs := testenv.RequireCommand(t, "mkfs.ext4")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-O", "quota,project", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	// Modules the guest's kernel may not have loaded yet; mount says what
	// is missing if it fails.
	for _, m := range []string{"loop", "ext4"} {
		_ = exec.Command("modprobe", m).Run()
	}
	out, err := exec.Command("mount", "-o", "loop,prjquota", img, mnt).CombinedOutput()
	testenv.Require(t, err == nil, "mount ext4 with prjquota (a kernel with CONFIG_QUOTA): "+strings.TrimSpace(string(out)))
	t.Cleanup(func() {
		// -o loop set autoclear: the loop device goes with the mount.
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

// writeAs writes n MiB to file (making its directory) as root without
// capabilities (setpriv: an empty bounding set), as a container's root
// would: CAP_SYS_RESOURCE would pass any quota.
func writeAs(t *testing.T, file string, n int) (string, error) {
	setpriv := testenv.RequireCommand(t, "setpriv")
	out, err := exec.Command(setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", "sh", "-c",
		`grep ^CapEff /proc/self/status; mkdir -p "$(dirname "$1")" && dd if=/dev/zero of="$1" bs=1M count=$2 conv=fsync 2>&1`,
		"sh", file, strconv.Itoa(n)).CombinedOutput()
	return string(out), err
}

// On a filesystem with project quotas, each provisioned volume is held to
// its capacity by the kernel: a project of its own with PROJINHERIT (a
// subdirectory a container makes is held too), df in it shows the
// capacity, a write past it fails with EDQUOT, a resize moves the limit,
// and reclaiming the volume frees its project.
func TestProjectQuotaHoldsVolumes(t *testing.T) {
	// Debian's kernel, which the cgroup v2 tier boots (hack/v2vm.sh), has
	// CONFIG_QUOTA; this host's kernel has not and refuses prjquota.
	testenv.CgroupTier(t, true)
	testenv.RequireRoot(t)
	state := mountProjectQuotaFS(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ev := &events{}
	c := New(Config{Store: st, StateDir: state, NodeName: "n1", FreshStore: true, Events: ev})
	if !c.quota {
		t.Fatalf("ProjectQuota(%s) = false: %s", c.dir, c.quotaWhy)
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sc := NewDefaultClass()
	sc.Name, sc.Annotations, sc.AllowVolumeExpansion = "grow", nil, ptr(true)
	if err := st.Create(Classes, sc); err != nil {
		t.Fatal(err)
	}
	size := func(s string) func(*corev1.PersistentVolumeClaim) {
		return func(cl *corev1.PersistentVolumeClaim) {
			cl.Spec.StorageClassName = ptr("grow")
			cl.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse(s)
		}
	}
	storeClaim(t, st, claim("a", size("8Mi")))
	storeClaim(t, st, claim("b", size("4Mi")))
	pass(t, c)

	held := func(name string, want int64) (string, uint32) {
		t.Helper()
		cl := getClaim(t, st, name)
		if cl.Spec.VolumeName == "" {
			t.Fatalf("claim %s not bound: %v", name, *ev)
		}
		dir := filepath.Join(c.dir, cl.Spec.VolumeName)
		id, err := ProjectID(dir)
		if err != nil || id < firstProjectID {
			t.Fatalf("project of %s: %d %v", dir, id, err)
		}
		if limit, _, err := ProjectLimit(c.dir, id); err != nil || int64(limit) != want {
			t.Errorf("project %d's limit: %d %v, want %d", id, limit, err, want)
		}
		var fs unix.Statfs_t
		if err := unix.Statfs(dir, &fs); err != nil {
			t.Fatal(err)
		}
		if got := int64(fs.Blocks) * fs.Bsize; got != want {
			t.Errorf("statfs in %s: %d bytes, want the capacity %d", name, got, want)
		}
		return dir, id
	}
	a, ida := held("a", 8<<20)
	_, idb := held("b", 4<<20)
	if ida == idb {
		t.Fatalf("two volumes share project %d", ida)
	}

	// 12 MiB do not fit in 8, also in a subdirectory made later.
	big := filepath.Join(a, "sub", "big")
	if out, err := writeAs(t, big, 12); err == nil || !strings.Contains(out, "Disk quota exceeded") {
		t.Errorf("12 MiB into an 8 MiB volume: %v\n%s", err, out)
	}
	if id, err := ProjectID(filepath.Dir(big)); err != nil || id != ida {
		t.Errorf("a subdirectory's project: %d %v, want %d", id, err, ida)
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}

	// Resized to 16 MiB, they do.
	if _, err := st.Modify(Claims, "ns", "a", &corev1.PersistentVolumeClaim{}, func(cur store.Object) (store.Decision, error) {
		cur.(*corev1.PersistentVolumeClaim).Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("16Mi")
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	pass(t, c)
	if _, id := held("a", 16<<20); id != ida {
		t.Errorf("the resize changed the project: %d, was %d", id, ida)
	}
	if out, err := writeAs(t, big, 12); err != nil {
		t.Errorf("12 MiB into the volume resized to 16 MiB: %v\n%s", err, out)
	}
	if _, used, err := ProjectLimit(c.dir, ida); err != nil || used < 12<<20 {
		t.Errorf("project %d charged %d bytes (%v), want the 12 MiB written", ida, used, err)
	}

	// Reclaimed: the directory and its project's limit go.
	deleteObject(t, st, Claims, "ns", "a", &corev1.PersistentVolumeClaim{})
	pass(t, c)
	pass(t, c)
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Fatalf("volume directory after reclaim: %v", err)
	}
	if limit, used, err := ProjectLimit(c.dir, ida); err != nil || limit != 0 || used != 0 {
		t.Errorf("project %d after reclaim: limit %d, used %d (%v), want none", ida, limit, used, err)
	}
	// The next volume may have the freed ID; it is held like the first.
	storeClaim(t, st, claim("c", size("2Mi")))
	pass(t, c)
	held("c", 2<<20)
}
