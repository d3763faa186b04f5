package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/agent/streams"
	"github.com/gorilla/websocket"
)

// fakeStreams runs "commands" in memory: echo copies stdin to stdout,
// exit N exits N; attach writes a line.
type fakeStreams struct {
	mu   sync.Mutex
	seen []string // container and command of each exec
	// hung receives when a "hang" command's context ends.
	hung chan struct{}
}

func (f *fakeStreams) Exec(ctx context.Context, pod *corev1.Pod, container string, cmd []string, o streams.ExecOptions) error {
	f.mu.Lock()
	f.seen = append(f.seen, container+": "+strings.Join(cmd, " "))
	f.mu.Unlock()
	switch cmd[0] {
	case "echo":
		if o.Stdin == nil || o.Stdout == nil {
			return errors.New("echo needs stdin and stdout")
		}
		_, err := io.Copy(o.Stdout, o.Stdin)
		return err
	case "stderr":
		_, err := io.WriteString(o.Stderr, "to stderr\n")
		return err
	case "hang":
		// A command that runs until its client is gone.
		<-ctx.Done()
		f.hung <- struct{}{}
		return ctx.Err()
	case "exit":
		var code int
		fmt.Sscan(cmd[1], &code)
		return fmt.Errorf("wrapped: %w", &streams.ExitError{Code: code})
	}
	return errors.New("no such command")
}

func (f *fakeStreams) Attach(ctx context.Context, pod *corev1.Pod, container string, out io.Writer) error {
	_, err := fmt.Fprintf(out, "output of %s/%s\n", pod.Name, container)
	return err
}

func (f *fakeStreams) PortForward(ctx context.Context, pod *corev1.Pod, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	_, err := io.Copy(stream, stream)
	return err
}

func streamServer(t *testing.T, st Streams) *httptest.Server {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	srv, err := New(db, Options{Streams: st})
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	srv.kinds["namespaces"].prepare(ns)
	if err := db.Create("namespaces", ns); err != nil {
		t.Fatal(err)
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-1"},
		Spec: corev1.PodSpec{NodeName: "n", Containers: []corev1.Container{{Name: "app", Image: "x"}, {Name: "side", Image: "x"}}}}
	srv.kinds["pods"].prepare(pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
		{Name: "app", State: running}, {Name: "side", State: waiting}}}
	if err := db.Create("pods", pod); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts
}

// kubectlExec streams as kubectl 1.32+ does: WebSocket (v5) first, SPDY
// when the upgrade fails (pkg/cmd/exec createExecutor).
func kubectlExec(ts *httptest.Server, sub, query string, in io.Reader, tty bool) (string, string, error) {
	u, _ := url.Parse(ts.URL + "/api/v1/namespaces/shop/pods/web/" + sub + "?" + query)
	cfg := &rest.Config{Host: ts.URL}
	spdyExec, err := remotecommand.NewSPDYExecutor(cfg, "POST", u)
	if err != nil {
		return "", "", err
	}
	wsExec, err := remotecommand.NewWebSocketExecutor(cfg, "GET", u.String())
	if err != nil {
		return "", "", err
	}
	exec, err := remotecommand.NewFallbackExecutor(wsExec, spdyExec, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return "", "", err
	}
	var out, errOut bytes.Buffer
	opts := remotecommand.StreamOptions{Stdin: in, Stdout: &out, Tty: tty}
	if !tty {
		opts.Stderr = &errOut
	}
	err = exec.StreamWithContext(context.Background(), opts)
	return out.String(), errOut.String(), err
}

