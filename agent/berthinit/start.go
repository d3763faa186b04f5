package berthinit

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// ownOOMKills is OwnOOMKills, replaceable in tests.
var ownOOMKills = OwnOOMKills

// File descriptors stage-2 inherits (ExtraFiles).
const (
	syncFd   = 3 // write end of the sync pipe to stage-1
	parentFd = 4 // stage-1's /proc/<pid>/stat, to see stage-1 reaped
	goFd     = 5 // read end of the go-ahead pipe from stage-1
)

// readyByte is stage-2's "ready to exec" report.
const readyByte = "\x00"

// goByte is stage-1's "image judged, bundle prepared, root mounted: go on".
const goByte = 'g'

// Start is `berth-init start <bundle>`: it starts stage-2 in new
// namespaces, prepares the bundle and the root meanwhile (with verify, the
// trust policy's judgement of the image first), lets stage-2 go on, waits until
// stage-2 has done everything short of the execve (or reported why it
// cannot), writes stage-2's PID to <bundle>/pid and returns. The caller
// exits right after: systemd (Type=forking, PIDFile=<bundle>/pid) adopts
// stage-2, soon the workload, as MainPID.
//
// Stage-2 is cloned first, into the container's namespaces, which stage-1
// makes on its own thread: while stage-2 execs, Go starts up and it reads
// its spec (~1.8 ms, make bench), stage-1 judges the image, prepares the
// bundle and mounts the container's root but procfs (mountRoot). Stage-2
// touches nothing of the image before goByte arrives; if the judgement
// refuses or anything fails, stage-1 kills it and fails the start.
//
// Why stage-2 execs only after stage-1 is gone: systemd reads PIDFile= when
// it handles stage-1's SIGCHLD, and refuses a PID that is already a zombie
// ("PID ... read from file ... does not exist or is a zombie", unit result
// "protocol", exit status lost). A workload exec'd before stage-1 exits and
// that exits within a millisecond (a Job running `true`) lost that race in
// about 1 of 10 runs under systemd 252 here. systemd runs the SIGCHLD
// handlers, and so reads PIDFile=, while stage-1 is still an unreaped
// zombie and reaps it only afterwards (src/core/manager.c,
// manager_dispatch_sigchld: waitid(WNOWAIT), invoke the units' sigchld
// handlers, then "actually reap the zombie"). So stage-2 waits until
// stage-1 has been reaped, and then systemd already watches it. Everything
// that can fail is checked before the "ready" report, so a bad spec still
// fails the start job with a precise message; only an execve error proper
// (rare after checkExec) becomes the workload's exit status 126/127 with the
// message in the journal, as a shell reports it.
func Start(bundle string, verify func(bundle string) error) error {
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return fmt.Errorf("bundle path: %w", err)
	}
	spec, err := loadStartSpec(bundle)
	if err != nil {
		return err
	}
	plan, err := planNamespaces(spec)
	if err != nil {
		return err
	}
	ov, err := rootOverlay(spec)
	if err != nil {
		return err
	}
	// Read before this thread enters the container's cgroup namespace,
	// which would show the unit's cgroup as "/".
	oomBase, oomErr := ownOOMKills()

	// Namespaces are per thread: join them on this thread and fork from it,
	// so that the child inherits them. Never unlocked — the thread is
	// "dirty" and Go terminates it if the goroutine ever exits.
	runtime.LockOSThread()
	for _, j := range plan.joins {
		if err := join(j); err != nil {
			return err
		}
	}
	// The new namespaces, but the PID one, are made here too, so that
	// stage-1 can mount the container's root in them while stage-2 starts
	// up (sysfs and mqueue belong to the network and IPC namespaces of
	// whoever mounts them). Only unshare(CLONE_NEWPID) affects just the
	// children, and stage-2 is the first.
	if f := plan.clone &^ unix.CLONE_NEWPID; f != 0 {
		if err := unix.Unshare(int(f)); err != nil {
			return fmt.Errorf("unshare namespaces (flags %#x): %w", f, err)
		}
	}
	cloneFlags := plan.clone & unix.CLONE_NEWPID

	r, w, err := os.Pipe() // both ends O_CLOEXEC
	if err != nil {
		return fmt.Errorf("sync pipe: %w", err)
	}
	defer r.Close()
	goR, goW, err := os.Pipe()
	if err != nil {
		w.Close()
		return fmt.Errorf("go-ahead pipe: %w", err)
	}
	defer goW.Close()
	// Stage-2 watches this to learn when we have been reaped (see
	// waitForReap).
	self, err := os.Open("/proc/self/stat")
	if err != nil {
		w.Close()
		goR.Close()
		return fmt.Errorf("open /proc/self/stat: %w", err)
	}
	defer self.Close()
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"berth-init", "stage2", bundle},
		Stdin:      os.Stdin, // systemd's: /dev/null and the journal,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: []*os.File{w, self, goR}, // fds 3, 4 and 5 in the child, without CLOEXEC
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: cloneFlags,
			// The workload leads its own session: it must not share the
			// process group of systemd's control process.
			Setsid: true,
		},
	}
	err = cmd.Start()
	w.Close()
	goR.Close()
	if err != nil {
		return fmt.Errorf("clone stage-2 (flags %#x): %w", cloneFlags, err)
	}
	abort := func(err error) error {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}

	if verify != nil {
		// On another thread, in the host's namespaces: berth-verify, when
		// it has to run, must not start in the pod's.
		verified := make(chan error, 1)
		go func() { verified <- verify(bundle) }()
		if err := <-verified; err != nil {
			return abort(err)
		}
	}
	if err := prepareBundle(bundle, ov, oomBase, oomErr); err != nil {
		return abort(err)
	}
	if err := mountRoot(bundle, spec); err != nil {
		return abort(err)
	}
	// A write fails only if stage-2 is gone (EPIPE): its report on the
	// sync pipe says why.
	_, _ = goW.Write([]byte{goByte})
	goW.Close()

	// Stage-2 answers once: readyByte when everything up to the execve is
	// done, or an error message, then it closes its end.
	msg, rerr := io.ReadAll(r)
	switch {
	case rerr != nil:
		return abort(fmt.Errorf("read sync pipe: %w", rerr))
	case len(msg) == 0:
		_ = cmd.Wait()
		return fmt.Errorf("stage-2 ended without a report (%v)", cmd.ProcessState)
	case string(msg) != readyByte:
		_ = cmd.Wait()
		return fmt.Errorf("%s", msg)
	}

	// Stage-2's pivot_root moved this thread's root into the container
	// (it moves every root of the mount namespace that was the old one):
	// the PID file is written from another goroutine, which never runs on
	// this locked thread, so on one still in the host's mount namespace.
	pid := cmd.Process.Pid
	written := make(chan error, 1)
	go func() {
		written <- bndl.WriteFileAtomic(filepath.Join(bundle, bndl.PIDFile), []byte(strconv.Itoa(pid)+"\n"), 0o644)
	}()
	if err := <-written; err != nil {
		return abort(err)
	}
	// Deliberately no Wait: the workload outlives us and is reparented to
	// systemd (or the nearest subreaper), which reaps it.
	_ = cmd.Process.Release()
	return nil
}

// prepareBundle readies the bundle for this run: a fresh upper layer, no
// files of the previous run, the OOM-kill baseline of the unit's cgroup
// (read by the caller before it entered the container's namespaces).
func prepareBundle(bundle string, ov *overlay, oomBase uint64, oomErr error) error {
	if err := ov.freshen(); err != nil {
		return err
	}
	for _, f := range []string{bndl.PIDFile, bndl.ExitFile, bndl.OOMBaseFile} {
		if err := os.Remove(filepath.Join(bundle, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale %s: %w", f, err)
		}
	}
	// ExecStart runs in the unit's cgroup, like ExecStopPost later.
	if oomErr == nil {
		if err := bndl.WriteFileAtomic(filepath.Join(bundle, bndl.OOMBaseFile), []byte(strconv.FormatUint(oomBase, 10)+"\n"), 0o644); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(os.Stderr, "berth-init start %s: OOM-kill counter unreadable, poststop will count from 0: %v\n", bundle, oomErr)
	}
	return nil
}

func join(j nsJoin) error {
	fd, err := unix.Open(j.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s namespace %s: %w", j.typ, j.path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, j.flag); err != nil {
		return fmt.Errorf("join %s namespace %s: %w", j.typ, j.path, err)
	}
	return nil
}
