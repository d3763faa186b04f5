// Package loop runs berthd's controllers as the kube-controller-manager's
// are driven, level-triggered: a pass over the stored state after every
// change of the resources a controller follows (changes coalesce into one
// pass), after a lost watch, every resync period, and when the controller
// asks for one (a deadline it waits for). A pass decides from what is
// stored only, so a berthd killed in the middle of one carries on from
// there.
package loop

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/berth-dev/berth/agent/store"
)

// Loop is one controller's passes.
type Loop struct {
	kick chan struct{}
}

// New returns a loop.
func New() *Loop { return &Loop{kick: make(chan struct{}, 1)} }

// Poke asks for a pass (one more at most, however often it is called).
func (l *Loop) Poke() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// After asks for a pass after d.
func (l *Loop) After(d time.Duration) { time.AfterFunc(d, l.Poke) }

// Run follows res in w and runs pass until ctx ends; a failed pass is
// logged and the next one tries again.
func (l *Loop) Run(ctx context.Context, w store.Watcher, res []store.Resource, resync time.Duration, log hclog.Logger, pass func(context.Context) error) error {
	for _, r := range res {
		if err := store.Follow(ctx, w, r, func(store.Event) { l.Poke() }, l.Poke); err != nil {
			return fmt.Errorf("follow %s: %w", r, err)
		}
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		if err := pass(ctx); err != nil && ctx.Err() == nil {
			log.Warn("pass", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-l.kick:
		}
	}
}
