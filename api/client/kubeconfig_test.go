package client

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
)

const goodKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: berth, cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: Zm9v}}]
users: [{name: berth, user: {client-certificate-data: Zm9v, client-key-data: c2VjcmV0}}]
contexts: [{name: berth, context: {cluster: berth, user: berth}}]
current-context: berth
`

// serveSocket serves h on a real Unix socket.
func serveSocket(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "berth.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestFetchKubeconfig(t *testing.T) {
	var answer func(w http.ResponseWriter)
	sock := serveSocket(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != KubeconfigPath || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		answer(w)
	}))
	c := NewHTTPClient(sock)
	status := func(code int, reason, msg string) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"` + reason + `","code":` + strconv.Itoa(code) + `,"message":"` + msg + `"}`))
		}
	}

	answer = func(w http.ResponseWriter) { w.Write([]byte(goodKubeconfig)) }
	got, err := FetchKubeconfig(context.Background(), c)
	if err != nil || string(got) != goodKubeconfig {
		t.Fatalf("good: %q %v", got, err)
	}

	for _, tc := range []struct {
		code    int
		reason  string
		msg     string
		isClass func(error) bool
	}{
		{404, "NotFound", "the loopback HTTPS listener is off: set listen.https in /etc/berth/berthd.yaml", errdefs.IsNotFound},
		{403, "Forbidden", "user \"alice\" may not have a kubeconfig", errdefs.IsPermissionDenied},
	} {
		answer = status(tc.code, tc.reason, strings.ReplaceAll(tc.msg, `"`, `\"`))
		_, err := FetchKubeconfig(context.Background(), c)
		if !tc.isClass(err) || err.Error() != tc.msg {
			t.Errorf("%d: %v (class ok %v)", tc.code, err, tc.isClass(err))
		}
	}

	answer = func(w http.ResponseWriter) { w.Write([]byte("{not yaml: [")) }
	if _, err := FetchKubeconfig(context.Background(), c); !errdefs.IsInvalidArgument(err) {
		t.Errorf("garbage: %v", err)
	}
	answer = func(w http.ResponseWriter) { w.Write([]byte("apiVersion: v1\nkind: Config\n")) }
	if _, err := FetchKubeconfig(context.Background(), c); !errdefs.IsInvalidArgument(err) {
		t.Errorf("empty kubeconfig: %v", err)
	}

	if _, err := FetchKubeconfig(context.Background(), NewHTTPClient(filepath.Join(t.TempDir(), "none.sock"))); !errdefs.IsUnavailable(err) {
		t.Errorf("no berthd: %v", err)
	}
}

func TestWriteFileAtomicIs0600FromTheStart(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "new", ".kube")
	path := filepath.Join(dir, "berth.yaml")
	if err := WriteFileAtomic(path, []byte("one")); err != nil {
		t.Fatal(err)
	}
	// An older, readable file is replaced by a private one.
	os.Chmod(path, 0o644)
	if err := WriteFileAtomic(path, []byte("two")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("new directory mode %v", di.Mode())
	}
	if b, _ := os.ReadFile(path); string(b) != "two" {
		t.Errorf("content %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}
