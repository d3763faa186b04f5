// Package logs reads one container's output from the journal with the
// kubelet's PodLogOptions semantics, for `kubectl logs`.
//
// Every container is a systemd service (unitgen.UnitName) whose stdout and
// stderr systemd hands to journald as one stream, so the output reaches the
// journal whether berthd runs or not. systemd restarts a container by
// restarting the same unit, and every entry carries the pod's UID
// (unitgen.PodUIDField, from LogExtraFields=), because a pod deleted and
// recreated under the same name gets the same unit name.
//
// One run of a container is one stdout stream, which systemd connects for
// the process it starts and every process of the container inherits: the
// entries with _TRANSPORT=stdout and one _STREAM_ID. The run a stream
// belongs to is the _SYSTEMD_INVOCATION_ID journald gives its entries; but
// journald looks that up when it first reads from the stream, and for a
// process that wrote and exited at once it has been seen to file a run's
// lines under the run before (systemd 252). So a run is told apart from the
// one before by its stream, and the invocation only names the stream of the
// unit that runs now. The unit's other processes (berth-hook:
// ExecStartPost=, ExecStop=) log natively (_TRANSPORT=journal), so they are
// neither a run nor a line of one, as hook output is not part of a
// container's log on the kubelet. So a container's current run is the
// entries with _SYSTEMD_UNIT=<unit>, BERTH_POD_UID=<uid>, _TRANSPORT=stdout
// and the _STREAM_ID of the newest entry of the unit's current invocation
// (when it waits to restart or is gone: of the newest entry), and
// `--previous` is the newest other stream before it.
//
// The journal is read with the node's own journalctl as a subprocess, not
// go-systemd's sdjournal: sdjournal needs cgo and libsystemd, berthd is
// built without either, and journalctl is the journal's stable reader (its
// JSON output, cursors, --since, -n and -f are documented interfaces).
package logs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/unitgen"
)

// Command makes a command that runs on the node. Journal runs journalctl
// and systemctl through it: berthd runs the host's own (Exec); tests run
// them inside a disposable node. The command must end when ctx is done.
type Command func(ctx context.Context, args ...string) *exec.Cmd

// Exec runs args[0] from PATH on this host; exec.CommandContext kills it
// when ctx is done.
func Exec(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, args[0], args[1:]...)
}

// Journal reads containers' logs from the journal.
type Journal struct {
	cmd Command
	// poll is how often a follow asks systemd whether the run it follows
	// has ended (journalctl -f itself never ends).
	poll time.Duration
}

// New returns a Journal that runs journalctl and systemctl through cmd
// (nil: Exec).
func New(cmd Command) *Journal {
	if cmd == nil {
		cmd = Exec
	}
	return &Journal{cmd: cmd, poll: 500 * time.Millisecond}
}

// timestampFormat is the kubelet's RFC3339NanoFixed (kubelet
// kuberuntime/logs timeFormatOut): always nine fractional digits, so the
// prefixes line up.
const timestampFormat = "2006-01-02T15:04:05.000000000Z07:00"

// kubeletError is an error the kubelet answers a log request with (HTTP
// 400 with its text): the API turns InvalidArgument into a BadRequest whose
// message is exactly Error().
type kubeletError string

func (e kubeletError) Error() string     { return string(e) }
func (e kubeletError) InvalidParameter() {} // errdefs.IsInvalidArgument

// PreviousNotFound is the kubelet's error for --previous when the
// container has not been restarted (kubelet validateContainerLogStatus).
func PreviousNotFound(pod, container string) error {
	return kubeletError(fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod))
}

