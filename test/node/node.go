// Package node boots a disposable systemd node: a real systemd 252 as PID 1
// with its system D-Bus, in private pid, mount, cgroup, uts, ipc and network
// namespaces, with writable cgroup controllers (docs/systemd.md, "The test
// node"). Tests use it to prove every systemd and cgroup claim
// against the real thing; people use it through cmd/berth-node to try berth
// without touching their host.
//
// Layout of a node on the host (/var/tmp/berth-nodes/<name>/):
//
//	root/       mountpoint of the node's tmpfs root (only inside its mount ns)
//	etc-upper/  overlay upper over the host's /etc (machine-id, hostname, target)
//	var/        the node's /var: /var/lib/berth survives within the node
//	console.log systemd's console output
//	owner       pid and start time of the launcher, for reaping killed runs
//	cgroups     the host cgroup directories made for the node, one a line
//
// Process tree: the caller starts a launcher (this package re-executing the
// current binary, moby's reexec idea). The launcher moves itself into the
// node's cgroups, clones the node's PID 1 in new namespaces (so systemd sees
// those cgroups as its root), and moves back out. PID 1 builds the root,
// pivots and execs systemd. The launcher waits; on SIGTERM, SIGINT, SIGHUP or
// the death of its parent (PR_SET_PDEATHSIG, which covers a test binary killed
// by -timeout) it kills the node and removes its cgroups and directory, so
// teardown happens even when the caller cannot run it.
package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/cgroup/own"
)

// BaseDir holds one directory per node.
const BaseDir = "/var/tmp/berth-nodes"

// BinMount is where Options.BinDir appears inside the node; Command puts it
// first on PATH.
const BinMount = "/opt/berth/bin"

// Path is the PATH of commands run with Command.
const Path = BinMount + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const stageEnv = "_BERTH_NODE_STAGE"
const configEnv = "_BERTH_NODE_CONFIG"

// Options configure a node.
type Options struct {
	// Name prefixes the node's name (and hostname); a random suffix makes it
	// unique so several nodes can run at once.
	Name string
	// BinDir is a host directory shown read-only at /opt/berth/bin inside.
	BinDir string
	// Binds are extra host paths to show inside the node (read-write).
	Binds []Bind
	// Stdout receives systemd's console output in addition to console.log.
	Console io.Writer
	// Packages makes the node a machine packages can be installed on: /usr
	// becomes an overlay over the host's with its upper layer in the node's
	// directory, and dpkg's, apt's and rpm's databases under /var start as
	// overlays of the host's. dpkg -i, apt install ./x.deb and rpm -i then
	// write only into the node, which a package test needs to install,
	// upgrade and purge for real. Without it /usr is the host's, read-only.
	Packages bool
}

// pkgDirs are the host directories a Packages node sees as overlays: the
// package managers' databases and caches (apt reads its lists and writes
// its archives cache even for a local file; rpm keeps its database in
// /var/lib/rpm on Debian's rpm).
var pkgDirs = []string{"var/lib/dpkg", "var/lib/apt", "var/cache/apt", "var/cache/debconf", "var/lib/rpm"}

// Bind shows Source (host) at Target (node).
type Bind struct{ Source, Target string }

// Node is a running disposable systemd node.
type Node struct {
	Name  string
	Dir   string // host directory of the node
	pid   int    // host PID of the node's PID 1 (systemd)
	boot  *exec.Cmd
	done  chan struct{}
	hs    []hierarchy
	cgs   []string
	bases cgroup.Bases
}

type config struct {
	Name     string
	Dir      string
	BinDir   string
	Binds    []Bind
	Hier     []hierarchy
	Cgroups  []string
	Packages bool
}

func init() {
	switch os.Getenv(stageEnv) {
	case "":
		return
	case "boot":
		os.Exit(bootMain())
	case "init":
		initMain() // execs systemd or exits
		os.Exit(1)
	}
}

func loadConfig() (*config, error) {
	var c config
	if err := json.Unmarshal([]byte(os.Getenv(configEnv)), &c); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	return &c, nil
}

var nameRE = regexp.MustCompile(`[^a-z0-9-]+`)

