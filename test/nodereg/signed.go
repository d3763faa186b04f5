package nodereg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
)

// Signed is a registry in a node holding a cosign-signed image and an
// unsigned one, and a trust policy that accepts only the signed repository.
type Signed struct {
	*Registry
	Ref      string // the signed image by tag: <host>/demo/hello:1
	Digest   string // its manifest digest
	Unsigned string // an unsigned image by tag: <host>/demo/unsigned:1
	Policy   string // the trust policy written to /etc/berth/policy.json
}

// SignedImages builds two busybox images, pushes them to a registry on the
// node's port, signs the first with a key made in /etc/berth/keys and
// writes /etc/berth/policy.json trusting only that key for <host>/demo/hello.
// The node's BinDir must hold cosign (CopyCosign).
func SignedImages(ctx context.Context, n *node.Node, port int) (*Signed, error) {
	img, err := imagetest.BusyboxImage(nil)
	if err != nil {
		return nil, err
	}
	unsigned, err := imagetest.BusyboxImage(func(c *v1.Config) { c.Env = append(c.Env, "UNSIGNED=1") })
	if err != nil {
		return nil, err
	}
	layout := hostPath(n, "/var/tmp/images")
	for tag, im := range map[string]v1.Image{"busybox:signed": img, "busybox:unsigned": unsigned} {
		if _, err := imagetest.WriteLayout(layout, tag, im); err != nil {
			return nil, err
		}
	}
	reg, err := Start(ctx, n, port)
	if err != nil {
		return nil, err
	}
	digest, err := reg.PushLayout(ctx, "/var/tmp/images", "busybox:signed", "demo/hello", "1")
	if err != nil {
		return nil, err
	}
	if _, err := reg.PushLayout(ctx, "/var/tmp/images", "busybox:unsigned", "demo/unsigned", "1"); err != nil {
		return nil, err
	}
	if err := GenerateKey(ctx, n, "/etc/berth/keys"); err != nil {
		return nil, err
	}
	if err := Sign(ctx, n, "/etc/berth/keys", reg.Host+"/demo/hello@"+digest); err != nil {
		return nil, err
	}
	policy := `{"default": [{"type": "reject"}],
 "transports": {"docker": {"` + reg.Host + `/demo/hello": [{"type": "sigstoreSigned", "keyPath": "/etc/berth/keys/cosign.pub"}]}}}
`
	p := filepath.Join(fmt.Sprintf("/proc/%d/root", n.PID()), "etc/berth/policy.json")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p, []byte(policy), 0o644); err != nil {
		return nil, err
	}
	return &Signed{Registry: reg, Ref: reg.Host + "/demo/hello:1", Digest: digest,
		Unsigned: reg.Host + "/demo/unsigned:1", Policy: policy}, nil
}
