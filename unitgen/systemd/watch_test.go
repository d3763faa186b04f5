package systemd

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
)

// These tests need neither root nor systemd: the watcher talks to
// fakeSystemd.

// The watcher's backlog is bounded: past the limit it holds one overflow
// event (counting what was dropped) and the latest Err, and queues again
// once the reader took the overflow event.
func TestEventQueue(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  string // unit names push an event, !x an Err event, - a pop
		want string
	}{
		{"under the limit", "a b c", "a b c"},
		{"one over the limit drops all", "a b c d", "overflow:4"},
		{"overflowing counts what it drops", "a b c d e f", "overflow:6"},
		{"an Err stays behind the overflow event", "a !x b c", "overflow:3 err:x"},
		{"the pushed Err stays", "a b c !x", "overflow:3 err:x"},
		{"the latest Err replaces an older one", "a b c d !x !y", "overflow:5 err:y"},
		{"after the overflow event is taken, events queue again", "a b c d - e f", "e f"},
		{"taken overflow, the kept Err is next", "a b c !x - e", "err:x e"},
		{"a pop below the limit", "a b - c d", "b c d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := eventQueue{limit: 3}
			for _, op := range strings.Fields(tc.ops) {
				switch {
				case op == "-":
					q.pop()
				case strings.HasPrefix(op, "!"):
					q.push(Event{Err: errors.New(op[1:])})
				default:
					q.push(Event{Unit: op})
				}
				if len(q.evs) > q.limit {
					t.Fatalf("after %q: %d events queued, limit %d", op, len(q.evs), q.limit)
				}
			}
			var got []string
			for _, ev := range q.evs {
				switch {
				case ev.Overflow:
					got = append(got, fmt.Sprintf("overflow:%d", ev.Dropped))
				case ev.Err != nil:
					got = append(got, "err:"+ev.Err.Error())
				default:
					got = append(got, ev.Unit)
				}
			}
			if s := strings.Join(got, " "); s != tc.want {
				t.Errorf("queue %q, want %q", s, tc.want)
			}
		})
	}
}

// A watch whose connection fails to come back says so (an Err event with
// the D-Bus error), keeps retrying and resyncs once it is subscribed again.
func TestWatchReportsImpairment(t *testing.T) {
	const unit = "berth-f-a.service"
	accessDenied := dbus.NewError("org.freedesktop.DBus.Error.AccessDenied", []any{"fake systemd refuses"})
	failed := dbus.NewError("org.freedesktop.DBus.Error.Failed", []any{"fake systemd cannot list"})
	for _, tc := range []struct {
		name string
		bus  bool // dial as over the bus (Hello, AddMatch); else the private socket
		// rejoin: systemd comes back on the bus (NameOwnerChanged) instead
		// of the connection dropping.
		rejoin    bool
		subscribe func(n int) *dbus.Error
		list      func() ([]string, *dbus.Error)
		wantErrs  []string // substrings, one Err event each, in order
		wantName  string   // D-Bus error name found in each Err with errors.As
		resync    bool     // a Resync event for unit follows
	}{
		{name: "private socket drops, re-subscribe refused three times",
			subscribe: func(n int) *dbus.Error {
				if n >= 2 && n <= 4 {
					return accessDenied
				}
				return nil
			},
			list:     func() ([]string, *dbus.Error) { return []string{unit}, nil },
			wantErrs: []string{"re-dial"}, wantName: accessDenied.Name, resync: true},
		{name: "systemd rejoins the bus, re-subscribe refused", bus: true, rejoin: true,
			subscribe: func(n int) *dbus.Error {
				if n == 2 {
					return accessDenied
				}
				return nil
			},
			list:     func() ([]string, *dbus.Error) { return []string{unit}, nil },
			wantErrs: []string{"subscribe again after systemd rejoined"}, wantName: accessDenied.Name, resync: true},
		// systemd keeps its subscribers across daemon-reexec and says so.
		{name: "systemd rejoins the bus, already subscribed", bus: true, rejoin: true,
			subscribe: func(n int) *dbus.Error {
				if n == 2 {
					return dbus.NewError(errAlreadySubscribed, []any{"Client is already subscribed."})
				}
				return nil
			},
			list: func() ([]string, *dbus.Error) { return []string{unit}, nil }, resync: true},
		{name: "bus connection drops, units cannot be listed", bus: true,
			list:     func() ([]string, *dbus.Error) { return nil, failed },
			wantErrs: []string{"list units after reconnecting"}, wantName: failed.Name},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeSystemd(t)
			f.subscribe, f.list = tc.subscribe, tc.list
			opts := options{private: f.addr}
			if tc.bus {
				opts = options{bus: f.addr}
			}
			ctx := testCtx(t)
			events, err := (&Conn{opts: opts}).Watch(ctx, "berth-f-")
			if err != nil {
				t.Fatal(err)
			}
			fc := f.conn(t)
			f.await(t, "Subscribe 1")
			if tc.rejoin {
				fc.signal(t, "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameOwnerChanged", systemdDest, "", ":1.7")
			} else {
				fc.c.Close()
			}
			var errs []error
			var seen []Event
			for len(errs) < len(tc.wantErrs) || tc.resync {
				var ev Event
				select {
				case ev = <-events:
				case <-ctx.Done():
					t.Fatalf("want Err events %q (resync %v); saw %+v", tc.wantErrs, tc.resync, seen)
				}
				seen = append(seen, ev)
				if ev.Err != nil {
					errs = append(errs, ev.Err)
					t.Logf("watch reports: %v", ev.Err) // as a consumer would log it
				}
				if ev.Resync && ev.Unit == unit {
					break
				}
			}
			if len(errs) != len(tc.wantErrs) {
				t.Fatalf("Err events %q, want one each of %q", errs, tc.wantErrs)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tc.wantErrs[i]) {
					t.Errorf("Err %q does not say %q", err, tc.wantErrs[i])
				}
				var de dbus.Error
				if !errors.As(err, &de) || de.Name != tc.wantName {
					t.Errorf("Err %q does not wrap the D-Bus error %s", err, tc.wantName)
				}
			}
		})
	}
}

// A reader that does not read does not make the watcher hold more than its
// limit: a burst of signals becomes one overflow event counting them, and
// events flow again once the reader takes it.
func TestWatchSlowReaderBounded(t *testing.T) {
	const limit, burst = 8, 100
	f := newFakeSystemd(t)
	ctx := testCtx(t)
	w, events, err := (&Conn{opts: options{private: f.addr}}).watch(ctx, "berth-q-", limit)
	if err != nil {
		t.Fatal(err)
	}
	fc := f.conn(t)
	f.await(t, "Subscribe 1")
	for i := range burst {
		fc.unitState(t, "berth-q-a.service", "active", fmt.Sprint("burst-", i))
	}
	// The watcher re-dials only after it has taken every signal of the
	// closed connection (godbus closes the channel after the buffered ones).
	fc.c.Close()
	f.await(t, "Subscribe 2")
	fc = f.conn(t)

	first := <-events
	if !first.Overflow || first.Dropped < burst {
		t.Fatalf("first event %+v, want an overflow event counting all %d of the burst", first, burst)
	}
	fc.unitState(t, "berth-q-a.service", "active", "after-overflow")
	for ev := range events {
		if ev.Overflow || strings.HasPrefix(ev.SubState, "burst-") {
			t.Fatalf("after the overflow event: %+v", ev)
		}
		if ev.SubState == "after-overflow" {
			break
		}
	}
	if n := w.queue.longest.Load(); n > limit {
		t.Errorf("the watcher held %d events, limit %d", n, limit)
	}
}
