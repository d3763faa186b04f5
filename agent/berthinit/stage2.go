package berthinit

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// defaultPath is used to resolve process.args[0] when the spec's env has no
// PATH (Docker's default PATH, moby oci/defaults).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Stage2 is `berth-init stage2 <bundle>`, cloned by Start as PID 1 of a new
// PID namespace, in the container's other namespaces, which stage-1 made or
// joined. Once stage-1 has built most of the container's root (goByte), it
// finishes it (procfs, pivot_root), drops privileges, reports ready on sync
// (fd 3) and, once stage-1 has been reaped, execs the workload; it returns
// only on failure. An error before the ready report goes back through sync
// to fail the start; one after it is an *execError.
func Stage2(bundle string, sync *os.File) error {
	// Credentials, capabilities, no_new_privs and seccomp are per thread:
	// everything below runs on this one, which then calls execve(2). The
	// kernel kills every other thread at execve (de_thread) and the new
	// image keeps exactly this thread's state.
	runtime.LockOSThread()
	// Nothing of stage-1's may reach the workload.
	unix.CloseOnExec(syncFd)
	unix.CloseOnExec(parentFd)
	unix.CloseOnExec(goFd)

	spec, err := LoadSpec(bundle)
	if err != nil {
		return err
	}
	proc := spec.Process
	scf, err := LoadSeccomp(bundle, spec)
	if err != nil {
		return err
	}
	last, err := lastCap()
	if err != nil {
		return err
	}
	caps := parseCaps(proc.Capabilities, last, func(msg string) {
		fmt.Fprintln(os.Stderr, "berth-init: warning:", msg)
	})

	if proc.OOMScoreAdj != nil {
		if err := setOOMScoreAdj(*proc.OOMScoreAdj); err != nil {
			return err
		}
	}

	// Nothing of the image before stage-1 has judged it and built most of
	// the root (see Start).
	if err := awaitGo(); err != nil {
		return err
	}
	if err := finishRoot(bundle, spec); err != nil {
		return err
	}

	if ownsNamespace(spec, specs.UTSNamespace) {
		// A joined UTS namespace belongs to the pod, which set its name.
		if spec.Hostname != "" {
			if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
				return fmt.Errorf("sethostname %q: %w", spec.Hostname, err)
			}
		}
		if spec.Domainname != "" {
			if err := unix.Setdomainname([]byte(spec.Domainname)); err != nil {
				return fmt.Errorf("setdomainname %q: %w", spec.Domainname, err)
			}
		}
	}
	if err := setRlimits(proc.Rlimits); err != nil {
		return err
	}
	if err := takeCredentials(proc, caps, scf); err != nil {
		return err
	}
	// Resolve and check as the workload's user, before the final filter so
	// that an error can still be reported with few syscalls under it.
	path, err := lookPath(proc.Args[0], proc.Env)
	if err != nil {
		return err
	}
	if err := checkExec(path); err != nil {
		return err
	}
	if err := loadLateSeccomp(proc, scf); err != nil {
		return err
	}

	// Report ready, then exec only once stage-1 has been reaped (see Start).
	if _, err := sync.WriteString(readyByte); err != nil {
		return fmt.Errorf("report ready: %w", err)
	}
	sync.Close()
	parent := os.NewFile(parentFd, "stage-1")
	if err := waitForReap(parent); err != nil {
		return &execError{err: err, code: 126}
	}
	parent.Close()
	err = syscall.Exec(path, proc.Args, proc.Env)
	code := 126 // found but cannot be run (the shell's convention)
	if errors.Is(err, unix.ENOENT) {
		code = 127
	}
	return &execError{err: fmt.Errorf("exec %s: %w", path, err), code: code}
}

