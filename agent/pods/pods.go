// Package pods runs a pod's containers as systemd transient services:
// it prepares the pod's namespaces and files, each container's bundle (the
// OCI runtime spec stage-1 reads, the overlay directories), asks systemd to
// start the unit unitgen describes, and reads the containers' state back from
// systemd and from the exit records stage-1 leaves.
//
// Nothing of berth stays resident per container: systemd supervises the
// workload; this package only acts when asked.
package pods

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/agent/seccomp"
	"github.com/berth-dev/berth/agent/trust"
	"github.com/berth-dev/berth/agent/volumes"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/verify"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// Images is what the runtime needs from the image store; *image.Store
// provides it.
type Images interface {
	LayerDirs(img *image.Image) []string
	ReadFile(img *image.Image, path string) ([]byte, error)
	Root() string
	trust.Store
}

// PodImage is a container's resolved image and where it came from, which
// decides how the trust policy judges it.
type PodImage struct {
	Image  *image.Image
	Repo   string // a registry image: its normalised repository
	Layout string // a local OCI layout: its directory
}

var _ Images = (*image.Store)(nil)

// Config places the runtime's state.
type Config struct {
	StateDir        string // persistent: pods/, containers/ (default /var/lib/berth)
	RunDir          string // volatile: pod namespaces and files (default /run/berth)
	Init            string // berth-init, the stage-1 binary
	Node            cgroup.NodeInfo
	AllowPrivileged bool
	// Policy is the trust policy file (default /etc/berth/policy.json): every
	// image is judged before its pod starts and again before every (re)start.
	Policy string
	// Network is the pod network (agent/network); nil leaves pods with
	// loopback only (the runtime's own tests, `berthd pod run`).
	Network Network
	// DNS makes each pod's resolv.conf; NodeHosts is the node's hosts
	// file (host-network pods start from it; default /etc/hosts);
	// NodeHostname is the node's name for those pods.
	DNS          network.DNS
	NodeHosts    string
	NodeHostname string
	// Recorder records the kubelet's warnings about a pod (DNS); nil: none.
	Recorder Recorder
	// Volumes makes pods' volumes (default: emptyDir, downwardAPI and
	// the shared /dev/shm; no configMap or secret source, no hostPath).
	Volumes Volumes
	// Objects are the ConfigMaps and Secrets containers' env refers to
	// (nil: none exist); HostIP is the node's address (status.hostIP).
	Objects volumes.Source
	HostIP  string
	// Logs reads containers' logs (agent/logs), for terminationMessagePolicy
	// FallbackToLogsOnError; nil: no fallback.
	Logs Logs
	Log  hclog.Logger
}

// Runtime runs pods.
type Runtime struct {
	cfg    Config
	units  Units
	images Images
	log    hclog.Logger
	slices sync.Map    // names of the namespace and QoS slices ensured by this process: D-Bus round trips less per pod
	locks  *keyedMutex // one operation per pod at a time
	// nsLimits are the namespaces' limits SetNamespaceLimits set
	// (namespace → unitgen.NamespaceLimits); sliceLocks serialise their
	// setting with the making of the namespace's slice (slices.go).
	nsLimits   sync.Map
	sliceLocks *keyedMutex
	// sums are the running pods' requests, which the namespace, QoS and
	// root slices are weighed and protected by (slices.go).
	sums requestSums
	// logMessages caches FallbackToLogsOnError messages by bundle (the
	// last ended run's): the journal is read once per ended run.
	logMessages sync.Map
	nodeWarned  sync.Once // the node-level DNS warning, logged once
}

// New returns a runtime.
func New(cfg Config, units Units, images Images) *Runtime {
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/berth"
	}
	if cfg.RunDir == "" {
		cfg.RunDir = "/run/berth"
	}
	if cfg.Policy == "" {
		cfg.Policy = verify.DefaultPolicyPath
	}
	// The policy's path is written into every bundle and read again by
	// berth-init and berth-verify, whose working directory is "/".
	if abs, err := filepath.Abs(cfg.Policy); err == nil {
		cfg.Policy = abs
	}
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Volumes == nil {
		cfg.Volumes = volumes.New(volumes.Config{NodeAllocatableMemory: cfg.Node.MemoryCapacity}, nil)
	}
	if cfg.NodeHosts == "" {
		cfg.NodeHosts = "/etc/hosts"
	}
	if cfg.NodeHostname == "" {
		cfg.NodeHostname, _ = os.Hostname()
	}
	return &Runtime{cfg: cfg, units: units, images: images, log: cfg.Log.Named("pods"), locks: newKeyedMutex(), sliceLocks: newKeyedMutex()}
}

