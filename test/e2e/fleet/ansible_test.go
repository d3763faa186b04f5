package fleet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/node"
)

// Debian's ansible: its scripts run /usr/bin/python3, which has the
// collection's controller-side needs (PyYAML, Jinja2).
const (
	ansiblePlaybook = "/usr/bin/ansible-playbook"
	ansibleGalaxy   = "/usr/bin/ansible-galaxy"
)

// startSSH makes n a machine reached by ssh as root with the key whose
// public half is pubKey: Debian's sshd as the node's ssh.service, with a
// host key of its own. It returns the known_hosts line for addr.
func startSSH(t *testing.T, n *node.Node, addr netip.Addr, pubKey []byte) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The node's /etc is an overlay of the host's, so it would present
	// the host's host keys; each machine of a fleet has its own. Removing
	// them here only whites them out in the node's upper layer.
	if _, err := n.Run(ctx, "sh", "-c", "rm -f /etc/ssh/ssh_host_* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key"); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		// Only the key made above (the defaults would look for RSA and
		// ECDSA keys too and log their absence), and keys only.
		"/etc/ssh/sshd_config.d/berth-fleet.conf": "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n",
		// The node's /root is its own (on its tmpfs root).
		"/root/.ssh/authorized_keys": string(pubKey),
	}
	for p, c := range files {
		hp := n.HostPath(p)
		if err := os.MkdirAll(filepath.Dir(hp), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hp, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Run(ctx, "systemctl", "start", "ssh.service"); err != nil {
		journal, _ := n.Run(ctx, "journalctl", "--no-pager", "-n", "30", "-u", "ssh.service")
		t.Fatalf("%v\n%s", err, journal)
	}
	hostKey, err := os.ReadFile(n.HostPath("/etc/ssh/ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(hostKey))
	return addr.String() + " " + f[0] + " " + f[1] + "\n"
}

// controller is the Ansible controller's side: the host, with the
// collection installed in a directory of the test and a home of its own,
// so nothing of the host's ~/.ansible or ~/.ssh is read or written.
type controller struct {
	dir       string
	inventory string
	extraVars string
	env       []string
}

func newController(t *testing.T, dir, collection string) *controller {
	t.Helper()
	c := &controller{dir: dir}
	for _, d := range []string{"home", "tmp", "cp", "collections"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	c.env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(dir, "home"),
		"LANG=C.UTF-8",
		"ANSIBLE_COLLECTIONS_PATH=" + filepath.Join(dir, "collections"),
		"ANSIBLE_LOCAL_TEMP=" + filepath.Join(dir, "tmp"),
		"ANSIBLE_SSH_CONTROL_PATH_DIR=" + filepath.Join(dir, "cp"),
		"ANSIBLE_GALAXY_CACHE_DIR=" + filepath.Join(dir, "home", "galaxy_cache"),
		// One ssh session per task instead of a copy and an execution.
		"ANSIBLE_PIPELINING=True",
		"ANSIBLE_NOCOLOR=True",
		"ANSIBLE_RETRY_FILES_ENABLED=False",
		"ANSIBLE_STDOUT_CALLBACK=default",
		"ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := filepath.Join(dir, "build")
	c.run(t, ctx, ansibleGalaxy, "collection", "build", "--output-path", out, collection)
	tars, _ := filepath.Glob(filepath.Join(out, "berth-node-*.tar.gz"))
	if len(tars) != 1 {
		t.Fatalf("ansible-galaxy collection build made %v", tars)
	}
	c.run(t, ctx, ansibleGalaxy, "collection", "install", "-p", filepath.Join(dir, "collections"), tars[0])
	return c
}

func (c *controller) run(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// hosts writes the inventory of the fleet: the group the example's
// group_vars are for, reached at the nodes' addresses with the test's key,
// known only by the host keys the test collected.
func (c *controller) hosts(t *testing.T, names []string, addrs []netip.Addr, key, knownHosts string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("[berth_nodes]\n")
	for i, n := range names {
		fmt.Fprintf(&b, "%s ansible_host=%s\n", n, addrs[i])
	}
	fmt.Fprintf(&b, "\n[berth_nodes:vars]\nansible_user=root\nansible_python_interpreter=/usr/bin/python3\n"+
		"ansible_ssh_private_key_file=%s\n"+
		"ansible_ssh_common_args='-F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s -o GlobalKnownHostsFile=/dev/null'\n",
		key, knownHosts)
	c.inventory = filepath.Join(c.dir, "inventory.ini")
	if err := os.WriteFile(c.inventory, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// playbook runs the playbook with the inventory, the extra variables'
// file and more (key=value), and returns its output and wall time.
func (c *controller) playbook(ctx context.Context, playbook string, more ...string) (string, time.Duration, error) {
	args := []string{"-i", c.inventory, "-e", "@" + c.extraVars}
	for _, m := range more {
		args = append(args, "-e", m)
	}
	cmd := exec.CommandContext(ctx, ansiblePlaybook, append(args, playbook)...)
	cmd.Env = c.env
	// If the test binary dies, so does the run: SIGINT, on which
	// ansible-playbook stops its workers, as on a ^C.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	return string(out), time.Since(start), err
}

// stopMasters ends the ssh connections Ansible keeps open
// (ControlPersist) for the next task, rather than leave them to time out.
func (c *controller) stopMasters() {
	socks, _ := filepath.Glob(filepath.Join(c.dir, "cp", "*"))
	for _, s := range socks {
		_ = exec.Command("ssh", "-F", "/dev/null", "-o", "ControlPath="+s, "-O", "exit", "fleet").Run()
	}
}

var recapRE = regexp.MustCompile(`(?m)^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)`)

// recap is the PLAY RECAP: per host, ok, changed, unreachable, failed,
// skipped, rescued, ignored.
func recap(out string) map[string]map[string]int {
	i := strings.LastIndex(out, "PLAY RECAP")
	if i < 0 {
		return nil
	}
	r := map[string]map[string]int{}
	for _, m := range recapRE.FindAllStringSubmatch(out[i:], -1) {
		h := map[string]int{}
		for j, k := range []string{"ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"} {
			h[k], _ = strconv.Atoi(m[j+2])
		}
		r[m[1]] = h
	}
	return r
}
