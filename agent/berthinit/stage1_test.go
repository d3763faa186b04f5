package berthinit

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/unitgen/caps"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

func TestDecideExit(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600))
	cases := []struct {
		name                 string
		result, code, status string
		oom                  uint64
		wantCode, wantSig    int
		wantOOM              bool
		wantReason           string
	}{
		{"exit 0", "success", "exited", "0", 0, 0, 0, false, bndl.ReasonCompleted},
		{"exit 1", "exit-code", "exited", "1", 0, 1, 0, false, bndl.ReasonError},
		{"exit 3", "exit-code", "exited", "3", 0, 3, 0, false, bndl.ReasonError},
		{"exit 255 (max)", "exit-code", "exited", "255", 0, 255, 0, false, bndl.ReasonError},
		{"exit status unparsable", "exit-code", "exited", "x", 0, 255, 0, false, bndl.ReasonError},
		{"SIGKILL by name", "signal", "killed", "KILL", 0, 137, 9, false, bndl.ReasonError},
		{"SIGTERM on stop: clean for systemd, 143 for Kubernetes", "success", "killed", "TERM", 0, 143, 15, false, bndl.ReasonError},
		{"core dump", "core-dump", "dumped", "SEGV", 0, 139, 11, false, bndl.ReasonError},
		{"SIG prefix", "signal", "killed", "SIGKILL", 0, 137, 9, false, bndl.ReasonError},
		{"numeric signal", "signal", "killed", "9", 0, 137, 9, false, bndl.ReasonError},
		{"real-time signal", "signal", "killed", "RTMIN+3", 0, 128 + 37, 37, false, bndl.ReasonError},
		{"unknown signal name", "signal", "killed", "BOGUS", 0, 255, 0, false, bndl.ReasonError},
		{"never ran (no EXIT_CODE)", "protocol", "", "", 0, 255, 0, false, bndl.ReasonError},
		{"v1 OOM: systemd says signal, counter says OOM", "signal", "killed", "KILL", 1, 137, 9, true, bndl.ReasonOOMKilled},
		{"v2 OOM result without counter", "oom-kill", "killed", "KILL", 0, 137, 9, true, bndl.ReasonOOMKilled},
		{"OOM kill of a child, main exited 0: OOM wins", "success", "exited", "0", 2, 0, 0, true, bndl.ReasonOOMKilled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := DecideExit(tc.result, tc.code, tc.status, tc.oom, now)
			if st.ExitCode != tc.wantCode || st.Signal != tc.wantSig || st.OOMKilled != tc.wantOOM || st.Reason != tc.wantReason || st.Result != tc.result {
				t.Errorf("got %+v, want code %d sig %d oom %v reason %s", st, tc.wantCode, tc.wantSig, tc.wantOOM, tc.wantReason)
			}
			if !st.FinishedAt.Equal(now) || st.FinishedAt.Location() != time.UTC {
				t.Errorf("FinishedAt %v, want %v in UTC", st.FinishedAt, now)
			}
		})
	}
}

func TestPostStopWritesExitJSON(t *testing.T) {
	env := map[string]string{"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"}
	now := time.Now()
	for _, tc := range []struct {
		name    string
		oom     func() (uint64, error)
		wantOOM bool
	}{
		{"counter 1", func() (uint64, error) { return 1, nil }, true},
		{"counter 0", func() (uint64, error) { return 0, nil }, false},
		{"counter unreadable", func() (uint64, error) { return 7, errors.New("gone") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := PostStop(dir, func(k string) string { return env[k] }, tc.oom, now); err != nil {
				t.Fatal(err)
			}
			st, err := bndl.ReadExit(dir)
			if err != nil {
				t.Fatal(err)
			}
			if st.OOMKilled != tc.wantOOM || st.ExitCode != 137 || !st.FinishedAt.Equal(now.UTC().Round(0)) {
				t.Errorf("got %+v", st)
			}
			// Written atomically: no temporary file remains.
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 || ents[0].Name() != bndl.ExitFile {
				t.Errorf("bundle holds %v, want only %s", ents, bndl.ExitFile)
			}
		})
	}
	// With the baseline Start recorded: only kills since then count.
	for _, tc := range []struct {
		name    string
		base    string
		counter uint64
		wantOOM bool
	}{
		{"baseline equal: old OOM from before a restart", "3\n", 3, false},
		{"baseline+1: a new OOM kill", "3\n", 4, true},
		{"counter below baseline: new cgroup, counts in full", "3\n", 1, true},
		{"unparsable baseline ignored", "x", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, bndl.OOMBaseFile), []byte(tc.base), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := PostStop(dir, func(k string) string { return env[k] }, func() (uint64, error) { return tc.counter, nil }, now); err != nil {
				t.Fatal(err)
			}
			st, err := bndl.ReadExit(dir)
			if err != nil {
				t.Fatal(err)
			}
			if st.OOMKilled != tc.wantOOM {
				t.Errorf("OOMKilled %v, want %v", st.OOMKilled, tc.wantOOM)
			}
		})
	}
	if _, err := bndl.ReadExit(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing exit.json: got %v, want ErrNotExist", err)
	}
}

