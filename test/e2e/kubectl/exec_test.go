package kubectl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The pod of the streaming scenario: it serves HTTP on 8080 (busybox
// httpd, in the background) and ticks on its output.
const execPod = `apiVersion: v1
kind: Pod
metadata:
  name: box
  namespace: ex
spec:
  containers:
  - name: c
    image: %s
    command: [sh, -c, 'mkdir -p /tmp/www && echo hello-pf > /tmp/www/index.html && httpd -p 8080 -h /tmp/www; i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done']
`

// kubectlIn runs a kubectl (argv) in the node with stdin, and returns its
// stdout, stderr and exit status.
func kubectlIn(t *testing.T, e *env, stdin string, argv ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.n.Command(ctx, argv...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// TestExecAttachCpPortForward is kubectl exec, attach, cp and port-forward
// against a real berthd on a node, with the stock kubectl (HTTPS) and with
// berth (the socket, through its CONNECT proxy): exit codes, stdin, a
// terminal and its size, files both ways, a forwarded port answering HTTP,
// the container's output attached.
func TestExecAttachCpPortForward(t *testing.T) {
	t.Parallel() // a node of its own
	e := newEnv(t)
	k := e.stock()
	k.must("create", "namespace", "ex")
	e.write("/var/tmp/box.yaml", fmt.Sprintf(execPod, e.signed.Ref))
	e.apply(k, "/namespaces/ex/pods/", "/var/tmp/box.yaml")
	k.must("wait", "--for=condition=Ready", "pod/box", "-n", "ex", "--timeout=120s")

	for i, c := range []*client{e.stock(), e.berth()} {
		name := "stock"
		if i == 1 {
			name = "berth"
		}
		t.Run(name, func(t *testing.T) {
			kc := strings.Join(c.argv, " ")
			run := func(stdin string, args ...string) (string, string, int) {
				return kubectlIn(t, e, stdin, append(append([]string{}, c.argv...), args...)...)
			}
			t.Run("exit code", func(t *testing.T) {
				if out, msg, code := run("", "exec", "box", "-n", "ex", "--", "sh", "-c", "echo out; echo err >&2; exit 3"); code != 3 || out != "out\n" || !strings.Contains(msg, "err\n") {
					t.Errorf("exec exit 3: status %d, stdout %q, stderr %q", code, out, msg)
				}
				if out, _, code := run("", "exec", "box", "-n", "ex", "--", "id", "-u"); code != 0 || out != "0\n" {
					t.Errorf("exec id -u: status %d, %q", code, out)
				}
			})
			t.Run("confined like the workload", func(t *testing.T) {
				// The workload is PID 1 of the container: the same
				// credentials, capabilities, no_new_privs, seccomp,
				// cgroup and namespaces, read from inside.
				const show = `grep -E '^(Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs|Seccomp[_a-z]*):' /proc/%[1]s/status; cat /proc/%[1]s/cgroup; for n in mnt pid net ipc uts; do readlink /proc/%[1]s/ns/$n; done`
				out, msg, code := run("", "exec", "box", "-n", "ex", "--", "sh", "-c", fmt.Sprintf(show, "1")+"; echo ===; "+fmt.Sprintf(show, "self"))
				workload, exec, ok := strings.Cut(out, "===\n")
				if code != 0 || !ok || workload != exec || !strings.Contains(exec, "Seccomp:\t2") || !strings.Contains(exec, "NoNewPrivs:\t1") {
					t.Errorf("exec vs workload (status %d, %s):\n%s", code, msg, out)
				}
				if _, _, code := run("", "exec", "box", "-n", "ex", "--", "mount", "-t", "tmpfs", "t", "/mnt"); code == 0 {
					t.Error("the exec could mount")
				}
			})
			t.Run("stdin", func(t *testing.T) {
				if out, msg, code := run("one\ntwo\n", "exec", "-i", "box", "-n", "ex", "--", "wc", "-l"); code != 0 || strings.TrimSpace(out) != "2" {
					t.Errorf("exec -i wc -l: status %d, %q %s", code, out, msg)
				}
			})
			t.Run("tty", func(t *testing.T) {
				// script(1) gives kubectl a terminal of 40x100, whose size
				// kubectl sends as its first resize.
				// Its input stays open (sleep) until the shell has answered:
				// an input at EOF at once makes script(1) type EOF into the
				// session.
				inner := "stty rows 40 cols 100; " + kc + " exec -it box -n ex -- sh -c 'tty; stty size'"
				out, msg, code := kubectlIn(t, e, "", "sh", "-c", `sleep 3 | script -qec "$1" /dev/null`, "sh", inner)
				if code != 0 || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "40 100") {
					t.Errorf("exec -it: status %d, %q %s", code, out, msg)
				}
			})
			t.Run("cp", func(t *testing.T) {
				e.write("/var/tmp/cp-in.txt", "to the pod "+name+"\n")
				if _, msg, code := run("", "cp", "/var/tmp/cp-in.txt", "ex/box:/tmp/in-"+name+".txt"); code != 0 {
					t.Fatalf("cp into the pod: %d %s", code, msg)
				}
				if out, _, _ := run("", "exec", "box", "-n", "ex", "--", "cat", "/tmp/in-"+name+".txt"); out != "to the pod "+name+"\n" {
					t.Errorf("file copied in: %q", out)
				}
				if _, msg, code := run("", "cp", "ex/box:/tmp/www/index.html", "/var/tmp/cp-out-"+name+".txt"); code != 0 {
					t.Fatalf("cp out of the pod: %d %s", code, msg)
				}
				if out := e.run("cat", "/var/tmp/cp-out-"+name+".txt"); out != "hello-pf\n" {
					t.Errorf("file copied out: %q", out)
				}
			})
			t.Run("port-forward", func(t *testing.T) {
				port := 18090 + i
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				cmd := e.n.Command(ctx, append(append([]string{"setpriv", "--pdeathsig", "KILL", "--"}, c.argv...),
					"port-forward", "pod/box", "-n", "ex", fmt.Sprintf("%d:8080", port))...)
				cmd.WaitDelay = 5 * time.Second
				var out lockedBuffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() { cancel(); _ = cmd.Wait() }()
				waitFor(t, "port-forward listening", func() bool { return strings.Contains(out.String(), "Forwarding from") })
				for range 2 { // two connections through one forward
					if got := e.run("busybox", "wget", "-q", "-O", "-", fmt.Sprintf("http://127.0.0.1:%d/index.html", port)); got != "hello-pf\n" {
						t.Errorf("through port-forward: %q (kubectl: %s)", got, out.String())
					}
				}
			})
			t.Run("attach", func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				cmd := e.n.Command(ctx, append(append([]string{"setpriv", "--pdeathsig", "KILL", "--"}, c.argv...), "attach", "box", "-n", "ex", "-c", "c")...)
				cmd.WaitDelay = 5 * time.Second
				var out lockedBuffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() { cancel(); _ = cmd.Wait() }()
				waitFor(t, "attached output", func() bool { return strings.Count(out.String(), "tick ") >= 2 })
			})
		})
	}
	// Each exec ran as a transient service of its own (berthd-exec-*);
	// none is left, failed or not.
	waitFor(t, "no exec unit left", func() bool {
		return strings.TrimSpace(e.run("systemctl", "list-units", "--all", "--no-legend", "berthd-exec-*")) == ""
	})
}
