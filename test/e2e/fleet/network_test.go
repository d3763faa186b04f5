package fleet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/node"
)

// privateNet is a bridge on the host with a /24 of its own: the host holds
// .1 (the registry and Prometheus listen there) and each node gets a veth
// into its network namespace with .11, .12, ... and its default route via
// .1, as machines on a private network behind a router would.
type privateNet struct {
	bridge string
	prefix netip.Prefix
	host   netip.Addr
}

// newPrivateNet makes the bridge and removes it when t ends. The veths'
// host ends go with it (their peers go with the nodes' namespaces).
func newPrivateNet(t *testing.T) *privateNet {
	t.Helper()
	reapBridges()
	// "bfl<pid>": unique per run, tells reapBridges whose it is, and is
	// short enough (IFNAMSIZ is 16) for the veths' "<bridge>-<i>".
	p := &privateNet{bridge: fmt.Sprintf("bfl%d", os.Getpid())}
	prefix, err := freePrefix()
	if err != nil {
		t.Fatal(err)
	}
	p.prefix = prefix
	p.host = prefix.Addr().Next()
	ip(t, "link", "add", "name", p.bridge, "type", "bridge")
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", p.bridge).CombinedOutput(); err != nil {
			t.Errorf("remove bridge %s: %v: %s", p.bridge, err, out)
		}
	})
	ip(t, "addr", "add", netip.PrefixFrom(p.host, 24).String(), "dev", p.bridge)
	ip(t, "link", "set", p.bridge, "up")
	return p
}

// reapBridges removes the bridges of earlier runs whose test binary is
// gone: one killed (a -timeout panic, SIGKILL) ran no cleanup. Their nodes,
// and with them the veths, went with the binary (node's launcher).
func reapBridges() {
	out, _ := exec.Command("ip", "-o", "link", "show", "type", "bridge").Output()
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		pid, err := strconv.Atoi(strings.TrimPrefix(name, "bfl"))
		if !strings.HasPrefix(name, "bfl") || err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = exec.Command("ip", "link", "del", name).Run()
		}
	}
}

// freePrefix picks a 10.2x.y.0/24 that overlaps no route and no address of
// the host (another run's bridge shows as a route), away from berth's
// 10.85/16 and 10.86/16, Podman's 10.88/16 and Docker's 172.17/16.
func freePrefix() (netip.Prefix, error) {
	var used []netip.Prefix
	for _, args := range [][]string{{"-4", "route", "show", "table", "all"}, {"-4", "-o", "addr"}} {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		for _, f := range strings.Fields(string(out)) {
			if !strings.Contains(f, "/") {
				f += "/32"
			}
			if pr, err := netip.ParsePrefix(f); err == nil && pr.Addr().Is4() {
				used = append(used, pr.Masked())
			}
		}
	}
	for try := 0; try < 100; try++ {
		x, _ := rand.Int(rand.Reader, big.NewInt(10*256))
		n := int(x.Int64())
		cand := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 20+n/256, n%256))
		free := true
		for _, u := range used {
			if u.Bits() > 0 && u.Overlaps(cand) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free 10.2x.y.0/24 among the host's routes %v", used)
}

// attach gives n its interface eth0 on the network, with address .(11+i),
// and returns that address.
func (p *privateNet) attach(t *testing.T, n *node.Node, i int) netip.Addr {
	t.Helper()
	addr := p.prefix.Addr()
	for j := 0; j < 11+i; j++ {
		addr = addr.Next()
	}
	veth := p.bridge + "-" + strconv.Itoa(i)
	ip(t, "link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(n.PID()))
	// Normally gone with the node's namespace; this covers a failure
	// between here and the node's teardown.
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", veth).Run() })
	ip(t, "link", "set", veth, "master", p.bridge, "up")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"ip", "addr", "add", netip.PrefixFrom(addr, 24).String(), "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "default", "via", p.host.String()},
	} {
		if _, err := n.Run(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	return addr
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
