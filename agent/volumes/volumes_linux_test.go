package volumes

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func cmVolume(name, cm string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm}}}}
}

// A configMap update reaches a container through the mount it already
// has, in one atomic step, with the kubelet's layout.
func TestConfigMapAtomicUpdate(t *testing.T) {
	privateNS(t)
	dir := podDir(t)
	src := &source{cms: map[string]*corev1.ConfigMap{"ns/cfg": {
		Data: map[string]string{"a": "one", "b": "bee"}, BinaryData: map[string][]byte{"bin": {0, 1, 2}}}}}
	m := New(Config{}, src)
	pod := newPod(cmVolume("cfg", "cfg"))
	set, err := m.Setup(pod, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	vol := set.Volumes["cfg"]
	if !vol.ReadOnly || vol.Path != filepath.Join(dir, "configmap", "cfg") {
		t.Fatalf("volume %+v", vol)
	}
	if isTmpfs(t, vol.Path) {
		t.Error("configMap volume is a tmpfs; the kubelet keeps it on disk")
	}
	ctr := bindLike(t, vol.Path) // the container's view
	d, err := os.Open(ctr)       // and a directory opened before the update
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := read(t, filepath.Join(ctr, "a")); got != "one" {
		t.Fatalf("a = %q", got)
	}
	if got := read(t, filepath.Join(ctr, "bin")); got != "\x00\x01\x02" {
		t.Fatalf("bin = %q", got)
	}
	for _, k := range []string{"a", "b", "bin"} {
		if l, err := os.Readlink(filepath.Join(vol.Path, k)); err != nil || l != "..data/"+k {
			t.Errorf("%s -> %q, %v; want ..data/%s", k, l, err, k)
		}
	}
	ts1, err := os.Readlink(filepath.Join(vol.Path, "..data"))
	if err != nil || !strings.HasPrefix(ts1, "..20") {
		t.Fatalf("..data -> %q, %v", ts1, err)
	}

	// An unchanged object writes nothing.
	if err := m.Update(pod, dir, nil); err != nil {
		t.Fatal(err)
	}
	if ts, _ := os.Readlink(filepath.Join(vol.Path, "..data")); ts != ts1 {
		t.Errorf("unchanged update swapped ..data: %s -> %s", ts1, ts)
	}

	src.cms["ns/cfg"] = &corev1.ConfigMap{Data: map[string]string{"a": "two", "c": "sea"}}
	if err := m.Update(pod, dir, nil); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(ctr, "a")); got != "two" {
		t.Errorf("after update, container sees a = %q", got)
	}
	fd, err := unix.Openat(int(d.Fd()), "c", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("new key through the previously opened directory: %v", err)
	}
	b := make([]byte, 10)
	n, _ := unix.Read(fd, b)
	unix.Close(fd)
	if string(b[:n]) != "sea" {
		t.Errorf("c = %q", b[:n])
	}
	for _, gone := range []string{"b", "bin", ts1} {
		if _, err := os.Lstat(filepath.Join(vol.Path, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after update: %v", gone, err)
		}
	}
	ents, _ := os.ReadDir(vol.Path)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 4 { // ..<ts>, ..data, a, c
		t.Errorf("volume holds %v", names)
	}
}

func TestModes(t *testing.T) {
	privateNS(t)
	dir := podDir(t)
	src := &source{
		cms:  map[string]*corev1.ConfigMap{"ns/cfg": {Data: map[string]string{"plain": "p", "k": "v"}}},
		secs: map[string]*corev1.Secret{"ns/sec": {Data: map[string][]byte{"user": []byte("u"), "pass": []byte("p")}}},
	}
	m := New(Config{}, src)
	cfg := cmVolume("cfg", "cfg")
	sec := corev1.Volume{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: "sec", DefaultMode: ptr[int32](0o400),
		Items: []corev1.KeyToPath{{Key: "user", Path: "creds/user"}, {Key: "pass", Path: "creds/pass", Mode: ptr[int32](0o440)}},
	}}}
	old := unix.Umask(0o077) // modes must not depend on berthd's umask
	defer unix.Umask(old)
	set, err := m.Setup(newPod(cfg, sec), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(p string, want os.FileMode) {
		t.Helper()
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", p, st.Mode().Perm(), want)
		}
	}
	c, s := set.Volumes["cfg"].Path, set.Volumes["sec"].Path
	check(filepath.Join(c, "plain"), 0o644) // the API default
	check(filepath.Join(s, "creds/user"), 0o400)
	check(filepath.Join(s, "creds/pass"), 0o440)
	check(filepath.Join(s, "..data"), 0o755)
	check(filepath.Join(s, "..data", "creds"), 0o755)
	if l, _ := os.Readlink(filepath.Join(s, "creds")); l != "..data/creds" {
		t.Errorf("creds -> %q", l)
	}
	if !isTmpfs(t, s) {
		t.Error("secret volume is not on a tmpfs")
	}
	if isTmpfs(t, c) {
		t.Error("configMap volume is on a tmpfs")
	}
}

