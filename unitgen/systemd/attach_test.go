package systemd

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/unitgen"
)

// TestAttach moves a process into a delegated unit through systemd and
// checks systemd 252's refusals: a unit without Delegate=yes, a unit it
// does not know.
func TestAttach(t *testing.T) {
	n := nodetest.New(t, node.Options{Name: "attach"})
	c := dialNode(t, n)
	ctx := testCtx(t)
	for name, props := range map[string][]unitgen.Property{
		"attach-src.service":  service(sleeper),
		"attach-dst.service":  service(sleeper, unitgen.Property{Name: "Delegate", Value: true}),
		"attach-flat.service": service(sleeper),
	} {
		if err := c.Start(ctx, name, props); err != nil {
			t.Fatal(err)
		}
		cleanupUnit(t, c, name)
	}
	src, err := c.Status(ctx, "attach-src.service")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Attach(ctx, "attach-flat.service", src.MainPID); !errors.Is(err, errdefs.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "non-delegated") {
		t.Errorf("attach to a unit without Delegate=yes: %v", err)
	}
	if err := c.Attach(ctx, "attach-nothere.service", src.MainPID); !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("attach to an unknown unit: %v", err)
	}
	// From here, our PID is not in systemd's namespace: systemd 252
	// cannot read the caller's credentials and answers EPROTO. berthd
	// runs in systemd's PID namespace; test/e2e/kubectl's exec test
	// attaches through berthd, and agent/berthinit's exec test from
	// inside the node, to the same effect as below.
	err = c.Attach(ctx, "attach-dst.service", src.MainPID)
	var se *Error
	if !errors.As(err, &se) || se.Name != "System.Error.EPROTO" {
		t.Errorf("attach from outside systemd's PID namespace: %v", err)
	}
	if out, err := n.Run(ctx, "busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
		"AttachProcessesToUnit", "ssau", "attach-dst.service", "", "1", strconv.FormatUint(uint64(src.MainPID), 10)); err != nil {
		t.Fatalf("attach from inside: %v %s", err, out)
	}
	out, err := n.Run(ctx, "cat", "/proc/"+strconv.FormatUint(uint64(src.MainPID), 10)+"/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(l, "attach-src.service") {
			t.Errorf("still in the source unit: %s", l)
		}
	}
	if !strings.Contains(out, "/attach-dst.service") {
		t.Errorf("not in the delegated unit:\n%s", out)
	}
}
