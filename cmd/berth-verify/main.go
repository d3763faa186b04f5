// Command berth-verify judges a container's image against the trust policy
// again, from the local image store only (no network): the signatures stored
// at pull time, or the layout's directory scope. The unit's `berth-init
// start --verify-image` runs it when its cached record is stale; a non-zero
// exit refuses the (re)start with the policy's reason in the journal.
//
//	berth-verify <bundle>
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/berth-dev/berth/agent/trust"
	"github.com/berth-dev/berth/image"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: berth-verify <bundle>")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := trust.Verify(ctx, os.Args[1], func(root string) (trust.Store, error) { return image.New(root) })
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth-verify: %v\n", err)
		os.Exit(1)
	}
}