// cleanupTimeout bounds the removal after a failed start: the longest grace
// period of the pod's containers (systemd's TimeoutStopSec) plus a minute.
func cleanupTimeout(pod *corev1.Pod) time.Duration {
	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil && *g > grace {
		grace = *g
	}
	return time.Duration(grace)*time.Second + time.Minute
}

// lock serialises operations on one pod.
func (r *Runtime) lock(ctx context.Context, d podDirs) (func(), error) {
	return r.locks.Lock(ctx, d.ns+"/"+d.pod)
}

// RunPod makes the pod's sandbox (its record, files, volumes, namespaces
// and network) and starts the containers images names (container name →
// resolved image), in the pod's order: for a pod without init containers
// all of them, else the first step of its init sequence (StartContainers
// starts the next ones). On failure the pod is removed again and the error
// says which container failed and why.
func (r *Runtime) RunPod(ctx context.Context, pod *corev1.Pod, images map[string]PodImage) (err error) {
	pod = pod.DeepCopy()
	if pod.Namespace == "" {
		pod.Namespace = metav1.NamespaceDefault
	}
	d, err := r.dirs(pod.Namespace, pod.Name)
	if err != nil {
		return err
	}
	if _, err := containerNames(pod); err != nil {
		return err
	}
	if err := checkImages(pod, images); err != nil {
		return err
	}
	hostname, fqdn, err := unitgen.PodHostname(pod)
	if err != nil {
		return err
	}
	if pod.Spec.HostNetwork {
		hostname, fqdn = r.cfg.NodeHostname, ""
	}
	unlock, err := r.lock(ctx, d)
	if err != nil {
		return err
	}
	defer unlock()
	if pod.UID == "" {
		pod.UID = types.UID(uuid.NewUUID())
	}
	if pod.CreationTimestamp.IsZero() {
		pod.CreationTimestamp = metav1.NewTime(time.Now())
	}
	stateDir := d.state
	if err := os.MkdirAll(filepath.Dir(stateDir), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, errdefs.ErrAlreadyExists)
		}
		return err
	}
	defer func() {
		if err != nil {
			// Undo under a context of its own: the caller's may be what
			// failed. Stopping a container that already runs may take its
			// whole grace period, which systemd enforces.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout(pod))
			defer cancel()
			if rerr := r.removePod(cctx, d); rerr != nil {
				r.log.Error("clean up after failed start", "pod", pod.Namespace+"/"+pod.Name, "error", rerr)
			}
		}
	}()
	pj, err := json.Marshal(pod)
	if err != nil {
		return fmt.Errorf("encode pod record: %w", err)
	}
	if err := bndl.WriteFileAtomic(filepath.Join(stateDir, "pod.json"), pj, 0o600); err != nil {
		return err
	}
	runDir := d.run
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return err
	}
	if err := r.writePodFiles(runDir, pod, hostname); err != nil {
		return fmt.Errorf("pod files: %w", err)
	}
	// Volumes first: one that cannot be made (a missing ConfigMap, a
	// refused hostPath) fails the start before the pod takes an address.
	volLap := stopwatch()
	set, shm, err := r.setupVolumes(d, pod)
	if err != nil {
		return err
	}
	volTook := volLap()
	// The pod's namespaces are made and attached to the pod network while
	// the containers' images are judged and their bundles written; a
	// unit's bundle is released to berth-init only once they are pinned
	// and attached, and /etc/hosts names the pod's address. Every return
	// waits for them first, so that a clean-up after a failure finds them.
	nsTook := make(chan time.Duration, 2)
	nsErr := make(chan error, 1)
	go func() {
		lap := stopwatch()
		err := createNamespaces(filepath.Join(runDir, "ns"), hostname, pod.Spec.HostNetwork)
		nsTook <- lap()
		var ips []string
		if err == nil {
			ips, err = r.attach(ctx, d, pod)
		}
		if err == nil {
			err = r.writeHosts(runDir, pod, ips, hostname, fqdn)
		}
		nsTook <- lap()
		nsErr <- err
	}()
	namespaces := sync.OnceValue(func() error { return <-nsErr })
	defer func() {
		if nerr := namespaces(); nerr != nil && err == nil {
			err = nerr
		}
	}()
	// The pod's slices (namespace, QoS class, pod) before any of its
	// units: each unit names the pod's slice, which systemd would
	// otherwise make without the pod's limits (slices.go).
	lap := stopwatch()
	if err := r.ensurePodSlices(ctx, pod); err != nil {
		return err
	}
	// The namespace's, its QoS class's and berth.slice's sums, now with
	// this pod's requests.
	if err := r.updateSums(ctx, unitgen.PodKey(pod.Namespace, pod.Name), pod); err != nil {
		return err
	}
	phases := []any{"volumes", volTook, "slices", lap()}
	if err := r.startPause(ctx, d, pod); err != nil { // shareProcessNamespace: before any container (pidns.go)
		return err
	}
	ein, err := r.envInput(pod, namespaces)
	if err != nil {
		return err
	}
	cp, err := r.startContainers(ctx, d, pod, images, set, shm, ein, namespaces)
	if err != nil {
		return err
	}
	phases = append(phases, cp...)
	phases = append(phases, "namespaces", <-nsTook, "network", <-nsTook)
	r.log.Debug("pod started", append([]any{"pod", pod.Namespace + "/" + pod.Name}, phases...)...)
	return nil
}

