package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/agent/volumes"
)

// Store is what the controller needs of agent/store.
type Store interface {
	Create(res store.Resource, obj store.Object) error
	Get(res store.Resource, ns, name string, obj store.Object) error
	List(res store.Resource, ns string, fn func(data []byte) error) (uint64, error)
	Modify(res store.Resource, ns, name string, obj store.Object, fn func(cur store.Object) (store.Decision, error)) (bool, error)
	Delete(res store.Resource, ns, name string, uid types.UID, resourceVersion string) ([]byte, error)
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

var _ Store = (*store.Store)(nil)

// Recorder records Events (*events.Recorder).
type Recorder interface {
	Event(ref *corev1.ObjectReference, eventtype, reason, message string)
}

// Config configures the controller.
type Config struct {
	Store Store
	// StateDir is berthd's state directory; volumes live in Dir(StateDir).
	StateDir string
	// NodeName is this node's name: provisioned volumes' node affinity.
	NodeName string
	// FreshStore: the state file was created by this start, so the default
	// StorageClass is made even if an earlier store's operator deleted it
	// (EnsureDefaultClass).
	FreshStore bool
	// Events records the claims' Events (as the persistentvolume-controller);
	// nil: none.
	Events Recorder
	// Resync is the period of a full pass without any change (default 30 s).
	Resync time.Duration
	Log    hclog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Controller is the provisioner and the PV controller's part berth needs.
type Controller struct {
	cfg  Config
	log  hclog.Logger
	dir  string
	kick chan struct{}
	// quota: dir's filesystem enforces project quotas, and each volume
	// berth provisions is held to its capacity (projquota.go); why not.
	quota    bool
	quotaWhy string
	// waiting: a pass depends on pods (waitsForPods), so pod changes
	// matter (set by each pass).
	waiting atomic.Bool
	// reported is the last Event per claim uid, so that a pass repeating a
	// warning does not record it again.
	mu       sync.Mutex
	reported map[types.UID]string
}

// New returns a controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Controller{cfg: cfg, log: cfg.Log, dir: Dir(cfg.StateDir), kick: make(chan struct{}, 1), reported: map[types.UID]string{}}
	c.quota, c.quotaWhy = ProjectQuota(c.dir)
	return c
}

// markerFile records that berthd has made the default StorageClass once:
// after that, an operator's deletion of it is respected.
const markerFile = ".default-class"

// Run makes the volume directory and the default class, then follows the
// store until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("persistent volumes: %w", err)
	}
	if c.quota {
		c.log.Info("persistent volumes are held to their capacity by project quotas", "dir", c.dir)
	} else {
		c.log.Info("persistent volumes' capacity is counted by quota but not enforced on disk", "dir", c.dir, "reason", c.quotaWhy)
	}
	if err := c.EnsureDefaultClass(); err != nil {
		c.log.Error("default StorageClass", "error", err)
	}
	for _, res := range []store.Resource{Claims, Volumes, Classes, Pods} {
		// Every change pokes a pass (pods only while a claim waits for
		// its pods); a pass after a lost watch catches up.
		err := store.Follow(ctx, c.cfg.Store, res, func(store.Event) {
			if res != Pods || c.waiting.Load() {
				c.poke()
			}
		}, c.poke)
		if err != nil {
			return fmt.Errorf("persistent volumes: %w", err)
		}
	}
	tick := time.NewTicker(c.cfg.Resync)
	defer tick.Stop()
	for {
		if err := c.Sync(); err != nil && ctx.Err() == nil {
			c.log.Warn("persistent volumes pass", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-c.kick:
		}
	}
}

