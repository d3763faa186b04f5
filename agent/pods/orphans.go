package pods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/berth-dev/berth/agent/volumes"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// The removals below are the reconciler's: each removes one kind of
// leftover, finishes what an earlier attempt left half done, and succeeds
// when there is nothing left to remove. The caller decides what is an
// orphan and keeps RemovePod's order (units, bundles, namespaces and run
// directory, the state directory with the record last), so that a removal
// cut short by a SIGKILL is found and finished by the next one.

// StopUnit stops one of berth's container services and resets its failed
// state, so that systemd forgets it. Any other unit name is refused, and so
// is a container service of another state directory (UnitStateDir): the
// name is shared by every berth on the host, the unit is not.
func (r *Runtime) StopUnit(ctx context.Context, name string) error {
	if !IsContainerUnit(name) {
		return fmt.Errorf("stop %s: %w: not one of berth's container units", name, errdefs.ErrInvalidArgument)
	}
	if err := r.checkOwnUnit(ctx, name); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	if err := r.units.Stop(ctx, name); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	if err := r.units.ResetFailed(ctx, name); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("reset-failed %s: %w", name, err)
	}
	return nil
}

// checkOwnUnit refuses a loaded unit of another state directory; one that
// is not loaded has nothing to stop.
func (r *Runtime) checkOwnUnit(ctx context.Context, name string) error {
	lister, ok := r.units.(UnitLister)
	if !ok {
		return fmt.Errorf("%w: the runtime's Units cannot tell whose a unit is", errdefs.ErrNotImplemented)
	}
	us, err := lister.ListUnits(ctx, name)
	if err != nil {
		return err
	}
	own, err := filepath.Abs(r.cfg.StateDir)
	if err != nil {
		return err
	}
	for _, u := range us {
		if u.Name != name {
			continue
		}
		if dir := UnitStateDir(u); dir != own {
			if dir == "" {
				dir = "none it names"
			}
			return fmt.Errorf("%w: the unit belongs to state directory %s, not %s", errdefs.ErrPermissionDenied, dir, own)
		}
	}
	return nil
}

// RemoveBundle unmounts whatever is mounted in a container's bundle
// directory and removes it: spec, seccomp filter, records, FIFO, and the
// overlay's upper and work directories. Its unit must be stopped first.
func (r *Runtime) RemoveBundle(key string) error {
	dir, err := under(filepath.Join(r.cfg.StateDir, "containers"), key)
	if err != nil {
		return err
	}
	return removeTree(dir)
}

// RemovePodDirs removes a pod's directories by key: its pod slice (named
// by its record, if readable), its attachment to the pod network, its run
// directory (namespaces unpinned first, pod files) and
// then its state directory, the record last. Its units must be stopped and
// its bundles removed first.
func (r *Runtime) RemovePodDirs(ctx context.Context, key string) error {
	run, err := under(filepath.Join(r.cfg.RunDir, "pods"), key)
	if err != nil {
		return err
	}
	state, err := under(filepath.Join(r.cfg.StateDir, "pods"), key)
	if err != nil {
		return err
	}
	// Its units are stopped: its pod slice goes, named by its record.
	if err := r.stopRecordedPodSlice(ctx, key, state); err != nil {
		return fmt.Errorf("pod slice: %w", err)
	}
	if err := r.updateSums(ctx, key, nil); err != nil {
		return fmt.Errorf("slices' sums: %w", err)
	}
	// The record may be gone or corrupt: a host-network pod's empty
	// detach is harmless, so no record is needed.
	if err := r.detach(ctx, key, run, nil); err != nil {
		return err
	}
	// Volumes first of the state: their tmpfs and pins go before any
	// file is removed (Teardown also works from the resolved mount table).
	if err := volumes.Teardown(filepath.Join(state, "volumes")); err != nil {
		return fmt.Errorf("volumes: %w", err)
	}
	if err := removeNamespaces(filepath.Join(run, "ns")); err != nil {
		return err
	}
	if err := removeTree(run); err != nil {
		return err
	}
	// Everything but the record, then the record, then the directory: the
	// record is what tells the next reconcile whose leftovers these are.
	names, err := dirNames(state)
	if err != nil {
		return err
	}
	for _, n := range names {
		if n == podRecord {
			continue
		}
		if err := removeTree(filepath.Join(state, n)); err != nil {
			return err
		}
	}
	return removeTree(state)
}

// removeTree unmounts every mount point at or below dir (deepest first,
// detached, as removeNamespaces does) and then removes dir. It never
// descends into a mount: were one left, RemoveAll would delete what it
// shows (an image layer, a host directory) instead of the leftover.
func removeTree(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := unmountBelow(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// unmountBelow detaches every mount at or below dir and checks that none is
// left.
func unmountBelow(dir string) error {
	dir = filepath.Clean(dir)
	// The mount table names resolved paths: a state directory reached
	// through a symlink must be compared resolved, or its mounts (volume
	// pins into the host's files) go unnoticed and RemoveAll walks
	// through them.
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	below := func() ([]string, error) {
		all, err := volumes.MountTable()
		if err != nil {
			return nil, err
		}
		var ps []string
		for _, m := range all {
			if m.Path == dir || strings.HasPrefix(m.Path, dir+"/") {
				ps = append(ps, m.Path)
			}
		}
		// Deepest first: a mount stacked inside another goes before it.
		sort.Slice(ps, func(i, j int) bool { return len(ps[i]) > len(ps[j]) })
		return ps, nil
	}
	ps, err := below()
	if err != nil || len(ps) == 0 {
		return err
	}
	var errs []error
	for _, p := range ps {
		// EINVAL: no longer a mount point (a parent's detach took it).
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	left, err := below()
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("%s: still mounted after unmounting: %s", dir, strings.Join(left, ", "))
	}
	return nil
}
