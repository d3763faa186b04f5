// Package reconcile is what berthd does once at start, before the pod
// worker: it compares the pods of the store with what exists of berth on
// this host (pod directories and records, container units, bundles,
// pinned namespaces and mounts), leaves alone every pod that may be a
// stored pod's (adopted, for the worker to track), and removes the rest,
// with an event for each orphan against the Node. Starting what should run
// is the worker's job.
//
// Its rule: a berthd that crash-loops never touches running containers.
// Only what belongs to no stored pod, or to an earlier pod of a stored
// pod's name (another uid), or to a start that never completed, is
// removed; see decide and docs/systemd.md "Reconcile".
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/store"
)

// PodsResource is the store's resource of pods.
const PodsResource store.Resource = "pods"

// Store is what reconcile reads of the desired state; *store.Store
// provides it.
type Store interface {
	List(res store.Resource, ns string, fn func(data []byte) error) (uint64, error)
}

// Host is the host view and the removals; *pods.Runtime provides them.
type Host interface {
	Host(ctx context.Context) (*pods.Host, error)
	StopUnit(ctx context.Context, name string) error
	RemoveBundle(key string) error
	RemovePodDirs(ctx context.Context, key string) error
	// GCNetwork detaches pod network attachments no remaining pod
	// directory accounts for.
	GCNetwork(ctx context.Context) error
}

// Recorder records events; *events.Recorder provides it. It takes the
// reference client-go's record.EventRecorder would make of the object (an
// orphan's pod no longer exists, so the reference is the Node's).
type Recorder interface {
	Event(ref *corev1.ObjectReference, eventtype, reason, message string)
}

var (
	_ Store = (*store.Store)(nil)
	_ Host  = (*pods.Runtime)(nil)
)

// Event reasons. The pod an orphan belonged to no longer exists, so the
// events are the Node's, as the kubelet's are for what it finds on its
// host.
const (
	ReasonRemovingOrphanedPod       = "RemovingOrphanedPod"       // Normal: a pod directory and what is left of its containers
	ReasonRemovingOrphanedContainer = "RemovingOrphanedContainer" // Normal: units or bundles no pod directory accounts for
	ReasonFailedRemovingOrphan      = "FailedRemovingOrphan"      // Warning: a removal failed; retried at the next start
	ReasonUnreadablePodRecord       = "UnreadablePodRecord"       // Warning: a stored pod's record cannot be read; nothing of it is touched
	ReasonSparedWithNewState        = "OrphanLeftRunning"         // Warning: the state file is new, so a running container of no stored pod is left alone
	ReasonSharedRunDirectory        = "SharedRunDirectory"        // Warning: a pod directory of another state directory's pod is left alone
)

// Config wires a Reconciler.
type Config struct {
	Store    Store
	Host     Host
	Recorder Recorder // nil: no events
	NodeName string   // the Node the events are about
	Log      hclog.Logger
	// Parallel bounds the unit stops under way at once (each may take its
	// container's grace period); default 16.
	Parallel int
	// FreshStore says the state file was created by this start. Its empty
	// store then proves nothing about the containers that run (a state file
	// lost or moved, berthd started with another stateDir): orphans with a
	// running unit are left alone and reported, never stopped.
	FreshStore bool
}

// Reconciler removes orphans once at start.
type Reconciler struct {
	cfg Config
	log hclog.Logger
}

// New returns a Reconciler.
func New(cfg Config) *Reconciler {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 16
	}
	return &Reconciler{cfg: cfg, log: cfg.Log.Named("reconcile")}
}

// Report is what one reconcile found and did.
type Report struct {
	Adopted []Adopted  `json:"adopted,omitempty"`
	Kept    []Kept     `json:"kept,omitempty"`
	Removed []*Removal `json:"removed,omitempty"` // each with Error set if it did not finish
	// Foreign are the container units of other state directories, left
	// alone.
	Foreign []Foreign `json:"foreign,omitempty"`
}

