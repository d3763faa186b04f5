package systemd

import (
	"context"
	"encoding/hex"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// Event is a state change of one unit, or the end of one of its jobs.
// State fields are the unit's current values as far as the watcher knows
// them: systemd's PropertiesChanged for the unit type's interface (Service:
// Result, MainPID, ExecMain*) and for the generic Unit interface (ActiveState,
// SubState) arrive as two signals, type first ("clients may rely on this
// order to get atomic behavior", systemd src/core/dbus-unit.c
// send_changed_signal), and the watcher merges them, emitting on the Unit one.
type Event struct {
	Unit string

	ActiveState, SubState string
	Result                string
	MainPID               uint32
	ExecMainCode          int32
	ExecMainStatus        int32
	ExecMainStart         time.Time
	ExecMainExit          time.Time
	InvocationID          string

	// JobID and JobResult are set for a JobRemoved: done, canceled,
	// timeout, failed, dependency or skipped.
	JobID     uint32
	JobResult string

	// Resync marks state read back after the watcher lost its connection
	// (signals may have been missed), not carried by a signal. Gone is set
	// on a resync event for a unit systemd no longer has loaded.
	Resync bool
	Gone   bool
}

// Exited tells whether the event reports a service whose main process has
// ended (or that failed). It is not the same as ActiveState=inactive: the
// first PropertiesChanged after StartTransientUnit can say inactive/dead for
// the freshly loaded unit, before activating (libraries.md pitfall 5); that
// one has no ExecMainExit yet.
func (e Event) Exited() bool {
	switch e.ActiveState {
	case "failed":
		return true
	case "inactive":
		return !e.ExecMainExit.IsZero() || e.Gone
	}
	return false
}

// Watch reports state changes and job results of the units whose names start
// with prefix, until ctx ends (then the channel is closed). It uses its own
// connection: Manager.Subscribe plus match rules for PropertiesChanged (all
// interfaces: go-systemd forwards only the Unit one, which lacks exit codes)
// and the Manager's JobRemoved/UnitRemoved. When that connection breaks it
// re-dials, subscribes again and resyncs (Event.Resync). On the bus, a
// systemd that comes back (new owner of org.freedesktop.systemd1) is
// subscribed again too.
//
// Events queue without bound while the reader is slow; the reader must keep
// reading or cancel ctx.
func (c *Conn) Watch(ctx context.Context, prefix string) (<-chan Event, error) {
	w := &watcher{opts: c.opts, prefix: prefix, units: map[string]*Event{}}
	if err := w.connect(ctx); err != nil {
		return nil, err
	}
	out := make(chan Event)
	go w.run(ctx, out)
	return out, nil
}

type watcher struct {
	opts   options
	prefix string
	conn   *dbus.Conn
	via    Transport
	sigs   chan *dbus.Signal
	units  map[string]*Event // merged state per unit
}

// signalBuffer is large because godbus, when a signal channel is full, hands
// each further signal to its own goroutine, which loses their order.
const signalBuffer = 4096

func (w *watcher) connect(ctx context.Context) error {
	return dialAny(ctx, w.opts, func(ctx context.Context, addr string, via Transport) error {
		conn, err := dialRaw(ctx, addr, via == TransportBus)
		if err != nil {
			return err
		}
		sigs := make(chan *dbus.Signal, signalBuffer)
		conn.Signal(sigs)
		if err := subscribe(ctx, conn, via); err != nil {
			conn.Close()
			return err
		}
		w.conn, w.via, w.sigs = conn, via, sigs
		return nil
	})
}

// subscribe asks for the signals. On the private socket there is no bus to
// add match rules to: systemd sends every signal to every direct connection
// (src/core/dbus.c bus_foreach_bus). Manager.Subscribe makes systemd emit
// unit signals on the bus at all; it is harmless on a direct connection.
func subscribe(ctx context.Context, conn *dbus.Conn, via Transport) error {
	if via == TransportBus {
		rules := [][]dbus.MatchOption{
			{dbus.WithMatchInterface(propsIF), dbus.WithMatchMember("PropertiesChanged"),
				dbus.WithMatchPathNamespace(unitPathNS)},
			{dbus.WithMatchInterface(managerIF), dbus.WithMatchMember("JobRemoved")},
			{dbus.WithMatchInterface(managerIF), dbus.WithMatchMember("UnitRemoved")},
			{dbus.WithMatchInterface("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged"),
				dbus.WithMatchArg(0, systemdDest)},
		}
		for _, r := range rules {
			if err := conn.AddMatchSignalContext(ctx, r...); err != nil {
				return err
			}
		}
	}
	return conn.Object(systemdDest, systemdPath).CallWithContext(ctx, managerIF+".Subscribe", 0).Store()
}

func (w *watcher) run(ctx context.Context, out chan<- Event) {
	defer close(out)
	defer func() {
		if w.conn != nil {
			w.conn.Close()
		}
	}()
	var queue []Event
	for {
		var send chan<- Event
		var next Event
		if len(queue) > 0 {
			send, next = out, queue[0]
		}
		select {
		case <-ctx.Done():
			return
		case send <- next:
			queue = queue[1:]
		case sig, ok := <-w.sigs:
			if !ok { // connection closed
				if !w.reconnect(ctx) {
					return
				}
				queue = append(queue, w.resync(ctx)...)
				continue
			}
			if sig.Name == "org.freedesktop.DBus.NameOwnerChanged" {
				// systemd is back on the bus after leaving it; our match
				// rules live in dbus-daemon, the subscription in systemd.
				if len(sig.Body) == 3 {
					if owner, _ := sig.Body[2].(string); owner != "" {
						_ = w.conn.Object(systemdDest, systemdPath).CallWithContext(ctx, managerIF+".Subscribe", 0).Store()
						queue = append(queue, w.resync(ctx)...)
					}
				}
				continue
			}
			if ev, ok := w.handle(sig); ok {
				queue = append(queue, ev)
			}
		}
	}
}

// reconnect re-dials with backoff until it succeeds or ctx ends.
func (w *watcher) reconnect(ctx context.Context) bool {
	w.conn.Close()
	w.conn = nil
	delay := 50 * time.Millisecond
	for {
		if err := w.connect(ctx); err == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		if delay < 2*time.Second {
			delay *= 2
		}
	}
}

// resync reads back every unit of interest after a reconnect.
func (w *watcher) resync(ctx context.Context) []Event {
	var evs []Event
	listed, err := listUnits(ctx, w.conn, w.prefix)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	for _, u := range listed {
		seen[u.Name] = true
		st, err := readStatus(ctx, w.conn, u.Name)
		if err != nil {
			continue
		}
		ev := eventFromStatus(st)
		ev.Resync = true
		w.units[u.Name] = &ev
		evs = append(evs, ev)
	}
	for name, ev := range w.units {
		if seen[name] {
			continue
		}
		gone := *ev
		gone.ActiveState, gone.SubState, gone.Resync, gone.Gone = "inactive", "dead", true, true
		gone.JobID, gone.JobResult = 0, ""
		delete(w.units, name)
		evs = append(evs, gone)
	}
	return evs
}

func eventFromStatus(st *UnitStatus) Event {
	return Event{Unit: st.Name, ActiveState: st.ActiveState, SubState: st.SubState, Result: st.Result,
		MainPID: st.MainPID, ExecMainCode: st.ExecMainCode, ExecMainStatus: st.ExecMainStatus,
		ExecMainStart: st.ExecMainStart, ExecMainExit: st.ExecMainExit, InvocationID: st.InvocationID}
}

// unitFromPath undoes sd.PathBusEscape for a unit object path.
func unitFromPath(p dbus.ObjectPath) (string, bool) {
	s, ok := strings.CutPrefix(string(p), unitPathNS+"/")
	if !ok || s == "" {
		return "", false
	}
	if s == "_" {
		return "", true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && i+2 < len(s) {
			if d, err := hex.DecodeString(s[i+1 : i+3]); err == nil {
				b.Write(d)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String(), true
}

// handle merges one signal into the unit's state and returns the event to
// emit, if any.
func (w *watcher) handle(sig *dbus.Signal) (Event, bool) {
	switch sig.Name {
	case propsIF + ".PropertiesChanged":
		name, ok := unitFromPath(sig.Path)
		if !ok || !strings.HasPrefix(name, w.prefix) || len(sig.Body) < 2 {
			return Event{}, false
		}
		iface, _ := sig.Body[0].(string)
		changed, _ := sig.Body[1].(map[string]dbus.Variant)
		ev := w.units[name]
		if ev == nil {
			ev = &Event{Unit: name}
			w.units[name] = ev
		}
		merge(ev, changed)
		if iface != unitIF {
			return Event{}, false
		}
		out := *ev
		return out, true
	case managerIF + ".JobRemoved":
		var id uint32
		var job dbus.ObjectPath
		var name, result string
		if dbus.Store(sig.Body, &id, &job, &name, &result) != nil || !strings.HasPrefix(name, w.prefix) {
			return Event{}, false
		}
		out := Event{Unit: name}
		if ev := w.units[name]; ev != nil {
			out = *ev
		}
		out.JobID, out.JobResult = id, result
		return out, true
	case managerIF + ".UnitRemoved":
		var name string
		var p dbus.ObjectPath
		if dbus.Store(sig.Body, &name, &p) == nil {
			delete(w.units, name)
		}
	}
	return Event{}, false
}

func merge(ev *Event, m map[string]dbus.Variant) {
	for k, v := range m {
		switch k {
		case "ActiveState":
			ev.ActiveState, _ = v.Value().(string)
		case "SubState":
			ev.SubState, _ = v.Value().(string)
		case "Result":
			ev.Result, _ = v.Value().(string)
		case "MainPID":
			ev.MainPID, _ = v.Value().(uint32)
		case "ExecMainCode":
			ev.ExecMainCode, _ = v.Value().(int32)
		case "ExecMainStatus":
			ev.ExecMainStatus, _ = v.Value().(int32)
		case "ExecMainStartTimestamp":
			ev.ExecMainStart = usec(m, k)
		case "ExecMainExitTimestamp":
			ev.ExecMainExit = usec(m, k)
		case "InvocationID":
			ev.InvocationID = hexBytes(m, k)
		}
	}
}
