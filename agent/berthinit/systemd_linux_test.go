package berthinit

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// TestUnderSystemd runs berth-init the way unitgen configures it — a
// transient Type=forking service with PIDFile= and ExecStopPost= — under a
// real systemd 252 (a disposable node, test/node), and checks the stage-1
// claims that only systemd can confirm: MainPID is the workload, the unit's
// cgroup holds nothing of berth, and ExecStopPost gets what poststop needs.
func TestUnderSystemd(t *testing.T) {
	bin := requireBerthInit(t)
	const inNode = "/srv/bundles" // outside the node's own tmpfs mounts (/tmp, /run, /var)
	bundles := map[string]*testBundle{
		"sleep": newBundle(t, "sleep", "3600"),
		// Each exits as soon as it runs: stage-2 execs only once systemd
		// has read the PIDFile= (see Start), so nothing needs to wait.
		"oom":   newBundle(t, "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"),
		"exit3": newBundle(t, "sh", "-c", "exit 3"),
		"fast":  newBundle(t, "false"),
	}
	var binds []node.Bind
	for name, b := range bundles {
		// Paths in the spec as the node sees them.
		b.relocate(filepath.Join(inNode, name))
		b.write(t)
		binds = append(binds, node.Bind{Source: b.dir, Target: filepath.Join(inNode, name)})
	}
	n := nodetest.New(t, node.Options{Name: "stage1", BinDir: filepath.Dir(bin), Binds: binds})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	initBin := filepath.Join(node.BinMount, "berth-init")

	start := func(name string, props ...string) {
		t.Helper()
		b := filepath.Join(inNode, name)
		args := []string{"systemd-run", "--unit=" + name, "-p", "Type=forking", "-p", "PIDFile=" + b + "/pid",
			"-p", "ExecStopPost=-" + initBin + " poststop " + b, "-p", "KillMode=mixed"}
		for _, p := range props {
			args = append(args, "-p", p)
		}
		args = append(args, "--", initBin, "start", b)
		if out, err := n.Run(ctx, args...); err != nil {
			t.Fatalf("systemd-run %s: %v\n%s", name, err, out)
		}
	}
	show := func(unit string) map[string]string {
		t.Helper()
		out, err := n.Run(ctx, "systemctl", "show", unit, "-p", "MainPID,ActiveState,Result,ControlGroup,ExecMainStatus")
		if err != nil {
			t.Fatalf("systemctl show %s: %v", unit, err)
		}
		m := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				m[k] = v
			}
		}
		return m
	}
	waitExit := func(name string) *bndl.ExitStatus {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if st, err := bndl.ReadExit(bundles[name].dir); err == nil {
				return st
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: no exit.json; unit %v", name, show(name+".service"))
		return nil
	}

	// 1. A long-running workload: MainPID, cgroup contents.
	start("sleep")
	st := show("sleep.service")
	if st["ActiveState"] != "active" {
		t.Fatalf("sleep.service %v", st)
	}
	raw, err := os.ReadFile(filepath.Join(bundles["sleep"].dir, bndl.PIDFile))
	must(t, err)
	if strings.TrimSpace(string(raw)) != st["MainPID"] {
		t.Errorf("MainPID %s, pid file %q", st["MainPID"], raw)
	}
	procs, err := os.ReadFile(n.CgroupPath("systemd", st["ControlGroup"], "cgroup.procs"))
	must(t, err)
	// cgroup.procs lists host PIDs; NSpid maps them into the node's namespace.
	var inUnit []string
	for _, hostPID := range strings.Fields(string(procs)) {
		ns := strings.Fields(procStatus(t, atoi(t, hostPID))["NSpid"])
		if len(ns) < 2 {
			t.Fatalf("NSpid of %s: %v", hostPID, ns)
		}
		inUnit = append(inUnit, ns[1])
	}
	if len(inUnit) != 1 || inUnit[0] != st["MainPID"] {
		t.Errorf("unit cgroup holds %v (node PIDs), want only the workload %s", inUnit, st["MainPID"])
	}
	if out, err := n.Run(ctx, "systemctl", "kill", "-s", "KILL", "sleep.service"); err != nil {
		t.Fatalf("kill: %v %s", err, out)
	}
	if ex := waitExit("sleep"); ex.ExitCode != 137 || ex.Signal != 9 || ex.Reason != bndl.ReasonError || ex.OOMKilled {
		t.Errorf("sleep after SIGKILL: %+v", *ex)
	}

	// 2. Exit status 3 through ExecStopPost's $EXIT_CODE/$EXIT_STATUS.
	start("exit3")
	if ex := waitExit("exit3"); ex.ExitCode != 3 || ex.Reason != bndl.ReasonError || ex.Result != "exit-code" {
		t.Errorf("exit3: %+v", *ex)
	}

	// 3. OOM kill under MemoryMax (systemd says "oom-kill" on v2, only "signal" on v1).
	start("oom", "MemoryMax=32M")
	if ex := waitExit("oom"); !ex.OOMKilled || ex.Reason != bndl.ReasonOOMKilled {
		t.Errorf("oom: %+v", *ex)
	}
	// 4. A workload that exits at once (a Job running `false`): systemd must
	// still adopt it as MainPID and see its status. Before stage-2 waited for
	// stage-1's reaping this lost the race about 1 run in 10 (Result
	// "protocol": "PID ... read from file ... does not exist or is a zombie").
	for i := 0; i < 20; i++ {
		_ = os.Remove(filepath.Join(bundles["fast"].dir, bndl.ExitFile))
		unit := "fast" + strconv.Itoa(i)
		out, err := n.Run(ctx, "systemd-run", "--unit="+unit, "-p", "Type=forking", "-p", "PIDFile="+inNode+"/fast/pid",
			"-p", "ExecStopPost=-"+initBin+" poststop "+inNode+"/fast", "--", initBin, "start", inNode+"/fast")
		if err != nil {
			t.Errorf("run %d: systemd-run: %v\n%s", i, err, out)
		}
		if ex := waitExit("fast"); ex.Result != "exit-code" || ex.ExitCode != 1 || ex.Reason != bndl.ReasonError {
			t.Errorf("run %d: exit.json %+v, want exit-code 1", i, *ex)
		}
	}
	if t.Failed() {
		out, _ := n.Run(ctx, "journalctl", "--no-pager", "-u", "sleep", "-u", "exit3", "-u", "oom", "-u", "fast*")
		t.Logf("journal:\n%s", out)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	must(t, err)
	return n
}

// relocate rewrites the spec's absolute bundle paths for a bundle seen at dir.
func (b *testBundle) relocate(dir string) {
	fix := func(s string) string { return strings.ReplaceAll(s, b.dir, dir) }
	for i := range b.spec.Mounts {
		m := &b.spec.Mounts[i]
		m.Source = fix(m.Source)
		for j := range m.Options {
			m.Options[j] = fix(m.Options[j])
		}
	}
}
