package kubectl

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/nodeberthd"
)

// udpPod is a pod answering every UDP datagram on 5353 with its colour,
// with berth-udp from the node's /srv/udp (a hostPath: busybox has no UDP
// server).
func udpPod(image, colour string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[2]s, namespace: udp, labels: {app: udp, colour: %[2]s}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: udp
    image: %[1]s
    command: [/opt/udp/berth-udp, -serve, ":5353", -answer, %[2]s]
    ports: [{name: dns, containerPort: 5353, protocol: UDP}]
    volumeMounts: [{name: bin, mountPath: /opt/udp, readOnly: true}]
  volumes:
  - name: bin
    hostPath: {path: /srv/udp, type: Directory}
`, image, colour)
}

const udpService = `apiVersion: v1
kind: Service
metadata: {name: dns, namespace: udp}
spec:
  type: NodePort
  selector: {app: udp, colour: blue}
  ports: [{name: dns, port: 53, targetPort: dns, protocol: UDP, nodePort: 30053}]
`

// TestServiceUDP: a UDP Service's flows follow its endpoints. A client
// that keeps asking from one source port (one conntrack flow, renewed by
// every datagram, as a resolver's or a statsd sender's) is answered by
// blue; once the selector is patched to green, the same flow is answered
// by green, to the cluster IP and to the node port, and by blue again
// after the patch back: the proxier deleted the flows whose backend left
// the Service (without that, conntrack keeps sending the flow to blue for
// as long as it keeps coming).
func TestServiceUDP(t *testing.T) {
	t.Parallel() // a node of its own
	n, signed := nodeberthd.Setup(t, "udp", "https:\n  enabled: true\nvolumes:\n  hostPathPrefixes: [/srv/udp]\n")
	e := &env{t: t, n: n, signed: signed}
	e.run("berth", "kubeconfig", "-o", kubeconfig)
	k := e.stock()
	build := exec.Command("go", "build", "-o", e.n.HostPath("/srv/udp/berth-udp"), "../../cmd/berth-udp")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build berth-udp: %v\n%s", err, out)
	}
	k.must("create", "namespace", "udp")
	e.write("/var/tmp/blue.yaml", udpPod(e.signed.Ref, "blue"))
	e.write("/var/tmp/green.yaml", udpPod(e.signed.Ref, "green"))
	e.write("/var/tmp/dns.yaml", udpService)
	e.apply(k, "/namespaces/udp/", "/var/tmp/dns.yaml")
	e.apply(k, "/namespaces/udp/", "/var/tmp/blue.yaml")
	e.apply(k, "/namespaces/udp/", "/var/tmp/green.yaml")
	k.must("wait", "pod", "--all", "-n", "udp", "--for=condition=Ready", "--timeout=2m")
	blueIP := k.must("get", "pod", "blue", "-n", "udp", "-o", "jsonpath={.status.podIP}")
	k.eventually("blue the endpoint", func(s string) bool { return s == blueIP },
		"get", "endpoints", "dns", "-n", "udp", "-o", "jsonpath={.subsets[*].addresses[*].ip}")
	cip := k.must("get", "svc", "dns", "-n", "udp", "-o", "jsonpath={.spec.clusterIP}")
	e.run("ip", "link", "add", "berthtest-udp", "type", "veth", "peer", "name", "berthtest-udp1")
	e.run("ip", "addr", "add", "192.0.2.53/32", "dev", "berthtest-udp")
	e.run("ip", "link", "set", "berthtest-udp", "up")

	// ask asks target from a fixed source port: "" if nothing answered.
	ask := func(target, from string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, _ := e.n.Run(ctx, "/srv/udp/berth-udp", "-ask", target, "-from", from)
		return strings.TrimSpace(out)
	}
	flows := map[string]string{cip + ":53": "40000", "192.0.2.53:30053": "40001"}
	// until asks both flows, again and again (each datagram renews the
	// flow), until both are answered by want.
	until := func(what, want string) {
		t.Helper()
		var got map[string]string
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			got = map[string]string{}
			for target, from := range flows {
				got[target] = ask(target, from)
			}
			if got[cip+":53"] == want && got["192.0.2.53:30053"] == want {
				return
			}
		}
		t.Fatalf("%s: the flows from fixed ports answered %v, want %s from each", what, got, want)
	}
	until("before the switch", "blue")
	for _, colour := range []string{"green", "blue"} {
		k.must("patch", "service", "dns", "-n", "udp", "-p", `{"spec":{"selector":{"colour":"`+colour+`"}}}`)
		until("after the switch to "+colour, colour)
	}
}
