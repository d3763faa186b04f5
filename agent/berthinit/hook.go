package berthinit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// `berth-hook poststart|prestop <bundle>` runs a container's lifecycle
// hook as the kubelet's handler runner does (pkg/kubelet/lifecycle
// handlers.go), from the container's unit: unitgen makes it ExecStartPost=
// (postStart) and ExecStop= (preStop). The handlers are the bundle's
// HooksFile, which berthd wrote with the kubelet's defaults resolved.
//
// systemd runs it as a control process of the unit: in the unit's cgroup
// (its .control subgroup, the unit being delegated), with $MAINPID the
// container's PID 1. An exec handler therefore needs none of `berth-init
// exec`'s protocol with berthd: the command is forked from here into the
// container's namespaces with the workload's confinement (execTarget) and
// is born in the unit's cgroup.
//
// A failed hook is recorded (bndl.WriteHookFailure, the kubelet's message)
// for berthd's FailedPostStartHook/FailedPreStopHook events. A postStart
// failure runs the preStop hook (as the kubelet's killContainer does; systemd
// would skip ExecStop= after a failed ExecStartPost=) and exits 1, which
// fails the start: systemd stops the container and restarts it as Restart=
// says, as the kubelet kills a container whose postStart hook failed. A preStop hook always
// exits 0: the kubelet goes on to stop the container whatever the hook did.
//
// Timing. The kubelet waits for a postStart hook without bound; systemd
// bounds ExecStartPost= by TimeoutStartSec=. The kubelet gives the preStop
// hook and the stop signal one grace period together (the hook at most all
// of it, the signal what is left, at least 2 s); systemd applies
// TimeoutStopSec= (the grace period) to ExecStop= and then again to the
// stop signal. The hook here bounds itself by the grace period, so the
// container's whole stop takes at most two grace periods, not one.

const hookUsage = "usage: berth-hook poststart|prestop <bundle>"

// HookMain is berth-hook: `berth-hook poststart|prestop <bundle>`.
func HookMain(args []string) int {
	if len(args) != 2 || (args[0] != "poststart" && args[0] != "prestop") {
		fmt.Fprintln(os.Stderr, hookUsage)
		return 2
	}
	kind, bundle := bndl.HookPostStart, args[1]
	if args[0] == "prestop" {
		kind = bndl.HookPreStop
	}
	fail := 1
	if kind == bndl.HookPreStop {
		fail = 0 // see above: never changes how the container ends
	}
	h, err := bndl.ReadHooks(bundle)
	if err != nil {
		hookLog("berth-hook %s %s: %v", args[0], bundle, err)
		return fail
	}
	var handler *bndl.Handler
	if h != nil {
		handler = h.PostStart
		if kind == bndl.HookPreStop {
			handler = h.PreStop
		}
	}
	if handler == nil {
		return 0 // no such hook (the unit is older than the bundle)
	}
	// systemd runs ExecStop= also after the workload ended on its own (and
	// unsets $MAINPID then); the kubelet runs preStop only to stop a
	// running container.
	mainPID := os.Getenv("MAINPID")
	if kind == bndl.HookPreStop && mainPID == "" {
		hookLog("berth-hook prestop %s: the container's process has ended; no preStop hook", bundle)
		return 0
	}
	if kind == bndl.HookPreStop && h.GracePeriodSeconds <= 0 {
		return 0 // the kubelet runs preStop only with time to run it
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	if kind == bndl.HookPreStop {
		grace := time.Duration(max(h.GracePeriodSeconds, 0)) * time.Second
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, grace, errGraceOver)
		defer stop()
	}
	// systemd's own timeout, or a stop during the start: the hook ends.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	go func() {
		<-sigs
		cancel(errTerminated)
	}()

	r := &hookRun{bundle: bundle, hooks: h, mainPID: mainPID}
	msg, err := r.run(ctx, handler)
	if err == nil {
		return 0
	}
	if errors.Is(context.Cause(ctx), errGraceOver) {
		// As the kubelet: a preStop hook that outlasts the grace period is
		// left behind (here: killed), not reported.
		hookLog("berth-hook %s %s: not completed within the grace period (%ds)", args[0], bundle, h.GracePeriodSeconds)
		return 0
	}
	hookLog("berth-hook %s %s: %s", args[0], bundle, msg)
	if werr := bndl.WriteHookFailure(bundle, kind, msg); werr != nil {
		hookLog("berth-hook %s %s: record the failure: %v", args[0], bundle, werr)
	}
	if kind == bndl.HookPostStart && h.PreStop != nil {
		// The kubelet kills a container whose postStart hook failed with
		// killContainer, which runs the preStop hook first; systemd 252
		// goes from a failed ExecStartPost= straight to the stop signal,
		// skipping ExecStop=. So the preStop hook runs here.
		return preStopAfterFailure(bundle, h, mainPID)
	}
	return fail
}

