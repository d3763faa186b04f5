package kubectl

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The pods of the network scenario: a web server with a hostPort that
// prints its /etc files first, and a host-network server.
const netPods = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: net
spec:
  hostAliases:
  - ip: 192.0.2.7
    hostnames: [db, db.internal]
  dnsConfig:
    searches: [example.test]
    options:
    - name: ndots
      value: "2"
  containers:
  - name: web
    image: %[1]s
    command: [sh, -c, 'cat /etc/hosts /etc/resolv.conf; mkdir -p /tmp/www && echo hello-from-$(hostname) > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']
    ports:
    - containerPort: 8080
      hostPort: 18080
---
apiVersion: v1
kind: Pod
metadata:
  name: hostweb
  namespace: net
spec:
  hostNetwork: true
  containers:
  - name: web
    image: %[1]s
    command: [sh, -c, 'cat /etc/hosts; mkdir -p /tmp/www && echo hello-from-host > /tmp/www/index.html && exec httpd -f -p 18081 -h /tmp/www']
    ports:
    - containerPort: 18081
`

// A client that must reach target by its pod IP: Succeeded only then.
const netClient = `apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: net
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: %s
    command: [wget, -q, -O, -, "http://%s:8080/index.html"]
`

// A pod that asks for the hostPort web holds.
const netConflict = `apiVersion: v1
kind: Pod
metadata:
  name: web2
  namespace: net
spec:
  containers:
  - name: web
    image: %s
    ports:
    - containerPort: 8080
      hostPort: 18080
`

// Three pods for the crash: created while berthd is SIGKILLed.
const netCrash = `apiVersion: v1
kind: Pod
metadata:
  name: crash-%[2]d
  namespace: crash
spec:
  containers:
  - name: c
    image: %[1]s
    command: [sleep, "3600"]
    ports:
    - containerPort: 80
      hostPort: %[3]d
