package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/test/testenv"
	"github.com/containerd/errdefs"
)

// escapeFixture is a target directory next to a sentinel directory; a
// hostile layer that escapes would write into the sentinel or elsewhere.
type escapeFixture struct {
	base, target, sentinel string
}

const sentinelContent = "sentinel, must not change"

func newEscapeFixture(t *testing.T) escapeFixture {
	t.Helper()
	base := t.TempDir()
	f := escapeFixture{base: base, target: filepath.Join(base, "target"), sentinel: filepath.Join(base, "sentinel")}
	for _, d := range []string{f.target, f.sentinel} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(f.sentinel, "file"), []byte(sentinelContent), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// assertNothingOutside walks the fixture: only the target's subtree and the
// untouched sentinel may exist.
func (f escapeFixture) assertNothingOutside(t *testing.T) {
	t.Helper()
	var outside []string
	err := filepath.WalkDir(f.base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case p == f.base, p == f.target, strings.HasPrefix(p, f.target+"/"),
			p == f.sentinel, p == filepath.Join(f.sentinel, "file"):
			return nil
		}
		outside = append(outside, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(outside) > 0 {
		t.Errorf("written outside the target: %v", outside)
	}
	b, err := os.ReadFile(filepath.Join(f.sentinel, "file"))
	if err != nil || string(b) != sentinelContent {
		t.Errorf("sentinel file changed: %q, %v", b, err)
	}
	fi, err := os.Lstat(filepath.Join(f.sentinel, "file"))
	if err == nil && fi.Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Errorf("sentinel file gained a hardlink (nlink %d)", fi.Sys().(*syscall.Stat_t).Nlink)
	}
}

func TestUnpackRefusesHostileEntries(t *testing.T) {
	probe := fmt.Sprintf("berth-unpack-probe-%d-%d", os.Getpid(), time.Now().UnixNano())
	type tc struct {
		name      string
		ents      func(sentinel string) []ent
		wantEntry string
		wantRule  Rule
		wantText  string // part of the detail that must be in the message
	}
	cases := []tc{
		{"dotdot", func(string) []ent { return []ent{tFile("../x", "pwned", 0o644)} }, "../x", RuleEscapesRoot, "climbs above"},
		{"dotdot into sentinel", func(string) []ent { return []ent{tFile("../sentinel/file", "pwned", 0o644)} }, "../sentinel/file", RuleEscapesRoot, "climbs above"},
		{"dotdot after a dir", func(string) []ent {
			return []ent{tDir("a/", 0o755), tFile("a/../../sentinel/new", "pwned", 0o644)}
		}, "a/../../sentinel/new", RuleEscapesRoot, "climbs above"},
		{"absolute /etc", func(string) []ent { return []ent{tFile("/etc/"+probe, "pwned", 0o644)} }, "/etc/" + probe, RuleAbsolutePath, "absolute name"},
		{"absolute dir", func(string) []ent { return []ent{tDir("/tmp/"+probe+"/", 0o755)} }, "/tmp/" + probe + "/", RuleAbsolutePath, "absolute name"},
		{"symlink to /tmp then child", func(string) []ent {
			return []ent{tSymlink("a", "/tmp"), tFile("a/"+probe, "pwned", 0o644)}
		}, "a/" + probe, RuleSymlinkParent, `parent path "a" goes through a symlink`},
		{"symlink to sentinel then child", func(s string) []ent {
			return []ent{tSymlink("a", s), tFile("a/file", "pwned", 0o644)}
		}, "a/file", RuleSymlinkParent, "through a symlink"},
		{"symlink to .. then child", func(string) []ent {
			return []ent{tSymlink("a", ".."), tFile("a/x", "pwned", 0o644)}
		}, "a/x", RuleSymlinkParent, "through a symlink"},
		{"symlink to ../sentinel then child", func(string) []ent {
			return []ent{tSymlink("a", "../sentinel"), tFile("a/file", "pwned", 0o644)}
		}, "a/file", RuleSymlinkParent, "through a symlink"},
		{"symlink mid-path, absolute", func(s string) []ent {
			return []ent{tSymlink("a", filepath.Dir(s)), tFile("a/sentinel/pwned", "pwned", 0o644)}
		}, "a/sentinel/pwned", RuleSymlinkParent, `parent path "a/sentinel" goes through a symlink`},
		{"symlink mid-path, relative", func(string) []ent {
			return []ent{tSymlink("a", ".."), tFile("a/sentinel/pwned", "pwned", 0o644)}
		}, "a/sentinel/pwned", RuleSymlinkParent, `parent path "a/sentinel" goes through a symlink`},
		{"nested symlink then dir", func(s string) []ent {
			return []ent{tDir("d/", 0o755), tSymlink("d/l", s), tDir("d/l/sub/", 0o755)}
		}, "d/l/sub/", RuleSymlinkParent, `parent path "d/l"`},
		{"whiteout through symlink", func(s string) []ent {
			return []ent{tSymlink("a", s), tFile("a/.wh.file", "", 0o644)}
		}, "a/.wh.file", RuleSymlinkParent, "through a symlink"},
		{"opaque through symlink", func(s string) []ent {
			return []ent{tSymlink("a", s), tFile("a/.wh..wh..opq", "", 0o644)}
		}, "a/.wh..wh..opq", RuleSymlinkParent, "through a symlink"},
		{"hardlink to /etc/passwd", func(string) []ent { return []ent{tHardlink("l", "/etc/passwd")} }, "l", RuleHardlinkTarget, `target "/etc/passwd" is absolute`},
		{"hardlink to ../x", func(string) []ent { return []ent{tHardlink("l", "../x")} }, "l", RuleHardlinkTarget, "climbs above"},
		{"hardlink to ../sentinel/file", func(string) []ent { return []ent{tHardlink("l", "../sentinel/file")} }, "l", RuleHardlinkTarget, "climbs above"},
		{"hardlink through symlink", func(string) []ent {
			return []ent{tDir("d/", 0o755), tFile("d/f", "x", 0o644), tSymlink("s", "d"), tHardlink("h", "s/f")}
		}, "h", RuleHardlinkTarget, `target "s/f" goes through a symlink`},
		{"hardlink through symlink to sentinel", func(s string) []ent {
			return []ent{tSymlink("s", s), tHardlink("h", "s/file")}
		}, "h", RuleHardlinkTarget, "goes through a symlink"},
		{"hardlink to missing", func(string) []ent { return []ent{tHardlink("h", "nothere")} }, "h", RuleHardlinkTarget, "does not exist earlier in this layer"},
		{"hardlink before its target", func(string) []ent {
			return []ent{tHardlink("h", "f"), tFile("f", "x", 0o644)}
		}, "h", RuleHardlinkTarget, "does not exist earlier"},
		{"hardlink to a directory", func(string) []ent {
			return []ent{tDir("d/", 0o755), tHardlink("h", "d")}
		}, "h", RuleHardlinkTarget, "does not exist earlier"},
		{"hardlink to itself", func(string) []ent {
			return []ent{tFile("f", "x", 0o644), tHardlink("f", "f")}
		}, "f", RuleHardlinkTarget, "itself"},
		{"char device", func(string) []ent { return []ent{tDir("dev/", 0o755), tType("dev/null", tar.TypeChar)} }, "dev/null", RuleDevice, "device nodes"},
		{"block device", func(string) []ent { return []ent{tType("sda", tar.TypeBlock)} }, "sda", RuleDevice, "device nodes"},
		{"char device named like a whiteout", func(string) []ent { return []ent{tType(".wh.x", tar.TypeChar)} }, ".wh.x", RuleDevice, "device nodes"},
		{"contiguous file type", func(string) []ent { return []ent{tType("c", tar.TypeCont)} }, "c", RuleUnsupported, `type "7"`},
		{"parent is a file", func(string) []ent {
			return []ent{tFile("f", "x", 0o644), tFile("f/g", "y", 0o644)}
		}, "f/g", RuleParentNotDir, `parent path "f" is not a directory`},
		{"file replaces non-empty dir", func(string) []ent {
			return []ent{tDir("d/", 0o755), tFile("d/f", "x", 0o644), tFile("d", "y", 0o644)}
		}, "d", RuleReplaceDir, "non-empty directory"},
		{"overlay xattr from the tar", func(string) []ent {
			return []ent{tFile("f", "x", 0o644).with(func(h *tar.Header) {
				h.PAXRecords = map[string]string{"SCHILY.xattr.trusted.overlay.redirect": "/etc"}
			})}
		}, "f", RuleReservedXattr, "trusted.overlay.redirect"},
		{"negative uid", func(string) []ent {
			return []ent{tFile("f", "x", 0o644).with(func(h *tar.Header) { h.Uid = -1 })}
		}, "f", RuleBadOwner, "uid -1"},
		{"whiteout of nothing", func(string) []ent { return []ent{tFile(".wh.", "", 0o644)} }, ".wh.", RuleBadName, "names no file"},
		{"whiteout of ..", func(string) []ent { return []ent{tFile("a/.wh...", "", 0o644)} }, "a/.wh...", RuleBadName, "names no file"},
		{"root as a file", func(string) []ent { return []ent{tFile(".", "x", 0o644)} }, ".", RuleBadName, "layer root"},
		{"name over PATH_MAX", func(string) []ent {
			return []ent{tFile(strings.Repeat("a/", 2100)+"f", "x", 0o644)}
		}, strings.Repeat("a/", 2100) + "f", RuleMaxPathLen, "longer than 4096"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newEscapeFixture(t)
			defer f.assertNothingOutside(t) // also when the checks below stop the test
			raw := mkTar(t, c.ents(f.sentinel)...)
			err := Unpack(context.Background(), bytes.NewReader(raw), f.target, Limits{})
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("Unpack = %v, want a *RefusedError", err)
			}
			if !isRefused(err) || !errdefs.IsInvalidArgument(err) {
				t.Errorf("%v: not a refusal of the invalid-argument class", err)
			}
			if re.Entry != c.wantEntry || re.Rule != c.wantRule {
				t.Errorf("refused entry %q rule %s, want entry %q rule %s (%v)", re.Entry, re.Rule, c.wantEntry, c.wantRule, err)
			}
			msg := err.Error()
			for _, want := range []string{fmt.Sprintf("%q", c.wantEntry), string(c.wantRule), c.wantText, f.target} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			for _, p := range []string{"/tmp/" + probe, "/etc/" + probe} {
				if _, err := os.Lstat(p); err == nil {
					os.RemoveAll(p)
					t.Errorf("%s was created outside the target", p)
				}
			}
		})
	}
}