func TestOptionalAndMissing(t *testing.T) {
	privateNS(t)
	src := &source{cms: map[string]*corev1.ConfigMap{"ns/cfg": {Data: map[string]string{"k": "v"}}}}
	m := New(Config{}, src)

	// Missing, not optional: the kubelet's text, errdefs' class, nothing left.
	dir := podDir(t)
	_, err := m.Setup(newPod(cmVolume("v", "nope")), dir, nil)
	mustContain(t, err, `configmap "nope" not found`)
	if !errdefs.IsNotFound(err) {
		t.Errorf("%v is not NotFound", err)
	}
	if _, serr := os.Lstat(dir); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("failed setup left %s", dir)
	}
	sv := corev1.Volume{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "gone"}}}
	_, err = m.Setup(newPod(sv), dir, nil)
	mustContain(t, err, `secret "gone" not found`)

	// Missing, optional: an empty volume, filled once the object exists.
	ov := cmVolume("v", "later")
	ov.ConfigMap.Optional = ptr(true)
	pod := newPod(ov)
	set, err := m.Setup(pod, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(set.Volumes["v"].Path, "..data")); err != nil {
		t.Errorf("optional missing configmap: no ..data: %v", err)
	}
	src.cms["ns/later"] = &corev1.ConfigMap{Data: map[string]string{"x": "y"}}
	if err := m.Update(pod, dir, nil); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(set.Volumes["v"].Path, "x")); got != "y" {
		t.Errorf("x = %q", got)
	}

	// A missing key of an item: an error unless optional.
	kv := cmVolume("i", "cfg")
	kv.ConfigMap.Items = []corev1.KeyToPath{{Key: "k", Path: "k"}, {Key: "absent", Path: "a"}}
	dir2 := podDir(t)
	_, err = m.Setup(newPod(kv), dir2, nil)
	mustContain(t, err, "configmap references non-existent config key: absent")
	kv.ConfigMap.Optional = ptr(true)
	set, err = m.Setup(newPod(kv), dir2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(set.Volumes["i"].Path, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("optional missing key made a file: %v", err)
	}
}

