package kubectl

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const serviceYAML = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: svc}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 20
      containers:
      - name: app
        image: %[1]s
        command: [sh, -c, 'touch /tmp/ready; exec sleep 3600']
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          exec: {command: [test, -f, /tmp/ready]}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: svc, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`

// sliceJSONPath prints each EndpointSlice: name|addressType|managed-by|
// owner|ports|address:pod:ready/serving/terminating ...
const sliceJSONPath = `jsonpath={range .items[*]}{.metadata.name}|{.addressType}|{.metadata.labels.endpointslice\.kubernetes\.io/managed-by}|{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}|{range .ports[*]}{.name}={.port}{end}|{range .endpoints[*]}{.addresses[0]}:{.targetRef.name}:{.conditions.ready}/{.conditions.serving}/{.conditions.terminating} {end}{"\n"}{end}`

// TestServiceEndpoints: the EndpointSlice and Endpoints controllers on a
// real node with the stock kubectl: a Service's pods, by their addresses
// and their named port, in its EndpointSlice and Endpoints; a pod that
// stops being ready moves to the not-ready addresses (ready=false,
// serving=false in the slice); a pod being deleted stays in the slice as
// terminating (still serving) for its grace period and leaves the
// Endpoints at once; its replacement joins once ready.
func TestServiceEndpoints(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	k.must("create", "namespace", "svc")
	e.write("/var/tmp/svc.yaml", fmt.Sprintf(serviceYAML, e.signed.Ref))
	e.apply(k, "/namespaces/svc/", "/var/tmp/svc.yaml")
	if out, msg, err := k.kubectl("", "rollout", "status", "deployment/web", "-n", "svc", "--timeout=2m"); err != nil || !strings.Contains(out, "successfully rolled out") {
		t.Fatalf("rollout status: %v\n%s%s", err, out, msg)
	}
	type podIP struct{ name, ip string }
	podsByIP := func() []podIP {
		var out []podIP
		for _, l := range strings.Split(strings.TrimSpace(k.must("get", "pods", "-n", "svc", "-l", "app=web", "-o", `jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}`)), "\n") {
			f := strings.Fields(l)
			if len(f) == 2 && f[1] != "" {
				out = append(out, podIP{f[0], f[1]})
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ip < out[j].ip })
		return out
	}
	ps := podsByIP()
	if len(ps) != 2 {
		t.Fatalf("pods %v", ps)
	}
	a, b := ps[0], ps[1]
	both := a.ip + ":8080," + b.ip + ":8080"
	k.eventually("endpoints of both pods", func(s string) bool {
		return regexp.MustCompile(`(?m)^web\s+` + regexp.QuoteMeta(both) + `\s+\S+$`).MatchString(s)
	}, "get", "endpoints", "web", "-n", "svc")
	if got := k.must("get", "endpoints", "web", "-n", "svc", "-o", `jsonpath={.metadata.labels.tier} {.subsets[0].ports[0].name}/{.subsets[0].ports[0].port}/{.subsets[0].ports[0].protocol} {.subsets[0].addresses[*].targetRef.name}`); got != "front http/8080/TCP "+a.name+" "+b.name {
		t.Errorf("endpoints: %q", got)
	}
	sliceArgs := []string{"get", "endpointslices", "-n", "svc", "-l", "kubernetes.io/service-name=web", "-o", sliceJSONPath}
	k.eventually("slice of both", func(s string) bool {
		// One slice; its endpoints in no particular order.
		return strings.Count(s, "\n") == 1 && strings.Contains(s, "|IPv4|endpointslice-controller.k8s.io|Service/web|http=8080|") &&
			strings.Contains(s, fmt.Sprintf("%s:%s:true/true/false ", a.ip, a.name)) && strings.Contains(s, fmt.Sprintf("%s:%s:true/true/false ", b.ip, b.name))
	}, sliceArgs...)
	if out := k.must("get", "endpointslices", "-n", "svc"); !regexp.MustCompile(`(?m)^web-[a-z0-9]{5}\s+IPv4\s+8080\s+` + `(` + regexp.QuoteMeta(a.ip+","+b.ip) + `|` + regexp.QuoteMeta(b.ip+","+a.ip) + `)\s+\S+$`).MatchString(out) {
		t.Errorf("get endpointslices:\n%s", out)
	}

	// a is no longer ready: a not-ready address, not serving.
	k.must("exec", a.name, "-n", "svc", "--", "rm", "/tmp/ready")
	k.eventually("a not ready", func(s string) bool { return s == b.ip+" "+a.ip },
		"get", "endpoints", "web", "-n", "svc", "-o", `jsonpath={.subsets[0].addresses[*].ip} {.subsets[0].notReadyAddresses[*].ip}`)
	if s := k.must(sliceArgs...); !strings.Contains(s, a.ip+":"+a.name+":false/false/false") {
		t.Errorf("slice with a not ready: %s", s)
	}
	k.must("exec", a.name, "-n", "svc", "--", "touch", "/tmp/ready")

	// b deleted: terminating in the slice (still serving, sleep ignores
	// SIGTERM for its 20 s grace), gone from the Endpoints; its
	// replacement joins both once ready.
	k.must("delete", "pod", b.name, "-n", "svc", "--wait=false")
	k.eventually("b terminating", contains(b.ip+":"+b.name+":false/true/true"), sliceArgs...)
	if got := k.must("get", "endpoints", "web", "-n", "svc", "-o", `jsonpath={.subsets[*].addresses[*].targetRef.name} {.subsets[*].notReadyAddresses[*].targetRef.name}`); strings.Contains(got, b.name) {
		t.Errorf("a terminating pod in the Endpoints: %q", got)
	}
	k.eventually("replacement ready", func(s string) bool {
		names := strings.Fields(s)
		return len(names) == 2 && names[0] != b.name && names[1] != b.name
	}, "get", "endpoints", "web", "-n", "svc", "-o", `jsonpath={.subsets[0].addresses[*].targetRef.name}`)

	// The Service deleted: its slices and Endpoints go with it.
	if _, msg, err := k.kubectl("services/web", "delete", "service", "web", "-n", "svc"); err != nil {
		t.Fatalf("delete service: %v %s", err, msg)
	}
	k.eventually("slices gone", func(s string) bool { return strings.TrimSpace(s) == "" },
		"get", "endpointslices,endpoints", "-n", "svc", "-o", "name")
}