// Start boots a node and waits until systemd reports running or degraded.
// On error nothing is left behind.
func Start(ctx context.Context, opts Options) (*Node, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("a systemd node needs root (namespaces, mounts, cgroups)")
	}
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		return nil, fmt.Errorf("systemd is not installed: %w", err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return nil, fmt.Errorf("nsenter (util-linux) is needed: %w", err)
	}
	Reap()
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	prefix := nameRE.ReplaceAllString(strings.ToLower(opts.Name), "-")
	if prefix == "" {
		prefix = "node"
	}
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("%s-%s", strings.Trim(prefix, "-"), hex.EncodeToString(rnd[:]))
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	n := &Node{Name: name, Dir: filepath.Join(BaseDir, name), hs: hs, done: make(chan struct{})}
	fail := func(err error) (*Node, error) {
		n.cleanup()
		return nil, err
	}
	for _, d := range []string{"root", "etc-upper/systemd/system", "etc-work", "var/tmp", "var/lib", "var/log"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return fail(err)
		}
	}
	_ = os.Chmod(filepath.Join(n.Dir, "var/tmp"), 0o1777)
	if opts.Packages {
		for _, d := range append([]string{"usr"}, pkgDirs...) {
			for _, layer := range []string{"upper", "work"} {
				if err := os.MkdirAll(filepath.Join(n.Dir, "pkg-"+layer, d), 0o755); err != nil {
					return fail(err)
				}
			}
		}
	}
	if err := writeEtc(filepath.Join(n.Dir, "etc-upper"), name); err != nil {
		return fail(err)
	}
	leaf := "berth-node-" + name
	n.cgs, err = makeCgroups(hs, leaf)
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "cgroups"), []byte(strings.Join(n.cgs, "\n")+"\n"), 0o644); err != nil {
		return fail(err)
	}
	n.bases = cgroup.Bases{}
	for _, h := range hs {
		n.bases[h.base()] = filepath.Join(h.Own, leaf)
	}
	cfg := config{Name: name, Dir: n.Dir, BinDir: opts.BinDir, Binds: opts.Binds, Hier: hs, Cgroups: n.cgs, Packages: opts.Packages}
	cj, _ := json.Marshal(cfg)
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	log, err := os.OpenFile(filepath.Join(n.Dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err)
	}
	defer log.Close()
	boot := exec.Command(self)
	boot.Env = append(os.Environ(), stageEnv+"=boot", configEnv+"="+string(cj))
	var out io.Writer = log
	if opts.Console != nil {
		out = io.MultiWriter(log, opts.Console)
	}
	boot.Stdout, boot.Stderr = out, out
	boot.ExtraFiles = []*os.File{pw}
	// SIGTERM, not SIGKILL: the launcher tears the node down when we die.
	boot.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := boot.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fail(fmt.Errorf("start node launcher: %w", err))
	}
	pw.Close()
	n.boot = boot
	go func() { _ = boot.Wait(); close(n.done) }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	pr.Close()
	if err != nil {
		return fail(fmt.Errorf("node launcher died before PID 1 started: %s", n.consoleTail()))
	}
	n.pid, err = strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return fail(fmt.Errorf("node launcher: %q: %w", line, err))
	}
	if err := n.wait(ctx); err != nil {
		return fail(err)
	}
	return n, nil
}

// wait polls until systemd inside reports the end of start-up.
func (n *Node) wait(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last string
	for {
		select {
		case <-n.done:
			return fmt.Errorf("node %s died while booting: %s", n.Name, n.consoleTail())
		case <-ctx.Done():
			return fmt.Errorf("node %s did not finish booting (last state %q): %w\n%s\n%s", n.Name, last, ctx.Err(), n.pendingJobs(), n.consoleTail())
		case <-time.After(100 * time.Millisecond):
		}
		// nsenter too early would enter the mount namespace before pivot_root.
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", n.pid)); strings.TrimSpace(string(comm)) != "systemd" {
			continue
		}
		out, _ := n.Command(ctx, "systemctl", "is-system-running").Output()
		last = strings.TrimSpace(string(out))
		switch last {
		case "running", "degraded":
			return nil
		}
	}
}

// pendingJobs says what a node that does not finish booting waits for.
func (n *Node) pendingJobs() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	jobs, _ := n.Command(ctx, "systemctl", "list-jobs", "--no-pager").CombinedOutput()
	failed, _ := n.Command(ctx, "systemctl", "--failed", "--no-pager").CombinedOutput()
	return "pending jobs:\n" + string(jobs) + "failed units:\n" + string(failed)
}

func (n *Node) consoleTail() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "console.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// PID is the host PID of the node's systemd.
func (n *Node) PID() int { return n.pid }

// Command runs args inside the node's namespaces (nsenter), as root, with
// the berth binaries first on PATH and a clean environment.
func (n *Node) Command(ctx context.Context, args ...string) *exec.Cmd {
	a := []string{"-t", strconv.Itoa(n.pid), "-m", "-u", "-i", "-n", "-p", "-C", "--wd", "--",
		"/usr/bin/env", "-i", "PATH=" + Path, "HOME=/root", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	return exec.CommandContext(ctx, "nsenter", append(a, args...)...)
}

// Run runs args inside the node and returns stdout; on failure the error
// carries stderr.
func (n *Node) Run(ctx context.Context, args ...string) (string, error) {
	cmd := n.Command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s in node %s: %w: %s", strings.Join(args, " "), n.Name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// HostPath is the host-side path of path inside the node (through
// /proc/<pid>/root, valid while the node runs).
func (n *Node) HostPath(path string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", n.pid), path)
}

// Bases tells cgroup.ReadStats where the node's cgroup tree sits on the host.
func (n *Node) Bases() cgroup.Bases { return n.bases }

// CgroupPath is the host path of file in the node cgroup group (a
// ControlGroup as systemd inside reports it) of the hierarchy key ("memory",
// "cpu", "pids", "unified", …). On a cgroup v2 host every key names the one
// unified tree.
func (n *Node) CgroupPath(key, group, file string) string {
	for _, h := range n.hs {
		if h.base() == key || h.Key == key || len(n.hs) == 1 && h.V2 {
			return filepath.Join(h.Mount, n.bases[h.base()], group, file)
		}
	}
	return ""
}

// Journal returns the node's journal since boot.
func (n *Node) Journal(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := n.Command(ctx, "journalctl", "-b", "--no-pager", "-o", "short-monotonic").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("journalctl: %v\n%s", err, out)
	}
	return string(out)
}

// Stop kills the node and removes everything it made on the host: its
// cgroups (deepest first) and its directory. Its mounts lived only in its
// mount namespace and went with it. Safe to call more than once.
func (n *Node) Stop() error {
	if n.boot != nil && n.boot.Process != nil {
		_ = n.boot.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(30 * time.Second):
			_ = n.boot.Process.Kill()
			<-n.done
		}
	}
	return n.cleanup()
}