func (c *Controller) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// EnsureDefaultClass creates the StorageClass local-path (the default,
// provisioner berth.dev/local-path, reclaim Delete, binding Immediate)
// unless a class of that name exists, or berthd made it before on this
// state directory and the operator has deleted it since (the marker file
// in Dir says so; a fresh store makes it again).
func (c *Controller) EnsureDefaultClass() error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	marker := filepath.Join(c.dir, markerFile)
	err := c.cfg.Store.Get(Classes, "", DefaultClassName, &storagev1.StorageClass{})
	switch {
	case err == nil:
		return touch(marker)
	case !errdefs.IsNotFound(err):
		return err
	}
	if _, err := os.Stat(marker); err == nil && !c.cfg.FreshStore {
		c.log.Info("the default StorageClass was deleted; not making it again", "name", DefaultClassName)
		return nil
	}
	if err := c.cfg.Store.Create(Classes, NewDefaultClass()); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("create StorageClass %s: %w", DefaultClassName, err)
	}
	c.log.Info("made the default StorageClass", "name", DefaultClassName, "provisioner", Provisioner)
	return touch(marker)
}

// NewDefaultClass is the StorageClass berthd makes.
func NewDefaultClass() *storagev1.StorageClass {
	reclaim := corev1.PersistentVolumeReclaimDelete
	binding := storagev1.VolumeBindingImmediate
	return &storagev1.StorageClass{
		TypeMeta:          metav1.TypeMeta{Kind: "StorageClass", APIVersion: storagev1.SchemeGroupVersion.String()},
		ObjectMeta:        metav1.ObjectMeta{Name: DefaultClassName, Annotations: map[string]string{AnnIsDefaultClass: "true"}},
		Provisioner:       Provisioner,
		ReclaimPolicy:     &reclaim,
		VolumeBindingMode: &binding,
	}
}