// preStopAfterFailure runs the preStop hook after a failed postStart hook,
// within the grace period, and returns the postStart hook's failure.
func preStopAfterFailure(bundle string, h *bndl.Hooks, mainPID string) int {
	if h.GracePeriodSeconds <= 0 {
		return 1
	}
	grace := time.Duration(max(h.GracePeriodSeconds, 0)) * time.Second
	ctx, cancel := context.WithTimeoutCause(context.Background(), grace, errGraceOver)
	defer cancel()
	r := &hookRun{bundle: bundle, hooks: h, mainPID: mainPID}
	if msg, err := r.run(ctx, h.PreStop); err != nil && !errors.Is(context.Cause(ctx), errGraceOver) {
		hookLog("berth-hook prestop %s: %s", bundle, msg)
		if werr := bndl.WriteHookFailure(bundle, bndl.HookPreStop, msg); werr != nil {
			hookLog("berth-hook prestop %s: record the failure: %v", bundle, werr)
		}
	}
	return 1
}

var (
	errGraceOver  = errors.New("the grace period is over")
	errTerminated = errors.New("container terminated before sleep hook finished") // the kubelet's words
)

type hookRun struct {
	bundle  string
	hooks   *bndl.Hooks
	mainPID string
}

// run runs handler and returns, on failure, the kubelet's message for it.
func (r *hookRun) run(ctx context.Context, handler *bndl.Handler) (string, error) {
	httpGet := func(ctx context.Context, g *bndl.HTTPHandler) error {
		if HTTPGet == nil {
			return errors.New("httpGet hooks are run by berth-hook")
		}
		return HTTPGet(ctx, g, r.netns)
	}
	return bndl.RunHandler(ctx, r.hooks, handler, r.exec, httpGet)
}

// maxHookOutput bounds what is kept of each of an exec hook's output
// streams for the failure message (CRI's ExecSync keeps up to 16 MiB;
// the record is read back bounded, see bndl.ReadHookFailure).
const maxHookOutput = 16 << 10

// exec runs command in the container as the workload is confined (its
// namespaces, user, groups, capabilities, no_new_privs, seccomp filter,
// environment and working directory; the unit's cgroup), without a
// terminal and with empty stdin, as CRI's ExecSync does for the kubelet.
// It returns stdout followed by stderr, as the kubelet's RunInContainer,
// and for a non-zero exit CRI's error text.
func (r *hookRun) exec(ctx context.Context, command []string) (string, error) {
	if len(command) == 0 || command[0] == "" {
		return "", errors.New("the command is empty")
	}
	pid, err := r.workloadPID()
	if err != nil {
		return "", err
	}
	unit, err := ownUnit()
	if err != nil {
		return "", err
	}
	x, err := prepareExec(r.bundle, pid, unit)
	if err != nil {
		return "", err
	}
	defer x.close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return "", err
	}
	defer null.Close()
	var bufs [2]capped
	var readers, writers [2]*os.File
	closeAll := func(fs [2]*os.File) {
		for _, f := range fs {
			if f != nil {
				f.Close()
			}
		}
	}
	defer closeAll(readers)
	var wg sync.WaitGroup
	for i := range bufs {
		rd, wr, err := os.Pipe()
		if err != nil {
			closeAll(writers)
			return "", err
		}
		readers[i], writers[i] = rd, wr
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(&bufs[i], rd)
		}()
	}
	closeWriters := func() { closeAll(writers) }
	proc, _, err := x.start(&execArgs{bundle: r.bundle, unit: unit, pid: pid, argv: command,
		stdio: []*os.File{null, writers[0], writers[1]}})
	closeWriters()
	if err != nil {
		wg.Wait()
		return "", err
	}
	stop := context.AfterFunc(ctx, func() { _ = proc.Signal(unix.SIGKILL) })
	defer stop()
	code, err := waitCommand(proc)
	// A child of the command that keeps the pipes open must not hold the
	// hook: what is in the pipes is read, then no more.
	for _, rd := range readers {
		_ = rd.SetReadDeadline(time.Now().Add(time.Second))
	}
	wg.Wait()
	if err != nil {
		return "", err
	}
	out := bufs[0].String() + bufs[1].String()
	if ctx.Err() != nil {
		return out, context.Cause(ctx)
	}
	if code != 0 {
		// CRI's ExecSync error (cri-client remote_runtime.go).
		return out, fmt.Errorf("command '%s' exited with %d: %s", strings.Join(command, " "), code, bufs[1].String())
	}
	return out, nil
}

