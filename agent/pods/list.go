package pods

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"k8s.io/apimachinery/pkg/types"

	bndl "github.com/berth-dev/berth/agent/bundle"
	"github.com/berth-dev/berth/agent/volumes"
	"github.com/berth-dev/berth/unitgen"
)

// UnitLister is what listing the host needs of systemd beyond Units: the
// units loaded under a name prefix, with the origin of each container
// unit. SystemdUnits' value provides it; a Units without it cannot list the
// host (errdefs.ErrNotImplemented).
type UnitLister interface {
	ListUnits(ctx context.Context, prefix string) ([]UnitSummary, error)
}

// UnitSummary is a loaded unit as systemd lists it.
type UnitSummary struct {
	Name                             string
	LoadState, ActiveState, SubState string
	JobType                          string // a pending job's type, "" if none
	// Of container units only (IsContainerUnit): what says whose the unit
	// is. Documentation= names the state directory of the berth that made
	// it (unitgen.InstanceDoc); ExecStart's argv names the bundle, which is
	// all a unit of a berth from before that mark has.
	Documentation []string
	ExecStart     [][]string
}

func (u systemdUnits) ListUnits(ctx context.Context, prefix string) ([]UnitSummary, error) {
	us, err := u.Conn.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	// Each container unit's origin is one D-Bus round trip; a few at a
	// time overlap their latency (reconcile lists every unit at start).
	sums := make([]UnitSummary, len(us))
	gone := make([]bool, len(us))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i, s := range us {
		sums[i] = UnitSummary{Name: s.Name, LoadState: s.LoadState, ActiveState: s.ActiveState, SubState: s.SubState, JobType: s.JobType}
		if !IsContainerUnit(s.Name) {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			o, err := u.Conn.Origin(ctx, s.Name)
			switch {
			case errdefs.IsNotFound(err):
				gone[i] = true // gone since it was listed
			case err != nil:
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			default:
				sums[i].Documentation, sums[i].ExecStart = o.Documentation, o.ExecStart
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	out := make([]UnitSummary, 0, len(us))
	for i := range sums {
		if !gone[i] {
			out = append(out, sums[i])
		}
	}
	return out, nil
}

// Host is what exists of berth on this host, read from disk, the mount
// table and systemd, without judging any of it: what belongs to which
// stored pod is the reconciler's decision.
type Host struct {
	// Pods are the pod keys with a directory under StateDir/pods or
	// RunDir/pods, sorted by key.
	Pods []HostPod
	// Units are berth's container services (berth-<ContainerKey>.service)
	// of this state directory, whatever their state; berth's slices are not
	// listed (stopping a slice stops every unit in it).
	Units []HostUnit
	// Foreign are container services of another state directory: another
	// berthd on this host, or `berthd --state-dir DIR pod run`. Whatever
	// their names, they are not this berth's to judge or touch.
	Foreign []HostUnit
	// Bundles are the container keys with a directory under
	// StateDir/containers, sorted.
	Bundles []string
	// Mounts are the mount points under RunDir/pods, StateDir/pods and
	// StateDir/containers (pinned namespaces; anything else is a leak),
	// with the key of the directory they are in.
	Mounts []HostMount
}

// HostPod is a pod directory as found, and what its record says.
type HostPod struct {
	Key string // unitgen.PodKey: the directory's name
	// From the record (pod.json), when it could be read.
	Namespace, Name string
	UID             types.UID
	Containers      []string
	// RecordErr is nil when the record was read, errdefs.ErrNotFound's
	// class when there is none (a start that stopped before writing it, or
	// a run directory without state), anything else when it is unreadable
	// or corrupt.
	RecordErr error
	State     bool // StateDir/pods/<key> exists
	Run       bool // RunDir/pods/<key> exists
	// Pinned: every namespace of the pod is an nsfs bind mount. A reboot
	// (RunDir is a tmpfs) or a start cut short leaves it false.
	Pinned bool
	// Released lists the containers of the record whose start got as far as
	// releasing their bundle to berth-init: config.json written and the
	// release FIFO gone, which happens only once the bundle and the pod's
	// namespaces are complete (bundle.AwaitRelease removes the FIFO when
	// released; RunPod when the start job succeeded).
	Released []string
	// Begun lists the containers whose start began (their bundle exists).
	// The containers of a later step of a pod's init sequence have not
	// begun while an earlier one runs.
	Begun []string
}

// ContainerKeys are the keys (units, bundles) of the record's containers,
// and the key of the pod's pause unit (unitgen.PauseUnitName; only a pod
// that shares its process namespace has one): a shortened key names no
// pod, so only the record can claim the pause for its pod. None without a
// record.
func (p *HostPod) ContainerKeys() []string {
	if p.RecordErr != nil {
		return nil
	}
	var ks []string
	for _, c := range p.Containers {
		ks = append(ks, unitgen.ContainerKey(p.Namespace, p.Name, c))
	}
	return append(ks, unitgen.ContainerKey(p.Namespace, p.Name, unitgen.PauseContainer))
}

// Started reports whether the pod's start got through: some container
// was released and every container whose start began was. The rest (the
// later steps of an init sequence) are the worker's to start.
func (p *HostPod) Started() bool {
	return p.RecordErr == nil && len(p.Released) > 0 && len(p.Released) == len(p.Begun)
}

// HostUnit is one of berth's container services.
type HostUnit struct {
	Name        string // berth-<Key>.service
	Key         string // unitgen.ContainerKey
	LoadState   string
	ActiveState string
	SubState    string
	JobType     string
	// StateDir is the state directory the unit belongs to (UnitStateDir),
	// "" when it names none.
	StateDir string
}

// Running reports whether systemd has a process or a job for the unit:
// anything but a settled inactive or failed unit.
func (u HostUnit) Running() bool {
	return u.JobType != "" || (u.ActiveState != "inactive" && u.ActiveState != "failed")
}

// HostMount is a mount point in one of berth's directories.
type HostMount struct {
	Path string
	Kind string // "pod" (under RunDir/pods or StateDir/pods) or "container" (under StateDir/containers)
	Key  string // the pod or container key of the directory it is in
	Type string // file system type (nsfs for a pinned namespace)
}

// ContainerKeyPodKey is the pod key of a plain container key
// (<namespace>_<pod>_<container>); false for a shortened key or anything
// that is not a container key.
func ContainerKeyPodKey(ck string) (string, bool) {
	parts := strings.Split(ck, "_")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", false
	}
	if ValidateName(parts[0], parts[1]) != nil {
		return "", false
	}
	return unitgen.PodKey(parts[0], parts[1]), true
}

// unitKey is the container key of a berth container service name, false for
// any other name (berth.slice, berth-<ns>.slice, berthd.service, or a
// service whose name is not berth-<key>.service with a key of two or three
// '_'). Only such names are ever stopped as orphans.
func unitKey(name string) (string, bool) {
	const prefix, suffix = "berth-", ".service"
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
		return "", false
	}
	key := strings.TrimSuffix(strings.TrimPrefix(name, prefix), suffix)
	if n := strings.Count(key, "_"); n != 2 && n != 3 {
		return "", false
	}
	return key, true
}

// IsContainerUnit reports whether name is one of berth's container services.
func IsContainerUnit(name string) bool {
	_, ok := unitKey(name)
	return ok
}

// Host lists what exists of berth on this host. It reads and changes
// nothing else; run it while no RunPod or RemovePod is under way (the
// reconciler runs it before the pod worker starts), or the view may be
// torn.
func (r *Runtime) Host(ctx context.Context) (*Host, error) {
	h := &Host{}
	keys := map[string]*HostPod{}
	add := func(key string) *HostPod {
		if p := keys[key]; p != nil {
			return p
		}
		p := &HostPod{Key: key}
		keys[key] = p
		return p
	}
	stateNames, err := dirNames(filepath.Join(r.cfg.StateDir, "pods"))
	if err != nil {
		return nil, err
	}
	for _, k := range stateNames {
		add(k).State = true
	}
	runNames, err := dirNames(filepath.Join(r.cfg.RunDir, "pods"))
	if err != nil {
		return nil, err
	}
	for _, k := range runNames {
		add(k).Run = true
	}
	for _, p := range keys {
		r.inspectPod(p)
		h.Pods = append(h.Pods, *p)
	}
	sort.Slice(h.Pods, func(i, j int) bool { return h.Pods[i].Key < h.Pods[j].Key })

	if h.Bundles, err = dirNames(filepath.Join(r.cfg.StateDir, "containers")); err != nil {
		return nil, err
	}
	if h.Mounts, err = r.mounts(); err != nil {
		return nil, err
	}

	lister, ok := r.units.(UnitLister)
	if !ok {
		return nil, fmt.Errorf("list berth's units: %w: the runtime's Units cannot list", errdefs.ErrNotImplemented)
	}
	us, err := lister.ListUnits(ctx, "berth-")
	if err != nil {
		return nil, fmt.Errorf("list berth's units: %w", err)
	}
	own, err := filepath.Abs(r.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	for _, u := range us {
		key, ok := unitKey(u.Name)
		if !ok {
			continue
		}
		hu := HostUnit{Name: u.Name, Key: key, LoadState: u.LoadState,
			ActiveState: u.ActiveState, SubState: u.SubState, JobType: u.JobType, StateDir: UnitStateDir(u)}
		if hu.StateDir == own {
			h.Units = append(h.Units, hu)
		} else {
			h.Foreign = append(h.Foreign, hu)
		}
	}
	return h, nil
}

// UnitStateDir is the state directory a container unit belongs to: the one
// its Documentation= names (unitgen.InstanceDoc), else, for a unit made
// before berth marked its units, the one its bundle is in (the argument of
// its ExecStart that is <stateDir>/containers/<key>); "" when it names
// neither (a unit of berth's name that berth did not make). Unit names are
// shared by every berth on the host: only this tells whose a unit is.
func UnitStateDir(u UnitSummary) string {
	if dir, ok := unitgen.UnitInstance(u.Documentation); ok {
		return dir
	}
	for _, argv := range u.ExecStart {
		for i, a := range argv {
			if i == 0 || !path.IsAbs(a) {
				continue
			}
			a = path.Clean(a)
			if path.Base(path.Dir(a)) == "containers" {
				return unitgen.BundleStateDir(a)
			}
		}
	}
	return ""
}

// inspectPod fills in what the record and the directories say of p.
func (r *Runtime) inspectPod(p *HostPod) {
	statePath, err := under(filepath.Join(r.cfg.StateDir, "pods"), p.Key)
	if err != nil {
		p.RecordErr = err
		return
	}
	runPath, err := under(filepath.Join(r.cfg.RunDir, "pods"), p.Key)
	if err != nil {
		p.RecordErr = err
		return
	}
	p.Pinned = namespacesPinned(filepath.Join(runPath, "ns"))
	// The key may be a shortened one: the record names the pod, and must
	// be filed under that pod's key before anything is built from it.
	ns, name, err := recordNames(statePath)
	if err != nil {
		p.RecordErr = err
		return
	}
	if ValidateName(ns, name) != nil || unitgen.PodKey(ns, name) != p.Key {
		p.RecordErr = fmt.Errorf("pod key %s: %w: record %s names pod %s/%s", p.Key, errdefs.ErrDataLoss, filepath.Join(statePath, podRecord), ns, name)
		return
	}
	d, err := r.dirs(ns, name)
	if err != nil {
		p.RecordErr = err
		return
	}
	rec, err := loadPod(d)
	if err != nil {
		p.RecordErr = err
		return
	}
	p.Namespace, p.Name, p.UID = rec.Namespace, rec.Name, rec.UID
	for _, c := range AllContainers(rec) {
		p.Containers = append(p.Containers, c.Name)
		bundle, err := d.bundle(c.Name)
		if err != nil {
			continue
		}
		if _, err := os.Lstat(bundle); err == nil {
			p.Begun = append(p.Begun, c.Name)
		}
		if released(bundle) {
			p.Released = append(p.Released, c.Name)
		}
	}
}

// recordNames reads the namespace and name a pod record gives.
func recordNames(stateDir string) (ns, name string, err error) {
	p := filepath.Join(stateDir, podRecord)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("pod record %s: %w", p, errdefs.ErrNotFound)
	}
	if err != nil {
		return "", "", err
	}
	var rec struct {
		Metadata struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		} `json:"metadata"`
	}
	// Quoted (%v), not wrapped: berth's state gone bad, as in loadPod.
	if err := json.Unmarshal(b, &rec); err != nil {
		return "", "", fmt.Errorf("pod record %s: %w: %v", p, errdefs.ErrDataLoss, err)
	}
	return rec.Metadata.Namespace, rec.Metadata.Name, nil
}

