// Package survive checks issue 9's "nothing lost" on a real node: berthd
// killed with SIGKILL while pods are being created, systemd's daemon-reload
// and daemon-reexec while pods run, and a berthd that crash-loops, which
// must never touch a running container.
package survive

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/unitgen"
)

type env struct {
	t      *testing.T
	n      *node.Node
	c      *http.Client
	signed *nodereg.Signed
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n, signed := nodeberthd.Setup(t, "survive", "")
	return &env{t: t, n: n, c: nodeberthd.Client(n), signed: signed}
}

func (e *env) run(args ...string) string {
	e.t.Helper()
	return nodeberthd.Run(e.t, e.n, args...)
}

func (e *env) pod(name string) *corev1.Pod {
	grace := int64(2)
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "survive"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers:                    []corev1.Container{{Name: "c", Image: e.signed.Ref, Command: []string{"sh", "-c", "while :; do sleep 1; done"}}},
		},
	}
}

// create posts pod until berthd has it: a connection refused or reset (berthd
// is down) is retried; 409 AlreadyExists means an earlier attempt was stored
// before the kill, which is success too.
func (e *env) create(p *corev1.Pod) error {
	body, _ := json.Marshal(p)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := e.c.Post("http://berth/api/v1/namespaces/default/pods", "application/json", bytes.NewReader(body))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusCreated, http.StatusConflict:
				return nil
			default:
				if resp.StatusCode < 500 {
					return fmt.Errorf("create %s: %s: %s", p.Name, resp.Status, b)
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("create %s: berthd did not come back: %v", p.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) pods() []corev1.Pod {
	e.t.Helper()
	resp, err := e.c.Get("http://berth/api/v1/namespaces/default/pods?labelSelector=app%3Dsurvive")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var l corev1.PodList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		e.t.Fatal(err)
	}
	return l.Items
}

// allRunning waits until want pods exist and all are Running.
func (e *env) allRunning(want int) []corev1.Pod {
	e.t.Helper()
	var ps []corev1.Pod
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		ps = e.pods()
		running := 0
		for _, p := range ps {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if len(ps) == want && running == want {
			return ps
		}
	}
	var states []string
	for _, p := range ps {
		states = append(states, p.Name+"="+string(p.Status.Phase))
	}
	e.t.Fatalf("want %d pods Running, have %d: %v", want, len(ps), states)
	return nil
}

// units lists berth's container units (running or not).
func (e *env) units() []string {
	out := e.run("systemctl", "list-units", "--all", "--no-legend", "--plain", "berth-*.service")
	var us []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			us = append(us, f[0])
		}
	}
	sort.Strings(us)
	return us
}

func (e *env) mainPID(unit string) string {
	return strings.TrimSpace(e.run("systemctl", "show", "-P", "MainPID", unit))
}