func TestParseMountOptions(t *testing.T) {
	cases := []struct {
		opts       []string
		flags      uintptr
		prop       uintptr
		data       string
		bind, rec  bool
		wantErrSub string
	}{
		{opts: nil},
		{opts: []string{"nosuid", "noexec", "nodev"}, flags: unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV},
		{opts: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}, flags: unix.MS_NOSUID | unix.MS_STRICTATIME, data: "mode=755,size=65536k"},
		{opts: []string{"rbind", "rprivate", "ro"}, flags: unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, prop: unix.MS_PRIVATE | unix.MS_REC, bind: true, rec: true},
		{opts: []string{"bind", "rslave"}, flags: unix.MS_BIND, prop: unix.MS_SLAVE | unix.MS_REC, bind: true},
		{opts: []string{"ro", "rw"}, flags: 0},                                            // later wins
		{opts: []string{"nosuid", "suid"}, flags: 0},                                      // clearing flag
		{opts: []string{"lowerdir=a:b", "upperdir=/u"}, data: "lowerdir=a:b,upperdir=/u"}, // overlay data kept in order
		{opts: []string{"tmpcopyup", "mode=1777"}, data: "mode=1777"},
		{opts: []string{"idmap"}, wantErrSub: "id-mapped"},
	}
	for _, tc := range cases {
		o, err := parseMountOptions(tc.opts)
		if tc.wantErrSub != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSub) {
				t.Errorf("%v: err %v, want %q", tc.opts, err, tc.wantErrSub)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.opts, err)
			continue
		}
		if o.flags != tc.flags || o.prop != tc.prop || strings.Join(o.data, ",") != tc.data || o.bind != tc.bind || o.rec != tc.rec {
			t.Errorf("%v: got flags %#x prop %#x data %q bind %v rec %v", tc.opts, o.flags, o.prop, o.data, o.bind, o.rec)
		}
	}
}

