package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// HooksFile holds the container's lifecycle hooks (Hooks): berthd writes it
// with the bundle, `berth-hook poststart|prestop` (the unit's
// ExecStartPost= and ExecStop=) reads it each time a hook runs.
const HooksFile = "hooks.json"

// Hook kinds, as the kubelet names them in its events (FailedPostStartHook,
// FailedPreStopHook).
const (
	HookPostStart = "PostStart"
	HookPreStop   = "PreStop"
)

// Hooks are a container's postStart and preStop handlers with the defaults
// the kubelet applies resolved by berthd (named ports, the scheme), and
// what the kubelet's failure messages name.
type Hooks struct {
	// Pod is the kubelet's format.Pod of the pod, name_namespace(uid), and
	// Container the container's name: both appear in the failure messages.
	Pod       string `json:"pod"`
	Container string `json:"container"`

	PostStart *Handler `json:"postStart,omitempty"`
	PreStop   *Handler `json:"preStop,omitempty"`

	// GracePeriodSeconds is the pod's terminationGracePeriodSeconds
	// (default 30): the bound of a preStop hook, as the kubelet's
	// killContainer gives it.
	GracePeriodSeconds int64 `json:"terminationGracePeriodSeconds"`
}

// Handler is one hook: exactly one of Exec, HTTPGet and Sleep, or Error.
type Handler struct {
	Exec    *ExecHandler  `json:"exec,omitempty"`
	HTTPGet *HTTPHandler  `json:"httpGet,omitempty"`
	Sleep   *SleepHandler `json:"sleep,omitempty"`
	// Error is why berthd could not resolve the handler (a named port the
	// container does not declare; HTTPGet then holds the path for the
	// message): the hook fails with it when it runs, as the kubelet's does.
	Error string `json:"error,omitempty"`
}

// ExecHandler runs Command in the container, as given (the kubelet does
// not expand $(VAR) in hook commands).
type ExecHandler struct {
	Command []string `json:"command"`
}

// HTTPHandler is a GET from the host.
type HTTPHandler struct {
	Scheme string `json:"scheme"` // "http" or "https"
	// Host empty: the pod's address, which berth-init finds at hook time
	// (see agent/berthinit hook.go).
	Host    string       `json:"host,omitempty"`
	Port    int          `json:"port"`
	Path    string       `json:"path"`
	Headers []HTTPHeader `json:"headers,omitempty"`
}

// HTTPHeader is one request header; a name may repeat.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// SleepHandler pauses for Seconds.
type SleepHandler struct {
	Seconds int64 `json:"seconds"`
}

// WriteHooks writes h to the bundle's HooksFile; nil h removes it (a
// container without hooks).
func WriteHooks(bundle string, h *Hooks) error {
	p := filepath.Join(bundle, HooksFile)
	if h == nil {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encode hooks: %w", err)
	}
	return WriteFileAtomic(p, append(b, '\n'), 0o600)
}

// ReadHooks reads the bundle's HooksFile; a bundle without one (a
// container without hooks) gives nil and no error.
func ReadHooks(bundle string) (*Hooks, error) {
	p := filepath.Join(bundle, HooksFile)
	b, err := readBounded(p, maxRecord)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read hooks: %w", err)
	}
	var h Hooks
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("parse %s: %w", p, err)
	}
	return &h, nil
}

// HookFailure is a hook that failed, written by berth-init, for berthd to
// report as the kubelet does: a FailedPostStartHook or FailedPreStopHook
// Warning event, and for a postStart hook the container's waiting message.
type HookFailure struct {
	Kind string `json:"kind"` // HookPostStart or HookPreStop
	// Message is the kubelet's text, e.g. `Exec lifecycle hook ([sh -c
	// exit 3]) for Container "c" in Pod "p_ns(uid)" failed - error:
	// command 'sh -c exit 3' exited with 3: , message: ""`.
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
}

// hookFailureFile is the record of kind's last failure: one file per kind,
// so that a failing postStart and the preStop systemd then runs do not
// overwrite each other.
func hookFailureFile(bundle, kind string) string {
	return filepath.Join(bundle, "hook-failure."+kind+".json")
}

var hookKinds = []string{HookPostStart, HookPreStop}