// envInput is what containers' env may name of the pod's addresses;
// status.podIP needs the pod's attachment (namespaces) first.
func (r *Runtime) envInput(pod *corev1.Pod, namespaces func() error) (envInput, error) {
	ein := envInput{hostIP: r.cfg.HostIP}
	switch {
	case pod.Spec.HostNetwork:
		// The kubelet's podIPs of a host-network pod: the node's.
		if r.cfg.HostIP != "" {
			ein.podIPs = []string{r.cfg.HostIP}
		}
	case needsPodIP(pod):
		if err := namespaces(); err != nil {
			return ein, err
		}
		ips, err := r.PodIPs(pod.Namespace, pod.Name)
		if err != nil {
			return ein, err
		}
		ein.podIPs = ips
	}
	return ein, nil
}

// startContainers starts the containers images names, in the pod's order,
// in a sandbox that exists (or is being made: namespaces() reports it
// ready), and returns how long their phases took.
func (r *Runtime) startContainers(ctx context.Context, d podDirs, pod *corev1.Pod, images map[string]PodImage, set *volumes.Set, shm string, ein envInput, namespaces func() error) ([]any, error) {
	// The units see the containers with their env resolved; the record
	// keeps the pod as the API has it.
	resolved := pod.DeepCopy()
	var todo []*corev1.Container
	for _, c := range AllContainers(resolved) {
		if _, ok := images[c.Name]; !ok {
			continue
		}
		rc, err := r.resolveEnv(pod, c, ein)
		if err != nil {
			return nil, &ConfigError{Container: c.Name, Err: err}
		}
		*c = *rc
		todo = append(todo, c)
	}
	var phases []any
	for _, c := range todo {
		mounts, err := containerMounts(set, c)
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", c.Name, err)
		}
		cp, err := r.startContainer(ctx, d, resolved, c, images[c.Name], containerVolumes{mounts, shm}, namespaces)
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", c.Name, err)
		}
		phases = append(phases, cp...)
	}
	return phases, nil
}

// stopwatch returns a function giving the time since its previous call.
func stopwatch() func() time.Duration {
	t := time.Now()
	return func() time.Duration {
		now := time.Now()
		d := now.Sub(t)
		t = now
		return d
	}
}

// Plan returns the unit a container of pod would get, without touching
// anything but the image store (for tests and, later, `berth plan`).
func (r *Runtime) Plan(pod *corev1.Pod, c *corev1.Container, img *image.Image) (*unitgen.Unit, error) {
	d, err := r.dirs(pod.Namespace, pod.Name)
	if err != nil {
		return nil, err
	}
	rc, err := r.resolveEnv(pod, c, envInput{hostIP: r.cfg.HostIP})
	if err != nil {
		return nil, err
	}
	resolved := pod.DeepCopy()
	for _, rcv := range AllContainers(resolved) {
		if rcv.Name == c.Name {
			*rcv = *rc
		}
	}
	return r.plan(d, resolved, rc, img, containerVolumes{})
}