func TestUnpackLimits(t *testing.T) {
	big := strings.Repeat("x", 20000)
	threeFiles := []ent{tFile("a", "1", 0o644), tFile("b", "2", 0o644), tFile("c", "3", 0o644)}
	rawThree := mkTar(t, threeFiles...)
	rawBig := mkTar(t, tFile("big", big, 0o644))
	name := strings.Repeat("n", 100)
	rawName := mkTar(t, tFile(name, "x", 0o644))
	cases := []struct {
		name      string
		raw       []byte
		limits    Limits
		wantRule  Rule // "" = success
		wantEntry string
	}{
		{"entries max-1", rawThree, Limits{MaxEntries: 2}, RuleMaxEntries, "c"},
		{"entries max", rawThree, Limits{MaxEntries: 3}, "", ""},
		{"entries max+1", rawThree, Limits{MaxEntries: 4}, "", ""},
		{"bytes: stream one byte over", rawBig, Limits{MaxBytes: int64(len(rawBig)) - 1}, RuleMaxBytes, ""},
		{"bytes: stream exactly at limit", rawBig, Limits{MaxBytes: int64(len(rawBig))}, "", ""},
		{"bytes: file content over", rawBig, Limits{MaxBytes: 10000}, RuleMaxBytes, "big"},
		{"path len max-1", rawName, Limits{MaxPathLen: 99}, RuleMaxPathLen, name},
		{"path len max", rawName, Limits{MaxPathLen: 100}, "", ""},
		{"defaults (zero Limits)", rawBig, Limits{}, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			err := Unpack(context.Background(), bytes.NewReader(c.raw), dir, c.limits)
			if c.wantRule == "" {
				if err != nil {
					t.Fatalf("Unpack = %v, want success", err)
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) || re.Rule != c.wantRule || re.Entry != c.wantEntry {
				t.Fatalf("Unpack = %v, want rule %s on entry %q", err, c.wantRule, c.wantEntry)
			}
		})
	}
}