// Keys and item paths cannot leave the volume, and links planted in the
// volume directory are replaced, never followed.
func TestKeyEscapes(t *testing.T) {
	privateNS(t)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "keep"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := &source{cms: map[string]*corev1.ConfigMap{
		"ns/badkey": {Data: map[string]string{"..x": "v"}},
		"ns/dots":   {Data: map[string]string{"../../x": "v"}},
		"ns/ok":     {Data: map[string]string{"k": "v"}},
	}}
	m := New(Config{}, src)
	for _, name := range []string{"badkey", "dots"} {
		_, err := m.Setup(newPod(cmVolume("v", name)), podDir(t), nil)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("key of %s: %v, want invalid", name, err)
		}
	}
	for _, p := range []string{"../x", "a/../../x", "/etc/passwd", "..data/x", "..2026_x/y", ""} {
		v := cmVolume("v", "ok")
		v.ConfigMap.Items = []corev1.KeyToPath{{Key: "k", Path: p}}
		_, err := m.Setup(newPod(v), podDir(t), nil)
		if err == nil || !strings.Contains(err.Error(), "invalid path") {
			t.Errorf("item path %q: %v, want refused", p, err)
		}
	}

	// Links planted where AtomicWriter will write: a user-visible name
	// pointing outside, and ..data pointing at a host directory.
	dir := podDir(t)
	v := cmVolume("v", "ok")
	v.ConfigMap.Items = []corev1.KeyToPath{{Key: "k", Path: "sub/file"}}
	pod := newPod(v)
	set, err := m.Setup(pod, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	vp := set.Volumes["v"].Path
	os.Remove(filepath.Join(vp, "sub"))
	if err := os.Symlink(outside, filepath.Join(vp, "sub")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(vp, "..data"))
	if err := os.Symlink(outside, filepath.Join(vp, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(pod, dir, nil); err != nil {
		t.Fatal(err)
	}
	if l, _ := os.Readlink(filepath.Join(vp, "sub")); l != "..data/sub" {
		t.Errorf("planted link kept: sub -> %q", l)
	}
	if l, _ := os.Readlink(filepath.Join(vp, "..data")); !isTsName(l) {
		t.Errorf("..data -> %q", l)
	}
	if got := read(t, filepath.Join(vp, "sub/file")); got != "v" {
		t.Errorf("sub/file = %q", got)
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 1 || read(t, filepath.Join(outside, "keep")) != "host" {
		t.Errorf("the host directory was touched: %v", ents)
	}
}

func emptyDirVol(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

func TestSubPath(t *testing.T) {
	privateNS(t)
	dir := podDir(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o600)
	src := &source{cms: map[string]*corev1.ConfigMap{"ns/cfg": {Data: map[string]string{"app.conf": "conf"}}}}
	m := New(Config{}, src)
	pod := newPod(emptyDirVol("data"), cmVolume("cfg", "cfg"))
	set, err := m.Setup(pod, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ed := set.Volumes["data"].Path
	if st, _ := os.Stat(ed); st.Mode().Perm() != 0o777 {
		t.Errorf("emptyDir mode %o, want 777", st.Mode().Perm())
	}
	os.MkdirAll(filepath.Join(ed, "a/b"), 0o755)
	os.WriteFile(filepath.Join(ed, "a/b/f"), []byte("inside"), 0o644)
	os.Symlink(outside, filepath.Join(ed, "out"))
	os.Symlink("a", filepath.Join(ed, "in"))

	mounts := func(vms ...corev1.VolumeMount) ([]Mount, error) {
		return set.ContainerMounts(&corev1.Container{Name: "app", VolumeMounts: vms}, map[string]string{"POD": "a"}, false)
	}
	ms, err := mounts(
		corev1.VolumeMount{Name: "data", MountPath: "/data"},
		corev1.VolumeMount{Name: "data", MountPath: "/b", SubPath: "a/b"},
		corev1.VolumeMount{Name: "data", MountPath: "/expr", SubPathExpr: "$(POD)/b/f"},
		corev1.VolumeMount{Name: "cfg", MountPath: "/etc/app.conf", SubPath: "app.conf"},
		corev1.VolumeMount{Name: "data", MountPath: "/new", SubPath: "made/here", ReadOnly: true},
	)
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].Source != ed || ms[0].ReadOnly || ms[0].Propagation != "rprivate" {
		t.Errorf("plain mount %+v", ms[0])
	}
	if got := read(t, filepath.Join(ms[1].Source, "f")); got != "inside" {
		t.Errorf("subPath a/b: f = %q", got)
	}
	if got := read(t, ms[2].Source); got != "inside" {
		t.Errorf("subPathExpr file = %q", got)
	}
	if got := read(t, ms[3].Source); got != "conf" || !ms[3].ReadOnly {
		t.Errorf("configMap key by subPath: %q, %+v", got, ms[3])
	}
	if st, err := os.Stat(filepath.Join(ed, "made/here")); err != nil || !st.IsDir() || st.Mode().Perm() != 0o777 {
		t.Errorf("missing subPath not created as the kubelet does: %v %v", st, err)
	}
	if !ms[4].ReadOnly {
		t.Error("readOnly lost")
	}

	// The pin holds the inode: swapping a/b for a link to the host after
	// the mount was prepared changes nothing in it.
	os.Rename(filepath.Join(ed, "a"), filepath.Join(ed, "a.old"))
	os.Symlink(outside, filepath.Join(ed, "a"))
	if got := read(t, filepath.Join(ms[1].Source, "f")); got != "inside" {
		t.Errorf("after swap, pin shows %q", got)
	}
	os.Remove(filepath.Join(ed, "a"))
	os.Rename(filepath.Join(ed, "a.old"), filepath.Join(ed, "a"))

	for _, c := range []struct {
		vm   corev1.VolumeMount
		want string
	}{
		{corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "../x"}, "must not contain '..'"},
		{corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "a/../../x"}, "must not contain '..'"},
		{corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "/etc"}, "must not be an absolute path"},
		{corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "out/secret"}, "symlink"},
		{corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "out"}, "symlink"},
		{corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "in/b"}, "symlink"},
		{corev1.VolumeMount{Name: "data", MountPath: "/x", SubPathExpr: "$(NOPE)/x"}, "missing value for NOPE"},
		{corev1.VolumeMount{Name: "nope", MountPath: "/x"}, `cannot find volume "nope" to mount into container "app"`},
		{corev1.VolumeMount{Name: "data", MountPath: "/x", MountPropagation: ptr(corev1.MountPropagationBidirectional)}, "only to privileged"},
	} {
		ms, err := mounts(c.vm)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v %v, want error with %q", c.vm, ms, err, c.want)
		}
	}
	if _, err := os.Lstat(filepath.Join(outside, "x")); err == nil {
		t.Error("a refused subPath created something outside")
	}

	// A link in a configMap volume pointing out is refused even though
	// links are followed there.
	cp := set.Volumes["cfg"].Path
	os.Symlink(outside, filepath.Join(cp, "evil"))
	_, err = mounts(corev1.VolumeMount{Name: "cfg", MountPath: "/x", SubPath: "evil/secret"})
	mustContain(t, err, "not within the volume")

	// A symlink swapped in between the check and the open is refused.
	afterCheck = func(string) {
		os.Rename(filepath.Join(ed, "a"), filepath.Join(ed, "a.old"))
		os.Symlink(outside, filepath.Join(ed, "a"))
	}
	defer func() { afterCheck = func(string) {} }()
	_, err = mounts(corev1.VolumeMount{Name: "data", MountPath: "/x", SubPath: "a/b"})
	mustContain(t, err, "symlink")
	// In a configMap volume the key's links were resolved at the check:
	// swapping the timestamped directory they led to is refused too.
	os.WriteFile(filepath.Join(outside, "app.conf"), []byte("host"), 0o600)
	ts, _ := os.Readlink(filepath.Join(cp, "..data"))
	afterCheck = func(string) {
		os.Rename(filepath.Join(cp, ts), filepath.Join(cp, ts+".old"))
		os.Symlink(outside, filepath.Join(cp, ts))
	}
	_, err = mounts(corev1.VolumeMount{Name: "cfg", MountPath: "/x", SubPath: "app.conf"})
	mustContain(t, err, "symlink")
	afterCheck = func(string) {}
	os.Remove(filepath.Join(cp, ts))
	os.Rename(filepath.Join(cp, ts+".old"), filepath.Join(cp, ts))

	if err := set.ReleaseContainer("app"); err != nil {
		t.Fatal(err)
	}
	if mps, _ := mountPoints(filepath.Join(dir, "subpath")); len(mps) != 0 {
		t.Errorf("pins left: %v", mps)
	}
}

