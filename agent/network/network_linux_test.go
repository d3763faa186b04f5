package network

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/test/testenv"
	"github.com/containernetworking/cni/libcni"
	"github.com/hashicorp/go-hclog"
)

// inNode runs fn on a thread of its own in a fresh network namespace (the
// "node": the bridge and iptables rules the plugins make land there, and
// go with it), with plugins exec'd from that thread. The thread is never
// unlocked, so Go retires it when fn returns.
func inNode(t *testing.T, fn func()) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/portmap", "/usr/lib/cni/firewall", "/usr/lib/cni/host-local"} {
		_, err := os.Stat(p)
		testenv.Require(t, err == nil, "needs Debian's containernetworking-plugins ("+p+")")
	}
	_, err := exec.LookPath("iptables-save")
	testenv.Require(t, err == nil, "needs iptables")
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		fn()
	}()
	<-done
}

// podNetns makes a network namespace held by a thread of its own until
// the test ends, and returns its path.
func podNetns(t *testing.T) string {
	t.Helper()
	p, stop := podNetnsUntil(t)
	t.Cleanup(stop)
	return p
}

// podNetnsUntil is podNetns whose namespace goes when stop is called (its
// thread exits; nothing else holds it).
func podNetnsUntil(t *testing.T) (string, func()) {
	t.Helper()
	path, stop := make(chan string), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare pod netns: %v", err)
			close(path)
			return
		}
		path <- fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		<-stop
	}()
	p := <-path
	return p, sync.OnceFunc(func() { close(stop) })
}

// run runs a command on the calling (node) thread.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func openTestNetwork(t *testing.T) (*Network, string) {
	t.Helper()
	return openNetworkWith(t, nil)
}

// earlierDefault is the default network berthd wrote before it
// masqueraded for the range itself: the bridge plugin's ipMasq and the
// firewall plugin, per pod. Nodes keep the file, and berthd must still
// clean up after it.
func earlierDefault(leaseDir string) []byte {
	var conf map[string]any
	if err := json.Unmarshal(DefaultConfList(leaseDir), &conf); err != nil {
		panic(err)
	}
	plugins := conf["plugins"].([]any)
	plugins[0].(map[string]any)["ipMasq"] = true
	conf["plugins"] = append(plugins, map[string]any{"type": "firewall"})
	b, _ := json.Marshal(conf)
	return b
}