// Reconcile runs once and logs its report; it is what the worker calls
// before it syncs the stored pods. It must run before any pod is started
// or removed by this process.
func (r *Reconciler) Reconcile(ctx context.Context) error {
	_, err := r.Run(ctx)
	return err
}

// Run reconciles and returns the report. A failed removal does not stop
// the others; its error is in the report and in the returned error, and
// what it left is found again at the next start.
func (r *Reconciler) Run(ctx context.Context) (*Report, error) {
	stored, err := r.storedPods()
	if err != nil {
		return nil, fmt.Errorf("reconcile: list stored pods: %w", err)
	}
	h, err := r.cfg.Host.Host(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: list the host: %w", err)
	}
	plan := decide(stored, h)
	if r.cfg.FreshStore {
		r.spareRunning(plan, h)
	}
	rep := &Report{Adopted: plan.Adopt, Kept: plan.Keep, Removed: plan.Remove, Foreign: plan.Foreign}
	for _, f := range plan.Foreign {
		r.log.Debug("unit of another state directory left alone", "unit", f.Unit, "stateDir", f.StateDir)
	}
	for _, a := range plan.Adopt {
		if a.Warning != "" {
			r.log.Warn("adopted pod", "pod", a.Namespace+"/"+a.Name, "uid", a.UID, "warning", a.Warning)
		} else {
			r.log.Debug("adopted pod", "pod", a.Namespace+"/"+a.Name, "uid", a.UID)
		}
	}
	for _, k := range plan.Keep {
		msg := fmt.Sprintf("Keeping pod directory %s untouched: %s", k.Key, k.Why)
		r.log.Warn("kept pod directory", "key", k.Key, "why", k.Why)
		reason := ReasonUnreadablePodRecord
		switch {
		case k.spared:
			reason = ReasonSparedWithNewState
		case k.shared:
			reason = ReasonSharedRunDirectory
		}
		r.event(corev1.EventTypeWarning, reason, msg)
	}
	err = r.apply(ctx, plan.Remove)
	// After the removals: what remains is what the attachments may keep.
	if gerr := r.cfg.Host.GCNetwork(ctx); gerr != nil {
		r.log.Error("pod network GC", "error", gerr)
		err = errors.Join(err, fmt.Errorf("reconcile: pod network GC: %w", gerr))
	}
	r.log.Info("reconciled", "adopted", len(plan.Adopt), "kept", len(plan.Keep), "orphans", len(plan.Remove),
		"foreign", len(plan.Foreign), "error", err)
	return rep, err
}

// spareRunning moves the removals with a running unit to Keep: with a
// fresh state file, nothing proves they are not wanted.
func (r *Reconciler) spareRunning(plan *Plan, h *pods.Host) {
	running := map[string]bool{}
	for _, u := range h.Units {
		if u.Running() {
			running[u.Name] = true
		}
	}
	remove := plan.Remove[:0]
	for _, rm := range plan.Remove {
		runs := false
		for _, u := range rm.Units {
			runs = runs || running[u]
		}
		if !runs {
			remove = append(remove, rm)
			continue
		}
		why := "the state file is new, so an empty store says nothing about running containers; " +
			"they are left alone (stop them with systemctl, or restore the state file)"
		plan.Keep = append(plan.Keep, Kept{Key: rm.Key, Pod: rm.Pod, Why: why, spared: true})
	}
	plan.Remove = remove
}

// storedPods decodes the store's pods.
func (r *Reconciler) storedPods() ([]*corev1.Pod, error) {
	var out []*corev1.Pod
	_, err := r.cfg.Store.List(PodsResource, "", func(data []byte) error {
		var p corev1.Pod
		if err := json.Unmarshal(data, &p); err != nil {
			return fmt.Errorf("decode stored pod: %w", err)
		}
		out = append(out, &p)
		return nil
	})
	return out, err
}