// containerVolumes are a container's volume binds and the pod's /dev/shm.
type containerVolumes struct {
	mounts []specs.Mount
	shm    string
}

func (r *Runtime) plan(d podDirs, pod *corev1.Pod, c *corev1.Container, img *image.Image, vols containerVolumes) (*unitgen.Unit, error) {
	runDir := d.run
	bundle, err := d.bundle(c.Name)
	if err != nil {
		return nil, err
	}
	passwd, err := r.imageFile(img, "/etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := r.imageFile(img, "/etc/group")
	if err != nil {
		return nil, err
	}
	return unitgen.Generate(unitgen.Input{
		Pod:       pod,
		Container: c.Name,
		Image: unitgen.ImageInfo{
			Ref: c.Image, Digest: img.Digest, Config: img.Config.Config,
			Passwd: passwd, Group: group,
		},
		Paths: unitgen.Paths{
			Init:           r.cfg.Init,
			Bundle:         bundle,
			Lowers:         r.images.LayerDirs(img),
			Upper:          filepath.Join(bundle, bndl.UpperDir),
			Work:           filepath.Join(bundle, bndl.WorkDir),
			Rootfs:         filepath.Join(bundle, bndl.RootfsDir),
			PIDFile:        filepath.Join(bundle, bndl.PIDFile),
			NetNS:          filepath.Join(runDir, "ns", "net"),
			IPCNS:          filepath.Join(runDir, "ns", "ipc"),
			UTSNS:          filepath.Join(runDir, "ns", "uts"),
			PIDNS:          pidNSPath(runDir, pod),
			Hosts:          filepath.Join(runDir, "hosts"),
			Hostname:       filepath.Join(runDir, "hostname"),
			ResolvConf:     filepath.Join(runDir, "resolv.conf"),
			Shm:            vols.shm,
			TerminationLog: filepath.Join(bundle, bndl.TerminationLogFile),
		},
		Volumes: vols.mounts,
		Limits:  cgroup.ContainerLimits(pod, c, r.cfg.Node),
		Options: unitgen.Options{AllowPrivileged: r.cfg.AllowPrivileged, CgroupV2: r.cfg.Node.CgroupV2, VerifyImage: true,
			NodeHostname: r.cfg.NodeHostname},
	})
}

// imageFile reads a file of the image for unitgen (users and groups). An
// absent file is nil, as for an image without /etc/passwd; any other
// failure fails the start rather than running as a user resolved without it.
func (r *Runtime) imageFile(img *image.Image, name string) ([]byte, error) {
	b, err := r.images.ReadFile(img, name)
	if errors.Is(err, fs.ErrNotExist) || errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Digest, err)
	}
	return b, nil
}

