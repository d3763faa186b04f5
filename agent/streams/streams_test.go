package streams

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/test/testenv"
	"github.com/berth-dev/berth/unitgen"
)

func TestPaths(t *testing.T) {
	s := New(Config{StateDir: "/s", RunDir: "/r"})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	c, err := s.container(pod, "app")
	if err != nil || c.unit != unitgen.UnitName("shop", "web", "app") || c.bundle != "/s/containers/"+unitgen.ContainerKey("shop", "web", "app") {
		t.Errorf("container: %+v, %v", c, err)
	}
	if got := s.NetNSPath(pod); got != "/r/pods/"+unitgen.PodKey("shop", "web")+"/ns/net" {
		t.Errorf("netns path %s", got)
	}
	if _, err := s.container(pod, ""); !errdefs.IsInvalidArgument(err) {
		t.Errorf("no container name: %v", err)
	}
}

func TestProtocolError(t *testing.T) {
	if err := protocolError(`error exec "nope": executable file not found in PATH`); err.Error() != `exec "nope": executable file not found in PATH` {
		t.Errorf("error report: %v", err)
	}
	if err := protocolError("what"); !strings.Contains(err.Error(), "unexpected") {
		t.Errorf("out of turn: %v", err)
	}
}

func TestCapped(t *testing.T) {
	c := &capped{n: 5}
	fmt.Fprint(c, "abc")
	fmt.Fprint(c, "defg")
	if got := string(c.bytes()); got != "abcde" {
		t.Errorf("capped %q", got)
	}
}

func TestExitErrorIsUtilExecs(t *testing.T) {
	// cri-streaming asserts k8s.io/utils/exec.ExitError on the error.
	var err error = &ExitError{Code: 3}
	ee, ok := err.(interface {
		error
		String() string
		Exited() bool
		ExitStatus() int
	})
	if !ok || !ee.Exited() || ee.ExitStatus() != 3 || ee.Error() != "command terminated with exit code 3" {
		t.Errorf("ExitError: %v", err)
	}
}

// pinnedNetNS makes a network namespace with loopback up and a server
// answering on 127.0.0.1:port inside, pinned at a file as agent/pods pins
// a pod's; everything is removed at the end of the test.
func pinnedNetNS(t *testing.T, port int) string {
	t.Helper()
	dir := t.TempDir()
	pin := filepath.Join(dir, "net")
	if err := os.WriteFile(pin, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: Go retires the thread
		err := func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return err
			}
			if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
				return fmt.Errorf("ip link set lo up: %v %s", err, out)
			}
			return unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), pin, "", unix.MS_BIND, "")
		}()
		if err != nil {
			ch <- res{err: err}
			return
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() {
		r.ln.Close()
		_ = unix.Unmount(pin, unix.MNT_DETACH)
	})
	go func() {
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "inside: %s", line)
			}()
		}
	}()
	return dir
}

// pipeStream is one end of an in-memory stream, as cri-streaming hands
// PortForward one.
type pipeStream struct {
	io.Reader
	io.WriteCloser
}

func TestPortForward(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	const port = 18081
	nsDir := pinnedNetNS(t, port)
	run := t.TempDir()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	s := New(Config{RunDir: run})
	// The layout agent/pods makes: <run>/pods/<key>/ns/net.
	nsPath := s.NetNSPath(pod)
	if err := os.MkdirAll(filepath.Dir(nsPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(nsDir, "net"), nsPath); err != nil {
		t.Fatal(err)
	}

	forward := func(t *testing.T, pod *corev1.Pod, port int32, send string) (string, error) {
		cr, cw := io.Pipe() // client → pod
		sr, sw := io.Pipe() // pod → client
		done := make(chan error, 1)
		go func() { done <- s.PortForward(context.Background(), pod, port, pipeStream{cr, sw}) }()
		go func() { _, _ = io.WriteString(cw, send); _ = cw.Close() }()
		got, _ := io.ReadAll(sr)
		return string(got), <-done
	}
	t.Run("pod port", func(t *testing.T) {
		got, err := forward(t, pod, port, "hello\n")
		if err != nil || got != "inside: hello\n" {
			t.Errorf("forwarded %q, %v", got, err)
		}
	})
	t.Run("not the host's", func(t *testing.T) {
		// Nothing listens on the host's 127.0.0.1:port: the pod's is reached.
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			t.Skip("something listens on the host's port")
		}
		host := pod.DeepCopy()
		host.Spec.HostNetwork = true
		if _, err := forward(t, host, port, "x\n"); err == nil {
			t.Error("a host-network pod's forward reached the pod's namespace")
		}
	})
	t.Run("closed port", func(t *testing.T) {
		if _, err := forward(t, pod, port+1, ""); err == nil || !errors.Is(err, unix.ECONNREFUSED) {
			t.Errorf("closed port: %v", err)
		}
	})
	t.Run("pod not here", func(t *testing.T) {
		gone := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "gone"}}
		if _, err := forward(t, gone, port, ""); !errdefs.IsNotFound(err) {
			t.Errorf("pod without a namespace: %v", err)
		}
	})
}