// setOOMScoreAdj applies process.oomScoreAdj (proc(5),
// /proc/<pid>/oom_score_adj), inherited by the workload across execve.
//
// Under systemd this changes nothing: unitgen gives the unit
// OOMScoreAdjust= with the same value (unitgen/properties.go, the
// kubelet's score for the pod's QoS class), which systemd applies to
// ExecStart= and so to stage-1 and stage-2. berth-init honours the spec
// field all the same rather than have unitgen stop writing it: the spec
// then says everything about the process that runc would be told, a
// berth-init started by anything else than systemd (the tests, by hand)
// still gives the workload the kubelet's score, and LoadSpec reads every
// field unitgen writes (TestLoadSpecKeepsWhatUnitgenWrites).
//
// Lowering the score below what was last set with CAP_SYS_RESOURCE needs
// that capability (EACCES without it). Where berth-init lacks it (a host
// that is itself a container), this warns and goes on, exactly as systemd
// treats OOMScoreAdjust= there ("Failed to adjust OOM setting, assuming
// containerized execution, ignoring", src/core/execute.c): the start must
// not fail where the unit's own setting is skipped. It runs before
// pivot_root: /proc is still the host's procfs, where /proc/self is
// stage-2.
func setOOMScoreAdj(v int) error {
	const p = "/proc/self/oom_score_adj"
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("process.oomScoreAdj: %w", err)
	}
	_, err = f.WriteString(strconv.Itoa(v))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		fmt.Fprintf(os.Stderr, "berth-init: warning: process.oomScoreAdj %d not applied, assuming a container without CAP_SYS_RESOURCE as systemd does: %v\n", v, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("process.oomScoreAdj %d: %w", v, err)
	}
	return nil
}

// awaitGo reads stage-1's goByte. Anything else (stage-1 refused the
// image, failed, or died) ends stage-2 before it has touched the image.
func awaitGo() error {
	f := os.NewFile(goFd, "go-ahead")
	defer f.Close()
	b := make([]byte, 1)
	if n, err := f.Read(b); n != 1 || b[0] != goByte {
		return fmt.Errorf("stage-1 did not let stage-2 go on: %w", err)
	}
	return nil
}

// execError is a failure after stage-2 reported ready: stage-1 is gone, so
// it goes to stderr (the journal) and becomes the workload's exit status.
type execError struct {
	err  error
	code int
}

func (e *execError) Error() string { return e.err.Error() }
func (e *execError) Unwrap() error { return e.err }

// waitForReap blocks until stage-1, whose /proc/<pid>/stat is f, has been
// reaped: reads succeed while it runs and while it is a zombie, and fail
// with ESRCH once its parent (systemd) has collected it. stage-1 is not in
// stage-2's PID namespace, so neither kill(2) nor pidfd_send_signal(2) can
// probe it; the file opened by stage-1 itself can.
func waitForReap(f *os.File) error {
	buf := make([]byte, 128)
	delay := 50 * time.Microsecond
	for {
		if _, err := f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
			if errors.Is(err, unix.ESRCH) {
				return nil
			}
			return fmt.Errorf("watch stage-1: %w", err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 5*time.Millisecond)
	}
}

// checkExec finds what would make execve(2) of path fail, so that it fails
// the start with a precise message instead of becoming exit status 126/127:
// a missing #! interpreter or ELF interpreter (the loader of another libc
// or architecture: execve says only ENOENT). executable() has already
// ruled out directories, noexec mounts and missing permission. Formats it
// does not recognise are left to execve (binfmt_misc may know them).
func checkExec(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // execute-only file: execve may still run it
	}
	defer f.Close()
	hdr := make([]byte, 256)
	n, _ := io.ReadFull(f, hdr)
	hdr = hdr[:n]
	switch {
	case bytes.HasPrefix(hdr, []byte("#!")):
		line, _, _ := bytes.Cut(hdr[2:], []byte("\n"))
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			return fmt.Errorf("%s: empty #! line", path)
		}
		if err := executable(fields[0]); err != nil {
			return fmt.Errorf("%s: #! interpreter: %w", path, err)
		}
	case bytes.HasPrefix(hdr, []byte(elf.ELFMAG)):
		ef, err := elf.NewFile(f)
		if err != nil {
			return nil // let the kernel judge what Go's parser does not like
		}
		for _, p := range ef.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b, err := io.ReadAll(io.LimitReader(p.Open(), 4096))
			if err != nil {
				return nil
			}
			interp := strings.TrimRight(string(b), "\x00")
			if err := executable(interp); err != nil {
				return fmt.Errorf("%s: ELF interpreter (an image for another libc or architecture?): %w", path, err)
			}
		}
	}
	return nil
}