func checkKind(kind string) error {
	if kind != HookPostStart && kind != HookPreStop {
		return fmt.Errorf("hook kind %q: not %s or %s", kind, HookPostStart, HookPreStop) // a caller's mistake, not input
	}
	return nil
}

// WriteHookFailure records that kind's hook failed with message (the
// kubelet's text), replacing an earlier record of the same kind.
func WriteHookFailure(bundle, kind, message string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	b, err := json.Marshal(HookFailure{Kind: kind, Message: message, Time: time.Now().UTC()})
	if err != nil {
		return err
	}
	return WriteFileAtomic(hookFailureFile(bundle, kind), append(b, '\n'), 0o600)
}

// ReadHookFailure returns the recorded failures, oldest first, leaving
// them in place; none: nil and no error.
func ReadHookFailure(bundle string) ([]HookFailure, error) {
	return readFailures(bundle, false)
}

// TakeHookFailures returns the recorded failures, oldest first, and removes
// them, each atomically (renamed away before it is read): a failure
// berth-init records meanwhile is either returned now or kept for the next
// call, never lost or returned twice.
func TakeHookFailures(bundle string) ([]HookFailure, error) {
	return readFailures(bundle, true)
}

// ClearHookFailures removes the recorded failures.
func ClearHookFailures(bundle string) error {
	for _, k := range hookKinds {
		if err := os.Remove(hookFailureFile(bundle, k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func readFailures(bundle string, take bool) ([]HookFailure, error) {
	var out []HookFailure
	for _, k := range hookKinds {
		p := hookFailureFile(bundle, k)
		if take {
			taken := p + ".taken"
			if err := os.Rename(p, taken); errors.Is(err, fs.ErrNotExist) {
				continue
			} else if err != nil {
				return nil, err
			}
			p = taken
		}
		b, err := readBounded(p, maxRecord)
		if take {
			os.Remove(p)
		}
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read hook failure: %w", err)
		}
		var f HookFailure
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("parse %s: %w", p, err)
		}
		out = append(out, f)
	}
	if len(out) == 2 && out[1].Time.Before(out[0].Time) {
		out[0], out[1] = out[1], out[0]
	}
	return out, nil
}

// RunHandler runs one hook handler of h as the kubelet's handler runner
// (lifecycle/handlers.go Run) and returns, on failure, the kubelet's
// message for it. exec runs a command in the container (its output, and
// an error for a non-zero exit); httpGet makes the request. berth-hook runs
// hooks from the unit; berthd runs a preStop hook itself before a stop it
// makes (a failed liveness or startup probe): both through here, so the
// handlers and the texts are one.
func RunHandler(ctx context.Context, h *Hooks, handler *Handler,
	exec func(ctx context.Context, command []string) (string, error),
	httpGet func(ctx context.Context, g *HTTPHandler) error) (string, error) {
	switch {
	case handler.HTTPGet != nil:
		err := errors.New(handler.Error)
		if handler.Error == "" {
			err = httpGet(ctx, handler.HTTPGet)
		}
		if err != nil {
			return fmt.Sprintf("HTTP lifecycle hook (%s) for Container %q in Pod %q failed - error: %v", handler.HTTPGet.Path, h.Container, h.Pod, err), err
		}
		return "", nil
	case handler.Error != "":
		err := errors.New(handler.Error)
		return fmt.Sprintf("Cannot run handler: %v", err), err
	case handler.Exec != nil:
		out, err := exec(ctx, handler.Exec.Command)
		if err != nil {
			return fmt.Sprintf("Exec lifecycle hook (%v) for Container %q in Pod %q failed - error: %v, message: %q", handler.Exec.Command, h.Container, h.Pod, err, out), err
		}
		return "", nil
	case handler.Sleep != nil:
		t := time.NewTimer(time.Duration(handler.Sleep.Seconds) * time.Second)
		defer t.Stop()
		select {
		case <-t.C:
			return "", nil
		case <-ctx.Done():
			err := context.Cause(ctx)
			return fmt.Sprintf("Sleep lifecycle hook (%d) for Container %q in Pod %q failed - error: %v", handler.Sleep.Seconds, h.Container, h.Pod, err), err
		}
	}
	err := errors.New("invalid handler: no exec, httpGet or sleep action")
	return fmt.Sprintf("Cannot run handler: %v", err), err
}
