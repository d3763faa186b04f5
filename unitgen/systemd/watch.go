package systemd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/godbus/dbus/v5"
)

// Event is a state change of one unit, the end of one of its jobs, or news
// about the watch itself (Err, Overflow).
// State fields are the unit's current values as far as the watcher knows
// them: systemd's PropertiesChanged for the unit type's interface (Service:
// Result, MainPID, ExecMain*) and for the generic Unit interface (ActiveState,
// SubState, the state timestamps) arrive as two signals, type first ("clients
// may rely on this order to get atomic behavior", systemd src/core/dbus-unit.c
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
	// systemd's own clock for the unit's state changes: ActiveExit is when
	// it left active (a stop job began: deactivating), InactiveEnter when it
	// reached inactive or failed. Zero when not (yet) known.
	ActiveEnter, ActiveExit, InactiveEnter time.Time

	// JobID and JobResult are set for a JobRemoved: done, canceled,
	// timeout, failed, dependency or skipped.
	JobID     uint32
	JobResult string

	// Resync marks state read back after the watcher lost its connection
	// (signals may have been missed), not carried by a signal. Gone is set
	// on a resync event for a unit systemd no longer has loaded.
	Resync bool
	Gone   bool

	// Err, on an event with no Unit, reports that the watch is impaired:
	// the connection broke and re-dialling or re-subscribing failed, or
	// reading the units back after a reconnect failed. Signals may be
	// missing from then on; the watcher keeps retrying (backoff up to 2 s),
	// and Resync events follow once it is subscribed again. The consumer
	// should log it and not trust its view of the units until then.
	Err error

	// Overflow, on an event with no Unit, says the consumer fell behind:
	// the queued events and Dropped in all were discarded (see Watch). The
	// consumer must re-read every unit it cares about (List, Status).
	Overflow bool
	Dropped  int
}

// Exited tells whether the event reports a service whose main process has
// ended (or that failed). It is not the same as ActiveState=inactive: the
// first PropertiesChanged after StartTransientUnit can say inactive/dead for
// the freshly loaded unit, before activating (docs/systemd.md, "Watching
// units"); that one has no ExecMainExit yet.
func (e Event) Exited() bool {
	switch e.ActiveState {
	case "failed":
		return true
	case "inactive":
		return !e.ExecMainExit.IsZero() || e.Gone
	}
	return false
}

// DefaultWatchQueue is how many events Watch holds for a slow reader.
const DefaultWatchQueue = 4096

// Watch reports state changes and job results of the units whose names start
// with prefix, until ctx ends (then the channel is closed). It uses its own
// connection: Manager.Subscribe plus match rules for PropertiesChanged (all
// interfaces: go-systemd forwards only the Unit one, which lacks exit codes)
// and the Manager's JobRemoved/UnitRemoved. When that connection breaks it
// re-dials with backoff, subscribes again and resyncs (Event.Resync). On the
// bus, a systemd that comes back (new owner of org.freedesktop.systemd1) is
// subscribed again too; if that fails, the connection is dropped and
// re-dialled like a broken one. Every failure on the way is an Event with
// Err: the watch never goes deaf without saying so.
//
// The watcher never blocks on the reader (it must keep draining D-Bus,
// whose client hands signals that do not fit its buffer to a goroutine
// each, unordered), so events queue, at most DefaultWatchQueue of them.
// When the queue is full the watcher drops it whole and queues instead one
// Event with Overflow and the number dropped; until the reader takes that
// event, further events are dropped and counted in it, except that the
// latest Err is kept behind it. Dropping the whole backlog rather than its
// oldest part: after any loss the reader must re-read every unit anyway,
// and stale events are of no use to it. Events resume once the reader has
// taken the overflow event: a reader that re-reads every unit then and
// applies the events that follow converges on systemd's state.
func (c *Conn) Watch(ctx context.Context, prefix string) (<-chan Event, error) {
	_, out, err := c.watch(ctx, prefix, DefaultWatchQueue)
	return out, err
}

// watch is Watch with the queue's capacity, returning the watcher for tests.
func (c *Conn) watch(ctx context.Context, prefix string, limit int) (*watcher, <-chan Event, error) {
	w := &watcher{opts: c.opts, prefix: prefix, units: map[string]*Event{}, queue: eventQueue{limit: max(limit, 2)}}
	if err := w.connect(ctx); err != nil {
		return nil, nil, err
	}
	out := make(chan Event)
	go w.run(ctx, out)
	return w, out, nil
}

type watcher struct {
	opts   options
	prefix string
	conn   *dbus.Conn // nil while disconnected
	via    Transport
	sigs   chan *dbus.Signal
	units  map[string]*Event // merged state per unit
	queue  eventQueue
}

// eventQueue is the watcher's bounded backlog; see Watch for its policy.
type eventQueue struct {
	limit int
	evs   []Event
	// overflowing: evs[0] is the overflow event, not yet taken; evs[1], if
	// any, the latest Err.
	overflowing bool
	// longest is the most events ever held, for tests.
	longest atomic.Int64
}

func (q *eventQueue) push(evs ...Event) {
	for _, ev := range evs {
		switch {
		case q.overflowing && ev.Err != nil:
			if len(q.evs) > 1 {
				q.evs[0].Dropped++ // the older Err
			}
			q.evs = append(q.evs[:1], ev)
		case q.overflowing:
			q.evs[0].Dropped++
		case len(q.evs) >= q.limit:
			// Everything queued plus ev goes, but the latest Err among
			// them stays behind the overflow event.
			var keep *Event
			for i := range q.evs {
				if q.evs[i].Err != nil {
					keep = &q.evs[i]
				}
			}
			if ev.Err != nil {
				keep = &ev
			}
			next := []Event{{Overflow: true, Dropped: len(q.evs) + 1}}
			if keep != nil {
				next = append(next, *keep)
				next[0].Dropped--
			}
			q.evs, q.overflowing = next, true
		default:
			q.evs = append(q.evs, ev)
		}
		if n := int64(len(q.evs)); n > q.longest.Load() {
			q.longest.Store(n)
		}
	}
}