// mountRoot is stage-1's part of the container's root, done in the
// container's mount namespace while stage-2 starts up: the rootfs overlay
// and every mount of the spec that need not be made from inside the new PID
// namespace (see splitMounts), and /dev's devices.
func mountRoot(bundle string, spec *specs.Spec) error {
	// Nothing we mount may propagate back to the host (or systemd's)
	// namespace; rslave still lets host unmounts reach us.
	prop := uintptr(unix.MS_SLAVE | unix.MS_REC)
	if p := spec.Linux.RootfsPropagation; p != "" {
		v, ok := propFlags[p]
		if !ok {
			return fmt.Errorf("linux.rootfsPropagation %q is unknown", p)
		}
		prop = v
	}
	if err := unix.Mount("", "/", "", prop, ""); err != nil {
		return fmt.Errorf("make / %s: %w", spec.Linux.RootfsPropagation, err)
	}

	ov, err := rootOverlay(spec)
	if err != nil {
		return err
	}
	root := rootPath(bundle, spec)
	o, err := parseMountOptions(ov.mount.Options)
	if err != nil {
		return fmt.Errorf("rootfs overlay: %w", err)
	}
	data := strings.Join(o.data, ",")
	// mount(2) copies at most one page of data; many layers with long
	// paths overflow it.
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("rootfs overlay options are %d bytes, mount(2) takes at most %d: too many or too long lowerdir paths", len(data), os.Getpagesize()-1)
	}
	if err := unix.Mount("overlay", root, "overlay", o.flags&^unix.MS_RDONLY, data); err != nil {
		return fmt.Errorf("mount rootfs overlay on %s: %w", root, err)
	}

	r, err := openRootfs(root, bundle)
	if err != nil {
		return err
	}
	defer r.dir.Close()
	cgroupNS := ownsNamespace(spec, specs.CgroupNamespace)
	early, late := splitMounts(spec.Mounts[1:])
	for _, m := range early {
		if err := r.mount(m, cgroupNS); err != nil {
			return err
		}
	}
	if needsDevices(spec.Mounts) && !overlapsAny("/dev", late) {
		return r.setupDev(spec.Linux.Devices)
	}
	return nil
}

// openRootfs opens the container's root, the directory every mount target
// is resolved beneath.
func openRootfs(root, bundle string) (*rootfs, error) {
	dir, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open rootfs %s: %w", root, err)
	}
	return &rootfs{path: root, dir: dir, bundle: bundle}, nil
}

// needsDevices: /dev gets the spec's devices unless it is bound from the
// host (privileged), which already has everything.
func needsDevices(ms []specs.Mount) bool {
	devIsBind := false
	for _, m := range ms {
		if filepath.Clean(m.Destination) == "/dev" {
			mo, _ := parseMountOptions(m.Options)
			devIsBind = mo.bind || m.Type == "bind"
		}
	}
	return !devIsBind
}

// finishRoot is stage-2's part, in the new PID namespace: the mounts
// stage-1 could not make, the pivot into the root, read-only and masked
// paths.
func finishRoot(bundle string, spec *specs.Spec) error {
	r, err := openRootfs(rootPath(bundle, spec), bundle)
	if err != nil {
		return err
	}
	defer r.dir.Close()
	cgroupNS := ownsNamespace(spec, specs.CgroupNamespace)
	_, late := splitMounts(spec.Mounts[1:])
	for _, m := range late {
		if err := r.mount(m, cgroupNS); err != nil {
			return err
		}
	}
	if needsDevices(spec.Mounts) && overlapsAny("/dev", late) {
		if err := r.setupDev(spec.Linux.Devices); err != nil {
			return err
		}
	}

	if err := pivot(r.path); err != nil {
		return err
	}
	if err := protectPaths(spec.Linux.ReadonlyPaths, spec.Linux.MaskedPaths); err != nil {
		return err
	}
	if spec.Root.Readonly {
		if err := remountRootReadonly(); err != nil {
			return err
		}
	}
	return nil
}

