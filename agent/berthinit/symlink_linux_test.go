package berthinit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Hostile images: an image decides what every path of its root is, and
// may make any of them a symlink, so that berth's mounts would land
// elsewhere (under procfs, where they are hidden) and masking would bind
// whatever the image pointed /dev/null at, or find nothing to mask (the
// class of runc's CVE-2025-31133). berth-init follows no symlink in a
// mount destination, a masked or a read-only path (openInRoot).

// lstatIn lstats path inside the workload's root, from the host:
// /proc/<pid>/root is the workload's "/", and no symlink of the image is
// followed on the way (an absolute one would resolve against the host's
// root anyway).
func lstatIn(t *testing.T, pid int, path string) (unix.Stat_t, error) {
	t.Helper()
	var st unix.Stat_t
	err := unix.Lstat(fmt.Sprintf("/proc/%d/root%s", pid, path), &st)
	return st, err
}

func isNullDevice(st unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && unix.Major(st.Rdev) == 1 && unix.Minor(st.Rdev) == 3
}

// assertMasked checks every masked path of the spec that the host's kernel
// has: a file must be the null device, a directory an empty tmpfs.
func assertMasked(t *testing.T, pid int, masked []string) {
	t.Helper()
	mi := mountinfo(t, pid)
	n := 0
	for _, p := range masked {
		host, err := os.Lstat(p) // procfs and sysfs show the same entries inside
		if err != nil {
			continue
		}
		n++
		if host.IsDir() {
			if !strings.HasSuffix(mi[p], "- tmpfs") {
				t.Errorf("masked directory %s: mount %q, want a tmpfs", p, mi[p])
			}
			continue
		}
		if st, err := lstatIn(t, pid, p); err != nil || !isNullDevice(st) {
			t.Errorf("masked file %s is %s (%v), want the null device: the mask did not hold", p, describeMode(st), err)
		}
	}
	if n == 0 {
		t.Fatalf("none of the masked paths %v exists on this host: nothing checked", masked)
	}
}

// withoutDevMounts drops the spec's /dev tmpfs and the mounts below it, so
// that the devices are bound into the image's own /dev.
func withoutDevMounts(s *specs.Spec) {
	var keep []specs.Mount
	for _, m := range s.Mounts {
		if !under(filepath.Clean(m.Destination), "/dev") {
			keep = append(keep, m)
		}
	}
	s.Mounts = keep
}

func plantSymlink(t *testing.T, target, link string) {
	t.Helper()
	must(t, os.RemoveAll(link))
	must(t, os.MkdirAll(filepath.Dir(link), 0o755))
	must(t, os.Symlink(target, link))
}

// TestHostileImageMasksHold: images whose mount targets are symlinks into
// /proc start, and berth's mounts are where the spec says: every mask
// holds and the pod's files are the pod's.
func TestHostileImageMasksHold(t *testing.T) {
	requireBerthInit(t)
	cases := []struct {
		name   string
		mutate func(b *testBundle)
		check  func(t *testing.T, b *testBundle, pid int)
	}{
		{
			// Before: the /dev tmpfs went onto the image's /proc, procfs
			// then hid it, and every mask bound "/dev/null" = /proc/null,
			// missing, and was skipped.
			name:   "/dev is a symlink to /proc",
			mutate: func(b *testBundle) { plantSymlink(t, "/proc", b.lower+"/dev") },
			check: func(t *testing.T, b *testBundle, pid int) {
				if st, err := lstatIn(t, pid, "/dev"); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
					t.Errorf("/dev is %s (%v), want a directory", describeMode(st), err)
				}
				if mi := mountinfo(t, pid); !strings.HasSuffix(mi["/dev"], "- tmpfs") {
					t.Errorf("/dev mount %q, want berth's tmpfs", mi["/dev"])
				}
			},
		},
		{
			// Before: /dev/null's bind went to the image's /proc/kcore,
			// hidden by procfs, and masking bound the container's
			// /dev/null, i.e. the real /proc/kcore, over each masked file.
			name: "/dev/null is a symlink to /proc/kcore in an image /dev",
			mutate: func(b *testBundle) {
				withoutDevMounts(b.spec)
				plantSymlink(t, "/proc/kcore", b.lower+"/dev/null")
				plantSymlink(t, "../proc/keys", b.lower+"/dev/zero")
			},
			check: func(t *testing.T, b *testBundle, pid int) {
				for _, p := range []string{"/dev/null", "/dev/zero"} {
					st, err := lstatIn(t, pid, p)
					if err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
						t.Errorf("%s is %s (%v), want the host's device bound there", p, describeMode(st), err)
					}
				}
			},
		},
		{
			// Before: the pod's hosts file was bound onto the image's
			// /proc/sys/kernel/hostname, hidden by procfs.
			name:   "/etc/hosts is a symlink into /proc",
			mutate: func(b *testBundle) { plantSymlink(t, "/proc/sys/kernel/hostname", b.lower+"/etc/hosts") },
			check: func(t *testing.T, b *testBundle, pid int) {
				got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/hosts", pid))
				if st, lerr := lstatIn(t, pid, "/etc/hosts"); lerr != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
					t.Errorf("/etc/hosts is %s (%v), want the pod's file", describeMode(st), lerr)
				} else if err != nil || !strings.Contains(string(got), "berth-test") {
					t.Errorf("/etc/hosts holds %q (%v), want the pod's file", got, err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBundle(t, "sleep", "3600")
			tc.mutate(b)
			pid, log, err := b.start(t)
			if err != nil {
				t.Fatalf("berth-init start: %v\n%s", err, log)
			}
			waitExec(t, pid, "sleep\x003600\x00")
			assertMasked(t, pid, b.spec.Linux.MaskedPaths)
			if st, err := lstatIn(t, pid, "/dev/null"); err != nil || !isNullDevice(st) {
				t.Errorf("/dev/null is %s (%v), want the null device", describeMode(st), err)
			}
			tc.check(t, b, pid)
		})
	}
}

