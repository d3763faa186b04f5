package streams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/containerd/errdefs"
)

// fakeInitEnv makes the test binary act as berth-init exec: the protocol
// of agent/berthinit/exec.go, with the command run on the host (the real
// berth-init is tested on a node in agent/berthinit and end to end in
// test/e2e/kubectl).
const fakeInitEnv = "BERTH_STREAMS_FAKE_INIT"

func TestMain(m *testing.M) {
	if os.Getenv(fakeInitEnv) == "1" {
		os.Exit(fakeInit(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeInit(args []string) int {
	// exec --control-stdin [--tty] <bundle> <unit> <pid> -- cmd...
	i := 0
	for i < len(args) && args[i] != "--" {
		i++
	}
	argv := args[i+1:]
	const ctl = 0
	send := func(s string) { _ = unix.Sendmsg(ctl, []byte(s), nil, nil, 0) }
	send("ready " + strconv.Itoa(os.Getpid()))
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := unix.Recvmsg(ctl, buf, oob, 0)
	if err != nil || string(buf[:n]) != "go" {
		return 125
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	fds, _ := unix.ParseUnixRights(&msgs[0])
	if argv[0] == "missing" {
		send(`error exec "missing": executable file not found in PATH "/bin"`)
		return 127
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.NewFile(uintptr(fds[0]), "0"), os.NewFile(uintptr(fds[1]), "1"), os.NewFile(uintptr(fds[2]), "2")
	if err := cmd.Start(); err != nil {
		send("error " + err.Error())
		return 126
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	send("pid " + strconv.Itoa(cmd.Process.Pid))
	go func() {
		// EOF: berthd is gone.
		b := make([]byte, 16)
		if n, _, _, _, err := unix.Recvmsg(ctl, b, nil, 0); err != nil || n == 0 {
			_ = cmd.Process.Kill()
		}
	}()
	_ = cmd.Wait()
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	send("exit " + strconv.Itoa(code))
	return code
}

type fakeUnits struct {
	mu       sync.Mutex
	attached []string
	running  bool
}

func (f *fakeUnits) MainPID(ctx context.Context, unit string) (uint32, error) {
	if !f.running {
		return 0, fmt.Errorf("unit %s: %w", unit, errdefs.ErrNotFound)
	}
	return 4242, nil
}

// Run starts the fake berth-init, as systemd would start the real one.
func (f *fakeUnits) Run(ctx context.Context, unit, description string, argv []string, stdin *os.File) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), fakeInitEnv+"=1")
	cmd.Stdin = stdin
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}

func (f *fakeUnits) Attach(ctx context.Context, unit string, pids ...uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attached = append(f.attached, fmt.Sprintf("%s %v", unit, pids))
	return nil
}

func fakeService(t *testing.T, u *fakeUnits) *Service {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{Init: self, Units: u})
}

var testPod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "u"}}

func TestExecProtocol(t *testing.T) {
	u := &fakeUnits{running: true}
	s := fakeService(t, u)
	ctx := context.Background()

	var out, errb bytes.Buffer
	err := s.Exec(ctx, testPod, "app", []string{"sh", "-c", "cat; echo err >&2; exit 3"}, ExecOptions{Stdin: strings.NewReader("in\n"), Stdout: &out, Stderr: &errb})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || out.String() != "in\n" || errb.String() != "err\n" {
		t.Errorf("exec: %v, stdout %q, stderr %q", err, out.String(), errb.String())
	}
	if len(u.attached) != 1 || !strings.HasPrefix(u.attached[0], "berth-shop_web_app.service [") {
		t.Errorf("attached: %q", u.attached)
	}
	if err := s.Exec(ctx, testPod, "app", []string{"true"}, ExecOptions{}); err != nil {
		t.Errorf("true: %v", err)
	}
	if err := s.Exec(ctx, testPod, "app", []string{"missing"}, ExecOptions{}); err == nil || !strings.Contains(err.Error(), "executable file not found") {
		t.Errorf("missing command: %v", err)
	}
	u.running = false
	if err := s.Exec(ctx, testPod, "app", []string{"true"}, ExecOptions{}); !errdefs.IsNotFound(err) {
		t.Errorf("container not running: %v", err)
	}
}

func TestProber(t *testing.T) {
	s := fakeService(t, &fakeUnits{running: true})
	p := Prober{S: s}
	ctx := context.Background()
	out, code, err := p.Exec(ctx, testPod, "app", []string{"sh", "-c", "echo ok; exit 1"}, time.Minute)
	if err != nil || code != 1 || string(out) != "ok\n" {
		t.Errorf("probe: %q %d %v", out, code, err)
	}
	out, _, err = p.Exec(ctx, testPod, "app", []string{"sh", "-c", "head -c 20000 /dev/zero"}, time.Minute)
	if err != nil || len(out) != probeOutputLimit {
		t.Errorf("output of %d bytes kept, want the kubelet's %d: %v", len(out), probeOutputLimit, err)
	}
	_, _, err = p.Exec(ctx, testPod, "app", []string{"sleep", "30"}, 200*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout: %v", err)
	}
}
