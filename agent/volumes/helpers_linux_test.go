package volumes

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// privateNS moves the test onto a thread of its own with a private mount
// namespace. The thread is never unlocked, so when the test's goroutine
// ends (also after t.Fatal) the runtime ends the thread, and the namespace
// with every mount the test made goes with it: nothing can leak to the
// host's mount table. The tests still tear down explicitly and check.
func privateNS(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the volume tests mount tmpfs and bind mounts against the real kernel: run them as root")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		t.Fatalf("unshare(CLONE_NEWNS): %v", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make / private: %v", err)
	}
}

// podDir is a pod's volume directory, torn down (and checked mount-free)
// when the test ends, before t.TempDir removes the files.
func podDir(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "pods", "ns_pod", "volumes")
	t.Cleanup(func() {
		if err := Teardown(dir); err != nil {
			t.Errorf("teardown: %v", err)
		}
		if mps, err := mountPoints(root); err != nil || len(mps) > 0 {
			t.Errorf("mounts left under %s: %v %v", root, mps, err)
		}
	})
	return dir
}

// bindLike mounts src on a fresh directory, as berth-init mounts a volume
// into a container, and returns that directory.
func bindLike(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "ctr")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatalf("bind: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
	return dst
}

// source is the Source berthd implements over its store, as a map: the
// store's not-found comes back in errdefs' class, as the real one does.
type source struct {
	cms  map[string]*corev1.ConfigMap
	secs map[string]*corev1.Secret
}

func (s *source) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	if c, ok := s.cms[ns+"/"+name]; ok {
		return c.DeepCopy(), nil
	}
	return nil, fmt.Errorf("configmaps %q: %w", name, errdefs.ErrNotFound)
}

func (s *source) Secret(ns, name string) (*corev1.Secret, error) {
	if c, ok := s.secs[ns+"/"+name]; ok {
		return c.DeepCopy(), nil
	}
	return nil, fmt.Errorf("secrets %q: %w", name, errdefs.ErrNotFound)
}

func newPod(vols ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pod", UID: "1234-uid"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app"}},
			Volumes:    vols,
		},
	}
}

func ptr[T any](v T) *T { return &v }

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustContain(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
}

func isTmpfs(t *testing.T, p string) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Type == unix.TMPFS_MAGIC
}