func hostPathVol(name, p string, typ corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p, Type: &typ}}}
}

func TestHostPath(t *testing.T) {
	privateNS(t)
	base := t.TempDir()
	allowed := filepath.Join(base, "allowed")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{allowed + "/dir", outside} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(filepath.Join(allowed, "dir/marker"), []byte("original"), 0o644)
	os.WriteFile(filepath.Join(allowed, "file"), []byte("f"), 0o644)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o600)
	os.Symlink(outside, filepath.Join(allowed, "escape"))    // in the prefix, pointing out
	os.Symlink(allowed+"/dir", filepath.Join(base, "alias")) // out of the prefix, pointing in
	l, err := net.Listen("unix", filepath.Join(allowed, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m := New(Config{HostPathPrefixes: []string{allowed, "/dev/null"}}, nil)

	setup := func(v corev1.Volume) (*Set, error) {
		return m.Setup(newPod(v), podDir(t), nil)
	}
	for _, c := range []struct {
		path string
		typ  corev1.HostPathType
		want string
	}{
		{outside, "", "not under a prefix berthd.yaml allows"},
		{allowed + "/escape", "", "not under a prefix"},
		{allowed + "/escape/secret", corev1.HostPathFile, "not under a prefix"},
		{allowed + "/../outside", "", "must not contain '..'"},
		{allowed + "/file", corev1.HostPathDirectory, "hostPath type check failed: " + allowed + "/file is not a directory, it's a File"},
		{allowed + "/dir", corev1.HostPathFile, "is not a file, it's a Directory"},
		{allowed + "/file", corev1.HostPathSocket, "is not a socket file, it's a File"},
		{"/dev/null", corev1.HostPathBlockDev, "/dev/null is not a block device, it's a CharDevice"},
		{allowed + "/none", corev1.HostPathDirectory, "hostPath " + allowed + "/none doesn't exist"},
		{allowed + "/none/f", corev1.HostPathFileOrCreate, "no such file"},
		{allowed + "/dir", "Bogus", "Bogus is an invalid volume type"},
	} {
		_, err := setup(hostPathVol("h", c.path, c.typ))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s (%q): %v, want error with %q", c.path, c.typ, err, c.want)
		}
	}
	if _, err := setup(hostPathVol("h", outside, "")); !errdefs.IsPermissionDenied(err) {
		t.Errorf("outside prefix: %v, want permission denied", err)
	}
	if _, err := os.Lstat(filepath.Join(allowed, "none")); err == nil {
		t.Error("a refused hostPath created something")
	}

	for _, c := range []struct {
		path string
		typ  corev1.HostPathType
	}{
		{allowed + "/dir", corev1.HostPathDirectory},
		{base + "/alias", corev1.HostPathDirectory}, // resolved into the prefix
		{allowed + "/file", corev1.HostPathFile},
		{allowed + "/sock", corev1.HostPathSocket},
		{"/dev/null", corev1.HostPathCharDev},
		{allowed + "/dir", ""},
	} {
		if _, err := setup(hostPathVol("h", c.path, c.typ)); err != nil {
			t.Errorf("%s (%q): %v", c.path, c.typ, err)
		}
	}

	// *OrCreate create with the kubelet's modes, whatever the umask.
	old := unix.Umask(0o077)
	_, err1 := setup(hostPathVol("h", allowed+"/new/deep", corev1.HostPathDirectoryOrCreate))
	_, err2 := setup(hostPathVol("h", allowed+"/dir/newfile", corev1.HostPathFileOrCreate))
	unix.Umask(old)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	for p, want := range map[string]os.FileMode{allowed + "/new": 0o755, allowed + "/new/deep": 0o755, allowed + "/dir/newfile": 0o644} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %o", p, st, err, want)
		}
	}

	// The pin: once set up, swapping the path for a link elsewhere does
	// not redirect the volume.
	dir := podDir(t)
	set, err := m.Setup(newPod(hostPathVol("h", allowed+"/dir", corev1.HostPathDirectory)), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	hp := set.Volumes["h"].Path
	os.Rename(allowed+"/dir", allowed+"/dir.old")
	os.Symlink(outside, allowed+"/dir")
	if got := read(t, filepath.Join(hp, "marker")); got != "original" {
		t.Errorf("pin shows %q after the swap", got)
	}
	if _, err := os.Stat(filepath.Join(hp, "secret")); err == nil {
		t.Error("pin redirected to the swapped-in target")
	}
	os.Remove(allowed + "/dir")
	os.Rename(allowed+"/dir.old", allowed+"/dir")

	// A swap between the check and the open is refused.
	afterCheck = func(string) {
		os.Rename(allowed+"/dir", allowed+"/dir.old")
		os.Symlink(outside, allowed+"/dir")
	}
	_, err = setup(hostPathVol("h2", allowed+"/dir/marker", corev1.HostPathFile))
	afterCheck = func(string) {}
	os.Remove(allowed + "/dir")
	os.Rename(allowed+"/dir.old", allowed+"/dir")
	mustContain(t, err, "changed while it was checked")

	// Teardown removes the pin, never the host's files.
	if err := Teardown(dir); err != nil {
		t.Fatal(err)
	}
	if err := Teardown(dir); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
	if got := read(t, allowed+"/dir/marker"); got != "original" {
		t.Errorf("host file after teardown: %q", got)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("teardown left %s", dir)
	}
}

