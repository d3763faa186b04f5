// Package daemon tests `berthd serve` as what it is: a daemon. On the host,
// real users (made with useradd for the test, removed after it) reach the
// socket through api/authz and stock kubectl reaches the loopback HTTPS
// listener with a kubeconfig from /berth/v1/kubeconfig; on a real systemd
// node (test/node), packaging/'s unit, sysusers and tmpfiles files are
// installed and berthd.service is started, stopped, killed and restarted.
package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/test/testenv"
)

// The stock kubectl (/usr/bin/kubectl on these machines is a dispatcher).
const stockKubectl = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds berthd and berth-init once per test binary.
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = testenv.TempDir("berth-daemon-bin")
		if buildErr != nil {
			return
		}
		// Readable by the test's users (they run nothing from it, but a
		// 0700 parent would hide the socket directory below it).
		os.Chmod(binDir, 0o755)
		if buildErr = nodereg.CopyCosign(binDir); buildErr != nil {
			return
		}
		buildErr = testenv.BuildStatic(binDir, "./cmd/berthd", "./cmd/berth-init")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func randomSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// osUser is a real account made for one test.
type osUser struct {
	name     string
	uid, gid int
}

// addGroup creates a system group for the test and removes it at the end.
func addGroup(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("groupadd", "--system", name).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("groupdel", name).CombinedOutput(); err != nil {
			t.Errorf("groupdel %s: %v: %s", name, err, out)
		}
	})
}

// addUser creates a user without a home directory or login, in the given
// supplementary groups, removed at the end (also when the test fails).
// Cleanups run last-in first-out, so a user goes before its groups.
func addUser(t *testing.T, name string, groups ...string) osUser {
	t.Helper()
	args := []string{"--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"}
	if len(groups) > 0 {
		args = append(args, "--groups", strings.Join(groups, ","))
	}
	if out, err := exec.Command("useradd", append(args, name)...).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	id := func(flag string) int {
		out, err := exec.Command("id", flag, name).Output()
		if err != nil {
			t.Fatalf("id %s %s: %v", flag, name, err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		return n
	}
	return osUser{name: name, uid: id("-u"), gid: id("-g")}
}

// as runs args as u (its uid, primary gid and supplementary groups from
// the user database, as a login would set them) with setpriv.
func (u osUser) as(ctx context.Context, stdin []byte, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, "setpriv", append([]string{"--reuid=" + u.name, "--regid=" + u.name, "--init-groups", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// curl is one request over the socket as u: the status code and the body.
func (u osUser) curl(t *testing.T, socket, method, path, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"curl", "-sS", "--unix-socket", socket, "-X", method, "-o", "-", "-w", "\n%{http_code}"}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "--data-binary", "@-")
	}
	out, stderr, err := u.as(ctx, []byte(body), append(args, "http://localhost"+path)...)
	if err != nil {
		t.Fatalf("curl %s %s as %s: %v: %s", method, path, u.name, err, stderr)
	}
	i := strings.LastIndexByte(out, '\n')
	code, err := strconv.Atoi(out[i+1:])
	if err != nil {
		t.Fatalf("curl %s %s as %s: no status code in %q", method, path, u.name, out)
	}
	return code, out[:i]
}

// daemon is a `berthd serve` run on the host as a plain process.
type daemon struct {
	cmd    *exec.Cmd
	socket string
	log    *bytes.Buffer
	done   chan error
}

// startDaemon runs berthd serve with its state and socket in a fresh
// directory and waits until the socket answers /readyz. It is stopped
// (SIGTERM, then SIGKILL) at the end.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startDaemonEnv(t, nil, args...)
}

// startDaemonEnv is startDaemon with extra environment variables.
func startDaemonEnv(t *testing.T, env []string, args ...string) *daemon {
	t.Helper()
	bin := binaries(t)
	dir, err := testenv.TempDir("berth-daemon")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The users must traverse to the socket.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "berthd.yaml")
	// berthd runs in the host's network namespace here: no cluster DNS
	// address on the host's lo (agent/dns); the Service rules are written
	// only once a Service exists (agent/proxy), and these tests make none.
	if err := os.WriteFile(conf, []byte("stateDir: "+dir+"/state\nrunDir: "+dir+"/run\nsocket: {path: "+dir+"/run/berth.sock}\nnetwork: {clusterDNS: \"\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &daemon{socket: filepath.Join(dir, "run", "berth.sock"), log: &bytes.Buffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(filepath.Join(bin, "berthd"), append([]string{"serve", "--config", conf, "--log-level", "debug"}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.Env = append(os.Environ(), env...)
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(os.Interrupt)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("berthd log:\n%s", d.log)
		}
	})
	hc := d.client()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := hc.Get("http://localhost/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d
			}
		}
		select {
		case err := <-d.done:
			t.Fatalf("berthd exited: %v\n%s", err, d.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("berthd not ready: %v\n%s", err, d.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// client speaks HTTP over the socket as this process (root).
func (d *daemon) client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", d.socket)
	}}}
}