func touch(p string) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// Sync makes one pass: it reads the state, plans and applies each action.
// An action that fails is logged and tried again on the next pass.
func (c *Controller) Sync() error {
	st, err := c.read()
	if err != nil {
		return err
	}
	c.waiting.Store(waitsForPods(st))
	c.forget(st.claims)
	var errs []error
	for _, a := range plan(st) {
		c.log.Debug("persistent volumes", "action", a.String())
		if err := c.apply(a); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

// read lists classes, claims, volumes and pods.
func (c *Controller) read() (*state, error) {
	st := &state{classes: map[string]*storagev1.StorageClass{}}
	if _, err := c.cfg.Store.List(Classes, "", func(b []byte) error {
		var sc storagev1.StorageClass
		if err := json.Unmarshal(b, &sc); err != nil {
			return err
		}
		st.classes[sc.Name] = &sc
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list storageclasses: %w", err)
	}
	if _, err := c.cfg.Store.List(Claims, "", func(b []byte) error {
		var cl corev1.PersistentVolumeClaim
		if err := json.Unmarshal(b, &cl); err != nil {
			return err
		}
		st.claims = append(st.claims, &cl)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list persistentvolumeclaims: %w", err)
	}
	if _, err := c.cfg.Store.List(Volumes, "", func(b []byte) error {
		var v corev1.PersistentVolume
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		st.volumes = append(st.volumes, &v)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list persistentvolumes: %w", err)
	}
	// Pods only matter for the claims they name: decode just that.
	if _, err := c.cfg.Store.List(Pods, "", func(b []byte) error {
		var p podVolumes
		if err := json.Unmarshal(b, &p); err != nil {
			return err
		}
		if len(p.Spec.Volumes) > 0 {
			st.pods = append(st.pods, &corev1.Pod{ObjectMeta: p.ObjectMeta,
				Spec: corev1.PodSpec{Volumes: p.Spec.Volumes}, Status: corev1.PodStatus{Phase: p.Status.Phase}})
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	return st, nil
}

// podVolumes is the part of a pod a pass reads.
type podVolumes struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Volumes []corev1.Volume `json:"volumes"`
	} `json:"spec"`
	Status struct {
		Phase corev1.PodPhase `json:"phase"`
	} `json:"status"`
}

// forget drops the reported Events of claims that are gone.
func (c *Controller) forget(claims []*corev1.PersistentVolumeClaim) {
	live := map[types.UID]bool{}
	for _, cl := range claims {
		live[cl.UID] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for uid := range c.reported {
		if !live[uid] {
			delete(c.reported, uid)
		}
	}
}

func (c *Controller) apply(a action) error {
	switch a.op {
	case opDefaultClass:
		return c.modifyClaim(a.claim, func(cl *corev1.PersistentVolumeClaim) bool {
			if cl.Spec.StorageClassName != nil || cl.Spec.VolumeName != "" {
				return false
			}
			cl.Spec.StorageClassName = &a.class.Name
			return true
		})
	case opProvision:
		return c.provision(a.claim, a.class)
	case opBind:
		return c.bind(a.claim, a.volume)
	case opClaimLost:
		c.event(a.claim, a.eventType, a.reason, a.message)
		return c.modifyClaim(a.claim, func(cl *corev1.PersistentVolumeClaim) bool {
			cl.Status.Phase = corev1.ClaimLost
			return true
		})
	case opReleaseClaim:
		return c.modifyClaim(a.claim, func(cl *corev1.PersistentVolumeClaim) bool {
			return cl.DeletionTimestamp != nil && removeFinalizer(cl, PVCProtectionFinalizer)
		})
	case opVolumePhase:
		return c.modifyVolume(a.volume, func(v *corev1.PersistentVolume) bool {
			return c.setPhase(v, a.phase)
		})
	case opDeleteVolume:
		if err := c.removeDir(a.volume); err != nil {
			return err
		}
		_, err := c.cfg.Store.Delete(Volumes, "", a.volume.Name, a.volume.UID, "")
		if errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
			return nil
		}
		if err == nil {
			c.log.Info("deleted released volume", "volume", a.volume.Name, "claim", claimKey(a.volume.Spec.ClaimRef))
		}
		return err
	case opReleaseVolume:
		if a.volume.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete && provisionedHere(a.volume) {
			if err := c.removeDir(a.volume); err != nil {
				return err
			}
		}
		return c.modifyVolume(a.volume, func(v *corev1.PersistentVolume) bool {
			return v.DeletionTimestamp != nil && v.Status.Phase != corev1.VolumeBound && removeFinalizer(v, PVProtectionFinalizer)
		})
	case opEvent:
		c.event(a.claim, a.eventType, a.reason, a.message)
		return nil
	case opExpand:
		return c.expand(a.claim, a.volume)
	}
	return fmt.Errorf("unknown action %d", a.op)
}

func claimKey(r *corev1.ObjectReference) string {
	if r == nil {
		return ""
	}
	return r.Namespace + "/" + r.Name
}

// event records an Event on the claim unless the last one recorded for it
// said the same.
func (c *Controller) event(cl *corev1.PersistentVolumeClaim, typ, reason, msg string) {
	c.mu.Lock()
	same := c.reported[cl.UID] == reason+"\x00"+msg
	c.reported[cl.UID] = reason + "\x00" + msg
	c.mu.Unlock()
	if same || c.cfg.Events == nil {
		return
	}
	c.cfg.Events.Event(&corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: cl.Namespace, Name: cl.Name,
		UID: cl.UID, ResourceVersion: cl.ResourceVersion}, typ, reason, msg)
}

// modifyClaim changes the stored claim (the same uid as cl) with fn, which
// says whether it changed anything.
func (c *Controller) modifyClaim(cl *corev1.PersistentVolumeClaim, fn func(*corev1.PersistentVolumeClaim) bool) error {
	_, err := c.cfg.Store.Modify(Claims, cl.Namespace, cl.Name, &corev1.PersistentVolumeClaim{}, func(cur store.Object) (store.Decision, error) {
		x := cur.(*corev1.PersistentVolumeClaim)
		if x.UID != cl.UID || !fn(x) {
			return store.Decision{}, errUnchanged
		}
		return store.Decision{}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

func (c *Controller) modifyVolume(v *corev1.PersistentVolume, fn func(*corev1.PersistentVolume) bool) error {
	_, err := c.cfg.Store.Modify(Volumes, "", v.Name, &corev1.PersistentVolume{}, func(cur store.Object) (store.Decision, error) {
		x := cur.(*corev1.PersistentVolume)
		if x.UID != v.UID || !fn(x) {
			return store.Decision{}, errUnchanged
		}
		return store.Decision{}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// errUnchanged ends a Modify that has nothing to write.
var errUnchanged = errors.New("unchanged")

// setPhase sets v's phase, stamping lastPhaseTransitionTime on a change
// (PersistentVolumeLastPhaseTransitionTime, GA in 1.31).
func (c *Controller) setPhase(v *corev1.PersistentVolume, phase corev1.PersistentVolumePhase) bool {
	if v.Status.Phase == phase {
		return false
	}
	now := metav1.NewTime(c.cfg.Now().Truncate(time.Second))
	v.Status = corev1.PersistentVolumeStatus{Phase: phase, LastPhaseTransitionTime: &now}
	return true
}

// provision is the local-path provisioner's Provision: the directory
// (mode 0777, as rancher's local-path-provisioner makes it, so that a
// container of any user can write it), then the volume, pre-bound to the
// claim, then the binding. A volume left by a provisioning a crash cut
// short is found by its name and bound by the next pass.
func (c *Controller) provision(cl *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass) error {
	name := VolumeName(cl)
	dir := filepath.Join(c.dir, name)
	_, serr := os.Lstat(dir)
	made := errors.Is(serr, fs.ErrNotExist)
	if made {
		if err := os.Mkdir(dir, 0o777); err != nil {
			c.event(cl, corev1.EventTypeWarning, "ProvisioningFailed", fmt.Sprintf("failed to provision volume with StorageClass %q: %v", sc.Name, err))
			return err
		}
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	if err := c.limit(dir, requestOf(cl)); err != nil {
		if made {
			os.Remove(dir)
		}
		c.event(cl, corev1.EventTypeWarning, "ProvisioningFailed", fmt.Sprintf("failed to provision volume with StorageClass %q: %v", sc.Name, err))
		return err
	}
	v := c.newVolume(cl, sc, name, dir)
	err := c.cfg.Store.Create(Volumes, v)
	switch {
	case errdefs.IsAlreadyExists(err):
		return nil // the next pass binds what is stored
	case err != nil:
		if made {
			os.Remove(dir)
		}
		c.event(cl, corev1.EventTypeWarning, "ProvisioningFailed", fmt.Sprintf("failed to provision volume with StorageClass %q: %v", sc.Name, err))
		return err
	}
	c.log.Info("provisioned volume", "claim", cl.Namespace+"/"+cl.Name, "volume", name, "dir", dir)
	c.event(cl, corev1.EventTypeNormal, "ProvisioningSucceeded", fmt.Sprintf("Successfully provisioned volume %s", name))
	return c.bind(cl, v)
}

// newVolume is the PersistentVolume for the claim: its size and access
// modes, a hostPath to dir (type Directory: a directory that went missing
// fails the mount rather than coming back empty), the class's reclaim
// policy and mount options, pinned to this node, with claimRef set so
// that no other claim binds it.
func (c *Controller) newVolume(cl *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass, name, dir string) *corev1.PersistentVolume {
	reclaim := corev1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		reclaim = *sc.ReclaimPolicy
	}
	mode := corev1.PersistentVolumeFilesystem
	typ := corev1.HostPathDirectory
	size := requestOf(cl)
	v := &corev1.PersistentVolume{
		TypeMeta: metav1.TypeMeta{Kind: "PersistentVolume", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{AnnDynamicallyProvisioned: Provisioner},
			Finalizers:  []string{PVProtectionFinalizer},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   append([]corev1.PersistentVolumeAccessMode(nil), cl.Spec.AccessModes...),
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &typ}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: cl.Namespace, Name: cl.Name, UID: cl.UID, ResourceVersion: cl.ResourceVersion},
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              sc.Name,
			MountOptions:                  sc.MountOptions,
			VolumeMode:                    &mode,
		},
	}
	if c.cfg.NodeName != "" {
		v.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{c.cfg.NodeName}}},
		}}}}
	}
	c.setPhase(v, corev1.VolumePending)
	return v
}

// bind is the PV controller's bind: the volume's claimRef (when pre-bound
// by name only) and phase Bound, then the claim's volumeName, the
// controller's annotations and status (phase Bound, the volume's access
// modes and capacity). Each side is checked as stored first.
func (c *Controller) bind(cl *corev1.PersistentVolumeClaim, v *corev1.PersistentVolume) error {
	var bound *corev1.PersistentVolume
	_, err := c.cfg.Store.Modify(Volumes, "", v.Name, &corev1.PersistentVolume{}, func(cur store.Object) (store.Decision, error) {
		x := cur.(*corev1.PersistentVolume)
		r := x.Spec.ClaimRef
		switch {
		case x.DeletionTimestamp != nil:
			return store.Decision{}, fmt.Errorf("volume %s is being deleted: %w", x.Name, errdefs.ErrConflict)
		case r == nil:
			x.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: cl.Namespace, Name: cl.Name, UID: cl.UID, ResourceVersion: cl.ResourceVersion}
			if x.Annotations == nil {
				x.Annotations = map[string]string{}
			}
			x.Annotations[AnnBoundByController] = "yes"
		case r.Namespace != cl.Namespace || r.Name != cl.Name || r.UID != "" && r.UID != cl.UID:
			return store.Decision{}, fmt.Errorf("volume %s is bound to claim %s: %w", x.Name, claimKey(r), errdefs.ErrConflict)
		case r.UID == "":
			r.UID = cl.UID
		}
		c.setPhase(x, corev1.VolumeBound)
		bound = x
		return store.Decision{}, nil
	})
	if err != nil {
		return err
	}
	return c.modifyClaim(cl, func(x *corev1.PersistentVolumeClaim) bool {
		if x.DeletionTimestamp != nil || x.Spec.VolumeName != "" && x.Spec.VolumeName != bound.Name {
			return false
		}
		if x.Annotations == nil {
			x.Annotations = map[string]string{}
		}
		if x.Spec.VolumeName == "" {
			x.Annotations[AnnBoundByController] = "yes"
		}
		x.Spec.VolumeName = bound.Name
		x.Annotations[AnnBindCompleted] = "yes"
		if bound.Annotations[AnnDynamicallyProvisioned] == Provisioner {
			x.Annotations[AnnStorageProvisioner] = Provisioner
			x.Annotations[AnnBetaStorageProvisioner] = Provisioner
		}
		x.Status.Phase = corev1.ClaimBound
		x.Status.AccessModes = append([]corev1.PersistentVolumeAccessMode(nil), bound.Spec.AccessModes...)
		x.Status.Capacity = corev1.ResourceList{}
		for k, q := range bound.Spec.Capacity {
			x.Status.Capacity[k] = q
		}
		// The volume has what the claim asks for (else the plan would
		// expand it): no resize is in progress.
		x.Status.AllocatedResourceStatuses = nil
		return true
	})
}

// removeDir deletes a provisioned volume's directory, only if it is where
// berth puts them (Dir/<volume name>), detaching any mount below it first
// and never removing through one (volumes.RemoveTree).
func (c *Controller) removeDir(v *corev1.PersistentVolume) error {
	want := filepath.Join(c.dir, v.Name)
	if v.Spec.HostPath == nil || filepath.Clean(v.Spec.HostPath.Path) != want {
		return fmt.Errorf("volume %s: not removing %v: not a directory berth provisioned (%s): %w", v.Name, v.Spec.HostPath, want, errdefs.ErrFailedPrecondition)
	}
	// Its project's limit goes with it: read before, cleared after.
	var id uint32
	if c.quota {
		var err error
		if id, err = ProjectID(want); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
	}
	if err := volumes.RemoveTree(want); err != nil {
		return fmt.Errorf("remove %s: %w", want, err)
	}
	if id != 0 {
		if err := unlimit(c.dir, id); err != nil {
			return fmt.Errorf("volume %s: clear project %d's quota: %w", v.Name, id, err)
		}
	}
	return nil
}

// limit holds a volume's directory, which berth provisioned, to size
// where the filesystem enforces project quotas; elsewhere its capacity is
// what ResourceQuota counts and nothing more.
func (c *Controller) limit(dir string, size resource.Quantity) error {
	if !c.quota {
		return nil
	}
	used, err := projectIDsInUse(c.dir)
	if err != nil {
		return fmt.Errorf("project quota: %w", err)
	}
	id, err := limitDir(dir, size.Value(), used)
	if err != nil {
		return fmt.Errorf("project quota: %w", err)
	}
	c.log.Debug("project quota", "dir", dir, "project", id, "bytes", size.Value())
	return nil
}