// TestHostileImageRefused: where a symlink cannot be replaced, the start
// fails naming it, instead of mounting, masking or protecting something
// else, or skipping the path as missing.
func TestHostileImageRefused(t *testing.T) {
	requireBerthInit(t)
	cases := []struct {
		name   string
		mutate func(b *testBundle)
		want   string
		after  func(t *testing.T, b *testBundle)
	}{
		{
			// Before: the tmpfs landed in the image's /proc, hidden by procfs.
			name: "mount below a symlink to /proc",
			mutate: func(b *testBundle) {
				plantSymlink(t, "/proc", b.lower+"/data")
				b.spec.Mounts = append(b.spec.Mounts, specs.Mount{Destination: "/data/x", Type: "tmpfs", Source: "tmpfs"})
			},
			want: `mount destination /data/x: /data is a symlink (to "/proc") in the container's root; berth-init follows no symlink there`,
		},
		{
			// Before: mount(2) said ENOENT and the mask was skipped as "missing".
			name: "masked path below a dangling symlink",
			mutate: func(b *testBundle) {
				plantSymlink(t, "/nowhere", b.lower+"/data")
				b.spec.Linux.MaskedPaths = append(b.spec.Linux.MaskedPaths, "/data/secret")
			},
			want: `stage2: mask /data/secret: /data is a symlink (to "/nowhere") in the container's root`,
		},
		{
			name: "masked path is a dangling symlink",
			mutate: func(b *testBundle) {
				plantSymlink(t, "/nowhere", b.lower+"/etc/secret")
				b.spec.Linux.MaskedPaths = append(b.spec.Linux.MaskedPaths, "/etc/secret")
			},
			want: `stage2: mask /etc/secret: /etc/secret is a symlink (to "/nowhere") in the container's root`,
		},
		{
			// Before: /etc/conf was made read-only instead.
			name: "read-only path below a symlink",
			mutate: func(b *testBundle) {
				must(t, os.WriteFile(b.lower+"/etc/conf", []byte("x"), 0o644))
				plantSymlink(t, "/etc", b.lower+"/data")
				b.spec.Linux.ReadonlyPaths = append(b.spec.Linux.ReadonlyPaths, "/data/conf")
			},
			want: `stage2: readonly path /data/conf: /data is a symlink (to "/etc") in the container's root`,
		},
		{
			// Stands for anything that leaves the container's /dev/null
			// not the null device: here /dev is bound from a directory
			// (no devices are bound into it then) whose "null" is a
			// regular file. Before: that file was bound over every masked
			// file, its content shown for /proc/kcore.
			name: "/dev/null is a regular file",
			mutate: func(b *testBundle) {
				withoutDevMounts(b.spec)
				dev := filepath.Join(b.dir, "fakedev")
				must(t, os.MkdirAll(dev, 0o755))
				must(t, os.WriteFile(dev+"/null", []byte("planted"), 0o644))
				b.spec.Mounts = append(b.spec.Mounts, specs.Mount{Destination: "/dev", Type: "bind", Source: dev, Options: []string{"rbind"}})
			},
			want: "stage2: masked paths: /dev/null is a regular file, not the null device (character device 1:3)",
		},
		{
			// A symlink as the mount point itself is replaced only on the
			// container's own layer: here it lies in a directory bound
			// from the host, which must not be written to. Before: devpts
			// went onto the image's /proc.
			name: "mount on a symlink outside the container's layer",
			mutate: func(b *testBundle) {
				withoutDevMounts(b.spec)
				dev := filepath.Join(b.dir, "hostdev")
				plantSymlink(t, "/proc", dev+"/pts")
				b.spec.Mounts = append(b.spec.Mounts,
					specs.Mount{Destination: "/dev", Type: "bind", Source: dev, Options: []string{"rbind"}},
					specs.Mount{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"newinstance"}})
			},
			want: `mount destination /dev/pts: /dev/pts is a symlink (to "/proc") in the container's root, not on the container's own layer`,
			after: func(t *testing.T, b *testBundle) {
				if target, err := os.Readlink(filepath.Join(b.dir, "hostdev", "pts")); err != nil || target != "/proc" {
					t.Errorf("the host's directory was changed: pts -> %q (%v)", target, err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBundle(t, "sleep", "3600")
			tc.mutate(b)
			b.assertStartFails(t, tc.want)
			if tc.after != nil {
				tc.after(t, b)
			}
		})
	}
}
