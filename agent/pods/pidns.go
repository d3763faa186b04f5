package pods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/unitgen"
)

// A pod with spec.shareProcessNamespace: true has a pause (unitgen
// pause.go): a unit of its own, started before any container, whose
// process is PID 1 of the PID namespace every container of the pod joins
// (pinned at <run>/ns/pid). Without the field nothing here happens: each
// container has its own PID namespace.

// pidNSPath is Paths.PIDNS of pod's containers: the pause's pinned
// namespace, "" for a pod that does not share its process namespace.
func pidNSPath(runDir string, pod *corev1.Pod) string {
	if !unitgen.SharesProcessNamespace(pod) {
		return ""
	}
	return filepath.Join(runDir, unitgen.PIDNSPin)
}

// startPause starts the pod's pause and waits until its PID namespace is
// pinned (the unit's start job is done once berth-init pause has exited),
// for a pod that shares its process namespace; otherwise it does nothing.
// It must return before any container's unit is started: their units are
// bound to the pause's (BindsTo=), and systemd fails the start of a unit
// bound to one it does not know. On failure the caller's clean-up
// (removePod → stopPause) removes what was made.
func (r *Runtime) startPause(ctx context.Context, d podDirs, pod *corev1.Pod) error {
	if !unitgen.SharesProcessNamespace(pod) {
		return nil
	}
	stateDir, err := filepath.Abs(r.cfg.StateDir)
	if err != nil {
		return err
	}
	unit, err := unitgen.PauseUnit(unitgen.PauseInput{Pod: pod, Init: r.cfg.Init, Dir: d.run, StateDir: stateDir})
	if err != nil {
		return err
	}
	if err := r.units.Start(ctx, unit.Name, unit.Properties); err != nil {
		return fmt.Errorf("pause of pod %s/%s: %w", d.ns, d.pod, err)
	}
	r.log.Info("pause started", "pod", d.ns+"/"+d.pod, "unit", unit.Name)
	return nil
}

// stopPause stops the pod's pause, if it has one, and unpins its PID
// namespace. Stopping the pause kills whatever is left in the namespace,
// so the caller stops the containers first (and systemd would: their
// units are ordered After= the pause, so a stop of the pause stops them
// first). A pod without a pause has nothing to stop: it is not an error.
func (r *Runtime) stopPause(ctx context.Context, d podDirs) error {
	unit := unitgen.PauseUnitName(d.ns, d.pod)
	var errs []error
	if err := r.stopUnit(ctx, unit); err != nil {
		// The pin stays while the pause may still run: the next removal
		// (or reconcile) tries again.
		return err
	}
	pin := filepath.Join(d.run, unitgen.PIDNSPin)
	// EINVAL: not a mount point; ENOENT, ENOTDIR: nothing there.
	if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
		errs = append(errs, fmt.Errorf("unpin %s: %w", pin, err))
	} else if err := os.Remove(pin); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
		errs = append(errs, err)
	}
	if err := os.Remove(filepath.Join(d.run, unitgen.PausePIDFile)); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// PauseGone reports whether the pod's pause has died: the pod shares its
// process namespace (its record says so) and its pause unit is not active
// (systemd no longer knows it, or it is inactive or failed). Its
// containers have then been killed by the kernel and stopped by systemd
// (BindsTo=), and none can start again in that namespace: the pod must be
// removed and started anew, as the kubelet recreates a sandbox whose pause
// container died. False for a pod without a pause.
func (r *Runtime) PauseGone(ctx context.Context, ns, name string) (bool, error) {
	d, err := r.dirs(ns, name)
	if err != nil {
		return false, err
	}
	pod, err := loadPod(d)
	if err != nil {
		return false, err
	}
	if !unitgen.SharesProcessNamespace(pod) {
		return false, nil
	}
	st, err := r.units.Status(ctx, unitgen.PauseUnitName(ns, name))
	if errdefs.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	switch st.ActiveState {
	case "active", "activating", "reloading":
		return false, nil
	}
	return true, nil
}
