package server

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Services as the stock kubectl creates, applies, patches and prints
// them: core/v1's defaults, cluster IPs from the node's range and node
// ports from 30000-32767 as the apiserver allocates them (with its
// errors), what an update leaves out kept, a change of type clearing what
// the old type had, and ValidateService's words.
func TestStockKubectlServices(t *testing.T) {
	k, _ := newKubectl(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inRange := func(ip string) bool {
		a, err := netip.ParseAddr(ip)
		return err == nil && DefaultServiceCIDR.Contains(a) && a != DefaultServiceCIDR.Addr() && a != netip.MustParseAddr("10.86.255.255")
	}

	if out := k.ok("create", "service", "clusterip", "web", "--tcp=80:8080"); out != "service/web created\n" {
		t.Errorf("create service: %q", out)
	}
	got := strings.Fields(k.ok("get", "svc", "web", "-o", "jsonpath={.spec.clusterIP} {.spec.clusterIPs[0]} {.spec.ipFamilies[0]} {.spec.ipFamilyPolicy} "+
		"{.spec.sessionAffinity} {.spec.internalTrafficPolicy} {.spec.ports[0].protocol} {.spec.ports[0].targetPort} {.spec.selector.app} {.spec.type}"))
	if len(got) != 10 || !inRange(got[0]) || got[1] != got[0] || strings.Join(got[2:], " ") != "IPv4 SingleStack None Cluster TCP 8080 web ClusterIP" {
		t.Fatalf("defaults and allocation: %q", got)
	}
	webIP := got[0]
	if out := k.ok("get", "svc", "-o", "wide"); !regexp.MustCompile(`^NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE\s+SELECTOR\nweb\s+ClusterIP\s+` +
		regexp.QuoteMeta(webIP) + `\s+<none>\s+80/TCP\s+\d+s\s+app=web\n$`).MatchString(out) {
		t.Errorf("get svc -o wide:\n%s", out)
	}

	// NodePort: the port asked for, or one from the range; a port held
	// by another Service or out of the range refused in the apiserver's
	// words.
	if out := k.ok("create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"); out != "service/np created\n" {
		t.Errorf("create nodeport: %q", out)
	}
	if got := k.ok("get", "svc", "np", "-o", "jsonpath={.spec.ports[0].nodePort} {.spec.externalTrafficPolicy}"); got != "30080 Cluster" {
		t.Errorf("nodeport: %q", got)
	}
	if out := k.ok("get", "svc", "np"); !regexp.MustCompile(`(?m)^np\s+NodePort\s+10\.86\.\d+\.\d+\s+<none>\s+80:30080/TCP\s+\d+s$`).MatchString(out) {
		t.Errorf("get svc np:\n%s", out)
	}
	if msg := k.fails("", "create", "service", "nodeport", "np2", "--tcp=80:8080", "--node-port=30080"); !strings.Contains(msg,
		`Service "np2" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated`) {
		t.Errorf("a node port taken: %s", msg)
	}
	if msg := k.fails("", "create", "service", "nodeport", "np2", "--tcp=80:8080", "--node-port=40000"); !strings.Contains(msg,
		`Service "np2" is invalid: spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767`) {
		t.Errorf("a node port out of range: %s", msg)
	}
	k.ok("create", "service", "nodeport", "np3", "--tcp=81:8080")
	if got := k.ok("get", "svc", "np3", "-o", "jsonpath={.spec.ports[0].nodePort}"); got < "30000" || got > "32767" || got == "30080" || len(got) != 5 {
		t.Errorf("allocated node port: %q", got)
	}

	// A cluster IP asked for: held by another Service, or outside the range.
	if msg := k.fails("", "create", "service", "clusterip", "dup", "--tcp=80", "--clusterip="+webIP); !strings.Contains(msg,
		`Service "dup" is invalid: spec.clusterIPs: Invalid value: ["`+webIP+`"]: failed to allocate IP `+webIP+`: provided IP is already allocated`) {
		t.Errorf("a cluster IP taken: %s", msg)
	}
	if msg := k.fails("", "create", "service", "clusterip", "dup", "--tcp=80", "--clusterip=192.168.1.1"); !strings.Contains(msg,
		`spec.clusterIPs: Invalid value: ["192.168.1.1"]: failed to allocate IP 192.168.1.1: the provided IP (192.168.1.1) is not in the valid range. The range of valid IPs is 10.86.0.0/16`) {
		t.Errorf("a cluster IP out of range: %s", msg)
	}
	if out := k.ok("create", "service", "clusterip", "fixed", "--tcp=80", "--clusterip=10.86.200.7"); out != "service/fixed created\n" {
		t.Errorf("a free cluster IP asked for: %q", out)
	}
	// Headless and ExternalName: no address.
	k.ok("create", "service", "clusterip", "hl", "--clusterip=None")
	k.ok("create", "service", "externalname", "ext", "--external-name=db.example.com")
	out := k.ok("get", "svc", "hl", "ext")
	if !regexp.MustCompile(`(?m)^hl\s+ClusterIP\s+None\s+<none>\s+<none>\s+\d+s$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^ext\s+ExternalName\s+<none>\s+db\.example\.com\s+<none>\s+\d+s$`).MatchString(out) {
		t.Errorf("headless and ExternalName:\n%s", out)
	}

	// apply without clusterIP, then again with another port: the address
	// stays; replace without it keeps it too (patchAllocatedValues).
	manifest := `apiVersion: v1
kind: Service
metadata: {name: app}
spec:
  type: NodePort
  selector: {app: app}
  ports: [{name: http, port: %s, targetPort: http}]
`
	if _, msg, err := k.run("services/app", "apply", "-f", write("app.yaml", strings.Replace(manifest, "%s", "80", 1))); err != nil {
		t.Fatalf("apply: %v %s", err, msg)
	}
	first := k.ok("get", "svc", "app", "-o", "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}")
	k.ok("apply", "-f", write("app.yaml", strings.Replace(manifest, "%s", "8080", 1)))
	// The old port is gone (its merge key, a number, matched), and the
	// new port has a node port of its own, as upstream finds node ports
	// by port number.
	second := k.ok("get", "svc", "app", "-o", "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}")
	if got := k.ok("get", "svc", "app", "-o", "jsonpath={.spec.ports[*].port}"); got != "8080" || strings.Fields(second)[0] != strings.Fields(first)[0] {
		t.Errorf("apply of another port: ports %q, %q, was %q", got, second, first)
	}
	k.ok("replace", "-f", write("app.yaml", strings.Replace(manifest, "%s", "8080", 1)))
	if got := k.ok("get", "svc", "app", "-o", "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort} {.spec.ports[0].targetPort}"); got != second+" http" {
		t.Errorf("replace without clusterIP and nodePort: %q, was %q", got, second)
	}
	if msg := k.fails("", "patch", "svc", "web", "-p", `{"spec":{"clusterIP":"10.86.1.2"}}`); !strings.Contains(msg,
		`The Service "web" is invalid: spec.clusterIPs[0]: Invalid value: ["10.86.1.2"]: may not change once set`) {
		t.Errorf("a cluster IP changed: %s", msg)
	}
	// NodePort to ClusterIP: the node port and externalTrafficPolicy go;
	// the port is free again.
	k.ok("patch", "svc", "np", "-p", `{"spec":{"type":"ClusterIP"}}`)
	if got := k.ok("get", "svc", "np", "-o", "jsonpath={.spec.type} {.spec.ports[0].nodePort}|{.spec.externalTrafficPolicy}|"); got != "ClusterIP ||" {
		t.Errorf("NodePort to ClusterIP: %q", got)
	}
	k.ok("create", "service", "nodeport", "np2", "--tcp=80:8080", "--node-port=30080")
	// ClusterIP to ExternalName: the address goes.
	k.ok("patch", "svc", "fixed", "-p", `{"spec":{"type":"ExternalName","externalName":"x.example.com"}}`)
	if got := k.ok("get", "svc", "fixed", "-o", "jsonpath={.spec.clusterIP}|{.spec.ipFamilies}"); got != "|" {
		t.Errorf("to ExternalName: %q", got)
	}

	// ValidateService's words.
	for _, tc := range []struct{ manifest, want string }{
		{"spec: {selector: {a: b}}", `The Service "bad" is invalid: spec.ports: Required value`},
		{"spec: {type: Foo, ports: [{port: 80}]}", `spec.type: Unsupported value: "Foo": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"`},
		{"spec: {ports: [{port: 80}, {port: 81}]}", `spec.ports[0].name: Required value`},
		{"spec: {ports: [{port: 70000}]}", `spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive`},
		{"spec: {ports: [{port: 80, protocol: ICMP}]}", `spec.ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"`},
		{"spec: {ports: [{port: 80, nodePort: 30001}]}", "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"},
		{"spec: {type: NodePort, clusterIP: None, ports: [{port: 80}]}", `spec.clusterIPs[0]: Invalid value: "None": may not be set to 'None' for NodePort services`},
		{"spec: {type: ExternalName}", `spec.externalName: Required value`},
		{"spec: {ports: [{port: 80, targetPort: no_such}]}", `spec.ports[0].targetPort: Invalid value: "no_such"`},
		{"spec: {ports: [{port: 80}], externalTrafficPolicy: Local}", `spec.externalTrafficPolicy: Invalid value: "Local": may only be set for externally-accessible services`},
	} {
		msg := k.fails("", "create", "-f", write("bad.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\n"+tc.manifest+"\n"))
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %s", tc.manifest, msg)
		}
	}

	// Endpoints and EndpointSlices are served (the controllers fill them).
	if out := k.ok("api-resources", "--api-group=discovery.k8s.io", "--no-headers"); !regexp.MustCompile(`^endpointslices\s+discovery.k8s.io/v1\s+true\s+EndpointSlice\n$`).MatchString(out) {
		t.Errorf("api-resources discovery.k8s.io:\n%s", out)
	}
	k.ok("get", "endpoints,endpointslices")
}
