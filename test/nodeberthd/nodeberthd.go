// Package nodeberthd installs berthd into a disposable node (test/node) the
// way an operator installs it: the unit, sysusers and tmpfiles files from
// packaging/, a berthd.yaml, then `systemctl start berthd`. Only the
// binaries' path differs: a drop-in points ExecStart at the node's
// /opt/berth/bin, as an operator's drop-in would.
package nodeberthd

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/testenv"
)

// Socket is berthd's socket inside the node.
const Socket = "/run/berth/berth.sock"

// Packaging is the repository's packaging/ directory.
func Packaging() (string, error) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "packaging"), nil
}

// Install puts packaging/'s files into n, writes config as
// /etc/berth/berthd.yaml (none when empty), creates the berth group and
// directories as a package's scripts would, and starts berthd.service,
// waiting until it is active (Type=notify: READY was sent) and /readyz
// answers on the socket.
func Install(ctx context.Context, n *node.Node, config string) error {
	pkg, err := Packaging()
	if err != nil {
		return err
	}
	files := map[string]string{
		"berthd.service":        "/etc/systemd/system/berthd.service",
		"sysusers.d/berth.conf": "/etc/sysusers.d/berth.conf",
		"tmpfiles.d/berth.conf": "/etc/tmpfiles.d/berth.conf",
	}
	for src, dst := range files {
		b, err := os.ReadFile(filepath.Join(pkg, src))
		if err != nil {
			return err
		}
		if err := writeNode(n, dst, b, 0o644); err != nil {
			return err
		}
	}
	dropIn := "[Service]\nExecStart=\nExecStart=" + node.BinMount + "/berthd serve\n"
	if err := writeNode(n, "/etc/systemd/system/berthd.service.d/10-test-binaries.conf", []byte(dropIn), 0o644); err != nil {
		return err
	}
	if config != "" {
		if err := writeNode(n, "/etc/berth/berthd.yaml", []byte(config), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"systemd-sysusers"},
		{"systemd-tmpfiles", "--create"},
		{"systemctl", "daemon-reload"},
		{"systemctl", "start", "berthd.service"},
	} {
		if _, err := n.Run(ctx, args...); err != nil {
			journal, _ := n.Run(ctx, "journalctl", "--no-pager", "-n", "50", "-u", "berthd.service")
			return fmt.Errorf("%w\nberthd's journal:\n%s", err, journal)
		}
	}
	return WaitReady(ctx, n)
}

// WaitReady waits until berthd answers /readyz on its socket.
func WaitReady(ctx context.Context, n *node.Node) error {
	c := Client(n)
	var last error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://berth/readyz", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	journal, _ := n.Run(ctx, "journalctl", "--no-pager", "-n", "50", "-u", "berthd.service")
	return fmt.Errorf("berthd not ready after 60s: %v\nberthd's journal:\n%s", last, journal)
}

// Client speaks HTTP to berthd's socket in n, from the host (as root, which
// the node shares with the host).
func Client(n *node.Node) *http.Client {
	sock := n.HostPath(Socket)
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

func writeNode(n *node.Node, path string, data []byte, mode os.FileMode) error {
	host := n.HostPath(path)
	if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
		return err
	}
	return os.WriteFile(host, data, mode)
}

// Build runs `make build` with BIN=dir: berthd, berth-init and berth-hook
// (static), berth-verify and berth with its version stamps, exactly as the Makefile
// builds them for an operator.
func Build(dir string) error {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("make", "-s", "-C", root, "build", "BIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make build: %w\n%s", err, out)
	}
	return nil
}
