// Package systemd is the only code in berth that speaks D-Bus: it starts,
// stops, signals, lists and watches the transient units unitgen describes,
// on systemd 252 or later, and waits for systemd's job results.
//
// It wraps go-systemd's dbus.Conn and uses raw godbus where go-systemd
// forwards too little (the Service interface's PropertiesChanged, which
// carries exit codes). The systemd behaviour it relies on, each fact with
// the version it was observed with, is in docs/systemd.md.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Default addresses: the system bus (dbus-daemon), and systemd's private
// socket, which speaks D-Bus peer-to-peer without a bus daemon and accepts
// only root (systemd src/core/dbus.c bus_on_connection).
const (
	DefaultBusAddress     = "unix:path=/run/dbus/system_bus_socket"
	DefaultPrivateAddress = "unix:path=/run/systemd/private"
)

// Transport is how a Conn reaches systemd.
type Transport string

const (
	// TransportBus is the system bus. Only here do AddRef (it needs a bus
	// peer to track; over the private socket systemd 252 answers
	// InvalidArgs, docs/systemd.md) and the bus's own access control work.
	TransportBus Transport = "bus"
	// TransportPrivate is /run/systemd/private: no dbus-daemon needed, root
	// only. systemd also refuses a peer whose PID it cannot see (a client in
	// another PID namespace): "Incoming private connection from unprivileged
	// client, refusing: No data available" (getpeercred gives pid 0, ENODATA).
	TransportPrivate Transport = "private"
)

const (
	systemdDest = "org.freedesktop.systemd1"
	systemdPath = dbus.ObjectPath("/org/freedesktop/systemd1")
	managerIF   = "org.freedesktop.systemd1.Manager"
	unitIF      = "org.freedesktop.systemd1.Unit"
	serviceIF   = "org.freedesktop.systemd1.Service"
	propsIF     = "org.freedesktop.DBus.Properties"
	unitPathNS  = "/org/freedesktop/systemd1/unit"
)

type options struct {
	bus, private string
}

// Option configures Dial.
type Option func(*options)

// WithBusAddress sets the system bus address ("" skips the bus).
func WithBusAddress(addr string) Option { return func(o *options) { o.bus = addr } }

// WithPrivateAddress sets systemd's private socket address ("" disables the
// fallback).
func WithPrivateAddress(addr string) Option { return func(o *options) { o.private = addr } }

// Conn is a connection to systemd, re-established once per call when it
// breaks. Safe for concurrent use.
type Conn struct {
	opts options

	mu     sync.Mutex
	s      *session // nil after a failed re-dial; the next call dials
	gen    int      // sessions dialled so far (1 after Dial)
	closed bool
}

// Reconnects is how many times the connection was dialled again after it
// broke (systemd re-executed, dbus-daemon restarted): for /metrics.
func (c *Conn) Reconnects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.gen-1, 0)
}

// session is one go-systemd connection with its two underlying godbus
// connections (go-systemd dials one for method calls, one for signals).
type session struct {
	sd  *sd.Conn
	sys *dbus.Conn
	sig *dbus.Conn
	via Transport
}

func (s *session) alive() bool { return s.sys.Connected() && s.sig.Connected() }

func (s *session) close() { s.sd.Close() }

func (s *session) manager() dbus.BusObject { return s.sys.Object(systemdDest, systemdPath) }

// Dial connects to systemd over the system bus, or, when the bus cannot be
// reached, over systemd's private socket (root only), and remembers which
// (Transport). Each later re-dial tries them in the same order.
func Dial(ctx context.Context, opts ...Option) (*Conn, error) {
	o := options{bus: DefaultBusAddress, private: DefaultPrivateAddress}
	for _, opt := range opts {
		opt(&o)
	}
	s, err := dialSession(ctx, o)
	if err != nil {
		return nil, err
	}
	return &Conn{opts: o, s: s, gen: 1}, nil
}

// Transport tells whether the current connection is the bus or the private
// socket.
func (c *Conn) Transport() Transport {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.s == nil {
		return ""
	}
	return c.s.via
}

// Close closes the connection; units keep running (systemd owns them).
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.s != nil {
		c.s.close()
		c.s = nil
	}
	return nil
}

var errConnClosed = fmt.Errorf("systemd connection: %w", dbus.ErrClosed)

// dialAny calls dial for the bus address, then, if that fails, for the
// private socket, and reports both failures.
func dialAny(ctx context.Context, o options, dial func(ctx context.Context, addr string, via Transport) error) error {
	var errs []error
	if o.bus != "" {
		err := dial(ctx, o.bus, TransportBus)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("system bus %s: %w", o.bus, err))
	}
	if o.private != "" && ctx.Err() == nil {
		err := dial(ctx, o.private, TransportPrivate)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("systemd private socket %s: %w", o.private, err))
	}
	if len(errs) == 0 {
		return errors.New("connect to systemd: neither a bus nor a private socket address is configured")
	}
	return fmt.Errorf("connect to systemd: %w", errors.Join(errs...))
}