// medium: Memory is a tmpfs bounded by sizeLimit, else by the pod's
// memory limit; the kernel enforces the bound.
func TestMemoryEmptyDir(t *testing.T) {
	privateNS(t)
	dir := podDir(t)
	v := emptyDirVol("mem")
	v.EmptyDir.Medium = corev1.StorageMediumMemory
	v.EmptyDir.SizeLimit = ptr(resource.MustParse("1Mi"))
	v2 := emptyDirVol("bypod")
	v2.EmptyDir.Medium = corev1.StorageMediumMemory
	pod := newPod(v, v2)
	pod.Spec.Containers = []corev1.Container{
		{Name: "a", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("3Mi")}}},
		{Name: "b", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("5Mi")}}},
	}
	m := New(Config{NodeAllocatableMemory: 1 << 30}, nil)
	set, err := m.Setup(pod, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	mp := set.Volumes["mem"].Path
	if !isTmpfs(t, mp) {
		t.Fatal("not a tmpfs")
	}
	size := func(p string) uint64 {
		var st unix.Statfs_t
		unix.Statfs(p, &st)
		return st.Blocks * uint64(st.Bsize)
	}
	if got := size(mp); got != 1<<20 {
		t.Errorf("sizeLimit 1Mi: tmpfs of %d bytes", got)
	}
	if got := size(set.Volumes["bypod"].Path); got != 8<<20 {
		t.Errorf("pod limit 8Mi: tmpfs of %d bytes", got)
	}
	f, err := os.Create(filepath.Join(mp, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(bytes.Repeat([]byte{1}, 2<<20))
	f.Close()
	if !errors.Is(err, unix.ENOSPC) {
		t.Errorf("writing 2 MiB into a 1 MiB emptyDir: %v, want ENOSPC", err)
	}
	// Setup again (a berthd restart) keeps the content and the mount.
	if _, err := m.Setup(pod, dir, nil); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(mp, "fill")); err != nil || st.Size() == 0 {
		t.Errorf("second setup lost the emptyDir content: %v", err)
	}
	if mps, _ := mountPoints(mp); len(mps) != 1 {
		t.Errorf("mounts on the emptyDir: %v", mps)
	}
	if err := Teardown(dir); err != nil {
		t.Fatal(err)
	}
	if mps, _ := mountPoints(dir); len(mps) != 0 {
		t.Errorf("teardown left mounts %v", mps)
	}
}

// A setup failing half way (a tmpfs mounted, a hostPath pinned, then a
// missing configMap) leaves nothing; one that fails after an earlier
// successful setup leaves the earlier volumes alone.
func TestSetupFailureCleansUp(t *testing.T) {
	privateNS(t)
	allowed := t.TempDir()
	m := New(Config{HostPathPrefixes: []string{allowed}}, &source{})
	mem := emptyDirVol("mem")
	mem.EmptyDir.Medium = corev1.StorageMediumMemory
	dir := podDir(t)
	_, err := m.Setup(newPod(mem, hostPathVol("h", allowed, corev1.HostPathDirectory), cmVolume("cfg", "missing")), dir, nil)
	mustContain(t, err, `configmap "missing" not found`)
	if mps, _ := mountPoints(filepath.Dir(dir)); len(mps) != 0 {
		t.Errorf("mounts left: %v", mps)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("left %s", dir)
	}

	set, err := m.Setup(newPod(mem), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(set.Volumes["mem"].Path, "keep"), []byte("x"), 0o644)
	_, err = m.Setup(newPod(mem, cmVolume("cfg", "missing")), dir, nil)
	if err == nil {
		t.Fatal("want error")
	}
	if got := read(t, filepath.Join(set.Volumes["mem"].Path, "keep")); got != "x" {
		t.Errorf("earlier volume touched: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "configmap")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed volume's directory left: %v", err)
	}
}

func TestDownwardAPIAndProjected(t *testing.T) {
	privateNS(t)
	dir := podDir(t)
	src := &source{
		cms:  map[string]*corev1.ConfigMap{"ns/cfg": {Data: map[string]string{"k": "cm"}}},
		secs: map[string]*corev1.Secret{"ns/sec": {Data: map[string][]byte{"s": []byte("sec")}}},
	}
	m := New(Config{}, src)
	items := []corev1.DownwardAPIVolumeFile{
		{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
		{Path: "ns", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
		{Path: "uid", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}},
		{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
		{Path: "tier", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['tier']"}},
		{Path: "meta/annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}, Mode: ptr[int32](0o600)},
		{Path: "mem", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}},
		{Path: "cpu", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}},
		{Path: "cpureq", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "requests.cpu"}},
	}
	pod := newPod(
		corev1.Volume{Name: "dapi", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: items}}},
		corev1.Volume{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr[int32](0o640),
			Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Items: []corev1.KeyToPath{{Key: "s", Path: "dir/s"}}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: items[:1]}},
			}}}},
	)
	pod.Labels = map[string]string{"tier": "web", "app": "x"}
	pod.Annotations = map[string]string{"note": `say "hi"`}
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
	}
	res := NodeResources(pod, corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")})
	set, err := m.Setup(pod, dir, res)
	if err != nil {
		t.Fatal(err)
	}
	d := set.Volumes["dapi"].Path
	for p, want := range map[string]string{
		"name": "pod", "ns": "ns", "uid": "1234-uid", "labels": "app=\"x\"\ntier=\"web\"", "tier": "web",
		"meta/annotations": `note="say \"hi\""`, "mem": "64", "cpu": "2000", "cpureq": "1",
	} {
		if got := read(t, filepath.Join(d, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if st, _ := os.Stat(filepath.Join(d, "meta/annotations")); st.Mode().Perm() != 0o600 {
		t.Errorf("item mode %o", st.Mode().Perm())
	}
	if !isTmpfs(t, d) || !set.Volumes["dapi"].ReadOnly {
		t.Error("downwardAPI volume: not a read-only tmpfs")
	}
	p := set.Volumes["proj"].Path
	for f, want := range map[string]string{"k": "cm", "dir/s": "sec", "name": "pod"} {
		if got := read(t, filepath.Join(p, f)); got != want {
			t.Errorf("projected %s = %q", f, got)
		}
		if st, _ := os.Stat(filepath.Join(p, f)); st.Mode().Perm() != 0o640 {
			t.Errorf("projected %s mode %o", f, st.Mode().Perm())
		}
	}

	// A label change reaches the volume on Update.
	pod.Labels["tier"] = "db"
	if err := m.Update(pod, dir, res); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(d, "tier")); got != "db" {
		t.Errorf("tier after update = %q", got)
	}

	for _, c := range []struct {
		v    corev1.Volume
		want string
	}{
		{corev1.Volume{Name: "x", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "n", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}}}, "unsupported fieldPath: spec.nodeName"},
		{corev1.Volume{Name: "x", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "n", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "ghost", Resource: "limits.cpu"}}}}}}, "container ghost not found"},
		{corev1.Volume{Name: "x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}, "serviceAccountToken is not supported by berth yet"},
		{corev1.Volume{Name: "x", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}}, "no claim source"},
	} {
		_, err := m.Setup(newPod(c.v), podDir(t), res)
		mustContain(t, err, c.want)
	}
	_, err = m.Setup(newPod(corev1.Volume{Name: "x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
		{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}), podDir(t), res)
	if !errdefs.IsNotImplemented(err) {
		t.Errorf("serviceAccountToken: %v, want not implemented", err)
	}
}