// startContainer starts one container's unit, releasing its bundle once
// namespaces() (the pod's, made meanwhile) reports them ready, and returns
// how long its phases took (for the debug log and the benchmark).
func (r *Runtime) startContainer(ctx context.Context, d podDirs, pod *corev1.Pod, c *corev1.Container, pi PodImage, vols containerVolumes, namespaces func() error) ([]any, error) {
	lap := stopwatch()
	img := pi.Image
	unit, err := r.plan(d, pod, c, img, vols)
	if err != nil {
		return nil, err
	}
	plan := lap()
	// The trust policy, from the local store: refused here with its reason,
	// and again by the unit's start (berth-init start --verify-image) before
	// every (re)start.
	src := bndl.Source{Ref: c.Image, Repo: pi.Repo, Layout: pi.Layout, Digest: img.Digest,
		Store: r.images.Root(), Policy: r.cfg.Policy}
	jd, err := trust.Judge(ctx, r.images, src)
	if err != nil {
		return nil, err
	}
	if err := jd.Judgement.Error(); err != nil {
		return nil, err // *verify.RejectedError, errdefs' permission-denied class
	}
	judged := lap()
	// The seccomp profile is compiled here, once, not at every start; a
	// profile that does not compile is refused before anything starts.
	prepared, bpf, err := seccomp.Prepare(unit.Spec)
	if errors.Is(err, seccomp.ErrProfile) {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	} else if err != nil {
		return nil, err
	}
	// Compact: berth-init reads it twice at every start.
	spec, err := json.Marshal(prepared)
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	bundle, err := d.bundle(c.Name)
	if err != nil {
		return nil, err
	}
	for _, sub := range []string{bndl.UpperDir, bndl.WorkDir, bndl.RootfsDir} {
		if err := os.MkdirAll(filepath.Join(bundle, sub), 0o700); err != nil {
			return nil, err
		}
	}
	// The termination log: world-writable, so that a non-root workload can
	// write it, as the kubelet makes it (the bundle itself is root's 0700).
	tlog := filepath.Join(bundle, bndl.TerminationLogFile)
	if err := os.WriteFile(tlog, nil, 0o666); err != nil {
		return nil, err
	}
	if err := os.Chmod(tlog, 0o666); err != nil { // past the umask
		return nil, err
	}

	// systemd makes the unit and its cgroups and forks berth-init (about as
	// long as the whole raw unit of make bench's floor) while we write the
	// bundle and the pod's namespaces get pinned; berth-init waits at the
	// bundle's release FIFO until we are done (bundle.AwaitRelease).
	gate, err := bndl.OpenGate(bundle)
	if err != nil {
		return nil, err
	}
	started := make(chan error, 1)
	began := time.Now()
	go func() { started <- r.units.Start(ctx, unit.Name, unit.Properties) }()
	werr := writeBundle(bundle, spec, bpf, src, jd, hooksFor(pod, c, r.hookPodIP(pod)))
	bundleTook := lap()
	if werr == nil {
		werr = namespaces()
	}
	nsWait := lap()
	if werr == nil {
		werr = gate.Release()
	}
	if werr != nil {
		// The closed FIFO is berth-init's end of file: it fails the start
		// job without running anything. The FIFO stays, so that a restart
		// by systemd fails the same way until the clean-up removes the unit.
		gate.Close()
		<-started
		return nil, werr
	}
	// Open until the job is over: the released byte lives in the pipe only
	// while someone holds it open.
	serr := <-started
	gate.Close()
	if serr != nil && postStartFailedSince(bundle, began) {
		// The workload ran and its postStart hook failed: systemd stops
		// and restarts it (Restart=), as the kubelet after
		// FailedPostStartHook; the pod's start went through.
		r.log.Info("postStart hook failed; the container restarts", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name)
		serr = nil
	}
	if serr != nil {
		// The FIFO stays (see above): Start may have given up (ctx) before
		// berth-init read the release, which the close has now discarded.
		return nil, serr
	}
	if err := gate.Remove(); err != nil {
		r.log.Warn("remove release FIFO", "bundle", bundle, "error", err)
	}
	r.log.Info("container started", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "unit", unit.Name)
	return []any{c.Name + ".plan", plan, c.Name + ".trust", judged, c.Name + ".bundle", bundleTook, c.Name + ".nswait", nsWait, c.Name + ".unit", lap()}, nil
}

// writeBundle writes what berth-init reads of a bundle: the seccomp filter,
// config.json, the lifecycle hooks (nil: none) and the image's trust
// source and record.
func writeBundle(bundle string, spec, bpf []byte, src bndl.Source, jd *trust.Judged, hooks *bndl.Hooks) error {
	if err := writeFilter(bundle, bpf); err != nil {
		return err
	}
	if err := bndl.WriteHooks(bundle, hooks); err != nil {
		return err
	}
	if err := bndl.WriteFileAtomic(filepath.Join(bundle, bndl.ConfigFile), spec, 0o600); err != nil {
		return err
	}
	if err := bndl.WriteSource(bundle, src); err != nil {
		return err
	}
	return trust.WriteRecord(bundle, jd)
}

// podRecord is the pod as recorded when it was started, in its state
// directory.
const podRecord = "pod.json"

// LoadPod returns the pod as recorded when it was started.
func (r *Runtime) LoadPod(ns, name string) (*corev1.Pod, error) {
	d, err := r.dirs(ns, name)
	if err != nil {
		return nil, err
	}
	return loadPod(d)
}

