// Package nodereg gives a test node what the trust tests and the demo need
// inside it: Debian's docker-registry on the node's loopback, images pushed
// into it with skopeo, and signatures made by the real cosign CLI. Everything
// runs in the node, whose teardown removes it.
package nodereg

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/test/node"
)

// Registry is a registry running inside a node.
type Registry struct {
	n    *node.Node
	Host string // host:port as seen inside the node
}

// Start runs docker-registry (distribution 2.8) as a transient unit of the
// node on 127.0.0.1:port, storing under /var/tmp/registry-<port>.
func Start(ctx context.Context, n *node.Node, port int) (*Registry, error) {
	dir := fmt.Sprintf("/var/tmp/registry-%d", port)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf("version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s/data}, delete: {enabled: true}}\nhttp: {addr: %q}\n", dir, host)
	if err := os.MkdirAll(hostPath(n, dir), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(hostPath(n, dir+"/config.yml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if _, err := n.Run(ctx, "systemd-run", fmt.Sprintf("--unit=registry-%d", port), "/usr/bin/docker-registry", "serve", dir+"/config.yml"); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := n.Run(ctx, "busybox", "wget", "-q", "-O", "/dev/null", "http://"+host+"/v2/"); err == nil {
			return &Registry{n: n, Host: host}, nil
		}
		if time.Now().After(deadline) {
			out, _ := n.Run(ctx, "journalctl", "--no-pager", "-u", fmt.Sprintf("registry-%d", port))
			return nil, fmt.Errorf("registry on %s did not come up:\n%s", host, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hostPath is the host path of a path under the node's /var.
func hostPath(n *node.Node, p string) string {
	return filepath.Join(n.Dir, "var", strings.TrimPrefix(p, "/var/"))
}

// PushLayout copies the image tagged tag in the OCI layout at layout (a node
// path) to repo:dstTag in the registry with skopeo, and returns the digest
// the registry has for it.
func (r *Registry) PushLayout(ctx context.Context, layout, tag, repo, dstTag string) (string, error) {
	dst := r.Host + "/" + repo + ":" + dstTag
	if _, err := r.n.Run(ctx, "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
		"oci:"+layout+":"+tag, "docker://"+dst); err != nil {
		return "", err
	}
	out, err := r.n.Run(ctx, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+dst)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// CopyCosign puts the cosign CLI from the host's PATH into binDir (a node's
// BinDir), where commands run in the node find it.
func CopyCosign(binDir string) error {
	src, err := exec.LookPath("cosign")
	if err != nil {
		return fmt.Errorf("cosign CLI not found (make test builds it with go install): %w", err)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(binDir, "cosign"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// GenerateKey makes a cosign key pair (empty password) in dir inside the
// node: dir/cosign.key and dir/cosign.pub.
func GenerateKey(ctx context.Context, n *node.Node, dir string) error {
	_, err := n.Run(ctx, "sh", "-c", "mkdir -p "+dir+" && cd "+dir+" && COSIGN_PASSWORD= cosign generate-key-pair >/dev/null 2>&1")
	return err
}

// Sign signs ref@digest with the key in keyDir, without the transparency
// log (there is no network), as the real cosign CLI does it.
func Sign(ctx context.Context, n *node.Node, keyDir, refAtDigest string, annotations ...string) error {
	args := []string{"env", "COSIGN_PASSWORD=", "cosign", "sign", "--key", keyDir + "/cosign.key", "--tlog-upload=false", "--yes"}
	for _, a := range annotations {
		args = append(args, "-a", a)
	}
	_, err := n.Run(ctx, append(args, refAtDigest)...)
	return err
}
