package kubectl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// versionYAML is a 3-replica Deployment of httpd pods of one version,
// answering "v<version>-<pod>".
func versionYAML(image, name, version string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[2]s, namespace: bg}
spec:
  replicas: 3
  selector: {matchLabels: {app: shop, version: "%[3]s"}}
  template:
    metadata: {labels: {app: shop, version: "%[3]s"}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: httpd
        image: %[1]s
        command: [sh, -c, 'mkdir -p /tmp/www && echo v%[3]s-$(hostname) > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /index.html, port: http}
          periodSeconds: 1
`, image, name, version)
}

const bgService = `apiVersion: v1
kind: Service
metadata: {name: shop, namespace: bg}
spec:
  type: NodePort
  selector: {app: shop, version: "1.0"}
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30090}]
`

type loadReport struct {
	Requests, Failures int
	Errors             []string
	ByURL              map[string]int
	Answers            map[string]struct {
		Count           int
		FirstMS, LastMS int64
	}
	Seconds float64
}

// TestBlueGreen is issue 12's flow under continuous load from inside the
// node (test/cmd/berth-load: kept-alive and new connections, to the
// cluster IP and to the node port): a NodePort Service selecting version
// 1.0 and its Deployment; a Deployment of 2.0 beside it; the selector
// patched to 2.0, back to 1.0, to 2.0 again; the 1.0 Deployment deleted.
// Not one request fails, both versions answered, each in its windows.
func TestBlueGreen(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	build := exec.Command("go", "build", "-o", e.n.HostPath("/var/tmp/berth-load"), "../../cmd/berth-load")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build berth-load: %v\n%s", err, out)
	}
	k.must("create", "namespace", "bg")
	e.write("/var/tmp/v1.yaml", versionYAML(e.signed.Ref, "shop-1-0", "1.0"))
	e.write("/var/tmp/v2.yaml", versionYAML(e.signed.Ref, "shop-2-0", "2.0"))
	e.write("/var/tmp/shop.yaml", bgService)
	e.apply(k, "/namespaces/bg/", "/var/tmp/shop.yaml")
	e.apply(k, "/namespaces/bg/", "/var/tmp/v1.yaml")
	if out, msg, err := k.kubectl("", "rollout", "status", "deployment/shop-1-0", "-n", "bg", "--timeout=2m"); err != nil || !strings.Contains(out, "successfully rolled out") {
		t.Fatalf("rollout status: %v\n%s%s", err, out, msg)
	}
	k.eventually("three endpoints", func(s string) bool { return len(strings.Fields(s)) == 3 },
		"get", "endpoints", "shop", "-n", "bg", "-o", "jsonpath={.subsets[*].addresses[*].ip}")
	cip := k.must("get", "svc", "shop", "-n", "bg", "-o", "jsonpath={.spec.clusterIP}")
	e.run("ip", "link", "add", "berthtest-bg", "type", "veth", "peer", "name", "berthtest-bg1")
	e.run("ip", "addr", "add", "192.0.2.30/32", "dev", "berthtest-bg")
	e.run("ip", "link", "set", "berthtest-bg", "up")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	load := e.n.Command(ctx, "/var/tmp/berth-load", "-url", "http://"+cip+"/index.html", "-url", "http://192.0.2.30:30090/index.html",
		"-workers", "2", "-stop", "/var/tmp/load.stop")
	var out, errb bytes.Buffer
	load.Stdout, load.Stderr = &out, &errb
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	loadStart := time.Now()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			e.run("touch", "/var/tmp/load.stop")
			_ = load.Wait()
		}
	}
	defer stop()
	pause := func() { time.Sleep(4 * time.Second) }
	pause()

	e.apply(k, "/namespaces/bg/", "/var/tmp/v2.yaml")
	if out, msg, err := k.kubectl("", "rollout", "status", "deployment/shop-2-0", "-n", "bg", "--timeout=2m"); err != nil || !strings.Contains(out, "successfully rolled out") {
		t.Fatalf("rollout status 2.0: %v\n%s%s", err, out, msg)
	}
	var switched []int64 // when each patch answered, in the load's clock (ms)
	for _, v := range []string{"2.0", "1.0", "2.0"} {
		pause()
		k.must("patch", "service", "shop", "-n", "bg", "-p", `{"spec":{"selector":{"version":"`+v+`"}}}`)
		switched = append(switched, time.Since(loadStart).Milliseconds())
	}
	pause()
	if _, msg, err := k.kubectl("deployments/shop-1-0", "delete", "deployment", "shop-1-0", "-n", "bg"); err != nil {
		t.Fatalf("delete 1.0: %v %s", err, msg)
	}
	k.eventually("1.0's pods gone", func(s string) bool { return strings.TrimSpace(s) == "" },
		"get", "pods", "-n", "bg", "-l", "version=1.0", "-o", "name")
	pause()
	stop()

	var rep loadReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("load report: %v\n%s\n%s", err, out.String(), errb.String())
	}
	byVersion := map[string]int{}
	for answer, s := range rep.Answers {
		byVersion[strings.SplitN(answer, "-", 2)[0]] += s.Count
	}
	t.Logf("load: %d requests in %.1f s, %d failed; by version %v; by URL %v", rep.Requests, rep.Seconds, rep.Failures, byVersion, rep.ByURL)
	if rep.Failures != 0 {
		t.Errorf("%d failed requests: %v", rep.Failures, rep.Errors)
	}
	if rep.Requests < 10000 {
		t.Errorf("%d requests, want at least 10,000 over the flow", rep.Requests)
	}
	if byVersion["v1.0"] == 0 || byVersion["v2.0"] == 0 || len(byVersion) != 2 {
		t.Errorf("answers by version: %v", byVersion)
	}
	// 1.0 answered again after the switch back to it, and 2.0 took every
	// new connection once the last patch was in: the last answer of 1.0
	// came at most a second after it (requests in flight, the
	// controllers' and the proxier's passes).
	var last1 int64
	for answer, s := range rep.Answers {
		if strings.HasPrefix(answer, "v1.0-") && s.LastMS > last1 {
			last1 = s.LastMS
		}
	}
	if last1 < switched[1] || last1 > switched[2]+1000 {
		t.Errorf("1.0 last answered at %d ms; switched to 2.0, 1.0, 2.0 at %v ms", last1, switched)
	}
}