// loadPod reads the record and checks what it says before any path or unit
// name is built from it: the record names the pod it is filed under, and
// valid containers. A record that does not is corrupt, not trusted.
func loadPod(d podDirs) (*corev1.Pod, error) {
	p := filepath.Join(d.state, podRecord)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pod %s/%s: %w", d.ns, d.pod, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var pod corev1.Pod
	// A corrupt record is berth's state gone bad, not the caller's input:
	// data loss, and its cause is quoted (%v), not wrapped, so that it does
	// not carry the invalid-argument class of the field errors it found.
	if err := json.Unmarshal(b, &pod); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w: corrupt record %s: %v", d.ns, d.pod, errdefs.ErrDataLoss, p, err)
	}
	if pod.Namespace != d.ns || pod.Name != d.pod {
		return nil, fmt.Errorf("pod %s/%s: %w: corrupt record %s: it names pod %s/%s", d.ns, d.pod, errdefs.ErrDataLoss, p, pod.Namespace, pod.Name)
	}
	if _, err := containerNames(&pod); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w: corrupt record %s: %v", d.ns, d.pod, errdefs.ErrDataLoss, p, err)
	}
	return &pod, nil
}

// RemovePod stops the pod's containers (each with its grace period, which
// systemd enforces), then removes their bundles and upper layers, the pod's
// namespaces and files. Removing a pod that is partly gone finishes the job.
func (r *Runtime) RemovePod(ctx context.Context, ns, name string) error {
	d, err := r.dirs(ns, name)
	if err != nil {
		return err
	}
	unlock, err := r.lock(ctx, d)
	if err != nil {
		return err
	}
	defer unlock()
	return r.removePod(ctx, d)
}

func (r *Runtime) removePod(ctx context.Context, d podDirs) error {
	pod, err := loadPod(d)
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	var errs []error
	if pod != nil {
		for _, c := range stopOrder(pod) {
			bundle, err := r.stopContainer(ctx, d, pod, c)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := os.RemoveAll(bundle); err != nil {
				errs = append(errs, err)
			}
			r.logMessages.Delete(bundle)
		}
	}
	if len(errs) > 0 {
		// A container may still run: its network, namespaces and volumes
		// stay until a removal has stopped it (the next one retries).
		return errors.Join(errs...)
	}
	// Off the pod network before the namespace goes: DEL finds the veth
	// to remove in it. A failed detach keeps the directories, so that the
	// next removal (or reconcile's GC) tries again.
	if err := r.stopPause(ctx, d); err != nil { // after the containers, before the namespaces (pidns.go)
		errs = append(errs, err)
	} else if pod != nil {
		// Empty now: its cgroup goes with it, its requests from the sums
		// (slices.go).
		if err := r.stopPodSlice(ctx, pod); err != nil {
			errs = append(errs, err)
		} else if err := r.updateSums(ctx, unitgen.PodKey(d.ns, d.pod), nil); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.detach(ctx, unitgen.PodKey(d.ns, d.pod), d.run, pod); err != nil {
		errs = append(errs, err)
	}
	if err := removeNamespaces(filepath.Join(d.run, "ns")); err != nil {
		errs = append(errs, err)
	}
	// The volumes' mounts (tmpfs, hostPath and subPath pins) go before
	// anything is deleted: RemoveAll must never reach through a pin into
	// the host's files.
	if err := volumes.Teardown(d.volumeDir()); err != nil {
		errs = append(errs, fmt.Errorf("volumes: %w", err))
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(d.run); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(d.state); err != nil {
			errs = append(errs, err)
		}
	}
	if pod == nil && len(errs) == 0 {
		return fmt.Errorf("pod %s/%s: %w", d.ns, d.pod, errdefs.ErrNotFound)
	}
	return errors.Join(errs...)
}

// ContainerStatus is a container's Kubernetes status plus where systemd
// keeps it.
type ContainerStatus struct {
	corev1.ContainerStatus
	Unit         string
	ControlGroup string
	MainPID      uint32
	ActiveState  string
	SubState     string
	// Init: an init container (sidecars included). Begun: its start began
	// (its bundle exists); a container of a later step of the init
	// sequence has not begun yet.
	Init  bool
	Begun bool
}

// PodStatus reports each container of the pod from systemd's view and the
// exit record stage-1 wrote when the workload last stopped.
func (r *Runtime) PodStatus(ctx context.Context, ns, name string) ([]ContainerStatus, error) {
	d, err := r.dirs(ns, name)
	if err != nil {
		return nil, err
	}
	pod, err := loadPod(d)
	if err != nil {
		return nil, err
	}
	var out []ContainerStatus
	nInit := len(pod.Spec.InitContainers)
	for i, c := range AllContainers(pod) {
		unit := unitgen.UnitName(ns, name, c.Name)
		cs := ContainerStatus{Unit: unit, Init: i < nInit}
		cs.Name, cs.Image = c.Name, c.Image
		st, err := r.units.Status(ctx, unit)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("status of %s: %w", unit, err)
		}
		bundle, err := d.bundle(c.Name)
		if err != nil {
			return nil, err
		}
		if _, err := os.Lstat(bundle); err == nil {
			cs.Begun = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if cs.Begun {
			// A postStart hook that failed (the unit failed its start and
			// is restarted) or a preStop one (a liveness kill).
			r.reportHookFailures(pod, c.Name, bundle)
		}
		exit, err := bndl.ReadExit(bundle)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			// The workload ended but how is unknown: reported, and the
			// status says so rather than pretending it never ran.
			r.log.Error("unreadable exit record", "pod", ns+"/"+name, "container", c.Name, "error", err)
			exit = &bndl.ExitStatus{ExitCode: unknownExitCode, Reason: bndl.ReasonError}
		}
		if st != nil {
			cs.ControlGroup, cs.MainPID = st.ControlGroup, st.MainPID
			cs.ActiveState, cs.SubState = st.ActiveState, st.SubState
			cs.RestartCount = int32(st.NRestarts)
		}
		if exit != nil && exit.Message == "" && exit.ExitCode != 0 && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
			e := *exit
			e.Message = r.messageFromLogs(ctx, pod, c.Name, bundle, exit, st != nil && st.ActiveState == "active")
			exit = &e
		}
		switch {
		case st != nil && st.ActiveState == "active" && (exit == nil || ranBefore(exit, st)):
			cs.Ready, cs.Started = true, ptr(true)
			cs.State.Running = &corev1.ContainerStateRunning{}
			if exit != nil {
				cs.LastTerminationState.Terminated = terminated(exit)
			}
		case exit != nil:
			// Also a unit still active whose workload has ended: stage-1
			// writes the record, then exits.

			cs.State.Terminated = terminated(exit)
		default:
			reason := "ContainerCreating"
			if st != nil && st.ActiveState == "failed" {
				reason = "StartError"
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
		}
		out = append(out, cs)
	}
	return out, nil
}

