// Command berth-hook runs a container's lifecycle hook from its unit:
// ExecStartPost= (postStart) and ExecStop= (preStop) of a container with
// hooks (unitgen). It is berth-init's hook code with the httpGet handler
// linked in, a binary of its own so that berth-init, which runs at every
// container start, links neither package net nor crypto/tls.
//
//	berth-hook poststart|prestop <bundle>
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/berth-dev/berth/agent/berthinit"
	"github.com/berth-dev/berth/agent/berthinit/httphook"
	bndl "github.com/berth-dev/berth/agent/bundle"
)

func main() {
	berthinit.HTTPGet = func(ctx context.Context, g *bndl.HTTPHandler, netns func() (int, bool, error)) error {
		return httphook.Get(ctx, g, netns)
	}
	// The hook's own messages go to the journal natively, out of the
	// container's log stream (berthinit.HookLog).
	berthinit.HookLog = func(msg string) {
		if journal.Enabled() {
			if err := journal.Send(msg, journal.PriWarning, map[string]string{"SYSLOG_IDENTIFIER": "berth-hook"}); err == nil {
				return
			}
		}
		fmt.Fprintln(os.Stderr, msg)
	}
	os.Exit(berthinit.HookMain(os.Args[1:]))
}
