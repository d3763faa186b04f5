package nodeberthd

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/imagetest"
	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/node/nodetest"
	"github.com/berth-dev/berth/test/nodereg"
	"github.com/berth-dev/berth/test/testenv"
)

// Setup is what the end-to-end suites that drive berthd start from: a
// disposable node named name holding the binaries `make build` builds and
// cosign, a registry inside it with a cosign-signed image and an unsigned
// one under a key-only trust policy (nodereg.SignedImages), and berthd
// installed from packaging/ with config as its berthd.yaml and running.
// Everything is removed when the test ends, also when it fails.
func Setup(t *testing.T, name, config string) (*node.Node, *nodereg.Signed) {
	t.Helper()
	testenv.RequireRoot(t)
	_, err := os.Stat(imagetest.Busybox)
	testenv.Require(t, err == nil, "needs busybox-static (/bin/busybox); `make test` installs it")
	bin, err := testenv.TempDir("berth-" + name + "-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	if err := Build(bin); err != nil {
		t.Fatal(err)
	}
	if err := nodereg.CopyCosign(bin); err != nil {
		t.Fatal(err)
	}
	n := nodetest.New(t, node.Options{Name: name, BinDir: bin})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	signed, err := nodereg.SignedImages(ctx, n, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if err := Install(ctx, n, config); err != nil {
		t.Fatal(err)
	}
	return n, signed
}

// Write writes content to path in n (0644, its directory made), failing
// the test on an error.
func Write(t *testing.T, n *node.Node, path, content string) {
	t.Helper()
	if err := writeNode(n, path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Run runs args in n and returns their output, failing the test on an error.
func Run(t *testing.T, n *node.Node, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := n.Run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