func TestPodExec(t *testing.T) {
	fake := &fakeStreams{}
	ts := streamServer(t, fake)
	t.Run("stdin to stdout", func(t *testing.T) {
		out, _, err := kubectlExec(ts, "exec", "container=app&command=echo&stdin=true&stdout=true&stderr=true", strings.NewReader("hello\n"), false)
		if err != nil || out != "hello\n" {
			t.Errorf("echo: %q, %v", out, err)
		}
	})
	t.Run("stderr", func(t *testing.T) {
		_, errOut, err := kubectlExec(ts, "exec", "container=app&command=stderr&stdout=true&stderr=true", nil, false)
		if err != nil || errOut != "to stderr\n" {
			t.Errorf("stderr: %q, %v", errOut, err)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		_, _, err := kubectlExec(ts, "exec", "container=app&command=exit&command=3&stdout=true&stderr=true", nil, false)
		var ce utilexec.CodeExitError
		if !errors.As(err, &ce) || ce.Code != 3 {
			t.Errorf("exit 3: %#v", err)
		}
	})
	t.Run("container not valid", func(t *testing.T) {
		_, _, err := kubectlExec(ts, "exec", "container=nope&command=echo&stdout=true", nil, false)
		if err == nil || !strings.Contains(err.Error(), "container nope is not valid for pod web") {
			t.Errorf("unknown container: %v", err)
		}
	})
	t.Run("container must be named", func(t *testing.T) {
		_, _, err := kubectlExec(ts, "exec", "command=echo&stdout=true", nil, false)
		if err == nil || !strings.Contains(err.Error(), "a container name must be specified for pod web, choose one of: [app side]") {
			t.Errorf("no container: %v", err)
		}
	})
	t.Run("container not running", func(t *testing.T) {
		_, _, err := kubectlExec(ts, "exec", "container=side&command=echo&stdout=true", nil, false)
		if err == nil || !strings.Contains(err.Error(), `unable to upgrade connection: container not found ("side")`) {
			t.Errorf("waiting container: %v", err)
		}
	})
	t.Run("attach", func(t *testing.T) {
		out, _, err := kubectlExec(ts, "attach", "container=app&stdout=true&stderr=true", nil, false)
		if err != nil || out != "output of web/app\n" {
			t.Errorf("attach: %q, %v", out, err)
		}
	})
	t.Run("methods", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPut, ts.URL+"/api/v1/namespaces/shop/pods/web/exec?command=echo", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("PUT pods/exec: %d", resp.StatusCode)
		}
	})
	if len(fake.seen) == 0 || fake.seen[0] != "app: echo" {
		t.Errorf("execs seen: %q", fake.seen)
	}
}

// A client that goes away ends its exec: the end of the hijacked
// connection cancels the context the command runs under, for SPDY (kubectl
// before 1.30, and its fallback) and for WebSocket (a client dying without a
// close frame, as a killed kubectl does).
func TestExecEndsWhenTheClientLeaves(t *testing.T) {
	fake := &fakeStreams{hung: make(chan struct{}, 1)}
	ts := streamServer(t, fake)
	path := "/api/v1/namespaces/shop/pods/web/exec?container=app&command=hang&stdout=true"
	await := func(t *testing.T) {
		t.Helper()
		select {
		case <-fake.hung:
		case <-time.After(30 * time.Second):
			t.Fatal("the exec still runs after its client left")
		}
	}
	t.Run("spdy", func(t *testing.T) {
		u, _ := url.Parse(ts.URL + path)
		sp, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: ts.URL}, "POST", u)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sp.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard}) }()
		time.Sleep(300 * time.Millisecond) // let the stream come up; nothing is asserted on time
		cancel()
		<-done
		await(t)
	})
	t.Run("websocket", func(t *testing.T) {
		d := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}} // cri-streaming speaks up to v4
		// x/net/websocket, under wsstream, wants an Origin.
		c, resp, err := d.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+path, http.Header{"Origin": {ts.URL}})
		if err != nil {
			var body []byte
			if resp != nil {
				body, _ = io.ReadAll(resp.Body)
				t.Fatalf("%v: %s %s", err, resp.Status, body)
			}
			t.Fatal(err)
		}
		resp.Body.Close()
		c.Close() // the connection, without a close frame
		await(t)
	})
}