func (q *eventQueue) peek() (Event, bool) {
	if len(q.evs) == 0 {
		return Event{}, false
	}
	return q.evs[0], true
}

func (q *eventQueue) pop() {
	q.evs[0] = Event{}
	q.evs = q.evs[1:]
	if len(q.evs) == 0 {
		q.evs = nil // let the backing array go
	}
	q.overflowing = false
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
			return fmt.Errorf("subscribe: %w", classify(err))
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
	return managerSubscribe(ctx, conn)
}

// managerSubscribe calls Manager.Subscribe; AlreadySubscribed is success.
func managerSubscribe(ctx context.Context, conn *dbus.Conn) error {
	err := conn.Object(systemdDest, systemdPath).CallWithContext(ctx, managerIF+".Subscribe", 0).Store()
	if dbusName(err) == errAlreadySubscribed {
		return nil
	}
	return err
}

// Backoff between re-dials of a broken watch connection, and the bound on
// each D-Bus exchange the watcher makes on its own (re-dial, re-subscribe,
// resync): a wedged systemd must not hold the watch, and so its reader, for
// longer.
const (
	redialFirst = 50 * time.Millisecond
	redialMax   = 2 * time.Second
	callTimeout = 30 * time.Second
)

func (w *watcher) run(ctx context.Context, out chan<- Event) {
	defer close(out)
	defer func() {
		if w.conn != nil {
			w.conn.Close()
		}
	}()
	var (
		redial  *time.Timer // runs while disconnected
		delay   time.Duration
		lastErr string // of this outage, reported once per distinct text
	)
	// drop ends the connection; the loop re-dials at once, then with backoff.
	drop := func() {
		w.conn.Close()
		w.conn, w.sigs = nil, nil
		delay, lastErr = redialFirst, ""
		redial = time.NewTimer(0)
	}
	report := func(err error) {
		if s := err.Error(); s != lastErr {
			lastErr = s
			w.queue.push(Event{Err: err})
		}
	}
	for {
		var send chan<- Event
		next, ok := w.queue.peek()
		if ok {
			send = out
		}
		var retry <-chan time.Time
		if redial != nil {
			retry = redial.C
		}
		select {
		case <-ctx.Done():
			if redial != nil {
				redial.Stop()
			}
			return
		case send <- next:
			w.queue.pop()
		case <-retry:
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			err := w.connect(cctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				report(fmt.Errorf("systemd watch %s*: connection lost, re-dialling: %w", w.prefix, err))
				redial.Reset(delay)
				delay = min(2*delay, redialMax)
				continue
			}
			redial = nil
			w.queue.push(w.resync(ctx)...)
		case sig, ok := <-w.sigs: // nil while disconnected: never ready
			if !ok { // connection closed
				drop()
				continue
			}
			if sig.Name == "org.freedesktop.DBus.NameOwnerChanged" {
				// systemd is back on the bus after leaving it; our match
				// rules live in dbus-daemon, the subscription in systemd.
				if len(sig.Body) == 3 {
					if owner, _ := sig.Body[2].(string); owner != "" {
						cctx, cancel := context.WithTimeout(ctx, callTimeout)
						err := managerSubscribe(cctx, w.conn)
						cancel()
						if err != nil {
							if ctx.Err() != nil {
								return
							}
							// Not subscribed, systemd sends us nothing: start over.
							drop()
							report(fmt.Errorf("systemd watch %s*: subscribe again after systemd rejoined the bus: %w", w.prefix, classify(err)))
							continue
						}
						w.queue.push(w.resync(ctx)...)
					}
				}
				continue
			}
			if ev, ok := w.handle(sig); ok {
				w.queue.push(ev)
			}
		}
	}
}

// resync reads back every unit of interest after a reconnect. What it cannot
// read is reported as an Err event.
func (w *watcher) resync(ctx context.Context) []Event {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var evs []Event
	listed, err := listUnits(ctx, w.conn, w.prefix)
	if err != nil {
		return []Event{{Err: fmt.Errorf("systemd watch %s*: list units after reconnecting: %w", w.prefix, classify(err))}}
	}
	seen := map[string]bool{}
	for _, u := range listed {
		st, err := readStatus(ctx, w.conn, u.Name)
		if err != nil {
			if err = classify(err); !errors.Is(err, errdefs.ErrNotFound) {
				evs = append(evs, Event{Err: fmt.Errorf("systemd watch %s*: read unit %s after reconnecting: %w", w.prefix, u.Name, err)})
				seen[u.Name] = true // state unknown, not gone
			}
			continue
		}
		seen[u.Name] = true
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
		ExecMainStart: st.ExecMainStart, ExecMainExit: st.ExecMainExit, InvocationID: st.InvocationID,
		ActiveEnter: st.ActiveEnter, ActiveExit: st.ActiveExit, InactiveEnter: st.InactiveEnter}
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
		case "ActiveEnterTimestamp":
			ev.ActiveEnter = usec(m, k)
		case "ActiveExitTimestamp":
			ev.ActiveExit = usec(m, k)
		case "InactiveEnterTimestamp":
			ev.InactiveEnter = usec(m, k)
		}
	}
}