func TestUnpackNeedsEmptyTarget(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := Unpack(context.Background(), bytes.NewReader(mkTar(t, tFile("f", "x", 0o644))), dir, Limits{})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Unpack into a non-empty dir = %v, want a not-empty error", err)
	}
}

func TestUnpackStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Unpack(ctx, bytes.NewReader(mkTar(t, tFile("f", "x", 0o644))), t.TempDir(), Limits{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Unpack with a cancelled context = %v, want context.Canceled", err)
	}
}

// TestUnpackTree unpacks an ordinary layer as the current user and checks
// the tree: kinds, modes, times, links, whiteouts and replacement rules.
func TestUnpackTree(t *testing.T) {
	dirTime := time.Date(2020, 1, 2, 3, 4, 5, 600, time.UTC)
	raw := mkTar(t,
		ent{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "x"}}},
		tDir("./", 0o755).with(func(h *tar.Header) { h.ModTime = dirTime }),
		tDir("etc/", 0o750).with(func(h *tar.Header) { h.ModTime = dirTime }),
		tFile("etc/conf", "conf", 0o640),
		tDir("tmp/", 0o1777),
		tDir("shared/", 0o2775),
		tFile("bin/tool", "#!/bin/sh\n", 0o4755), // parent bin/ implied
		tSymlink("etc/abs", "/etc/passwd"),
		tSymlink("etc/rel", "../bin/tool"),
		tHardlink("bin/tool-link", "bin/tool"),
		tType("run/fifo", tar.TypeFifo).with(func(h *tar.Header) { h.Mode = 0o620 }),
		tFile("replaced", "one", 0o644),
		tFile("replaced", "two", 0o600),
		tFile("to-symlink", "file", 0o644),
		tSymlink("to-symlink", "target"),
		tDir("redo/", 0o700),
		tDir("redo/", 0o711),
		tFile(".wh.gone", "", 0o644),
		tFile("etc/.wh.conf", "", 0o644), // same-layer file wins over its whiteout
		tFile("wh/.wh.later", "", 0o644),
		tFile("wh/later", "back", 0o644), // a later entry replaces the whiteout
		tFile("a/b/c/deep", "deep", 0o644),
		tFile(".wh..wh.plnk", "", 0o644), // AUFS bookkeeping, ignored
		tDir("ro/", 0o555),
		tFile("ro/inside", "x", 0o444),
	)
	dir := filepath.Join(t.TempDir(), "layer")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Unpack(context.Background(), bytes.NewReader(raw), dir, Limits{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeAll(dir) })

	type want struct {
		typ  uint32
		perm uint32
		body string
		link string
	}
	wants := map[string]want{
		".":             {unix.S_IFDIR, 0o755, "", ""},
		"etc":           {unix.S_IFDIR, 0o750, "", ""},
		"etc/conf":      {unix.S_IFREG, 0o640, "conf", ""},
		"tmp":           {unix.S_IFDIR, 0o1777, "", ""},
		"shared":        {unix.S_IFDIR, 0o2775, "", ""},
		"bin":           {unix.S_IFDIR, 0o755, "", ""},
		"bin/tool":      {unix.S_IFREG, 0o4755, "#!/bin/sh\n", ""},
		"bin/tool-link": {unix.S_IFREG, 0o4755, "#!/bin/sh\n", ""},
		"etc/abs":       {unix.S_IFLNK, 0, "", "/etc/passwd"},
		"etc/rel":       {unix.S_IFLNK, 0, "", "../bin/tool"},
		"run/fifo":      {unix.S_IFIFO, 0o620, "", ""},
		"replaced":      {unix.S_IFREG, 0o600, "two", ""},
		"to-symlink":    {unix.S_IFLNK, 0, "", "target"},
		"redo":          {unix.S_IFDIR, 0o711, "", ""},
		"gone":          {unix.S_IFCHR, 0, "", ""},
		"wh/later":      {unix.S_IFREG, 0o644, "back", ""},
		"a/b/c/deep":    {unix.S_IFREG, 0o644, "deep", ""},
		"ro":            {unix.S_IFDIR, 0o555, "", ""},
		"ro/inside":     {unix.S_IFREG, 0o444, "x", ""},
	}
	for rel, w := range wants {
		p := filepath.Join(dir, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if got := st.Mode & unix.S_IFMT; got != w.typ {
			t.Errorf("%s: type %o, want %o", rel, got, w.typ)
		}
		if w.typ != unix.S_IFLNK && w.typ != unix.S_IFCHR {
			if got := st.Mode & 0o7777; got != w.perm {
				t.Errorf("%s: mode %04o, want %04o", rel, got, w.perm)
			}
		}
		if w.typ == unix.S_IFCHR && st.Rdev != 0 {
			t.Errorf("%s: whiteout is device %d, want 0/0", rel, st.Rdev)
		}
		if int(st.Uid) != os.Getuid() || int(st.Gid) != os.Getgid() {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, st.Uid, st.Gid, os.Getuid(), os.Getgid())
		}
		if w.typ == unix.S_IFREG {
			if b, _ := os.ReadFile(p); string(b) != w.body {
				t.Errorf("%s: content %q, want %q", rel, b, w.body)
			}
		}
		if w.typ == unix.S_IFLNK {
			if l, _ := os.Readlink(p); l != w.link {
				t.Errorf("%s: link %q, want %q kept verbatim", rel, l, w.link)
			}
		}
	}
	// Files that must not exist.
	for _, rel := range []string{"etc/.wh.conf", ".wh.gone", "wh/.wh.later", ".wh..wh.plnk", "plnk", "pax_global_header"} {
		if _, err := os.Lstat(filepath.Join(dir, rel)); err == nil {
			t.Errorf("%s exists, want it converted or skipped", rel)
		}
	}
	// Hardlink shares the inode.
	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(dir, "bin/tool"), &a)
	unix.Lstat(filepath.Join(dir, "bin/tool-link"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hardlink: inodes %d/%d nlink %d, want one inode with 2 links", a.Ino, b.Ino, a.Nlink)
	}
	// Times: files, symlinks, and directories despite later children.
	for rel, wt := range map[string]time.Time{"etc/conf": mtime, "etc/abs": mtime, "etc": dirTime, ".": dirTime, "run/fifo": mtime} {
		var st unix.Stat_t
		unix.Lstat(filepath.Join(dir, rel), &st)
		if got := time.Unix(st.Mtim.Unix()).UTC(); !got.Equal(wt) {
			t.Errorf("%s: mtime %v, want %v", rel, got, wt)
		}
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if got := strings.Join(names, " "); got != "a bin etc gone redo replaced ro run shared tmp to-symlink wh" {
		t.Errorf("top-level entries %q", got)
	}
}

// TestUnpackOwnershipXattrsOpaque needs root: foreign owners, a setuid-root
// binary with a file capability (chown would clear both if done last),
// user.* xattrs and trusted.overlay.opaque.
func TestUnpackOwnershipXattrsOpaque(t *testing.T) {
	testenv.RequireRoot(t)
	// vfs_cap_data revision 2 (linux/capability.h): magic_etc with the
	// effective flag, then permitted/inheritable for caps 0-31 and 32-63.
	// CAP_NET_BIND_SERVICE = 10.
	capValue := string([]byte{0x01, 0, 0, 0x02, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	owner := func(uid, gid int) func(h *tar.Header) {
		return func(h *tar.Header) { h.Uid, h.Gid = uid, gid }
	}
	raw := mkTar(t,
		tDir("data/", 0o750).with(owner(1000, 1001)).with(func(h *tar.Header) {
			h.PAXRecords = map[string]string{"SCHILY.xattr.user.dir": "d"}
		}),
		tFile("data/file", "content", 0o640).with(owner(1000, 1001)).with(func(h *tar.Header) {
			h.PAXRecords = map[string]string{"SCHILY.xattr.user.origin": "layer-1", "SCHILY.xattr.user.empty": ""}
		}),
		tFile("bin/ping", "elf", 0o4755).with(owner(0, 0)).with(func(h *tar.Header) {
			h.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": capValue}
		}),
		tFile("bin/sg", "elf", 0o2755).with(owner(0, 50)),
		tSymlink("data/link", "/nowhere").with(owner(1002, 1003)),
		tType("data/fifo", tar.TypeFifo).with(owner(1004, 1005)),
		tFile("opq/.wh..wh..opq", "", 0o644),
		tFile("opq/new", "n", 0o644),
		tHardlink("data/file-link", "data/file"),
	)
	dir := t.TempDir()
	if err := Unpack(context.Background(), bytes.NewReader(raw), dir, Limits{}); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		rel      string
		uid, gid uint32
		perm     uint32
	}{
		{"data", 1000, 1001, 0o750},
		{"data/file", 1000, 1001, 0o640},
		{"data/file-link", 1000, 1001, 0o640},
		{"bin/ping", 0, 0, 0o4755},
		{"bin/sg", 0, 50, 0o2755},
		{"data/link", 1002, 1003, 0o777},
		{"data/fifo", 1004, 1005, 0o644},
	}
	for _, c := range checks {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, c.rel), &st); err != nil {
			t.Errorf("%s: %v", c.rel, err)
			continue
		}
		if st.Uid != c.uid || st.Gid != c.gid || st.Mode&0o7777 != c.perm {
			t.Errorf("%s: %d:%d %04o, want %d:%d %04o", c.rel, st.Uid, st.Gid, st.Mode&0o7777, c.uid, c.gid, c.perm)
		}
	}
	xattrs := map[[2]string]string{
		{"data", "user.dir"}:                "d",
		{"data/file", "user.origin"}:        "layer-1",
		{"data/file", "user.empty"}:         "",
		{"bin/ping", "security.capability"}: capValue,
		{"opq", "trusted.overlay.opaque"}:   "y",
		{"data/file-link", "user.origin"}:   "layer-1",
	}
	for k, want := range xattrs {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(filepath.Join(dir, k[0]), k[1], buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("%s xattr %s = %q, %v; want %q", k[0], k[1], buf[:max(n, 0)], err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "opq/.wh..wh..opq")); err == nil {
		t.Error("opaque marker file was written as a file")
	}
}