func TestExpandSubPathExpr(t *testing.T) {
	env := map[string]string{"POD": "web-0", "NS": "prod", "EMPTY": ""}
	for in, want := range map[string]string{
		"$(POD)":            "web-0",
		"logs/$(NS)/$(POD)": "logs/prod/web-0",
		"$$(POD)":           "$(POD)",
		"a$b":               "a$b",
		"$(POD":             "$(POD",
		"plain":             "plain",
		"end$":              "end$",
	} {
		got, err := ExpandSubPathExpr(in, env)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := ExpandSubPathExpr("$(B)/$(EMPTY)/$(A)", env)
	mustContain(t, err, "missing value for A, B, EMPTY")
}

func TestShmAndOptions(t *testing.T) {
	privateNS(t)
	dir := podDir(t)
	p, err := SetupShm(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p2, err := SetupShm(dir, 0); err != nil || p2 != p {
		t.Fatalf("second SetupShm: %q %v", p2, err)
	}
	if mps, _ := mountPoints(p); len(mps) != 1 {
		t.Errorf("shm mounts: %v", mps)
	}
	var st unix.Statfs_t
	unix.Statfs(p, &st)
	if st.Type != unix.TMPFS_MAGIC || st.Blocks*uint64(st.Bsize) != DefaultShmSize || st.Flags&unix.ST_NOEXEC == 0 {
		t.Errorf("shm: %+v", st)
	}
	m := Mount{Propagation: PropagationSlave, ReadOnly: true}
	if got := strings.Join(m.Options(), ","); got != "rbind,rslave,ro" {
		t.Errorf("options %s", got)
	}
}

// A volume directory reached through a symlink (a state directory moved to
// another disk) still finds its mounts: no stacked tmpfs, no needless
// rewrite, and Teardown unmounts the pin instead of deleting through it.
func TestSymlinkedPodDir(t *testing.T) {
	privateNS(t)
	base := t.TempDir()
	allowed := filepath.Join(base, "allowed")
	os.Mkdir(allowed, 0o755)
	os.WriteFile(filepath.Join(allowed, "keep"), []byte("host"), 0o644)
	real := filepath.Join(base, "real")
	os.Mkdir(real, 0o700)
	link := filepath.Join(base, "link")
	os.Symlink(real, link)
	dir := filepath.Join(link, "volumes")
	t.Cleanup(func() {
		if err := Teardown(dir); err != nil {
			t.Error(err)
		}
	})
	src := &source{secs: map[string]*corev1.Secret{"ns/s": {Data: map[string][]byte{"k": []byte("v")}}}}
	m := New(Config{HostPathPrefixes: []string{allowed}}, src)
	pod := newPod(corev1.Volume{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
		hostPathVol("h", allowed, corev1.HostPathDirectory))
	set, err := m.Setup(pod, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := os.Readlink(filepath.Join(set.Volumes["s"].Path, "..data"))
	if _, err := m.Setup(pod, dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(pod, dir, nil); err != nil {
		t.Fatal(err)
	}
	if ts2, _ := os.Readlink(filepath.Join(set.Volumes["s"].Path, "..data")); ts2 != ts {
		t.Errorf("unchanged secret rewritten: %s -> %s", ts, ts2)
	}
	if mps, _ := mountPoints(dir); len(mps) != 2 {
		t.Errorf("mounts under the pod dir: %v, want the secret tmpfs and the pin", mps)
	}
	if err := Teardown(dir); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(allowed, "keep")); got != "host" {
		t.Errorf("host file: %q", got)
	}
	if mps, _ := mountPoints(base); len(mps) != 0 {
		t.Errorf("mounts left: %v", mps)
	}
}

// fsGroup: the kubelet's SetVolumeOwnership. A secret of mode 0400 becomes
// 0440 and the group's, an emptyDir group-writable and setgid, and an
// unchanged secret is not rewritten by an update.
func TestFSGroup(t *testing.T) {
	privateNS(t)
	dir := podDir(t)
	src := &source{secs: map[string]*corev1.Secret{"ns/sec": {Data: map[string][]byte{"token": []byte("t")}}}}
	m := New(Config{}, src)
	sec := corev1.Volume{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", DefaultMode: ptr[int32](0o400)}}}
	scratch := corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	pod := newPod(sec, scratch)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr[int64](2000)}
	set, err := m.Setup(pod, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	stat := func(p string) (os.FileMode, uint32) {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid
	}
	token := filepath.Join(set.Volumes["sec"].Path, "token")
	if mode, gid := stat(token); mode.Perm() != 0o440 || gid != 2000 {
		t.Errorf("secret file: mode %o gid %d, want 440 and 2000", mode.Perm(), gid)
	}
	if mode, gid := stat(set.Volumes["scratch"].Path); mode&os.ModeSetgid == 0 || mode.Perm()&0o070 != 0o070 || gid != 2000 {
		t.Errorf("emptyDir: mode %v gid %d, want setgid, group rwx, 2000", mode, gid)
	}
	data, _ := os.Readlink(filepath.Join(set.Volumes["sec"].Path, "..data"))
	if err := m.Update(pod, dir, nil); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(set.Volumes["sec"].Path, "..data")); again != data {
		t.Errorf("an unchanged secret was rewritten: %s -> %s", data, again)
	}
}
