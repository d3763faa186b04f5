// Package fleet is issue 14's fleet, end to end: three disposable systemd
// nodes (test/node, with overlays that packages install into) on a
// private network of their own behind a bridge on the host, each running
// Debian's sshd. From the host, as an operator's controller, one
// ansible-playbook run of the repository's example
// (packaging/ansible/examples/site.yml, with an inventory and variables
// for this network) installs the berth package built from this tree on all
// three, trusts images signed with a key made here by cosign in a registry
// on the host, runs a Deployment per version behind a NodePort Service,
// switches the Service blue to green and gathers usage; a second run
// changes nothing. Every node writes its metrics to one Prometheus on the
// host (remote write), where PromQL sums the fleet's usage, checked
// against the pods' cgroup files read from the host. A last run with the
// versions swapped is the README's rollback: only the Service changes.
//
// The package is built from the tree (test/pkgbuild) while the fleet is
// set up; BERTH_FLEET_DEB=<file.deb> uses a package built before instead,
// for iterating on the playbook.
package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/pkgbuild"
	"github.com/berth-dev/berth/test/testenv"
)

const fleetSize = 3

// The example's choices the test checks against (group_vars/berth_nodes.yml).
const (
	namespace = "shop"
	nodePort  = 30080
	replicas  = 2
)

func requirements(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, p := range []string{ansiblePlaybook, ansibleGalaxy, "/usr/sbin/sshd", "/lib/systemd/system/ssh.service",
		"/usr/lib/python3/dist-packages/apt", imagetest.Busybox} {
		_, err := os.Stat(p)
		testenv.Require(t, err == nil, "needs "+p+" (Debian's ansible, openssh-server, python3-apt, busybox-static); `make test` installs them")
	}
	for _, c := range []string{"ssh", "ssh-keygen", "docker-registry", "skopeo", "prometheus", "cosign", "dpkg-deb"} {
		testenv.RequireCommand(t, c)
	}
}