// ContainerLogs writes the output of container of pod to w, as the kubelet
// serves it for opts: the current run, or with Previous the one before;
// the lines of the last TailLines; from SinceSeconds/SinceTime on; each
// prefixed by its time with Timestamps; at most LimitBytes bytes. With
// Follow it keeps writing until the run ends (the unit leaves it) or ctx is
// done. A container that has not run yet has no output (nil). Bytes are as
// the container wrote them, each line ended by "\n".
func (j *Journal) ContainerLogs(ctx context.Context, pod *corev1.Pod, container string, opts *corev1.PodLogOptions, w io.Writer) error {
	if opts == nil {
		opts = &corev1.PodLogOptions{}
	}
	unit := unitgen.UnitName(pod.Namespace, pod.Name, container)
	base := []string{"journalctl", "--quiet", "--no-pager", "--all", "--output=json",
		"--output-fields=MESSAGE,_LINE_BREAK," + fieldRun, "_SYSTEMD_UNIT=" + unit, "_TRANSPORT=stdout"}
	if pod.UID != "" {
		base = append(base, unitgen.PodUIDField+"="+string(pod.UID))
	}

	st, err := j.unitState(ctx, unit)
	if err != nil {
		return err
	}
	running := st.invocation != "" && st.running()
	// cur is the current run's stream: for a unit that runs (or starts),
	// the one its invocation wrote ("" while it has written nothing); for
	// one that is gone (a container that exited for good is unloaded,
	// CollectMode=inactive-or-failed) or between two runs (its back-off),
	// the last one that wrote.
	var cur string
	if running {
		cur, err = j.lastRun(ctx, append(slices.Clone(base), fieldInvocation+"="+st.invocation))
	} else {
		cur, err = j.lastRun(ctx, base)
	}
	if err != nil {
		return err
	}
	inv := cur
	switch {
	case opts.Previous && st.invocation != "" && !running:
		// Waiting to restart, as the kubelet's CrashLoopBackOff: its
		// container is waiting and its last termination is the run that
		// ended, which both the plain and the --previous request show
		// (validateContainerLogStatus).
		if cur == "" {
			return PreviousNotFound(pod.Name, container)
		}
	case opts.Previous:
		if cur == "" && !running {
			return PreviousNotFound(pod.Name, container)
		}
		// The newest other stream (any, while the current run has
		// written nothing).
		if inv, err = j.runBefore(ctx, base, cur); err != nil {
			return err
		}
		if inv == "" {
			return PreviousNotFound(pod.Name, container)
		}
	}
	follow := opts.Follow && !opts.Previous && running
	if inv == "" && !follow {
		return nil
	}

	out := newOutput(w, opts)
	match := fieldRun + "=" + inv
	if inv == "" {
		// Following a run that has written nothing yet: its stream is
		// not known, its invocation is.
		match = fieldInvocation + "=" + st.invocation
	}
	sel := &selection{args: append(base, match), since: since(opts, time.Now())}
	if opts.TailLines != nil {
		sel.tail = strconv.FormatInt(*opts.TailLines, 10)
	}
	if opts.TailLines != nil && *opts.TailLines == 0 && !opts.Follow {
		return nil
	}
	if follow {
		return j.follow(ctx, unit, st.invocation, sel, out)
	}
	_, err = j.read(ctx, sel, false, out.write)
	return err
}

// fieldRun tells runs apart (see above).
const (
	fieldRun        = "_STREAM_ID"
	fieldInvocation = "_SYSTEMD_INVOCATION_ID"
)

// selection is what a read of one run asks journalctl for.
type selection struct {
	args   []string  // journalctl and its matches
	tail   string    // -n value; "" for all
	since  time.Time // zero: from the start
	cursor string    // after this entry (a resumed read); overrides tail
}

func (s *selection) argv(follow bool) []string {
	a := append([]string{}, s.args...)
	switch {
	case s.cursor != "":
		a = append(a, "--after-cursor="+s.cursor)
	case s.tail != "":
		a = append(a, "--lines="+s.tail)
	case follow:
		// -f alone shows only the last 10 entries first.
		a = append(a, "--lines=all")
	}
	if !s.since.IsZero() && s.cursor == "" {
		// journalctl takes whole seconds; entries inside the first one
		// are dropped by keep, to the microsecond.
		a = append(a, "--since=@"+strconv.FormatInt(s.since.Unix(), 10))
	}
	if follow {
		a = append(a, "--follow")
	}
	return a
}

// keep is the kubelet's since filter: an entry at or after since.
func (s *selection) keep(e *entry) bool {
	return s.since.IsZero() || !e.time().Before(s.since)
}

// since is when the output starts, as the kubelet computes it.
func since(opts *corev1.PodLogOptions, now time.Time) time.Time {
	switch {
	case opts.SinceSeconds != nil:
		return now.Add(-time.Duration(*opts.SinceSeconds) * time.Second)
	case opts.SinceTime != nil:
		return opts.SinceTime.Time
	}
	return time.Time{}
}

// entry is one journal entry as `journalctl -o json` prints it.
type entry struct {
	Cursor    string          `json:"__CURSOR"`
	Realtime  string          `json:"__REALTIME_TIMESTAMP"` // µs since the epoch
	Message   json.RawMessage `json:"MESSAGE"`
	LineBreak json.RawMessage `json:"_LINE_BREAK"`
	Run       json.RawMessage `json:"_STREAM_ID"`
}