// apply removes the orphans in RemovePod's order, across all of them:
// every unit first (a bundle is in use while its unit runs), then bundles,
// then directories with the records last. An orphan whose unit or bundle
// could not be removed keeps its directories, so that its record still
// names it at the next start.
func (r *Reconciler) apply(ctx context.Context, rs []*Removal) error {
	for _, g := range rs {
		reason := ReasonRemovingOrphanedContainer
		if g.Dirs {
			reason = ReasonRemovingOrphanedPod
		}
		r.event(corev1.EventTypeNormal, reason, message(g))
		r.log.Info("removing orphan", "key", g.Key, "pod", podString(g.Pod), "why", g.Why,
			"units", g.Units, "bundles", g.Bundles, "mounts", g.Mounts, "dirs", g.Dirs)
	}
	var (
		mu   sync.Mutex
		errs = map[*Removal][]error{}
		wg   sync.WaitGroup
		sem  = make(chan struct{}, r.cfg.Parallel)
	)
	fail := func(g *Removal, err error) {
		mu.Lock()
		errs[g] = append(errs[g], err)
		mu.Unlock()
	}
	for _, g := range rs {
		for _, u := range g.Units {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := r.cfg.Host.StopUnit(ctx, u); err != nil {
					fail(g, err)
				}
			}()
		}
	}
	wg.Wait()
	for _, g := range rs {
		if len(errs[g]) > 0 {
			continue
		}
		for _, b := range g.Bundles {
			if err := r.cfg.Host.RemoveBundle(b); err != nil {
				fail(g, fmt.Errorf("remove bundle %s: %w", b, err))
			}
		}
	}
	for _, g := range rs {
		if len(errs[g]) > 0 || !g.Dirs {
			continue
		}
		if err := r.cfg.Host.RemovePodDirs(ctx, g.Key); err != nil {
			fail(g, fmt.Errorf("remove pod directories %s: %w", g.Key, err))
		}
	}
	var all []error
	for _, g := range rs {
		if e := errors.Join(errs[g]...); e != nil {
			g.Error = e.Error()
			all = append(all, e)
			r.log.Error("orphan not removed", "key", g.Key, "pod", podString(g.Pod), "error", e)
			r.event(corev1.EventTypeWarning, ReasonFailedRemovingOrphan, fmt.Sprintf("Failed to remove %s: %v", subject(g), e))
		}
	}
	return errors.Join(all...)
}

// event records against the Node, referenced as the kubelet does
// (Kind Node, its name, the name as uid).
func (r *Reconciler) event(eventtype, reason, msg string) {
	if r.cfg.Recorder == nil {
		return
	}
	ref := &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: r.cfg.NodeName, UID: types.UID(r.cfg.NodeName)}
	r.cfg.Recorder.Event(ref, eventtype, reason, msg)
}

// subject names an orphan in a message.
func subject(g *Removal) string {
	switch {
	case g.Pod != nil:
		return "orphaned pod " + g.Pod.String()
	case g.Dirs:
		return "orphaned pod directory " + g.Key
	case len(g.Units) > 0:
		return "orphaned unit " + strings.Join(g.Units, ", ")
	default:
		return "orphaned bundle " + strings.Join(g.Bundles, ", ")
	}
}

// message is an orphan's event: the kubelet's "Removing orphaned pod …"
// wording, why, and what goes.
func message(g *Removal) string {
	var what []string
	if len(g.Units) > 0 {
		what = append(what, "units "+strings.Join(g.Units, ", "))
	}
	if len(g.Bundles) > 0 {
		what = append(what, "bundles "+strings.Join(g.Bundles, ", "))
	}
	if len(g.Mounts) > 0 {
		what = append(what, fmt.Sprintf("%d mounts", len(g.Mounts)))
	}
	if g.Dirs {
		what = append(what, "its namespaces and directories")
	}
	msg := "Removing " + subject(g) + ": " + g.Why
	if len(what) > 0 && (g.Pod != nil || g.Dirs) {
		msg += "; removing " + strings.Join(what, "; ")
	}
	return msg
}

func podString(p *PodRef) string {
	if p == nil {
		return ""
	}
	return p.Namespace + "/" + p.Name + " " + string(p.UID)
}
