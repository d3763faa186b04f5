package systemd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"
)

// fakeSystemd answers the few D-Bus calls the watcher makes, on a unix
// socket, in place of systemd (private-socket mode: no bus, every signal
// goes to every connection) or of dbus-daemon plus systemd (bus mode: Hello
// and AddMatch answered too). It lets the watcher's failure paths be driven
// without root: a Subscribe or ListUnitsByPatterns that fails, a connection
// that drops, a flood of signals.
//
// It speaks just enough of the D-Bus protocol (the EXTERNAL auth exchange,
// then godbus's own message codec); messages it sends carry serial 0, which
// godbus does not check.
type fakeSystemd struct {
	t    *testing.T
	addr string
	ln   net.Listener

	mu sync.Mutex
	// subscribe answers the n-th Manager.Subscribe (from 1) of all
	// connections; nil or a nil result: success.
	subscribe func(n int) *dbus.Error
	// list answers ListUnitsByPatterns: the units (all active/running), or
	// an error.
	list     func() ([]string, *dbus.Error)
	nSub     int
	conns    []*fakeConn
	accepted chan *fakeConn
	// calls gets "Member n" for each Subscribe and "ListUnitsByPatterns"
	// for each list, as they are answered: the synchronisation points of
	// the tests.
	calls chan string
}

type fakeConn struct {
	c  net.Conn
	wm sync.Mutex
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	// Not t.TempDir: a D-Bus address cannot hold the commas of a subtest's
	// name, and a socket path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "berth-fakebus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "systemd")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSystemd{t: t, addr: "unix:path=" + sock, ln: ln,
		accepted: make(chan *fakeConn, 16), calls: make(chan string, 1024)}
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			c.c.Close()
		}
	})
	go f.accept()
	return f
}

func (f *fakeSystemd) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		fc := &fakeConn{c: c}
		f.mu.Lock()
		f.conns = append(f.conns, fc)
		f.mu.Unlock()
		go f.serve(fc)
	}
}

// serve runs the server side of the auth exchange (see godbus auth.go for
// the client's), then answers method calls until the connection ends.
func (f *fakeSystemd) serve(fc *fakeConn) {
	defer fc.c.Close()
	r := bufio.NewReader(fc.c)
	if b, err := r.ReadByte(); err != nil || b != 0 {
		return
	}
auth:
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		reply := "ERROR"
		switch cmd := strings.TrimSpace(line); {
		case cmd == "BEGIN":
			break auth
		case cmd == "AUTH":
			reply = "REJECTED EXTERNAL"
		case strings.HasPrefix(cmd, "AUTH EXTERNAL"):
			reply = "OK 0123456789abcdef0123456789abcdef"
		}
		if _, err := fc.c.Write([]byte(reply + "\r\n")); err != nil {
			return
		}
	}
	f.accepted <- fc
	for {
		msg, err := dbus.DecodeMessage(r)
		if err != nil {
			return
		}
		if msg.Type != dbus.TypeMethodCall {
			continue
		}
		f.answer(fc, msg)
	}
}

func header[T any](msg *dbus.Message, h dbus.HeaderField) T {
	v, _ := msg.Headers[h].Value().(T)
	return v
}

func (f *fakeSystemd) answer(fc *fakeConn, msg *dbus.Message) {
	member := header[string](msg, dbus.FieldMember)
	var body []any
	var derr *dbus.Error
	var note string
	f.mu.Lock()
	switch header[string](msg, dbus.FieldInterface) + "." + member {
	case "org.freedesktop.DBus.Peer.Ping", "org.freedesktop.DBus.AddMatch":
	case "org.freedesktop.DBus.Hello":
		body = []any{":1.1"}
	case managerIF + ".Subscribe":
		f.nSub++
		if f.subscribe != nil {
			derr = f.subscribe(f.nSub)
		}
		note = fmt.Sprintf("Subscribe %d", f.nSub)
	case managerIF + ".ListUnitsByPatterns":
		var names []string
		if f.list != nil {
			names, derr = f.list()
		}
		type unit struct {
			Name, Description, LoadState, ActiveState, SubState, Followed string
			Path                                                          dbus.ObjectPath
			JobID                                                         uint32
			JobType                                                       string
			JobPath                                                       dbus.ObjectPath
		}
		units := []unit{}
		for _, n := range names {
			units = append(units, unit{Name: n, LoadState: "loaded", ActiveState: "active", SubState: "running",
				Path: unitPath(n), JobPath: "/"})
		}
		body = []any{units}
		note = "ListUnitsByPatterns"
	case propsIF + ".GetAll":
		props := map[string]dbus.Variant{}
		switch iface, _ := msg.Body[0].(string); iface {
		case unitIF:
			props["LoadState"] = dbus.MakeVariant("loaded")
			props["ActiveState"] = dbus.MakeVariant("active")
			props["SubState"] = dbus.MakeVariant("running")
		default:
			props["Result"] = dbus.MakeVariant("success")
			props["MainPID"] = dbus.MakeVariant(uint32(42))
		}
		body = []any{props}
	default:
		derr = dbus.NewError("org.freedesktop.DBus.Error.UnknownMethod", []any{"fake systemd: no " + member})
	}
	f.mu.Unlock()
	reply := &dbus.Message{Type: dbus.TypeMethodReply, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldReplySerial: dbus.MakeVariant(msg.Serial())}}
	if derr != nil {
		reply.Type = dbus.TypeError
		reply.Headers[dbus.FieldErrorName] = dbus.MakeVariant(derr.Name)
		body = derr.Body
	}
	if len(body) > 0 {
		reply.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(body...))
		reply.Body = body
	}
	fc.send(f.t, reply)
	if note != "" {
		f.calls <- note
	}
}

func (fc *fakeConn) send(t *testing.T, msg *dbus.Message) {
	fc.wm.Lock()
	defer fc.wm.Unlock()
	if err := msg.EncodeTo(fc.c, binary.LittleEndian); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("fake systemd: send: %v", err)
	}
}

// signal emits a signal on fc.
func (fc *fakeConn) signal(t *testing.T, path dbus.ObjectPath, iface, member string, body ...any) {
	fc.send(t, &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldPath:      dbus.MakeVariant(path),
		dbus.FieldInterface: dbus.MakeVariant(iface),
		dbus.FieldMember:    dbus.MakeVariant(member),
		dbus.FieldSignature: dbus.MakeVariant(dbus.SignatureOf(body...)),
	}, Body: body})
}

// unitState emits the PropertiesChanged of the Unit interface that makes
// the watcher emit an event for unit.
func (fc *fakeConn) unitState(t *testing.T, unit, active, sub string) {
	fc.signal(t, unitPath(unit), propsIF, "PropertiesChanged", unitIF,
		map[string]dbus.Variant{"ActiveState": dbus.MakeVariant(active), "SubState": dbus.MakeVariant(sub)}, []string{})
}

// await waits for the next call note and checks it.
func (f *fakeSystemd) await(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-f.calls:
		if got != want {
			t.Fatalf("fake systemd answered %q, want %q next", got, want)
		}
	case <-testCtx(t).Done():
		t.Fatalf("fake systemd: no %q", want)
	}
}

// conn waits for the next connection to finish its auth exchange.
func (f *fakeSystemd) conn(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-f.accepted:
		return fc
	case <-testCtx(t).Done():
		t.Fatal("fake systemd: nobody connected")
	}
	return nil
}