`

// TestPodNetwork is the pod network on a real node with the stock kubectl:
// pod addresses in status and in /etc/hosts, pod-to-pod HTTP by IP, a
// hostPort at the node's address, a host outside the node reached from a
// pod (masqueraded), a host-network pod serving on the node,
// the refusal of a taken hostPort, the kubelet's resolv.conf, and no
// address, veth or iptables rule left behind by deletions, by SIGKILLs of
// berthd in the middle of starts, or by a lease no pod accounts for.
func TestPodNetwork(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	// The node's address that is not loopback (a veth: this kernel may
	// lack the dummy module).
	e.run("ip", "link", "add", "berthtest0", "type", "veth", "peer", "name", "berthtest1")
	e.run("ip", "addr", "add", "192.0.2.10/32", "dev", "berthtest0")
	e.run("ip", "link", "set", "berthtest0", "up")
	e.run("systemctl", "restart", "berthd.service") // berthd reads the node's address at start
	e.waitBerthd()

	k.must("create", "namespace", "net")
	e.write("/var/tmp/net.yaml", fmt.Sprintf(netPods, e.signed.Ref))
	e.apply(k, "/namespaces/net/pods/", "/var/tmp/net.yaml")
	k.must("wait", "--for=condition=Ready", "pod/web", "pod/hostweb", "-n", "net", "--timeout=120s")

	ip := k.must("get", "pod", "web", "-n", "net", "-o", "jsonpath={.status.podIP}")
	if !regexp.MustCompile(`^10\.85\.\d+\.\d+$`).MatchString(ip) {
		t.Fatalf("web's podIP %q is not in the default network 10.85.0.0/16", ip)
	}
	if ips := k.must("get", "pod", "web", "-n", "net", "-o", "jsonpath={.status.podIPs[*].ip}"); ips != ip {
		t.Errorf("podIPs %q, podIP %q", ips, ip)
	}
	if out := k.must("get", "pod", "web", "-n", "net", "-o", "wide"); !regexp.MustCompile(`(?m)^web\s+1/1\s+Running\s+0\s+\S+\s+` + regexp.QuoteMeta(ip) + `\s`).MatchString(out) {
		t.Errorf("get -o wide does not show the pod IP:\n%s", out)
	}
	hostIP := k.must("get", "pod", "web", "-n", "net", "-o", "jsonpath={.status.hostIP}")
	if hip := k.must("get", "pod", "hostweb", "-n", "net", "-o", "jsonpath={.status.podIP}"); hostIP == "" || hip != hostIP {
		t.Errorf("a host-network pod's podIP %q is not the node's hostIP %q", hip, hostIP)
	}

	// /etc/hosts and /etc/resolv.conf as the kubelet writes them.
	webLog := e.journal("web/web", "nameserver")
	for _, want := range []string{
		"# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n",
		ip + "\tweb\n",
		"\n# Entries added by HostAliases.\n192.0.2.7\tdb\tdb.internal\n",
		// The cluster's searches, the node's, then the pod's; the cluster
		// DNS (agent/dns); the pod's ndots over the kubelet's 5.
		"search net.svc.cluster.local svc.cluster.local cluster.local ",
		"example.test\n",
		"nameserver 10.86.0.10\n",
		"options ndots:2",
	} {
		if !strings.Contains(webLog, want) {
			t.Errorf("web's /etc files lack %q:\n%s", want, webLog)
		}
	}
	if hostLog := e.journal("hostweb/web", "Kubernetes-managed"); !strings.Contains(hostLog, "# Kubernetes-managed hosts file (host network).\n") {
		t.Errorf("hostweb's /etc/hosts is not the node's:\n%s", hostLog)
	}
	// dnsPolicy ClusterFirst with the node's cluster DNS: no
	// MissingClusterDNS warning.
	if out := k.must("get", "events", "-n", "net", "--field-selector", "involvedObject.name=web"); strings.Contains(out, "MissingClusterDNS") {
		t.Errorf("MissingClusterDNS with a cluster DNS:\n%s", out)
	}

	// Pod to pod by IP.
	e.write("/var/tmp/client.yaml", fmt.Sprintf(netClient, e.signed.Ref, ip))
	e.apply(k, "/namespaces/net/pods/client", "/var/tmp/client.yaml")
	k.eventually("the client to reach web by its pod IP", func(s string) bool { return s == "Succeeded" },
		"get", "pod", "client", "-n", "net", "-o", "jsonpath={.status.phase}")
	if out := e.journal("client/c", "hello-from"); !strings.Contains(out, "hello-from-web") {
		t.Errorf("the client got %q", out)
	}
	// Out of the node: a host in a namespace of its own behind a veth,
	// with no route back to the pod range, answers a pod only because
	// berthd masquerades the range's traffic (agent/network hostrules.go).
	for _, c := range [][]string{
		{"ip", "netns", "add", "berthtest-out"},
		{"ip", "link", "add", "berthtest-o0", "type", "veth", "peer", "name", "berthtest-o1"},
		{"ip", "link", "set", "berthtest-o1", "netns", "berthtest-out"},
		{"ip", "addr", "add", "198.51.100.1/24", "dev", "berthtest-o0"},
		{"ip", "link", "set", "berthtest-o0", "up"},
		{"ip", "netns", "exec", "berthtest-out", "ip", "addr", "add", "198.51.100.2/24", "dev", "berthtest-o1"},
		{"ip", "netns", "exec", "berthtest-out", "ip", "link", "set", "berthtest-o1", "up"},
		{"sh", "-c", "mkdir -p /var/tmp/out && echo hello-from-outside > /var/tmp/out/index.html"},
		{"systemd-run", "--unit", "berthtest-outside", "ip", "netns", "exec", "berthtest-out", "busybox", "httpd", "-f", "-p", "8081", "-h", "/var/tmp/out"},
	} {
		e.run(c...)
	}
	k.eventually("web to reach a host outside the node", func(s string) bool { return s == "hello-from-outside\n" },
		"exec", "web", "-n", "net", "--", "wget", "-q", "-O", "-", "http://198.51.100.2:8081/index.html")
	e.run("systemctl", "stop", "berthtest-outside")
	e.run("ip", "netns", "del", "berthtest-out") // its veth goes with it

	// The hostPort at the node's address, and the host-network pod.
	if out := e.run("busybox", "wget", "-q", "-O", "-", "http://192.0.2.10:18080/index.html"); out != "hello-from-web\n" {
		t.Errorf("hostPort 18080 at 192.0.2.10: %q", out)
	}
	if out := e.run("busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:18081/index.html"); out != "hello-from-host\n" {
		t.Errorf("host-network pod at 127.0.0.1:18081: %q", out)
	}
	// A hostPort that is taken is refused at admission.
	e.write("/var/tmp/conflict.yaml", fmt.Sprintf(netConflict, e.signed.Ref))
	_, msg, err := k.kubectl("/web2", "apply", "-f", "/var/tmp/conflict.yaml")
	if want := `The Pod "web2" is invalid: spec.containers[0].ports[0].hostPort: Invalid value: 18080: provided port is already allocated to pod net/web (18080/TCP)`; err == nil || !strings.Contains(msg, want) {
		t.Errorf("a taken hostPort: err %v, %s\nwant %s", err, msg, want)
	}

	// SIGKILL: the pod keeps serving, and is adopted as it is.
	e.kill()
	if out := e.run("busybox", "wget", "-q", "-O", "-", "http://192.0.2.10:18080/index.html"); out != "hello-from-web\n" {
		t.Errorf("hostPort after berthd's SIGKILL: %q", out)
	}
	e.waitBerthd()
	if got := k.must("get", "pod", "web", "-n", "net", "-o", "jsonpath={.status.podIP}"); got != ip {
		t.Errorf("after the restart web's podIP is %q, was %q", got, ip)
	}

	// SIGKILLs in the middle of starts: whatever they cut short is
	// finished or taken back.
	k.must("create", "namespace", "crash")
	for i := range 3 {
		e.write(fmt.Sprintf("/var/tmp/crash-%d.yaml", i), fmt.Sprintf(netCrash, e.signed.Ref, i, 19000+i))
		e.apply(k, "/namespaces/crash/pods/", fmt.Sprintf("/var/tmp/crash-%d.yaml", i))
		time.Sleep(time.Duration(i) * 300 * time.Millisecond)
		e.kill()
		e.waitBerthd()
	}
	k.must("wait", "--for=condition=Ready", "pod", "--all", "-n", "crash", "--timeout=120s")
	// One lease per running pod with a network of its own: web and the
	// three crash pods. The finished client gave its address back, as the
	// kubelet's stopped sandbox does; hostweb never had one.
	if l := e.leases(); len(l) != 4 {
		t.Errorf("leases %v, want 4 (web and crash-0..2)", l)
	}
	if got := k.must("get", "pod", "client", "-n", "net", "-o", "jsonpath={.status.podIP}"); got == "" {
		t.Errorf("the finished client's status lost its podIP")
	}

	// A lease no pod accounts for (a crash between host-local's lease and
	// libcni's record) is released at the next start.
	e.run("sh", "-c", "printf 'default_ghost\\r\\neth0' > /run/berth/cni/networks/berth/10.85.255.250")
	e.kill()
	e.waitBerthd()
	// berthd answers before its reconcile (and the GC) ran.
	for deadline := time.Now().Add(time.Minute); slices.Contains(e.leases(), "10.85.255.250"); time.Sleep(300 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the ghost lease survived a restart: %v", e.leases())
		}
	}

	// Everything deleted: nothing of the pods stays in the kernel.
	if _, msg, err := k.kubectl("/api/v1/namespaces/", "delete", "namespace", "net", "crash", "--timeout=180s"); err != nil {
		t.Fatalf("delete namespaces: %v\n%s", err, msg)
	}
	if l := e.leases(); len(l) != 0 {
		t.Errorf("leases left after every pod is gone: %v", l)
	}
	if out := e.run("ip", "-o", "link", "show", "type", "veth"); strings.Count(out, "\n") != 2 { // berthtest0 and berthtest1
		t.Errorf("veths left:\n%s", out)
	}
	for _, table := range []string{"nat", "filter"} {
		rules := e.run("iptables-save", "-t", table)
		if m := regexp.MustCompile(`(?m)^(:CNI-DN-\S+|:CNI-[0-9a-f]{24}\b.*|.*10\.85\.\d+\.\d+/32.*)$`).FindAllString(rules, -1); len(m) > 0 {
			t.Errorf("%s rules of deleted pods left: %q", table, m)
		}
	}
}

// apply applies file, whose objects do not exist yet (a 404 for their
// path is expected).
func (e *env) apply(k *client, allow404, file string) {
	e.t.Helper()
	if _, msg, err := k.kubectl(allow404, "apply", "-f", file); err != nil {
		e.t.Fatalf("apply -f %s: %v\n%s", file, err, msg)
	}
}

// journal returns the journal lines of a container's output (its
// SyslogIdentifier), waiting until one contains want.
func (e *env) journal(ident, want string) string {
	e.t.Helper()
	var out string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		o, _ := e.n.Run(ctx, "journalctl", "-q", "-o", "cat", "-t", ident)
		cancel()
		if out = o; strings.Contains(out, want) {
			return out
		}
	}
	e.t.Fatalf("journal of %s never showed %q:\n%s", ident, want, out)
	return ""
}

// kill SIGKILLs berthd; systemd restarts it (Restart=on-failure).
func (e *env) kill() {
	e.t.Helper()
	e.run("systemctl", "kill", "-s", "KILL", "berthd.service")
}

// waitBerthd waits until berthd answers again after a kill.
func (e *env) waitBerthd() {
	e.t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := e.n.Run(ctx, "berth", "get", "--raw", "/readyz")
		cancel()
		if err == nil {
			return
		}
	}
	e.t.Fatal("berthd did not come back after SIGKILL")
}

// leases are the addresses host-local holds on the default network.
func (e *env) leases() []string {
	e.t.Helper()
	out := e.run("sh", "-c", "ls /run/berth/cni/networks/berth 2>/dev/null || true")
	var l []string
	for _, f := range strings.Fields(out) {
		if regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`).MatchString(f) {
			l = append(l, f)
		}
	}
	return l
}