func TestSIGKILLWhileCreating(t *testing.T) {
	e := newEnv(t)
	const count = 20
	var wg sync.WaitGroup
	errs := make(chan error, count)
	killed := make(chan struct{})
	for i := 0; i < count; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if i >= count/2 {
				<-killed // half before the kill, half around the restart
			}
			errs <- e.create(e.pod(fmt.Sprintf("p%02d", i)))
		}(i)
	}
	// Kill berthd while the first pods are being started: once a container
	// runs and before half of them do.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if n := len(e.units()); n >= 1 && n < count/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no moment with between 1 and %d container units: %v", count/2, e.units())
		}
	}
	e.run("systemctl", "kill", "--signal=SIGKILL", "berthd.service")
	close(killed)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	ps := e.allRunning(count)
	units := e.units()
	if len(units) != count {
		t.Errorf("want %d container units, have %d: %v", count, len(units), units)
	}
	for _, p := range ps {
		u := unitgen.UnitName(p.Namespace, p.Name, "c")
		if !contains(units, u) {
			t.Errorf("pod %s has no unit %s", p.Name, u)
		}
	}
	if n := e.run("systemctl", "show", "-P", "NRestarts", "berthd.service"); strings.TrimSpace(n) == "0" {
		t.Errorf("berthd was not restarted by systemd after SIGKILL")
	}
	// Nothing leaked: one pod directory and one set of pinned namespaces per pod.
	if out := e.run("sh", "-c", "ls /var/lib/berth/pods | wc -l"); strings.TrimSpace(out) != fmt.Sprint(count) {
		t.Errorf("pod records on disk: %s, want %d", out, count)
	}
	// Deleting them all leaves nothing behind.
	req, _ := http.NewRequest(http.MethodDelete, "http://berth/api/v1/namespaces/default/pods?labelSelector=app%3Dsurvive", nil)
	resp, err := e.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if len(e.pods()) == 0 && len(e.units()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after deleting every pod: %d pods, units %v", len(e.pods()), e.units())
		}
	}
	if out := e.run("sh", "-c", "find /var/lib/berth/pods /var/lib/berth/containers /run/berth/pods -mindepth 1 -maxdepth 1 2>/dev/null; findmnt -rn -o TARGET | grep /run/berth/ || true"); strings.TrimSpace(out) != "" {
		t.Errorf("leftovers after deleting every pod:\n%s", out)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// limits reads the kernel's view of a unit's limits.
func (e *env) limits(unit string) string {
	group := strings.TrimSpace(e.run("systemctl", "show", "-P", "ControlGroup", unit))
	var b strings.Builder
	for _, f := range []struct{ key, file string }{{"cpu", "cpu.cfs_quota_us"}, {"cpu", "cpu.shares"}, {"memory", "memory.limit_in_bytes"}, {"pids", "pids.max"}} {
		data, err := os.ReadFile(e.n.CgroupPath(f.key, group, f.file))
		if err != nil {
			// cgroup v2 names
			data, err = os.ReadFile(e.n.CgroupPath(f.key, group, map[string]string{"cpu.cfs_quota_us": "cpu.max", "cpu.shares": "cpu.weight", "memory.limit_in_bytes": "memory.max", "pids.max": "pids.max"}[f.file]))
		}
		if err != nil {
			e.t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s ", f.file, strings.TrimSpace(string(data)))
	}
	return b.String()
}

func TestDaemonReloadAndReexecAndCrashLoop(t *testing.T) {
	e := newEnv(t)
	p := e.pod("limited")
	p.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: mustQ("100m"), corev1.ResourceMemory: mustQ("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: mustQ("300m"), corev1.ResourceMemory: mustQ("96Mi")},
	}
	if err := e.create(p); err != nil {
		t.Fatal(err)
	}
	e.allRunning(1)
	unit := unitgen.UnitName("default", "limited", "c")
	before, pid := e.limits(unit), e.mainPID(unit)

	e.run("systemctl", "daemon-reload")
	if after := e.limits(unit); after != before {
		t.Errorf("limits changed by daemon-reload: %s → %s", before, after)
	}
	e.run("systemctl", "daemon-reexec")
	if after := e.limits(unit); after != before {
		t.Errorf("limits changed by daemon-reexec: %s → %s", before, after)
	}
	if got := e.mainPID(unit); got != pid {
		t.Errorf("the container's process changed across reload and reexec: %s → %s", pid, got)
	}
	// berthd reconnected and keeps tracking: a container killed under it is
	// seen restarting, a new pod starts.
	e.run("systemctl", "kill", "--signal=SIGKILL", "--kill-who=main", unit)
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
		ps := e.pods()
		// Restarted and running again (after berth-init's back-off).
		if len(ps) == 1 && len(ps[0].Status.ContainerStatuses) == 1 && ps[0].Status.ContainerStatuses[0].RestartCount >= 1 &&
			ps[0].Status.ContainerStatuses[0].LastTerminationState.Terminated != nil && ps[0].Status.ContainerStatuses[0].State.Running != nil &&
			e.mainPID(unit) != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container killed after daemon-reexec never showed a restart in its status: %+v", ps)
		}
	}
	e.allRunning(1)
	pid = e.mainPID(unit)
	if err := e.create(e.pod("after-reexec")); err != nil {
		t.Fatal(err)
	}
	e.allRunning(2)

	// berthd killed again and again right after it comes up: the
	// containers never notice.
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := nodeberthd.WaitReady(ctx, e.n)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		e.run("systemctl", "kill", "--signal=SIGKILL", "berthd.service")
	}

	// A berthd that crash-loops (a config it refuses) never touches the
	// running containers.
	e.run("sh", "-c", "mkdir -p /etc/berth && echo 'no-such-key: 1' > /etc/berth/berthd.yaml")
	e.run("systemctl", "restart", "--no-block", "berthd.service")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		n := strings.TrimSpace(e.run("systemctl", "show", "-P", "NRestarts", "berthd.service"))
		if n != "0" && n != "" && n != "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("berthd did not crash-loop on a bad config (NRestarts %s)", n)
		}
	}
	if got := e.mainPID(unit); got != pid {
		t.Errorf("a crash-looping berthd touched the container: MainPID %s → %s", pid, got)
	}
	e.run("rm", "/etc/berth/berthd.yaml")
	e.run("systemctl", "reset-failed", "berthd.service")
	e.run("systemctl", "restart", "berthd.service")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := nodeberthd.WaitReady(ctx, e.n); err != nil {
		t.Fatal(err)
	}
	e.allRunning(2)
	if got := e.mainPID(unit); got != pid {
		t.Errorf("the restarted berthd restarted the container: MainPID %s → %s", pid, got)
	}
}

func mustQ(s string) resource.Quantity { return resource.MustParse(s) }