func TestPlanNamespaces(t *testing.T) {
	ns := func(list ...specs.LinuxNamespace) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Namespaces: list}}
	}
	pid, mnt := specs.LinuxNamespace{Type: specs.PIDNamespace}, specs.LinuxNamespace{Type: specs.MountNamespace}

	p, err := planNamespaces(ns(pid, mnt, specs.LinuxNamespace{Type: specs.IPCNamespace},
		specs.LinuxNamespace{Type: specs.UTSNamespace}, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/run/netns/pod"},
		specs.LinuxNamespace{Type: specs.CgroupNamespace}))
	if err != nil {
		t.Fatal(err)
	}
	if want := uintptr(unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP); p.clone != want {
		t.Errorf("clone flags %#x, want %#x", p.clone, want)
	}
	if len(p.joins) != 1 || p.joins[0].path != "/run/netns/pod" || p.joins[0].flag != unix.CLONE_NEWNET {
		t.Errorf("joins %+v", p.joins)
	}

	for name, tc := range map[string]struct {
		spec *specs.Spec
		want string
	}{
		"no pid":     {ns(mnt), "must include pid and mount"},
		"no mount":   {ns(pid), "must include pid and mount"},
		"join mount": {ns(pid, specs.LinuxNamespace{Type: specs.MountNamespace, Path: "/x"}), "joining a mount namespace"},
		"user":       {ns(pid, mnt, specs.LinuxNamespace{Type: specs.UserNamespace}), `"user" is not supported`},
		"twice":      {ns(pid, mnt, pid), "listed twice"},
		"time":       {ns(pid, mnt, specs.LinuxNamespace{Type: specs.TimeNamespace}), "not supported"},
	} {
		if _, err := planNamespaces(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
}

func TestRootOverlay(t *testing.T) {
	ov := func(opts ...string) *specs.Spec {
		return &specs.Spec{Mounts: []specs.Mount{{Destination: "/", Type: "overlay", Source: "overlay", Options: opts}}}
	}
	o, err := rootOverlay(ov("lowerdir=/l1:/l2", "upperdir=/b/upper", "workdir=/b/work"))
	if err != nil || o.upper != "/b/upper" || o.work != "/b/work" {
		t.Fatalf("got %+v, %v", o, err)
	}
	for name, tc := range map[string]struct {
		spec *specs.Spec
		want string
	}{
		"no mounts":        {&specs.Spec{}, "mounts is empty"},
		"not overlay":      {&specs.Spec{Mounts: []specs.Mount{{Destination: "/proc", Type: "proc"}}}, "must be the rootfs overlay"},
		"no upperdir":      {ov("lowerdir=/l", "workdir=/w"), "upperdir"},
		"relative workdir": {ov("upperdir=/u", "workdir=w"), "workdir"},
		"root upperdir":    {ov("upperdir=/", "workdir=/w"), "upperdir"},
		"unclean upperdir": {ov("upperdir=/a/../b", "workdir=/w"), "upperdir"},
	} {
		if _, err := rootOverlay(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
}

func TestFreshen(t *testing.T) {
	dir := t.TempDir()
	o := &overlay{upper: filepath.Join(dir, "upper"), work: filepath.Join(dir, "work")}
	if err := os.MkdirAll(o.upper+"/etc", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.upper+"/etc/changed", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := o.freshen(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{o.upper, o.work} {
		ents, err := os.ReadDir(d)
		if err != nil || len(ents) != 0 {
			t.Errorf("%s: %v entries, err %v; want an empty dir", d, len(ents), err)
		}
	}
	// Empty directories are kept as they are (a first start).
	before, _ := os.Stat(o.upper)
	if err := o.freshen(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(o.upper); !os.SameFile(before, after) {
		t.Errorf("an empty upper dir was replaced")
	}
	// A symlink, even to an empty directory, is replaced by a directory;
	// what it pointed to is left alone.
	elsewhere := filepath.Join(dir, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(o.upper); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, o.upper); err != nil {
		t.Fatal(err)
	}
	if err := o.freshen(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(o.upper); err != nil || !fi.IsDir() {
		t.Errorf("upper after freshen: %v, %v; want a directory", fi, err)
	}
	if _, err := os.Stat(elsewhere); err != nil {
		t.Errorf("symlink target removed: %v", err)
	}
}

func TestParseCaps(t *testing.T) {
	var warnings []string
	c := parseCaps(&specs.LinuxCapabilities{
		Bounding:  []string{"CAP_CHOWN", "CAP_KILL", "CAP_NO_SUCH", "CAP_CHECKPOINT_RESTORE"},
		Effective: []string{"cap_chown"},
		Ambient:   []string{"CAP_NET_BIND_SERVICE"},
	}, unix.CAP_BPF, func(s string) { warnings = append(warnings, s) }) // a kernel that stops at CAP_BPF (39)
	if want := capMask(1<<unix.CAP_CHOWN | 1<<unix.CAP_KILL); c.bounding != want {
		t.Errorf("bounding %#x, want %#x", c.bounding, want)
	}
	if c.effective != 1<<unix.CAP_CHOWN || c.ambient != 1<<unix.CAP_NET_BIND_SERVICE || c.permitted != 0 {
		t.Errorf("sets %+v", c)
	}
	if len(warnings) != 2 || !strings.Contains(warnings[0], "CAP_NO_SUCH") || !strings.Contains(warnings[1], "CAP_CHECKPOINT_RESTORE") {
		t.Errorf("warnings %q", warnings)
	}
	if len(caps.Numbers) != unix.CAP_LAST_CAP+1 {
		t.Errorf("capability table has %d names, x/sys knows %d", len(caps.Numbers), unix.CAP_LAST_CAP+1)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "c/tool"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "a/tool"), []byte("#!/bin/sh\n"), 0o644); err != nil { // not executable
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b/tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := "PATH=" + filepath.Join(dir, "c") + ":" + filepath.Join(dir, "a") + ":" + filepath.Join(dir, "b")
	// c/tool is a directory and a/tool has no execute bit (which even root
	// needs for access(X_OK)): b/tool it is.
	got, err := lookPath("tool", []string{"HOME=/", path})
	if err != nil || got != filepath.Join(dir, "b/tool") {
		t.Errorf("got %q, %v; want b/tool", got, err)
	}
	if _, err := lookPath("missing", []string{path}); err == nil || !strings.Contains(err.Error(), `not found in PATH "`+strings.TrimPrefix(path, "PATH=")+`"`) {
		t.Errorf("missing: %v", err)
	}
	if _, err := lookPath("missing-too", nil); err == nil || !strings.Contains(err.Error(), "default PATH") {
		t.Errorf("no PATH: %v", err)
	}
	if got, err := lookPath(filepath.Join(dir, "b/tool"), nil); err != nil || got != filepath.Join(dir, "b/tool") {
		t.Errorf("absolute: %q, %v", got, err)
	}
	if _, err := lookPath("", nil); err == nil {
		t.Error("empty args[0] accepted")
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/sys/fs/cgroup": "/sys/fs/cgroup",
		`/a\040b`:        "/a b",
		`/tab\011x`:      "/tab\tx",
		`/back\134slash`: `/back\slash`,
		`/trailing\04`:   `/trailing\04`,
		`/not\9octal`:    `/not\9octal`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestCgroupSubsystems(t *testing.T) {
	for super, want := range map[string]string{
		"rw,memory":                    "memory",
		"rw,cpu,cpuacct":               "cpu,cpuacct",
		"rw,xattr,name=systemd":        "xattr,name=systemd",
		"ro,release_agent=/x,name=foo": "name=foo",
	} {
		if got := cgroupSubsystems(super); got != want {
			t.Errorf("%q: got %q, want %q", super, got, want)
		}
	}
	for _, tc := range []struct {
		super, ctrls string
		want         bool
	}{
		{"rw,memory", "memory", true},
		{"rw,cpu,cpuacct", "cpu,cpuacct", true},
		{"rw,cpu", "cpu,cpuacct", false},
		{"rw,xattr,name=systemd", "name=systemd", true},
		{"rw,memory", "", false},
	} {
		if got := matchesSubsystems(tc.super, tc.ctrls); got != tc.want {
			t.Errorf("matchesSubsystems(%q, %q) = %v", tc.super, tc.ctrls, got)
		}
	}
}

func TestMainUsage(t *testing.T) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = devnull
	t.Cleanup(func() { os.Stderr = stderr; devnull.Close() })
	for _, args := range [][]string{nil, {"start"}, {"frobnicate", "/b"}} {
		if code := Main(args); code != 2 {
			t.Errorf("Main(%q) = %d, want 2", args, code)
		}
	}
}

func TestMountAttr(t *testing.T) {
	cases := []struct {
		name     string
		flags    uintptr
		set, clr uint64
		ok       bool
	}{
		{"none", 0, 0, 0, true},
		{"cgroup tmpfs", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RELATIME,
			unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC | unix.MOUNT_ATTR_RELATIME,
			unix.MOUNT_ATTR__ATIME, true},
		{"noatime", unix.MS_NOATIME, unix.MOUNT_ATTR_NOATIME, unix.MOUNT_ATTR__ATIME, true},
		{"two atime modes", unix.MS_NOATIME | unix.MS_STRICTATIME, 0, 0, false},
		{"not expressible", unix.MS_RDONLY | unix.MS_SYNCHRONOUS, 0, 0, false},
	}
	for _, tc := range cases {
		a, ok := mountAttr(tc.flags)
		if ok != tc.ok || (ok && (a.Attr_set != tc.set || a.Attr_clr != tc.clr)) {
			t.Errorf("%s: got set %#x clr %#x ok %v, want %#x %#x %v", tc.name, a.Attr_set, a.Attr_clr, ok, tc.set, tc.clr, tc.ok)
		}
	}
}

// TestLoadSpecKeepsWhatStage2Uses: LoadSpec decodes into its own narrow
// types; every field stage-2 acts on must come through exactly.
func TestLoadSpecKeepsWhatStage2Uses(t *testing.T) {
	umask, oomScoreAdj := uint32(0o027), -500
	want := specs.Spec{
		Process: &specs.Process{
			Args: []string{"/bin/app", "-x"}, Env: []string{"A=1"}, Cwd: "/work",
			User:            specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{5, 6}, Umask: &umask},
			Capabilities:    &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Effective: []string{"CAP_KILL"}, Permitted: []string{"CAP_KILL"}, Ambient: []string{"CAP_KILL"}, Inheritable: []string{"CAP_KILL"}},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 512}},
			NoNewPrivileges: true,
			OOMScoreAdj:     &oomScoreAdj,
		},
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Hostname: "h", Domainname: "d",
		Mounts:      []specs.Mount{{Destination: "/", Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/l"}}},
		Annotations: map[string]string{"k": "v"},
		Linux: &specs.Linux{
			Namespaces:        []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/run/ns/net"}},
			Devices:           []specs.LinuxDevice{{Path: "/dev/null", Type: "c", Major: 1, Minor: 3}},
			MaskedPaths:       []string{"/proc/kcore"},
			ReadonlyPaths:     []string{"/proc/sys"},
			RootfsPropagation: "rslave",
		},
	}
	dir := t.TempDir()
	b, err := json.Marshal(want)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, bndl.ConfigFile), b, 0o600))
	got, err := LoadSpec(dir)
	must(t, err)
	if !reflect.DeepEqual(*got, want) {
		gb, _ := json.Marshal(got)
		t.Errorf("LoadSpec lost something:\n got %s\nwant %s", gb, b)
	}

	// A profile left in the spec is kept as "there" for LoadSeccomp to refuse.
	want.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	b, err = json.Marshal(want)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, bndl.ConfigFile), b, 0o600))
	if got, err = LoadSpec(dir); err != nil || got.Linux.Seccomp == nil {
		t.Errorf("linux.seccomp not seen: %v", err)
	}
}