// openNetworkWith opens a network of conflist (nil: berth's default,
// written by Open) in a temporary directory.
func openNetworkWith(t *testing.T, conflist func(leaseDir string) []byte) (*Network, string) {
	t.Helper()
	dir := t.TempDir()
	if conflist != nil {
		if err := os.MkdirAll(filepath.Join(dir, "conf"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "conf", defaultFile), conflist(filepath.Join(dir, "run", "networks")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n, err := Open(context.Background(), Config{ConfDir: filepath.Join(dir, "conf"), RunDir: filepath.Join(dir, "run"), Log: hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: os.Stderr})})
	if err != nil {
		t.Fatal(err)
	}
	return n, dir
}

// A pod attached gets an address of the default range, a hostPort chain
// and forwarding rules; detached, none of them is left.
func TestAttachDetach(t *testing.T) {
	inNode(t, func() {
		n, _ := openTestNetwork(t)
		if n.Name() != DefaultName || !strings.HasSuffix(n.Path(), defaultFile) {
			t.Errorf("default network %s at %s", n.Name(), n.Path())
		}
		ctx := context.Background()
		ips, err := n.Attach(ctx, "shop_web", podNetns(t), []PortMapping{{HostPort: 18080, ContainerPort: 8080, Protocol: "tcp"}})
		if err != nil {
			t.Fatal(err)
		}
		ip := ips[0].String()
		if !strings.HasPrefix(ip, "10.85.") {
			t.Errorf("address %s outside %s", ip, DefaultSubnet)
		}
		if l, _ := n.Leases(); len(l) != 1 || l[0] != ips[0] {
			t.Errorf("leases %v", l)
		}
		if nat := run(t, "iptables-save", "-t", "nat"); !regexp.MustCompile(`--dport 18080 .*DNAT --to-destination ` + regexp.QuoteMeta(ip) + `:8080`).MatchString(nat) {
			t.Errorf("no DNAT for the hostPort:\n%s", nat)
		}
		// The range's masquerading and forwarding are berthd's, once
		// (hostrules.go): no chain or rule of the pod's own.
		if f := run(t, "iptables-save", "-t", "filter"); !strings.Contains(f, `-A FORWARD -s 10.85.0.0/16 -m comment --comment "`+hostRuleComment+`" -j ACCEPT`) ||
			!strings.Contains(f, `-A FORWARD -d 10.85.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED`) || strings.Contains(f, ip+"/32") {
			t.Errorf("forwarding rules:\n%s", f)
		}
		if nat := run(t, "iptables-save", "-t", "nat"); strings.Contains(nat, "-A POSTROUTING -s "+ip+"/32") {
			t.Errorf("the pod's own masquerading:\n%s", nat)
		}
		if tbl := run(t, "nft", "list", "table", "ip", PodTable); !strings.Contains(tbl, "ip saddr 10.85.0.0/16 ip daddr != 10.85.0.0/16 ip daddr != 224.0.0.0/4 masquerade") {
			t.Errorf("table %s:\n%s", PodTable, tbl)
		}
		// Opening again (a restart) adds nothing twice.
		if _, err := Open(ctx, Config{ConfDir: filepath.Dir(n.Path()), RunDir: filepath.Join(filepath.Dir(filepath.Dir(n.Path())), "run")}); err != nil {
			t.Fatal(err)
		}
		if f := run(t, "iptables-save", "-t", "filter"); strings.Count(f, hostRuleComment) != 2 {
			t.Errorf("after a second Open:\n%s", f)
		}
		if tbl := run(t, "nft", "list", "table", "ip", PodTable); strings.Count(tbl, "masquerade") != 1 {
			t.Errorf("table %s after a second Open:\n%s", PodTable, tbl)
		}
		// An uninstall takes them away.
		if err := RemoveHostRules(ctx); err != nil {
			t.Fatal(err)
		}
		if f := run(t, "iptables-save", "-t", "filter"); strings.Contains(f, hostRuleComment) {
			t.Errorf("after RemoveHostRules:\n%s", f)
		}
		if out, err := exec.Command("nft", "list", "table", "ip", PodTable).CombinedOutput(); err == nil {
			t.Errorf("table %s after RemoveHostRules:\n%s", PodTable, out)
		}
		if err := n.Detach(ctx, "shop_web", ""); err != nil {
			t.Fatal(err)
		}
		assertGone(t, n, ip)
		// Detaching again is no error.
		if err := n.Detach(ctx, "shop_web", ""); err != nil {
			t.Errorf("second detach: %v", err)
		}
	})
}

// GC detaches what no pod accounts for, also an attachment whose ADD was
// cut short before libcni recorded it (only host-local's lease says it
// exists), and keeps the rest.
func TestGC(t *testing.T) {
	inNode(t, func() {
		// The earlier default: its ipMasq is what a detach must clean
		// up when the pod's namespace is gone.
		n, dir := openNetworkWith(t, earlierDefault)
		ctx := context.Background()
		keep, err := n.Attach(ctx, "a_keep", podNetns(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		lost, err := n.Attach(ctx, "a_lost", podNetns(t), []PortMapping{{HostPort: 18081, ContainerPort: 80, Protocol: "tcp"}})
		if err != nil {
			t.Fatal(err)
		}
		cut, err := n.Attach(ctx, "a_cut", podNetns(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		// A pod whose namespace is gone: the bridge plugin cannot learn
		// which addresses it masqueraded.
		goneNS, stop := podNetnsUntil(t)
		gone, err := n.Attach(ctx, "a_gone", goneNS, nil)
		if err != nil {
			t.Fatal(err)
		}
		stop()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(goneNS); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the namespace at %s did not go", goneNS)
			}
		}
		// The record of a_cut never written: berthd killed inside ADD.
		if err := os.Remove(filepath.Join(dir, "run", "cache", "results", DefaultName+"-a_cut-eth0")); err != nil {
			t.Fatal(err)
		}
		if err := n.GC(ctx, func(id string) bool { return id == "a_keep" }); err != nil {
			t.Fatal(err)
		}
		assertGone(t, n, lost[0].String())
		assertGone(t, n, cut[0].String())
		assertGone(t, n, gone[0].String())
		if nat := run(t, "iptables-save", "-t", "nat"); strings.Contains(nat, `id: \"a_gone\"`) || strings.Contains(nat, `id: \"a_cut\"`) {
			t.Errorf("masquerading of detached pods left:\n%s", nat)
		}
		if l, _ := n.Leases(); len(l) != 1 || l[0] != keep[0] {
			t.Errorf("leases after GC %v, want only %s", l, keep[0])
		}
	})
}

// assertGone checks that nothing of the attachment of ip is left.
func assertGone(t *testing.T, n *Network, ip string) {
	t.Helper()
	l, err := n.Leases()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range l {
		if a.String() == ip {
			t.Errorf("lease of %s left", ip)
		}
	}
	for _, table := range []string{"nat", "filter"} {
		if rules := run(t, "iptables-save", "-t", table); strings.Contains(rules, ip+"/32") || strings.Contains(rules, ip+":") {
			t.Errorf("%s rules of %s left:\n%s", table, ip, rules)
		}
	}
}

func TestSplitRule(t *testing.T) {
	got, err := splitRule(`-s 10.85.0.2/32 -m comment --comment "name: \"berth\" id: \"a_b\"" -j CNI-x`)
	want := []string{"-s", "10.85.0.2/32", "-m", "comment", "--comment", `name: "berth" id: "a_b"`, "-j", "CNI-x"}
	if err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := splitRule(`--comment "open`); err == nil {
		t.Error("unbalanced quote accepted")
	}
}

// Berth's default is recognised whatever lease directory it names; the
// earlier default and an operator's change are not berth's.
func TestIsDefault(t *testing.T) {
	for _, c := range []struct {
		raw  []byte
		want bool
	}{
		{DefaultConfList("/run/berth/cni/networks"), true},
		{DefaultConfList("/elsewhere/networks"), true},
		{earlierDefault("/run/berth/cni/networks"), false},
		{[]byte(strings.Replace(string(DefaultConfList("/x")), "10.85.0.0/16", "10.99.0.0/16", 1)), false},
	} {
		list, err := libcni.ConfListFromBytes(c.raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := isDefault(list); got != c.want {
			t.Errorf("isDefault(%s) = %v", c.raw, got)
		}
	}
}