func (e *entry) time() time.Time {
	us, _ := strconv.ParseInt(e.Realtime, 10, 64)
	return time.UnixMicro(us)
}

// fieldBytes decodes a field of journalctl's JSON: a string when the value
// is printable UTF-8, else an array of its bytes; an array of those when the
// entry has the field more than once (the first is taken); null when absent
// or too large to print (--all prevents that).
func fieldBytes(raw json.RawMessage) ([]byte, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == 'n' {
		return nil, false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false
		}
		return []byte(s), true
	}
	var b []byte
	if json.Unmarshal(raw, &b) == nil { // an array of numbers decodes element-wise
		return b, true
	}
	var multi []json.RawMessage
	if json.Unmarshal(raw, &multi) != nil || len(multi) == 0 {
		return nil, false
	}
	return fieldBytes(multi[0])
}

func fieldString(raw json.RawMessage) string {
	b, _ := fieldBytes(raw)
	return string(b)
}

// line is the entry as the container wrote it. journald splits a line
// longer than its LineMax (48 KiB) into entries marked
// _LINE_BREAK=line-max, which continue in the next entry: only the last
// part ends the line.
func (e *entry) line() ([]byte, bool) {
	msg, ok := fieldBytes(e.Message)
	if !ok {
		return nil, false
	}
	if fieldString(e.LineBreak) != "line-max" {
		msg = append(msg, '\n')
	}
	return msg, true
}

// read runs journalctl for sel (following with follow) and hands each entry
// sel keeps to fn until fn returns false, journalctl ends or ctx is done.
// It returns the cursor of the last entry fn was given ("" for none) and
// always waits for journalctl, killing it first when the read stops early.
func (j *Journal) read(ctx context.Context, sel *selection, follow bool, fn func(*entry) (bool, error)) (string, error) {
	var last string
	err := j.stream(ctx, sel.argv(follow), func(e *entry) (bool, error) {
		if !sel.keep(e) {
			return true, nil
		}
		last = e.Cursor
		return fn(e)
	})
	return last, err
}

// stream runs argv, decoding its JSON lines into entries for fn.
func (j *Journal) stream(parent context.Context, argv []string, fn func(*entry) (bool, error)) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	cmd := j.cmd(ctx, argv...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("journalctl: %w", err)
	}
	stderr := &limitedBuffer{max: 4096}
	cmd.Stderr = stderr
	// A grandchild holding the pipe must not keep Wait waiting.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("journalctl: %w: %w", err, errdefs.ErrUnavailable)
	}
	r := bufio.NewReaderSize(stdout, 64<<10)
	var ferr error
	stopped := false
	for !stopped && ferr == nil {
		b, rerr := r.ReadBytes('\n')
		if b = bytes.TrimSpace(b); len(b) > 0 && b[0] == '{' {
			var e entry
			if err := json.Unmarshal(b, &e); err != nil {
				ferr = fmt.Errorf("journalctl printed %.100q: %w", b, err)
				break
			}
			var more bool
			more, ferr = fn(&e)
			stopped = !more
		}
		if rerr != nil {
			break
		}
	}
	if stopped || ferr != nil {
		// journalctl -f never ends by itself. Only then: killing a
		// journalctl that has ended by itself would make Wait report the
		// cancellation instead of its exit.
		cancel()
	}
	werr := cmd.Wait()
	switch {
	case ferr != nil:
		return ferr
	case stopped:
		return nil
	case parent.Err() != nil:
		// The caller went away (the client, or a follow whose run ended):
		// journalctl was killed on purpose.
		if errors.Is(parent.Err(), context.Canceled) {
			return nil
		}
		return parent.Err()
	case werr != nil:
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), werr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// lastRun is the run of the newest entry of base's matches.
func (j *Journal) lastRun(ctx context.Context, base []string) (string, error) {
	var inv string
	argv := append(append([]string{}, base...), "--lines=1")
	err := j.stream(ctx, argv, func(e *entry) (bool, error) {
		inv = fieldString(e.Run)
		return true, nil
	})
	return inv, err
}

// runBefore is the run before cur: the newest entry of another run, read
// from the end (runs of a unit do not overlap).
func (j *Journal) runBefore(ctx context.Context, base []string, cur string) (string, error) {
	var inv string
	argv := append(append([]string{}, base...), "--reverse", "--output-fields="+fieldRun)
	err := j.stream(ctx, argv, func(e *entry) (bool, error) {
		if id := fieldString(e.Run); id != "" && id != cur {
			inv = id
			return false, nil
		}
		return true, nil
	})
	return inv, err
}