func dialSession(ctx context.Context, o options) (*session, error) {
	var s *session
	err := dialAny(ctx, o, func(ctx context.Context, addr string, via Transport) error {
		var raws []*dbus.Conn
		c, err := sd.NewConnection(func() (*dbus.Conn, error) {
			conn, err := dialRaw(ctx, addr, via == TransportBus)
			if err == nil {
				raws = append(raws, conn)
			}
			return conn, err
		})
		if err != nil {
			for _, r := range raws {
				r.Close()
			}
			return err
		}
		// go-systemd dials the method connection first, then the signal one (dbus.go NewConnection).
		s = &session{sd: c, sys: raws[0], sig: raws[1], via: via}
		return nil
	})
	return s, err
}

// dialRaw opens one authenticated godbus connection; hello only on the bus
// (the private socket has no bus daemon to greet). ctx bounds only the
// setup: godbus's WithContext would close the connection whenever ctx ends.
func dialRaw(ctx context.Context, addr string, hello bool) (*dbus.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, err := dbus.Dial(addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	// EXTERNAL with the numeric uid, as go-systemd does (no user lookup).
	err = conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))})
	if err == nil && hello {
		err = conn.Hello()
	}
	if !stop() {
		return nil, ctx.Err()
	}
	if err == nil && !hello {
		err = awaitPeer(ctx, conn)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// awaitPeer pings systemd on a fresh private-socket connection until it
// answers. Observed with systemd 252 (debug log: "Accepted new private
// connection", "AUTHENTICATING → RUNNING", then silence): a method call
// sent right after the auth handshake can sit unprocessed until more bytes
// arrive on the socket, so the first real call (go-systemd's AddMatch, which
// has no timeout, or Manager.Subscribe) hung now and then. Sending pings
// with a growing timeout supplies those bytes; once one is answered the
// connection is live. org.freedesktop.DBus.Peer.Ping is answered by sd-bus
// itself for any object.
func awaitPeer(ctx context.Context, conn *dbus.Conn) error {
	wait := 100 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, wait)
		err := conn.Object(systemdDest, systemdPath).CallWithContext(pctx, "org.freedesktop.DBus.Peer.Ping", 0).Err
		cancel()
		var reply dbus.Error
		switch {
		case err == nil || errors.As(err, &reply): // any answer means it is listening
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, context.DeadlineExceeded):
			return err
		}
		if wait < 2*time.Second {
			wait *= 2
		}
	}
}

// current returns the live session, dialling if a previous re-dial failed.
func (c *Conn) current(ctx context.Context) (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errConnClosed
	}
	if c.s != nil {
		return c.s, nil
	}
	s, err := dialSession(ctx, c.opts)
	if err != nil {
		return nil, err
	}
	c.s, c.gen = s, c.gen+1
	return s, nil
}

// redial replaces old with a new session, unless another caller already did.
func (c *Conn) redial(ctx context.Context, old *session) (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errConnClosed
	}
	if c.s != nil && c.s != old {
		return c.s, nil
	}
	if old != nil {
		old.close()
	}
	c.s = nil
	s, err := dialSession(ctx, c.opts)
	if err != nil {
		return nil, err
	}
	c.s, c.gen = s, c.gen+1
	return s, nil
}

// disconnected tells whether err means the connection is gone (systemd
// re-executed and dropped its private connections, dbus-daemon restarted),
// which a new connection cures.
func disconnected(ctx context.Context, s *session, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, dbus.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	return !s.alive()
}

// offBus tells whether err is the bus saying systemd is not on it right now
// (it reconnects to a restarted dbus-daemon a moment after it appears).
func offBus(s *session, err error) bool {
	if s.via != TransportBus {
		return false
	}
	switch dbusName(err) {
	case errServiceUnknown, errNameHasNoOwner:
		return true
	}
	return false
}

// call runs f on the current session. When f fails because the connection
// broke, it re-dials once and runs f again (go-systemd's retryOnDisconnect
// in opencontainers/cgroups systemd/dbus.go is the model); when the bus says
// systemd is not on it (a restarted dbus-daemon that systemd has not
// rejoined yet), it waits for systemd once and runs f again. f must be safe
// to repeat; see Start for the one that is not quite.
func (c *Conn) call(ctx context.Context, f func(*session) error) error {
	s, err := c.current(ctx)
	if err != nil {
		return err
	}
	redialed, waited := false, false
	for {
		err := f(s)
		switch {
		case err == nil:
			return nil
		case !redialed && disconnected(ctx, s, err):
			redialed = true
			ns, rerr := c.redial(ctx, s)
			if rerr != nil {
				return fmt.Errorf("%w (reconnecting: %w)", err, rerr)
			}
			s = ns
		case !waited && offBus(s, err):
			waited = true
			if werr := waitForSystemd(ctx, s); werr != nil {
				return fmt.Errorf("%w (waiting for systemd on the bus: %w)", err, werr)
			}
		default:
			return err
		}
	}
}

// waitForSystemd polls the bus until systemd owns its name again, for at
// most 30 s.
func waitForSystemd(ctx context.Context, s *session) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var has bool
		err := s.sys.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, systemdDest).Store(&has)
		if err == nil && has {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
