package pods

import (
	"context"
	"time"

	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
)

// Units is what pods needs from systemd. Its errors carry errdefs classes
// (errdefs.ErrNotFound for a unit systemd does not know).
type Units interface {
	EnsureSlice(ctx context.Context, name string, props []unitgen.Property) error
	Start(ctx context.Context, name string, props []unitgen.Property) error
	Stop(ctx context.Context, name string) error
	ResetFailed(ctx context.Context, name string) error
	Status(ctx context.Context, name string) (*UnitState, error)
}

// UnitState is what pods reads of a container's unit: the agent's own
// words, so that nothing above this package sees a D-Bus type.
type UnitState struct {
	ActiveState  string // active, reloading, inactive, failed, activating, deactivating
	SubState     string // e.g. running, exited, dead, auto-restart
	Result       string // of the last run: success, exit-code, signal, oom-kill, ...
	MainPID      uint32
	ControlGroup string
	NRestarts    uint32
	// ExecMainStart: when the running instance's main process (stage-1)
	// started; it tells an exit record of the run before it from one of
	// this run, which stage-1 writes before the unit leaves active.
	ExecMainStart time.Time
}

// SystemdUnits is Units over a connection to systemd.
func SystemdUnits(c *systemd.Conn) Units { return systemdUnits{c} }

type systemdUnits struct{ *systemd.Conn }

func (u systemdUnits) Status(ctx context.Context, name string) (*UnitState, error) {
	st, err := u.Conn.Status(ctx, name)
	if err != nil {
		return nil, err
	}
	return &UnitState{
		ActiveState: st.ActiveState, SubState: st.SubState, Result: st.Result,
		MainPID: st.MainPID, ControlGroup: st.ControlGroup, NRestarts: st.NRestarts,
		ExecMainStart: st.ExecMainStart,
	}, nil
}

// keyedMutex serialises work on one pod: the same pod run and removed
// concurrently must not interleave (a removal between a start's mkdir and
// its units would leak the units).
type keyedMutex struct {
	mu    chan struct{} // guards locks; a channel so that Lock can give up with ctx
	locks map[string]*keyedLock
}

type keyedLock struct {
	ch   chan struct{}
	refs int
}

func newKeyedMutex() *keyedMutex {
	m := &keyedMutex{mu: make(chan struct{}, 1), locks: map[string]*keyedLock{}}
	return m
}

// Lock takes key's lock or returns ctx's error; unlock releases it.
func (m *keyedMutex) Lock(ctx context.Context, key string) (unlock func(), err error) {
	m.mu <- struct{}{}
	l := m.locks[key]
	if l == nil {
		l = &keyedLock{ch: make(chan struct{}, 1)}
		m.locks[key] = l
	}
	l.refs++
	<-m.mu
	release := func() {
		m.mu <- struct{}{}
		if l.refs--; l.refs == 0 {
			delete(m.locks, key)
		}
		<-m.mu
	}
	if err := ctx.Err(); err != nil {
		release()
		return nil, err
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// waiters is how many callers hold or wait for key's lock (for tests).
func (m *keyedMutex) waiters(key string) int {
	m.mu <- struct{}{}
	defer func() { <-m.mu }()
	if l := m.locks[key]; l != nil {
		return l.refs
	}
	return 0
}