// unitState is what systemd says of a container's unit.
type unitState struct {
	load, active, sub string
	invocation        string // the current (or last, while it waits to restart) run; "" when unloaded
}

// running: the run of invocation can still write. deactivating is a stop
// in progress (the container handles SIGTERM); activating/auto-restart is
// the wait between two runs.
func (s unitState) running() bool {
	switch s.active {
	case "active", "reloading", "deactivating":
		return true
	case "activating":
		return s.sub != "auto-restart"
	}
	return false
}

func (j *Journal) unitState(ctx context.Context, unit string) (unitState, error) {
	cmd := j.cmd(ctx, "systemctl", "show", "--property=LoadState,ActiveState,SubState,InvocationID", "--", unit)
	var stderr limitedBuffer
	stderr.max = 4096
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return unitState{}, ctx.Err()
		}
		return unitState{}, fmt.Errorf("systemctl show %s: %w: %s: %w", unit, err, strings.TrimSpace(stderr.String()), errdefs.ErrUnavailable)
	}
	return parseShow(string(out)), nil
}

func parseShow(out string) unitState {
	var s unitState
	for _, l := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(l), "=")
		switch k {
		case "LoadState":
			s.load = v
		case "ActiveState":
			s.active = v
		case "SubState":
			s.sub = v
		case "InvocationID":
			s.invocation = v
		}
	}
	if s.load != "loaded" {
		s.invocation = ""
	}
	return s
}

// follow writes the run inv of unit as it grows, until the run ends or ctx
// is done. journalctl -f never ends, so a watcher asks systemd every poll
// whether the run still goes on; once it has ended, journald is synced and
// what the run wrote after the last entry shown is read without -f.
func (j *Journal) follow(ctx context.Context, unit, inv string, sel *selection, out *output) error {
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	ended := make(chan struct{})
	watcher := make(chan error, 1)
	go func() {
		watcher <- j.watchRun(fctx, unit, inv, ended)
		stop() // ends the journalctl -f below
	}()
	last, err := j.read(fctx, sel, true, out.write)
	stop()
	werr := <-watcher
	if err != nil || ctx.Err() != nil || out.full() {
		return err
	}
	select {
	case <-ended:
	default:
		// journalctl -f ended without the run ending: report why.
		if werr != nil {
			return werr
		}
		return nil
	}
	// journald may still hold lines the container wrote before it ended.
	_ = j.cmd(ctx, "journalctl", "--sync").Run()
	if last != "" {
		sel = &selection{args: sel.args, cursor: last}
	}
	_, err = j.read(ctx, sel, false, out.write)
	return err
}

// watchRun returns once the run inv of unit has ended (closing ended) or
// ctx is done.
func (j *Journal) watchRun(ctx context.Context, unit, inv string, ended chan<- struct{}) error {
	t := time.NewTicker(j.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st, err := j.unitState(ctx, unit)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if st.invocation != inv || !st.running() {
			close(ended)
			return nil
		}
	}
}

// output writes entries as the kubelet does: the timestamp prefix, then
// the line, cut at LimitBytes.
type output struct {
	w          io.Writer
	timestamps bool
	left       int64 // bytes still allowed; -1: no limit
	buf        []byte
}

func newOutput(w io.Writer, opts *corev1.PodLogOptions) *output {
	o := &output{w: w, timestamps: opts.Timestamps, left: -1}
	if opts.LimitBytes != nil {
		o.left = *opts.LimitBytes
	}
	return o
}

func (o *output) full() bool { return o.left == 0 }

// write writes e and says whether more may follow.
func (o *output) write(e *entry) (bool, error) {
	line, ok := e.line()
	if !ok {
		return true, nil
	}
	o.buf = o.buf[:0]
	if o.timestamps {
		o.buf = e.time().UTC().AppendFormat(o.buf, timestampFormat)
		o.buf = append(o.buf, ' ')
	}
	o.buf = append(o.buf, line...)
	b := o.buf
	if o.left >= 0 && int64(len(b)) > o.left {
		b = b[:o.left]
	}
	if _, err := o.w.Write(b); err != nil {
		return false, err
	}
	if o.left >= 0 {
		o.left -= int64(len(b))
		return o.left > 0, nil
	}
	return true, nil
}

// limitedBuffer keeps the first max bytes written to it (a command's
// stderr, for its error).
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}