// ranBefore tells whether exit is the record of a run before the unit's
// current one: stage-1 writes it as its workload ends, before the unit
// leaves active, so that a record newer than the current main process is
// this run's own (the container has ended, not restarted). An unknown start
// keeps the older reading.
func ranBefore(exit *bndl.ExitStatus, st *UnitState) bool {
	return st.ExecMainStart.IsZero() || exit.FinishedAt.Before(st.ExecMainStart)
}

// unknownExitCode is what containerd reports when it cannot tell a task's
// exit status (containerd's client UnknownExitStatus = 255).
const unknownExitCode = 255

func terminated(e *bndl.ExitStatus) *corev1.ContainerStateTerminated {
	return &corev1.ContainerStateTerminated{
		ExitCode:   int32(e.ExitCode),
		Signal:     int32(e.Signal),
		Reason:     e.Reason,
		Message:    e.Message,
		FinishedAt: metav1.NewTime(e.FinishedAt),
	}
}

func ptr[T any](v T) *T { return &v }

// ImagesInUse returns the manifest digests of the images every container
// this runtime knows of runs (from their bundles), for image GC.
func (r *Runtime) ImagesInUse() (map[string]bool, error) {
	bundles, err := filepath.Glob(filepath.Join(r.cfg.StateDir, "containers", "*"))
	// Glob's only error is a malformed pattern; this one is fixed.
	if err != nil {
		return nil, err
	}
	inUse := map[string]bool{}
	for _, b := range bundles {
		src, err := bndl.ReadSource(b)
		if err != nil {
			// A bundle without its image record is one being created right
			// now or left half-removed: GC must not guess, so it stops.
			return nil, fmt.Errorf("image of %s: %w", b, err)
		}
		inUse[src.Digest] = true
	}
	return inUse, nil
}

// writeFilter writes the container's compiled seccomp filter into its
// bundle, or, for a container without one, removes what an earlier run of
// the pod left there.
func writeFilter(bundle string, bpf []byte) error {
	path := filepath.Join(bundle, bndl.SeccompFile)
	if bpf == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove old seccomp filter: %w", err)
		}
		return nil
	}
	return bndl.WriteFileAtomic(path, bpf, 0o600)
}