func (n *Node) cleanup() error {
	if n.pid > 0 {
		_ = syscall.Kill(n.pid, syscall.SIGKILL)
	}
	err := removeCgroupTrees(n.cgs)
	if rerr := os.RemoveAll(n.Dir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// Reap removes nodes left by killed runs: directories whose launcher is gone
// and cgroups named berth-node-* without a live node.
func Reap() {
	ents, _ := os.ReadDir(BaseDir)
	live := map[string]bool{}
	for _, e := range ents {
		dir := filepath.Join(BaseDir, e.Name())
		if ownerAlive(dir) {
			live["berth-node-"+e.Name()] = true
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cgroups")); err == nil {
			_ = removeCgroupTrees(strings.Fields(string(b)))
		}
		_ = os.RemoveAll(dir)
	}
	hs, err := hierarchies()
	if err != nil {
		return
	}
	for _, h := range hs {
		ms, _ := filepath.Glob(filepath.Join(h.Mount, h.Own, "berth-node-*"))
		for _, m := range ms {
			if !live[filepath.Base(m)] {
				_ = removeCgroupTrees([]string{m})
			}
		}
	}
}

func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // field 22, starttime
}

func ownerAlive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "owner"))
	if err != nil {
		// A node being created right now has no owner file for a moment;
		// only a directory older than a minute without one is stale.
		st, serr := os.Stat(dir)
		return serr == nil && time.Since(st.ModTime()) < time.Minute
	}
	var pid int
	var start string
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil {
		return false
	}
	return procStart(pid) == start
}

// writeEtc prepares the node's /etc overlay upper: identity, an empty fstab
// (the host's must not be mounted by the node), and a small default target so
// that only what a node needs starts (journald, D-Bus), which keeps boots fast.
func writeEtc(upper, name string) error {
	var id [16]byte
	_, _ = rand.Read(id[:])
	files := map[string]string{
		"machine-id": hex.EncodeToString(id[:]) + "\n",
		"hostname":   name + "\n",
		"fstab":      "# berth test node: nothing to mount\n",
		"systemd/system/berth-node.target": `[Unit]
Description=berth disposable test node
Requires=basic.target
Wants=dbus.service systemd-journald.service
After=basic.target dbus.service
AllowIsolate=yes
`,
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(upper, p), []byte(c), 0o644); err != nil {
			return err
		}
	}
	return os.Symlink("berth-node.target", filepath.Join(upper, "systemd/system/default.target"))
}

// bootMain is the launcher (see the package comment).
func bootMain() int {
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	status := os.NewFile(3, "status")
	self := strconv.Itoa(os.Getpid())
	if err := os.WriteFile(filepath.Join(cfg.Dir, "owner"), []byte(self+" "+procStart(os.Getpid())+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "node owner file:", err)
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	teardown := func() {
		if err := removeCgroupTrees(cfg.Cgroups); err != nil {
			fmt.Fprintln(os.Stderr, "node teardown:", err)
		}
		_ = os.RemoveAll(cfg.Dir)
	}
	for _, d := range cfg.Cgroups {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(self), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "join %s: %v\n", d, err)
			teardown()
			return 1
		}
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{stageEnv + "=init", configEnv + "=" + os.Getenv(configEnv)}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWCGROUP | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS |
			syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET,
		Pdeathsig: syscall.SIGKILL,
	}
	err = cmd.Start()
	// Back out of the node's cgroups: only the node lives there, and systemd
	// inside sees their children as its whole tree (on v2 it cannot enable
	// controllers for them while another process sits in its root). On a
	// delegated v2 parent, processes may live only in its leaf.
	for _, d := range cfg.Cgroups {
		if err := os.WriteFile(filepath.Join(filepath.Dir(d), "cgroup.procs"), []byte(self), 0o644); err != nil {
			_ = os.WriteFile(filepath.Join(filepath.Dir(d), own.DelegatedLeaf, "cgroup.procs"), []byte(self), 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "start node PID 1:", err)
		teardown()
		return 1
	}
	fmt.Fprintf(status, "%d\n", cmd.Process.Pid)
	status.Close()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-sigs:
		_ = cmd.Process.Kill()
		<-exited
	}
	teardown()
	return 0
}
