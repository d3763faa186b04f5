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
	if err := c.Attach(ctx, "attach-dst.service", src.MainPID); err != nil {
		t.Fatal(err)
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