func TestSplitMounts(t *testing.T) {
	m := func(dest, typ string) specs.Mount { return specs.Mount{Destination: dest, Type: typ} }
	early, late := splitMounts([]specs.Mount{
		m("/proc", "proc"), m("/dev", "tmpfs"), m("/proc/driver", "bind"), m("/sys", "sysfs"),
		m("/procfs", "bind"), m("/data/proc", "proc"), m("/data/proc/x/", "tmpfs"), m("/data", "bind"),
		{Destination: "/host/proc", Type: "bind", Source: "/proc"}, {Destination: "/self", Type: "bind", Source: "/proc/self/fd"},
		{Destination: "/procs", Type: "bind", Source: "/procs"}, {Destination: "/slash", Type: "bind", Source: "/proc/"},
	})
	dests := func(ms []specs.Mount) string {
		var d []string
		for _, x := range ms {
			d = append(d, x.Destination)
		}
		return strings.Join(d, " ")
	}
	// procfs, binds from /proc and what lies on, below or above one go to
	// stage-2, in the spec's order (/data after /data/proc must still cover
	// it); a sibling with a common prefix (/procfs, /procs) does not.
	if got, want := dests(early), "/dev /sys /procfs /procs"; got != want {
		t.Errorf("early %q, want %q", got, want)
	}
	if got, want := dests(late), "/proc /proc/driver /data/proc /data/proc/x/ /data /host/proc /self /slash"; got != want {
		t.Errorf("late %q, want %q", got, want)
	}
}