// workloadPID is the container's PID 1: systemd's $MAINPID for a control
// process, else (a postStart hook systemd gave none) the bundle's PID file.
func (r *hookRun) workloadPID() (int, error) {
	s := r.mainPID
	if s == "" {
		b, err := os.ReadFile(filepath.Join(r.bundle, bndl.PIDFile))
		if err != nil {
			return 0, fmt.Errorf("the container's process: %w", err)
		}
		s = strings.TrimSpace(string(b))
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid < 2 {
		return 0, fmt.Errorf("the container's process %q: not a container's PID", s)
	}
	return pid, nil
}

// ownUnit is the service whose control process this is, from our own
// cgroup (a control process of a delegated unit sits in <unit>/.control).
func ownUnit() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	return unitOf(b)
}

// unitOf is the innermost .service of /proc/<pid>/cgroup content.
func unitOf(cgroup []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(cgroup))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || (parts[1] != "" && parts[1] != "name=systemd") {
			continue
		}
		elems := strings.Split(parts[2], "/")
		for i := len(elems) - 1; i >= 0; i-- {
			if strings.HasSuffix(elems[i], ".service") {
				return elems[i], nil
			}
		}
	}
	return "", errors.New("not run by systemd for a service: no .service in /proc/self/cgroup")
}

// capped keeps the first maxHookOutput bytes written to it and discards
// the rest. Read after its writer is done.
type capped struct{ b bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxHookOutput - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.b.String() }

// HookLog writes one of berth-hook's own messages (set by cmd/berth-hook
// to go-systemd's journal.Send). A hook runs from the container's unit,
// whose stdout and stderr are the container's log stream: a message printed
// there would be read by `kubectl logs` as a line of the container, and
// agent/logs keys a run by the PID of the stream that wrote it. Sent as a
// native journal entry (_TRANSPORT=journal) it stays in the unit's journal
// but out of the container's log. nil: stderr.
var HookLog func(msg string)

func hookLog(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if HookLog != nil {
		HookLog(msg)
		return
	}
	fmt.Fprintln(os.Stderr, msg)
}

// HTTPGet runs an httpGet hook (agent/berthinit/httphook.Get): set by
// berth-hook, which links package net and crypto/tls; berth-init does not.
var HTTPGet func(ctx context.Context, g *bndl.HTTPHandler, netns func() (int, bool, error)) error

// netns opens the container's network namespace for an httpGet hook
// without a host: ok false for a container in the node's.
func (r *hookRun) netns() (int, bool, error) {
	pid, err := r.workloadPID()
	if err != nil {
		return -1, false, err
	}
	unit, err := ownUnit()
	if err != nil {
		return -1, false, err
	}
	t, err := findTarget(pid, unit)
	if err != nil {
		return -1, false, err
	}
	// Kept open: the caller may join it.
	netns, ok := t.ns["net"]
	delete(t.ns, "net")
	t.close()
	return netns, ok, nil
}
