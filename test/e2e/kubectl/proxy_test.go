package kubectl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// colourYAML is a Deployment of httpd pods answering "<colour>-<pod>",
// ready once httpd answers.
func colourYAML(image, colour string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[2]s, namespace: fwd}
spec:
  replicas: 2
  selector: {matchLabels: {app: web, version: %[2]s}}
  template:
    metadata: {labels: {app: web, version: %[2]s}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: %[1]s
        command: [sh, -c, 'mkdir -p /tmp/www && echo %[2]s-$(hostname) > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /index.html, port: http}
          periodSeconds: 1
`, image, colour)
}

const fwdServices = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: fwd}
spec:
  type: NodePort
  selector: {app: web, version: blue}
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: greens, namespace: fwd}
spec:
  clusterIP: None
  selector: {app: web, version: green}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: fwd}
spec:
  selector: {app: web, version: blue}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: fwd}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
`

// TestServiceForwarding: Services forwarded by the kernel on a real node
// (nftables, agent/proxy): a cluster IP reached from the node and from a
// pod (its own Service too: hairpin), spread over the ready endpoints; a
// node port on the node's address; ClientIP session affinity keeping a
// client on one pod; a Service without endpoints refusing
// at once; a selector patch moving new connections from blue to green
// and back; forwarding going on while berthd is stopped.
func TestServiceForwarding(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	k.must("create", "namespace", "fwd")
	e.write("/var/tmp/blue.yaml", colourYAML(e.signed.Ref, "blue"))
	e.write("/var/tmp/green.yaml", colourYAML(e.signed.Ref, "green"))
	e.write("/var/tmp/fwd-svc.yaml", fwdServices)
	k.must("create", "-f", "/var/tmp/blue.yaml")
	k.must("create", "-f", "/var/tmp/green.yaml")
	k.must("create", "-f", "/var/tmp/fwd-svc.yaml")
	for _, d := range []string{"blue", "green"} {
		if out, msg, err := k.kubectl("", "rollout", "status", "deployment/"+d, "-n", "fwd", "--timeout=2m"); err != nil || !strings.Contains(out, "successfully rolled out") {
			t.Fatalf("rollout status %s: %v\n%s%s", d, err, out, msg)
		}
	}
	cip := k.must("get", "svc", "web", "-n", "fwd", "-o", "jsonpath={.spec.clusterIP}")
	get := func(url string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := e.n.Run(ctx, "busybox", "wget", "-q", "-O", "-", url)
		return strings.TrimSpace(out), err
	}
	// answers asks url n times and returns who answered.
	answers := func(url string, n int) map[string]int {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			out, err := get(url)
			if err != nil {
				got["error: "+err.Error()+" "+out]++
				continue
			}
			got[out]++
		}
		return got
	}
	onlyColour := func(got map[string]int, colour string, pods int) bool {
		for who := range got {
			if !strings.HasPrefix(who, colour+"-") {
				return false
			}
		}
		return len(got) == pods
	}
	// waitFor waits until url is answered by as many pods of colour, and
	// only by them.
	waitFor := func(what, url, colour string, pods int) {
		t.Helper()
		var got map[string]int
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
			if got = answers(url, 16); onlyColour(got, colour, pods) {
				return
			}
		}
		t.Fatalf("%s: answers %v, want %d %s pods only", what, got, pods, colour)
	}

	// The cluster IP from the node: both blue pods answer.
	waitFor("cluster IP", "http://"+cip+"/index.html", "blue", 2)
	// ClientIP affinity: the same two pods behind it, one answers them all.
	scip := k.must("get", "svc", "sticky", "-n", "fwd", "-o", "jsonpath={.spec.clusterIP}")
	waitFor("affinity's endpoints", "http://"+scip+"/index.html", "blue", 1)
	if got := answers("http://"+scip+"/index.html", 16); len(got) != 1 {
		t.Errorf("sessionAffinity ClientIP: answered by %v, want one pod", got)
	}
	// From a green pod, and from a blue pod to its own Service (hairpin).
	for _, colour := range []string{"green", "blue"} {
		pod := strings.Fields(k.must("get", "pods", "-n", "fwd", "-l", "version="+colour, "-o", "jsonpath={.items[*].metadata.name}"))[0]
		if out := k.must("exec", pod, "-n", "fwd", "--", "wget", "-q", "-O", "-", "http://"+cip+"/index.html"); !strings.HasPrefix(out, "blue-") {
			t.Errorf("from %s: %q", pod, out)
		}
	}
	// Names (agent/dns): the short name through the pod's search path, the
	// full one, and a headless Service's pods.
	green := strings.Fields(k.must("get", "pods", "-n", "fwd", "-l", "version=green", "-o", "jsonpath={.items[*].metadata.name}"))[0]
	for _, name := range []string{"web", "web.fwd", "web.fwd.svc.cluster.local"} {
		if out := k.must("exec", green, "-n", "fwd", "--", "wget", "-q", "-O", "-", "http://"+name+"/index.html"); !strings.HasPrefix(out, "blue-") {
			t.Errorf("http://%s from %s: %q", name, green, out)
		}
	}
	greenIPs := strings.Fields(k.must("get", "pods", "-n", "fwd", "-l", "version=green", "-o", "jsonpath={.items[*].status.podIP}"))
	k.eventually("the headless Service's pods", func(s string) bool {
		return len(greenIPs) == 2 && strings.Contains(s, "Address: "+greenIPs[0]) && strings.Contains(s, "Address: "+greenIPs[1])
	}, "exec", green, "-n", "fwd", "--", "nslookup", "greens.fwd.svc.cluster.local")
	if out, _, err := k.kubectl("", "exec", green, "-n", "fwd", "--", "nslookup", "nope.fwd.svc.cluster.local"); err == nil {
		t.Errorf("a name that does not exist resolved: %s", out)
	}

	// The node port on the node's own address.
	e.run("ip", "link", "add", "berthtest-np", "type", "veth", "peer", "name", "berthtest-np1")
	e.run("ip", "addr", "add", "192.0.2.20/32", "dev", "berthtest-np")
	e.run("ip", "link", "set", "berthtest-np", "up")
	waitFor("node port", "http://192.0.2.20:30080/index.html", "blue", 2)
	// No endpoints: refused at once (reject), not a timeout.
	ecip := k.must("get", "svc", "empty", "-n", "fwd", "-o", "jsonpath={.spec.clusterIP}")
	start := time.Now()
	if out, err := get("http://" + ecip + "/"); err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("a Service without endpoints: %q %v after %v, want refused at once\n%s", out, err, time.Since(start), e.run("nft", "list", "table", "ip", "berth"))
	}

	// Blue to green, back, and to green again: each patch moves every
	// new connection.
	for _, colour := range []string{"green", "blue", "green"} {
		k.must("patch", "service", "web", "-n", "fwd", "-p", `{"spec":{"selector":{"version":"`+colour+`"}}}`)
		waitFor("after the switch to "+colour, "http://"+cip+"/index.html", colour, 2)
	}

	// The rules are the kernel's: they forward with berthd stopped.
	if out := e.run("nft", "list", "table", "ip", "berth"); !strings.Contains(out, "fwd/web/tcp/http") || !strings.Contains(out, cip+" . tcp . 80 : goto svc-") {
		t.Errorf("nft table:\n%s", out)
	}
	e.run("systemctl", "stop", "berthd.service")
	for who := range answers("http://"+cip+"/index.html", 8) {
		if !strings.HasPrefix(who, "green-") {
			t.Errorf("with berthd stopped: %s", who)
		}
	}
	e.run("systemctl", "start", "berthd.service")
	e.waitBerthd()
}
