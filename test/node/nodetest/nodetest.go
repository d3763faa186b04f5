// Package nodetest boots a test/node node for a Go test. It is apart from
// package node so that the berth-node command does not link package testing.
package nodetest

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/node"
	"github.com/berth-dev/berth/test/testenv"
)

// New boots a node for t (skipping without root, failing under
// BERTH_TEST_ALL=1), dumps its journal into the test log if t failed, and
// always tears it down.
func New(t testing.TB, opts node.Options) *node.Node {
	t.Helper()
	testenv.RequireRoot(t)
	if opts.Name == "" {
		opts.Name = t.Name()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := node.Start(ctx, opts)
	if err != nil {
		t.Fatalf("boot systemd node: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("journal of node %s:\n%s", n.Name, n.Journal(context.Background()))
		}
		if err := n.Stop(); err != nil {
			t.Errorf("tear down node %s: %v", n.Name, err)
		}
	})
	return n
}