// released reports whether a container's bundle was handed to berth-init:
// its spec is written and the release FIFO is gone.
func released(bundle string) bool {
	if _, err := os.Stat(filepath.Join(bundle, bndl.ConfigFile)); err != nil {
		return false
	}
	_, err := os.Lstat(filepath.Join(bundle, bndl.ReleaseFile))
	return errors.Is(err, fs.ErrNotExist)
}

// dirNames lists the entries of dir (none when it does not exist), sorted.
func dirNames(dir string) ([]string, error) {
	es, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out, nil
}

// mounts lists the mount points under berth's pod and container
// directories, from this process's mount table.
func (r *Runtime) mounts() ([]HostMount, error) {
	roots := []struct{ dir, kind string }{
		{filepath.Join(r.cfg.RunDir, "pods"), "pod"},
		{filepath.Join(r.cfg.StateDir, "pods"), "pod"},
		{filepath.Join(r.cfg.StateDir, "containers"), "container"},
	}
	all, err := volumes.MountTable()
	if err != nil {
		return nil, err
	}
	var out []HostMount
	for _, m := range all {
		for _, root := range roots {
			rel, ok := strings.CutPrefix(m.Path, filepath.Clean(root.dir)+"/")
			if !ok {
				continue
			}
			key, _, _ := strings.Cut(rel, "/")
			out = append(out, HostMount{Path: m.Path, Kind: root.kind, Key: key, Type: m.FSType})
		}
	}
	return out, nil
}