// splitMounts divides the spec's mounts after the root overlay, keeping
// their order, into those stage-1 makes (early) and those stage-2 makes
// (late): procfs shows the PID namespace of whoever mounts it, which for
// stage-1 is the host's, and a bind from below /proc resolves /proc/self
// to whoever binds it. A mount on, below or above a late one is late too,
// so that the two still stack in the spec's order. Everything else belongs
// to namespaces stage-1 is already in: sysfs to the network namespace,
// mqueue to the IPC one, cgroup to the cgroup one.
//
// Destinations are compared as written, which is how they are mounted: a
// symlink of the image cannot make one reach another, because no mount
// follows one (openInRoot; say /data -> /proc and a volume at /data/x: the
// start fails naming /data).
func splitMounts(ms []specs.Mount) (early, late []specs.Mount) {
	for _, m := range ms {
		if m.Type == "proc" || under(filepath.Clean(m.Source), "/proc") || overlapsAny(m.Destination, late) {
			late = append(late, m)
		} else {
			early = append(early, m)
		}
	}
	return early, late
}

// under reports whether the clean path a is b or lies below it.
func under(a, b string) bool { return a == b || strings.HasPrefix(a, b+"/") || b == "/" }

// overlapsAny reports whether dest is, or lies below or above, the
// destination of one of ms.
func overlapsAny(dest string, ms []specs.Mount) bool {
	d := filepath.Clean(dest)
	for _, m := range ms {
		if l := filepath.Clean(m.Destination); under(d, l) || under(l, d) {
			return true
		}
	}
	return false
}

var rlimitNames = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC,
	"RLIMIT_RSS": unix.RLIMIT_RSS, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

func setRlimits(rl []specs.POSIXRlimit) error {
	for _, l := range rl {
		res, ok := rlimitNames[l.Type]
		if !ok {
			return fmt.Errorf("process.rlimits: unknown type %q", l.Type)
		}
		// syscall.Setrlimit, not unix.Prlimit: for RLIMIT_NOFILE it also
		// tells the Go runtime not to restore its startup soft limit in
		// syscall.Exec (go.dev/issue/46279), which would undo ours.
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: l.Soft, Max: l.Hard}); err != nil {
			return fmt.Errorf("setrlimit %s soft=%d hard=%d: %w", l.Type, l.Soft, l.Hard, err)
		}
	}
	return nil
}

// switchUser sets groups, gid and uid of this thread only, with raw
// syscalls. Go's syscall.Setuid & co. apply to every thread of the process
// (runtime AllThreadsSyscall, Go >= 1.16); we need no such broadcast because
// execve from this thread replaces the whole process with it. PR_SET_KEEPCAPS
// keeps the permitted set across the uid change so that capset can then
// give the workload what the spec says (capabilities(7)).
func switchUser(u specs.User) error {
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set keepcaps: %w", err)
	}
	gids := append([]uint32(nil), u.AdditionalGids...)
	var p unsafe.Pointer
	if len(gids) > 0 {
		p = unsafe.Pointer(&gids[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("setgroups %v: %w", gids, e)
	}
	runtime.KeepAlive(gids)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(u.GID), uintptr(u.GID), uintptr(u.GID)); e != 0 {
		return fmt.Errorf("setresgid %d: %w", u.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(u.UID), uintptr(u.UID), uintptr(u.UID)); e != 0 {
		return fmt.Errorf("setresuid %d: %w", u.UID, e)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("clear keepcaps: %w", err)
	}
	return nil
}

// lookPath resolves args[0] inside the new root through the spec's PATH
// (not berth-init's own), like execvp(3) and runc.
func lookPath(name string, env []string) (string, error) {
	if name == "" {
		return "", errors.New("process.args[0] is empty")
	}
	if strings.Contains(name, "/") {
		if err := executable(name); err != nil {
			return "", fmt.Errorf("process.args[0] %q: %w", name, err)
		}
		return name, nil
	}
	pathEnv, found := defaultPath, false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv, found = v, true
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if executable(p) == nil {
			return p, nil
		}
	}
	src := "PATH"
	if !found {
		src = "default PATH"
	}
	return "", fmt.Errorf("process.args[0] %q: executable file not found in %s %q", name, src, pathEnv)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", p)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err == nil && st.Flags&unix.ST_NOEXEC != 0 {
		return fmt.Errorf("%s is on a noexec mount", p)
	}
	if err := unix.Access(p, unix.X_OK); err != nil {
		return fmt.Errorf("%s is not executable: %w", p, err)
	}
	return nil
}