// TestFleet: see the package comment.
func TestFleet(t *testing.T) {
	requirements(t)
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	example := filepath.Join(root, "packaging", "ansible", "examples")
	// Not t.TempDir: a run killed by -timeout leaves its directory, which
	// testenv.TempDir removes in a later run.
	dir, err := testenv.TempDir("berth-fleet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	// The package builds (make build, nfpm, xz: minutes) while the fleet
	// is set up.
	type built struct {
		deb string
		err error
	}
	pkg := make(chan built, 1)
	if deb := os.Getenv("BERTH_FLEET_DEB"); deb != "" {
		// A package built before, for iterating on the playbook.
		pkg <- built{deb: deb}
	} else {
		pdir, err := testenv.TempDir("berth-fleet-pkg")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		// The build is waited for even when the test fails early: its
		// directory goes only once nothing writes into it.
		t.Cleanup(func() { <-done; os.RemoveAll(pdir) })
		go func() {
			defer close(done)
			p, err := pkgbuild.Build(pdir, "")
			if err != nil {
				pkg <- built{err: err}
				return
			}
			pkg <- built{deb: p.Deb}
		}()
	}

	ctrl := newController(t, filepath.Join(dir, "ansible"), filepath.Join(root, "packaging", "ansible"))

	pn := newPrivateNet(t)
	registry := pn.host.String() + ":5000"
	promAddr := pn.host.String() + ":9090"
	for _, d := range []string{"registry", "prometheus", "ssh"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	startRegistry(t, filepath.Join(dir, "registry"), registry)
	unsigned := shopImages(t, filepath.Join(dir, "registry"), registry, filepath.Join(dir, "keys"))
	startPrometheus(t, filepath.Join(dir, "prometheus"), promAddr)

	key := filepath.Join(dir, "ssh", "id_ed25519")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	run(t, ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "berth-fleet-test", "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}

	var nodes []*node.Node
	var names []string
	var addrs []netip.Addr
	var knownHosts strings.Builder
	for i := 0; i < fleetSize; i++ {
		n := nodetest.New(t, node.Options{Name: fmt.Sprintf("fleet%d", i+1), Packages: true})
		// The host's /usr/sbin/policy-rc.d (exit 101: this machine's image
		// was built as a Docker image, where nothing may start services)
		// shows in the node's /usr and would make deb-systemd-invoke refuse
		// to start berthd; a Debian machine has none, and removing it only
		// whites it out in the node's /usr overlay.
		if _, err := n.Run(ctx, "rm", "-f", "/usr/sbin/policy-rc.d"); err != nil {
			t.Fatal(err)
		}
		addr := pn.attach(t, n, i+1)
		knownHosts.WriteString(startSSH(t, n, addr, pub))
		nodes, names, addrs = append(nodes, n), append(names, n.Name), append(addrs, addr)
	}
	// Registered after the nodes', so run before their teardown.
	t.Cleanup(ctrl.stopMasters)
	known := filepath.Join(dir, "ssh", "known_hosts")
	if err := os.WriteFile(known, []byte(knownHosts.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctrl.hosts(t, names, addrs, key, known)
	for _, a := range addrs {
		waitSSH(t, ctx, key, known, a)
	}

	b := <-pkg
	if b.err != nil {
		t.Fatal(b.err)
	}
	vars := map[string]any{
		"berth_package_file":          b.deb,
		"shop_registry":               registry,
		"shop_registry_insecure":      true,
		"shop_signing_key":            filepath.Join(dir, "keys", "cosign.pub"),
		"prometheus_remote_write_url": "http://" + promAddr + "/api/v1/write",
	}
	vj, _ := json.Marshal(vars)
	ctrl.extraVars = filepath.Join(ctrl.dir, "vars.json")
	if err := os.WriteFile(ctrl.extraVars, vj, 0o644); err != nil {
		t.Fatal(err)
	}

	playbook := filepath.Join(example, "site.yml")
	out, first, err := ctrl.playbook(ctx, playbook)
	r := recap(out)
	if err != nil || len(r) != fleetSize {
		t.Fatalf("first run of %s: %v after %v\n%s", playbook, err, first.Round(time.Millisecond), out)
	}
	t.Logf("first run: %v, %s", first.Round(time.Millisecond), recapText(out))
	t.Logf("first run's report:\n%s", grep(out, `"msg"`))
	t.Logf("first run's slowest tasks (profile_tasks):\n%s", slowest(out, 8))
	for h, s := range r {
		if s["failed"] != 0 || s["unreachable"] != 0 || s["changed"] == 0 {
			t.Errorf("first run, %s: %v; want changes and no failure", h, s)
		}
	}
	// The switch happened in this run: the Service was made on blue, then
	// patched to green, on every node.
	for _, task := range []string{"Create the Service on the previous version", "Switch the Service to the live version"} {
		if got := taskResults(out, task); len(got) != fleetSize || !allAre(got, "changed") {
			t.Errorf("first run, task %q: %v, want changed on %d hosts", task, got, fleetSize)
		}
	}
	if t.Failed() {
		t.Fatalf("first run's output:\n%s", out)
	}
	playbookUsage := fleetUsage(t, out)

	out, second, err := ctrl.playbook(ctx, playbook)
	r = recap(out)
	if err != nil || len(r) != fleetSize {
		t.Fatalf("second run: %v after %v\n%s", err, second.Round(time.Millisecond), out)
	}
	t.Logf("second run (idempotent): %v, %s", second.Round(time.Millisecond), recapText(out))
	t.Logf("second run's slowest tasks:\n%s", slowest(out, 8))
	for h, s := range r {
		if s["failed"] != 0 || s["unreachable"] != 0 || s["changed"] != 0 {
			t.Errorf("second run, %s: %v; want changed=0 failed=0", h, s)
		}
	}
	for task, want := range map[string]string{"Create the Service on the previous version": "skipping", "Switch the Service to the live version": "ok"} {
		if got := taskResults(out, task); len(got) != fleetSize || !allAre(got, want) {
			t.Errorf("second run, task %q: %v, want %s on %d hosts", task, got, want, fleetSize)
		}
	}
	if t.Failed() {
		// The changed tasks, and whatever else went wrong, are in here;
		// the checks below still run.
		t.Logf("second run's output:\n%s", out)
	}

	checkShop(t, ctx, nodes, addrs, "green")
	checkTrust(t, ctx, nodes[0], unsigned)
	promUsage := checkFleetUsage(t, promAddr, nodes)
	// The same pods read by the same collectors at other moments
	// (metrics.k8s.io in the first run, remote write now): each node's
	// figure may be off by the kernel's charge batches (wsSlack), and
	// the report is rounded to 0.1 MiB. Every pod counted twice would be
	// off by more.
	if d := math.Abs(promUsage - playbookUsage); d > float64(fleetSize)*wsSlack() {
		t.Errorf("the shop's memory over the fleet: %.2f MiB in Prometheus, %.2f MiB reported by the playbook", promUsage/(1<<20), playbookUsage/(1<<20))
	}

	// The rollback the example's README describes: the same playbook with
	// the versions' roles swapped changes the Service's selector and
	// nothing else.
	out, back, err := ctrl.playbook(ctx, playbook, "shop_live=blue", "shop_previous=green")
	r = recap(out)
	if err != nil || len(r) != fleetSize {
		t.Fatalf("rollback run: %v after %v\n%s", err, back.Round(time.Millisecond), out)
	}
	t.Logf("rollback run (shop_live=blue): %v, %s", back.Round(time.Millisecond), recapText(out))
	for h, s := range r {
		if s["failed"] != 0 || s["unreachable"] != 0 || s["changed"] != 1 {
			t.Errorf("rollback run, %s: %v; want changed=1 (the Service) failed=0", h, s)
		}
	}
	if got := taskResults(out, "Switch the Service to the live version"); len(got) != fleetSize || !allAre(got, "changed") {
		t.Errorf("rollback run, the switch: %v, want changed on %d hosts", got, fleetSize)
	}
	if t.Failed() {
		t.Logf("rollback run's output:\n%s", out)
	}
	checkShop(t, ctx, nodes, addrs, "blue")
}

// waitSSH waits until sshd at addr lets the test's key in.
func waitSSH(t *testing.T, ctx context.Context, key, known string, addr netip.Addr) {
	t.Helper()
	var out []byte
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		cmd := exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+known, "-o", "GlobalKnownHostsFile=/dev/null",
			"-o", "ConnectTimeout=5", "root@"+addr.String(), "true")
		if out, err = cmd.CombinedOutput(); err == nil {
			return
		}
	}
	t.Fatalf("ssh root@%s: %v: %s", addr, err, out)
}

// checkShop: on every node, both versions run, the Service selects live,
// and the node port (from the host, over the private network) and the
// cluster IP (inside the node) answer with live.
func checkShop(t *testing.T, ctx context.Context, nodes []*node.Node, addrs []netip.Addr, live string) {
	t.Helper()
	for i, n := range nodes {
		api := nodeberthd.Client(n)
		var pods struct {
			Items []struct {
				Metadata struct{ Labels map[string]string }
				Status   struct{ Phase string }
			}
		}
		getJSON(t, api, "/api/v1/namespaces/"+namespace+"/pods", &pods)
		running := map[string]int{}
		for _, p := range pods.Items {
			if p.Status.Phase == "Running" {
				running[p.Metadata.Labels["version"]]++
			}
		}
		if running["blue"] != replicas || running["green"] != replicas {
			t.Errorf("%s: running pods by version %v, want %d blue and %d green", n.Name, running, replicas, replicas)
		}
		var svc struct {
			Spec struct {
				ClusterIP string
				Selector  map[string]string
			}
		}
		getJSON(t, api, "/api/v1/namespaces/"+namespace+"/services/shop", &svc)
		if svc.Spec.Selector["version"] != live {
			t.Errorf("%s: the Service selects %v, want version %s", n.Name, svc.Spec.Selector, live)
		}
		// A few requests: each must reach live, whichever pod answers.
		for j := 0; j < 4; j++ {
			resp, err := http.Get(fmt.Sprintf("http://%s:%d/index.html", addrs[i], nodePort))
			if err != nil {
				t.Fatalf("%s: node port from the host: %v", n.Name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.HasPrefix(string(body), live+" ") {
				t.Errorf("%s: node port %s:%d answered %q, want %s", n.Name, addrs[i], nodePort, body, live)
			}
			in, err := n.Run(ctx, "curl", "-sS", "--max-time", "5", "http://"+svc.Spec.ClusterIP+"/index.html")
			if err != nil || !strings.HasPrefix(in, live+" ") {
				t.Errorf("%s: cluster IP %s answered %q (%v), want %s", n.Name, svc.Spec.ClusterIP, in, err, live)
			}
			if i == 0 && j == 0 {
				t.Logf("%s: node port %s:%d answers %q, cluster IP %s %q", n.Name, addrs[i], nodePort, strings.TrimSpace(string(body)), svc.Spec.ClusterIP, strings.TrimSpace(in))
			}
		}
	}
}

// checkTrust: the trust policy the playbook wrote refuses an unsigned image
// of the registry its signed ones come from.
func checkTrust(t *testing.T, ctx context.Context, n *node.Node, unsigned string) {
	t.Helper()
	out, err := n.Run(ctx, "berth", "image", "pull", unsigned)
	if err == nil {
		t.Errorf("%s: berth image pull %s: accepted (%s), want refused by the trust policy", n.Name, unsigned, out)
		return
	}
	if !strings.Contains(err.Error(), "rejected by policy") {
		t.Errorf("%s: berth image pull %s: %v, want a refusal by the trust policy", n.Name, unsigned, err)
	}
	t.Logf("%s: unsigned image refused: %s", n.Name, tail(err.Error(), 300))
}

func getJSON(t *testing.T, c *http.Client, path string, v any) {
	t.Helper()
	resp, err := c.Get("http://berth" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// checkFleetUsage: the one Prometheus holds every node's pods (remote
// write), the fleet's memory is the sum of the nodes', and each node's
// figure is what the pods' cgroup files on the host say.
func checkFleetUsage(t *testing.T, prom string, nodes []*node.Node) float64 {
	t.Helper()
	const pods = `container_memory_working_set_bytes{namespace="` + namespace + `",container=""}`
	byNode := map[string]*node.Node{}
	for _, n := range nodes {
		byNode[n.Name] = n
	}
	// Every pod of every node has arrived (a pod's series starts with the
	// first collection after it started; remote write sends every 10 s).
	var at time.Time
	var last []sample
	var err error
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(2 * time.Second) {
		at = time.Now()
		last, err = promQuery(prom, `count by (node) (`+pods+`)`, at)
		complete := err == nil && len(last) == len(nodes)
		for _, s := range last {
			complete = complete && byNode[s.Metric["node"]] != nil && s.Value == 2*replicas
		}
		if complete {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus: pods by node %v (%v), want %d nodes of %d pods", last, err, len(nodes), 2*replicas)
		}
	}

	query := func(q string) []sample {
		t.Helper()
		s, err := promQuery(prom, q, at)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	perNode := query(`sum by (node) (` + pods + `)`)
	fleet := query(`sum(` + pods + `)`)
	if len(fleet) != 1 || len(perNode) != len(nodes) {
		t.Fatalf("fleet %v, per node %v", fleet, perNode)
	}
	var total float64
	sort.Slice(perNode, func(i, j int) bool { return perNode[i].Metric["node"] < perNode[j].Metric["node"] })
	var lines []string
	for _, s := range perNode {
		if s.Value <= 0 {
			t.Errorf("node %s: working set %v, want > 0", s.Metric["node"], s.Value)
		}
		total += s.Value
		lines = append(lines, fmt.Sprintf("%s %.2f MiB", s.Metric["node"], s.Value/(1<<20)))
	}
	if math.Abs(fleet[0].Value-total) > 0.5 {
		t.Errorf("sum(%s) = %v, the nodes' sums add up to %v", pods, fleet[0].Value, total)
	}
	t.Logf("PromQL sum by (node) (%s): %s; sum(...) over the fleet: %.2f MiB", pods, strings.Join(lines, ", "), fleet[0].Value/(1<<20))

	// The same pods from their cgroup files (the series' id is the pod's
	// slice as systemd in the node names it), read at one moment and
	// compared with the node's two collections around that moment: a
	// reading lies between them, give or take what moves between any two
	// readings of the same files.
	//  - The working set (usage minus inactive file pages): usage counts
	//    pages charged ahead into the kernel's per-CPU stocks
	//    (MEMCG_CHARGE_BATCH, 64 pages a CPU, held by the group that
	//    charged last on that CPU), so one reading may be up to that much
	//    above another; with idle httpd pods of about 300 KiB each that is
	//    not negligible (the nodes' sums were seen to move by 0.7 MiB
	//    between collections). Another 512 KiB cover a probe's httpd child.
	//  - RSS (memory.stat's anonymous pages, about 50 KiB a pod) counts
	//    pages, not charges, and was seen equal in files and collections:
	//    128 KiB for a probe's httpd child (its copied pages) caught alive.
	// A series doubled, or of another group, is off by more than either.
	type reading struct{ ws, rss float64 }
	files := map[string]reading{}
	read := time.Now()
	for _, s := range query(pods) {
		n := byNode[s.Metric["node"]]
		st, err := cgroup.ReadStats(s.Metric["id"], n.Bases())
		if err != nil {
			t.Fatalf("read %s of %s from the host: %v", s.Metric["id"], n.Name, err)
		}
		f := files[n.Name]
		f.ws += float64(st.MemoryWorkingSet)
		f.rss += float64(st.MemoryRSS)
		files[n.Name] = f
	}
	for _, c := range []struct {
		what, selector string
		file           func(reading) float64
		slack          float64
	}{
		{"working set", pods, func(r reading) float64 { return r.ws }, wsSlack()},
		{"RSS", `container_memory_rss{namespace="` + namespace + `",container=""}`, func(r reading) float64 { return r.rss }, 128 << 10},
	} {
		var around map[string][2]point
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(2 * time.Second) {
			around, err = collectionsAround(prom, c.selector, read)
			if err == nil && len(around) == len(nodes) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Prometheus: no collection of every node after %v: %v (%v)", read.Format(time.RFC3339Nano), around, err)
			}
		}
		var b []string
		for _, name := range names(around) {
			ps, got := around[name], c.file(files[name])
			b = append(b, fmt.Sprintf("%s %.3f MiB (collections around it %.3f and %.3f)", name, got/(1<<20), ps[0].v/(1<<20), ps[1].v/(1<<20)))
			lo, hi := math.Min(ps[0].v, ps[1].v)-c.slack, math.Max(ps[0].v, ps[1].v)+c.slack
			if got < lo || got > hi {
				t.Errorf("node %s: the pods' cgroup files say %s %.3f MiB, the collections before and after them %.3f and %.3f MiB (± %.0f KiB)",
					name, c.what, got/(1<<20), ps[0].v/(1<<20), ps[1].v/(1<<20), c.slack/1024)
			}
		}
		t.Logf("the pods' %s from the cgroup files: %s", c.what, strings.Join(b, ", "))
	}
	if cpu, err := promQuery(prom, `sum(rate(container_cpu_usage_seconds_total{namespace="`+namespace+`",container=""}[1m]))`, at); err == nil && len(cpu) == 1 {
		t.Logf("the fleet's shop CPU: %.4f cores", cpu[0].Value)
	}
	return fleet[0].Value
}

// wsSlack is how far two readings of a node's pods' working set may be
// apart without a change of what they hold: usage counts pages charged
// ahead into the kernel's per-CPU stocks of MEMCG_CHARGE_BATCH (64) pages,
// and a probe's httpd child may be caught alive (see checkFleetUsage).
func wsSlack() float64 {
	return float64(64*os.Getpagesize()*runtime.NumCPU() + 512<<10)
}

type point struct {
	t time.Time
	v float64
}

// collectionsAround is, per node, the sum of the series of selector at the
// node's last collection before at and its first after it. A node's series
// of one collection carry the same timestamp (the cycle's).
func collectionsAround(prom, selector string, at time.Time) (map[string][2]point, error) {
	series, err := promRange(prom, selector+"[1m]", time.Now())
	if err != nil {
		return nil, err
	}
	sums := map[string]map[time.Time]float64{}
	for _, s := range series {
		n := s.Metric["node"]
		if sums[n] == nil {
			sums[n] = map[time.Time]float64{}
		}
		for _, p := range s.Values {
			sums[n][p.t] += p.v
		}
	}
	out := map[string][2]point{}
	for n, byTime := range sums {
		var before, after point
		for ts, v := range byTime {
			if !ts.After(at) && ts.After(before.t) {
				before = point{ts, v}
			}
			if ts.After(at) && (after.t.IsZero() || ts.Before(after.t)) {
				after = point{ts, v}
			}
		}
		if !before.t.IsZero() && !after.t.IsZero() {
			out[n] = [2]point{before, after}
		}
	}
	return out, nil
}

var fleetRE = regexp.MustCompile(`"msg": "(\d+) nodes: the shop uses ([0-9.]+) MiB"`)

// fleetUsage is the shop's memory over the fleet as the playbook's last
// task reported it (berth.node.info's usage, summed over the hosts).
func fleetUsage(t *testing.T, out string) float64 {
	t.Helper()
	m := fleetRE.FindStringSubmatch(out)
	if m == nil || m[1] != strconv.Itoa(fleetSize) {
		t.Fatalf("no report of the fleet's %d nodes in the playbook's output (%q)", fleetSize, m)
	}
	mib, err := strconv.ParseFloat(m[2], 64)
	if err != nil || mib <= 0 {
		t.Fatalf("the playbook reports %s MiB for the fleet", m[2])
	}
	return mib * (1 << 20)
}

var resultRE = regexp.MustCompile(`(?m)^(ok|changed|skipping|failed|fatal): \[([^\]]+)\]`)

// taskResults is each host's outcome (ok, changed, skipping, failed,
// fatal) of the task named name, from the default callback's output.
func taskResults(out, name string) map[string]string {
	r := map[string]string{}
	for _, sec := range strings.Split(out, "\nTASK [")[1:] {
		if !strings.HasPrefix(sec, name+"]") {
			continue
		}
		if i := strings.Index(sec, "\nPLAY RECAP"); i >= 0 {
			sec = sec[:i]
		}
		for _, m := range resultRE.FindAllStringSubmatch(sec, -1) {
			r[m[2]] = m[1]
		}
	}
	return r
}

func allAre(m map[string]string, v string) bool {
	for _, x := range m {
		if x != v {
			return false
		}
	}
	return true
}

// slowest is profile_tasks' list of the slowest tasks (after the last
// line of '='), its first n lines.
func slowest(out string, n int) string {
	i := strings.LastIndex(out, "\n=====")
	if i < 0 {
		return "(no profile)"
	}
	lines := strings.Split(strings.TrimSpace(out[i+1:]), "\n")[1:]
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func names[V any](m map[string]V) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// recapText is the PLAY RECAP's host lines, one line.
func recapText(out string) string {
	i := strings.LastIndex(out, "PLAY RECAP")
	if i < 0 {
		return "no PLAY RECAP"
	}
	var lines []string
	for _, l := range strings.Split(out[i:], "\n")[1:] {
		if strings.Contains(l, " : ok=") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(lines, "; ")
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
