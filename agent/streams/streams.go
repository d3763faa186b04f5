// Package streams is the kubelet's streaming half for berth pods: exec,
// attach and port-forward, served by api/server through k8s.io/cri-streaming
// (which speaks SPDY and WebSocket to kubectl), and the exec of exec probes
// (agent/probe.Execer).
//
// exec runs `berth-init exec` (agent/berthinit/exec.go): berth-init enters
// the container's namespaces and takes the workload's confinement from the
// container's bundle; this package moves it into the container's unit
// through systemd (AttachProcessesToUnit) before it forks the command, so the
// command is born in the container's cgroup. attach follows the container's
// output in the journal, where berth containers write it (they have no
// stdin). port-forward dials the port from inside the pod's network
// namespace.
//
// The package is named for what it carries, the streams of a pod, rather
// than after one verb: the three share the pod's files and the way to its
// units.
package streams

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
)

// Units is what the streams need of systemd.
type Units interface {
	// MainPID is the PID of the running unit's main process (the
	// container's workload), in systemd's PID namespace;
	// errdefs.ErrNotFound when the unit is not running.
	MainPID(ctx context.Context, unit string) (uint32, error)
	// Attach moves pids into the running unit's cgroup.
	Attach(ctx context.Context, unit string, pids ...uint32) error
	// Run starts argv as a transient service of systemd, so that it
	// inherits nothing of berthd, with stdin as its standard input.
	Run(ctx context.Context, unit, description string, argv []string, stdin *os.File) error
}

// SystemdUnits adapts a systemd connection.
func SystemdUnits(c *systemd.Conn) Units { return systemdUnits{c} }

type systemdUnits struct{ c *systemd.Conn }

func (u systemdUnits) MainPID(ctx context.Context, unit string) (uint32, error) {
	st, err := u.c.Status(ctx, unit)
	if err != nil {
		return 0, err
	}
	if st.ActiveState != "active" && st.ActiveState != "reloading" || st.MainPID == 0 {
		return 0, fmt.Errorf("unit %s is %s: %w", unit, st.ActiveState, errdefs.ErrNotFound)
	}
	return st.MainPID, nil
}

func (u systemdUnits) Attach(ctx context.Context, unit string, pids ...uint32) error {
	return u.c.Attach(ctx, unit, pids...)
}

func (u systemdUnits) Run(ctx context.Context, unit, description string, argv []string, stdin *os.File) error {
	return u.c.StartCommand(ctx, unit, description, argv, stdin)
}

// Config places the streams.
type Config struct {
	// Init is the berth-init binary.
	Init string
	// StateDir holds the bundles (<StateDir>/containers/<key>; default
	// /var/lib/berth), RunDir the pods' namespaces (<RunDir>/pods/<key>/ns;
	// default /run/berth), as agent/pods lays them out.
	StateDir, RunDir string
	Units            Units
	// Command makes journalctl for attach; nil: exec.CommandContext.
	Command CommandFunc
	Log     hclog.Logger
}

// Service serves the streams of the pods on this host.
type Service struct {
	cfg Config
	log hclog.Logger
}

// New returns the streams service.
func New(cfg Config) *Service {
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/berth"
	}
	if cfg.RunDir == "" {
		cfg.RunDir = "/run/berth"
	}
	if cfg.Command == nil {
		cfg.Command = defaultCommand
	}
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	return &Service{cfg: cfg, log: cfg.Log.Named("streams")}
}

// container is one container of a pod on this host: its unit and bundle.
type container struct {
	unit, bundle string
}

func (s *Service) container(pod *corev1.Pod, name string) (container, error) {
	if pod == nil || pod.Namespace == "" || pod.Name == "" || name == "" {
		return container{}, fmt.Errorf("pod and container must be named: %w", errdefs.ErrInvalidArgument)
	}
	return container{
		unit:   unitgen.UnitName(pod.Namespace, pod.Name, name),
		bundle: filepath.Join(s.cfg.StateDir, "containers", unitgen.ContainerKey(pod.Namespace, pod.Name, name)),
	}, nil
}

// NetNSPath is where agent/pods pins the pod's network namespace
// (<RunDir>/pods/<PodKey>/ns/net). agent/pods does not export it; this
// mirrors its layout (agent/pods/pods.go, plan: NetNS).
func (s *Service) NetNSPath(pod *corev1.Pod) string {
	return filepath.Join(s.cfg.RunDir, "pods", unitgen.PodKey(pod.Namespace, pod.Name), "ns", "net")
}

// ExitError is a command that ran and exited non-zero (128+n: killed by
// signal n). It satisfies k8s.io/utils/exec.ExitError, which cri-streaming
// turns into kubectl's "command terminated with exit code n".
type ExitError struct{ Code int }

func (e *ExitError) Error() string {
	return fmt.Sprintf("command terminated with exit code %d", e.Code)
}
func (e *ExitError) String() string  { return e.Error() }
func (e *ExitError) Exited() bool    { return true }
func (e *ExitError) ExitStatus() int { return e.Code }

// DialSystemd returns Units over a systemd connection of their own, dialled
// on first use (berthd serves the API before it reaches systemd) and again
// after a failed dial.
func DialSystemd() Units { return &lazyUnits{} }

type lazyUnits struct {
	mu sync.Mutex
	c  *systemd.Conn
}

func (l *lazyUnits) conn(ctx context.Context) (Units, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c == nil {
		c, err := systemd.Dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("connect to systemd: %w", errors.Join(errdefs.ErrUnavailable, err))
		}
		l.c = c
	}
	return systemdUnits{l.c}, nil
}

func (l *lazyUnits) MainPID(ctx context.Context, unit string) (uint32, error) {
	u, err := l.conn(ctx)
	if err != nil {
		return 0, err
	}
	return u.MainPID(ctx, unit)
}

func (l *lazyUnits) Attach(ctx context.Context, unit string, pids ...uint32) error {
	u, err := l.conn(ctx)
	if err != nil {
		return err
	}
	return u.Attach(ctx, unit, pids...)
}

func (l *lazyUnits) Run(ctx context.Context, unit, description string, argv []string, stdin *os.File) error {
	u, err := l.conn(ctx)
	if err != nil {
		return err
	}
	return u.Run(ctx, unit, description, argv, stdin)
}
