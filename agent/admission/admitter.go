package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/berth-dev/berth/agent/store"
)

// Store is what admission reads and writes of desired state
// (*store.Store provides it).
type Store interface {
	List(res store.Resource, ns string, fn func(data []byte) error) (uint64, error)
	Modify(res store.Resource, ns, name string, obj store.Object, fn func(cur store.Object) (store.Decision, error)) (bool, error)
	ModifyEach(res store.Resource, ns string, names []string, newObj func() store.Object, fn func(cur store.Object) (store.Decision, error)) error
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

// Slices is where a namespace's quota becomes a kernel limit: the
// namespace's systemd slice (agent/pods.Runtime). cpuMilli and memoryBytes
// 0 mean no limit.
type Slices interface {
	SetNamespaceLimits(ctx context.Context, namespace string, cpuMilli, memoryBytes int64) error
}

// Options configure an Admitter.
type Options struct {
	Log hclog.Logger
	// Resources are the resources the API serves that a quota may count
	// (store names: "pods", "configmaps", "events.k8s.io/events", ...):
	// the controller watches them.
	Resources []store.Resource
	// Resync is how often every namespace's quotas are recalculated
	// whatever changed (default 30 s): a pod whose deletion grace period
	// ran out stops being charged without a change to it.
	Resync time.Duration
	// Now is the clock (tests).
	Now func() time.Time
	// Observer counts refusals (agent/exporter.Own); nil: none.
	Observer Observer
}

// Observer counts what admission refuses, for Prometheus.
type Observer interface {
	// AdmissionRejected is a write refused by plugin (LimitRanger or
	// ResourceQuota, the apiserver's names) for resource.
	AdmissionRejected(plugin, resource string)
}

// Admitter is the admission chain's state: it reads LimitRanges and
// ResourceQuotas from the store, serialises admissions per namespace
// (quota's check and commit, so that concurrent creates never overshoot:
// the apiserver gets the same from its quota evaluator's per-namespace
// work queue and its optimistic status updates) and keeps every quota's
// status as the quota controller does.
type Admitter struct {
	st   Store
	opts Options
	log  hclog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex // by namespace
	dirty map[string]bool        // namespaces to recalculate
	kick  chan struct{}

	limitsMu sync.Mutex
	slices   Slices              // nil until SetSlices
	limits   map[string][2]int64 // namespace → applied slice limits (cpu milli, memory bytes)
}

// SetResources names the resources the API serves that a quota may count
// (Options.Resources), before Run.
func (a *Admitter) SetResources(res []store.Resource) { a.opts.Resources = res }

// SetSlices hands the controller the runtime that holds namespaces'
// slices, once berthd has reached systemd (admission and quota status work
// before that); every namespace's limits are applied then.
func (a *Admitter) SetSlices(s Slices) {
	a.limitsMu.Lock()
	a.slices = s
	a.limits = map[string][2]int64{}
	a.limitsMu.Unlock()
	a.resyncAll()
}

// New returns an Admitter over st.
func New(st Store, opts Options) *Admitter {
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	if opts.Resync <= 0 {
		opts.Resync = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Admitter{st: st, opts: opts, log: opts.Log.Named("admission"),
		locks: map[string]*sync.Mutex{}, dirty: map[string]bool{}, kick: make(chan struct{}, 1),
		limits: map[string][2]int64{}}
}

// GroupResourceOf is the GroupResource of a store resource name.
func GroupResourceOf(res store.Resource) GroupResource {
	if g, r, ok := strings.Cut(string(res), "/"); ok {
		return GroupResource{Group: g, Resource: r}
	}
	return GroupResource{Resource: string(res)}
}

func storeResource(gr GroupResource) store.Resource {
	if gr.Group == "" {
		return store.Resource(gr.Resource)
	}
	return store.Resource(gr.Group + "/" + gr.Resource)
}

func (a *Admitter) nsLock(ns string) *sync.Mutex {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.locks[ns]
	if l == nil {
		l = &sync.Mutex{}
		a.locks[ns] = l
	}
	return l
}

// Mutate is the mutating admission of a write of obj of res (old nil: a
// create): LimitRanger's Admit, which defaults the requests and limits of
// a pod being created from the namespace's LimitRanges.
func (a *Admitter) Mutate(res store.Resource, obj, old runtime.Object) error {
	pod, ok := obj.(*corev1.Pod)
	if !ok || old != nil {
		return nil
	}
	ranges, err := a.limitRanges(pod.Namespace)
	if err != nil {
		return err
	}
	LimitPod(pod, ranges)
	return nil
}

// Validate is the validating admission of a create of obj of res, after
// the object's own validation: LimitRanger's Validate, then
// ResourceQuota. On success the namespace's admissions stay serialised
// until commit, which the caller must call once the write is done (stored
// says it was; a dry run never commits usage). old is for callers that
// hold an old object outside the store's write; updates go through Update.
func (a *Admitter) Validate(res store.Resource, obj, old runtime.Object, dryRun bool) (commit func(stored bool), err error) {
	mo, ok := obj.(store.Object)
	if !ok || mo.GetNamespace() == "" {
		return func(bool) {}, nil
	}
	ns := mo.GetNamespace()
	lock := a.nsLock(ns)
	lock.Lock()
	w := &write{a: a, ns: ns, unlock: sync.OnceFunc(lock.Unlock)}
	if err := w.validate(res, obj, old); err != nil {
		w.unlock()
		return nil, err
	}
	return func(stored bool) { w.done(stored && !dryRun) }, nil
}

// Update starts the admission of one update in namespace ns (the
// apiserver's admission of an UPDATE, run by its registry inside the
// object's guaranteed update): the namespace's admissions are serialised
// from now until done. validate runs inside the store's write of the
// object, with the stored object as old, and may run more than once;
// the last run's outcome is what done(stored) commits. The namespace's lock is taken
// here, before the caller's store write, never inside it: creates take it
// before theirs too, so the two orders cannot deadlock.
func (a *Admitter) Update(ns string) (validate func(res store.Resource, obj, old runtime.Object) error, done func(stored bool)) {
	if ns == "" {
		return func(store.Resource, runtime.Object, runtime.Object) error { return nil }, func(bool) {}
	}
	lock := a.nsLock(ns)
	lock.Lock()
	w := &write{a: a, ns: ns, unlock: sync.OnceFunc(lock.Unlock)}
	return w.validate, w.done
}

func (a *Admitter) rejected(plugin string, res store.Resource) {
	if a.opts.Observer != nil {
		a.opts.Observer.AdmissionRejected(plugin, string(res))
	}
}

// write is one admitted write in a namespace whose lock it holds.
type write struct {
	a      *Admitter
	ns     string
	unlock func()
	// From the last validate: quotas as read, their new usage, and whether
	// obj was a ResourceQuota (its status is the controller's to redo).
	quotas  []corev1.ResourceQuota
	used    map[string]corev1.ResourceList
	isQuota bool
}

// validate is LimitRanger's Validate then ResourceQuota for one write of
// obj (old nil: a create). Upstream's LimitRanger (SupportsAttributes)
// checks pods on create only, their containers being immutable, and
// claims on create and update; the quota evaluators charge an update of a
// claim or a service the growth of its usage (Check).
func (w *write) validate(res store.Resource, obj, old runtime.Object) error {
	w.quotas, w.used, w.isQuota = nil, nil, false
	a := w.a
	_, isPod := obj.(*corev1.Pod)
	if old == nil || !isPod {
		ranges, err := a.limitRanges(w.ns)
		if err != nil {
			return err
		}
		if err := CheckLimits(obj, ranges); err != nil {
			a.rejected("LimitRanger", res)
			return err
		}
	}
	quotas, err := a.quotas(w.ns)
	if err != nil {
		return err
	}
	if q, ok := obj.(*corev1.ResourceQuota); ok {
		w.isQuota = true
		if old == nil {
			// A new quota's status, at once (the apiserver leaves it to
			// the quota controller; until it runs every check against the
			// quota fails with "status unknown"): hard from spec, used
			// counted. A changed quota keeps its stored status (the
			// strategy's PrepareForUpdate) until the controller's pass
			// that done asks for.
			a.status(q)
		}
	}
	used, err := Check(quotas, GroupResourceOf(res), obj, old, a.opts.Now())
	if err != nil {
		a.rejected("ResourceQuota", res)
		return err
	}
	w.quotas, w.used = quotas, used
	return nil
}

// done commits the last validate's usage if the write was stored, and
// releases the namespace.
func (w *write) done(stored bool) {
	defer w.unlock()
	if !stored {
		return
	}
	a, ns := w.a, w.ns
	// Every changed quota in one transaction: one sync to disk per
	// admission, not one per quota.
	var names []string
	for _, q := range w.quotas {
		if _, ok := w.used[q.Name]; ok {
			names = append(names, q.Name)
		}
	}
	if len(names) > 0 {
		err := a.st.ModifyEach("resourcequotas", ns, names, func() store.Object { return &corev1.ResourceQuota{} }, func(cur store.Object) (store.Decision, error) {
			cur.(*corev1.ResourceQuota).Status.Used = w.used[cur.GetName()]
			return store.Decision{}, nil
		})
		if err != nil {
			// The controller recalculates them from the store.
			a.log.Warn("quota status after admission", "namespace", ns, "quotas", names, "error", err)
			a.markDirty(ns)
		}
	}
	if w.isQuota {
		// A new quota's status was counted before it was stored (a quota
		// on resourcequotas counts itself too); a changed one's hard
		// follows its spec.
		a.markDirty(ns)
	}
}

// status sets q's status from its spec and the namespace's objects.
func (a *Admitter) status(q *corev1.ResourceQuota) {
	q.Status.Hard = q.Spec.Hard.DeepCopy()
	q.Status.Used = Recalculate(q, func(gr GroupResource) []runtime.Object {
		objs, err := a.objects(q.Namespace, gr)
		if err != nil {
			a.log.Warn("quota usage", "quota", q.Namespace+"/"+q.Name, "resource", gr.String(), "error", err)
		}
		return objs
	}, a.opts.Now())
}

func (a *Admitter) writeStatus(ns, name string, hard, used corev1.ResourceList) error {
	_, err := a.st.Modify("resourcequotas", ns, name, &corev1.ResourceQuota{}, func(cur store.Object) (store.Decision, error) {
		q := cur.(*corev1.ResourceQuota)
		if equality.Semantic.DeepEqual(q.Status.Hard, hard) && equality.Semantic.DeepEqual(q.Status.Used, used) {
			return store.Decision{}, nil
		}
		q.Status.Hard, q.Status.Used = hard, used
		return store.Decision{}, nil
	})
	return err
}

// limitRanges are the namespace's LimitRanges by name (upstream: its
// cache's order).
func (a *Admitter) limitRanges(ns string) ([]corev1.LimitRange, error) {
	return listByName[corev1.LimitRange](a.st, "limitranges", ns)
}

// quotas are the namespace's ResourceQuotas by name (upstream: its cache's
// order).
func (a *Admitter) quotas(ns string) ([]corev1.ResourceQuota, error) {
	return listByName[corev1.ResourceQuota](a.st, "resourcequotas", ns)
}

// listByName decodes the namespace's objects of res, sorted by name.
func listByName[T any, P interface {
	*T
	GetName() string
}](st Store, res store.Resource, ns string) ([]T, error) {
	var out []T
	_, err := st.List(res, ns, func(data []byte) error {
		var v T
		if err := json.Unmarshal(data, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s of %s: %w", res, ns, err)
	}
	sort.Slice(out, func(i, j int) bool { return P(&out[i]).GetName() < P(&out[j]).GetName() })
	return out, nil
}

// objects are the namespace's objects of gr, typed where berth knows the
// kind (usage reads their specs), else as metadata only (counted).
func (a *Admitter) objects(ns string, gr GroupResource) ([]runtime.Object, error) {
	var out []runtime.Object
	_, err := a.st.List(storeResource(gr), ns, func(data []byte) error {
		obj := newObject(gr)
		if err := json.Unmarshal(data, obj); err != nil {
			return err
		}
		out = append(out, obj)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s of %s: %w", gr, ns, err)
	}
	return out, nil
}

func newObject(gr GroupResource) runtime.Object {
	if gr.Group == "" {
		switch gr.Resource {
		case "pods":
			return &corev1.Pod{}
		case "services":
			return &corev1.Service{}
		case "persistentvolumeclaims":
			return &corev1.PersistentVolumeClaim{}
		case "resourcequotas":
			return &corev1.ResourceQuota{}
		}
	}
	return &corev1.ConfigMap{} // metadata is all a count reads
}

func (a *Admitter) markDirty(ns string) {
	a.mu.Lock()
	a.dirty[ns] = true
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run is the quota controller: it recalculates the quotas of every
// namespace where an object a quota may count changed (a pod finished or
// was deleted, a configmap was created, a quota changed), of every
// namespace every Resync, and applies each namespace's quota limits to its
// slice. It returns when ctx is done.
func (a *Admitter) Run(ctx context.Context) error {
	for _, res := range append([]store.Resource{"resourcequotas"}, a.opts.Resources...) {
		err := store.Follow(ctx, a.st, res, func(ev store.Event) {
			if ev.Namespace != "" && changesUsage(ev) {
				a.markDirty(ev.Namespace)
			}
		}, a.resyncAll)
		if err != nil {
			return fmt.Errorf("quota controller: %w", err)
		}
	}
	a.resyncAll()
	tick := time.NewTicker(a.opts.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			a.resyncAll()
		case <-a.kick:
		}
		a.mu.Lock()
		dirty := a.dirty
		a.dirty = map[string]bool{}
		a.mu.Unlock()
		names := make([]string, 0, len(dirty))
		for ns := range dirty {
			names = append(names, ns)
		}
		sort.Strings(names)
		for _, ns := range names {
			if ctx.Err() != nil {
				return nil
			}
			a.sync(ctx, ns)
		}
	}
}

// changesUsage says whether ev may change what quotas count beyond what
// admission charged: admission charges every create as it admits it, so,
// as upstream's replenishment controller, only what gives usage back is
// followed (a deletion; a pod turning terminal or beginning its deletion),
// and a quota whose status lags its spec. A recalculation reads every
// object of the namespace; following creates too would do that for each.
func changesUsage(ev store.Event) bool {
	switch {
	case ev.Type == store.Bookmark:
		return false
	case ev.Type == store.Deleted:
		return true
	case ev.Resource == "resourcequotas":
		var q corev1.ResourceQuota
		if json.Unmarshal(ev.Object, &q) != nil {
			return true
		}
		return !equality.Semantic.DeepEqual(q.Spec.Hard, q.Status.Hard)
	case ev.Resource == "pods" && ev.Type == store.Modified:
		return podState(ev.Object) != podState(ev.Prev)
	}
	return false
}

// podState is what of a pod decides whether it is charged: terminal, or
// being deleted (the deletion grace rule).
func podState(data []byte) string {
	if data == nil {
		return "unknown"
	}
	var p struct {
		Metadata struct {
			DeletionTimestamp *string `json:"deletionTimestamp"`
		} `json:"metadata"`
		Status struct {
			Phase string `json:"phase"`
		} `json:"status"`
	}
	if json.Unmarshal(data, &p) != nil {
		return "unknown"
	}
	terminal := p.Status.Phase == string(corev1.PodSucceeded) || p.Status.Phase == string(corev1.PodFailed)
	return fmt.Sprintf("%v/%v", terminal, p.Metadata.DeletionTimestamp != nil)
}

// resyncAll marks every namespace dirty, and every one whose slice limits
// this process set (its namespace may be gone).
func (a *Admitter) resyncAll() {
	var names []string
	_, err := a.st.List("namespaces", "", func(data []byte) error {
		var n corev1.Namespace
		if err := json.Unmarshal(data, &n); err != nil {
			return err
		}
		names = append(names, n.Name)
		return nil
	})
	if err != nil {
		a.log.Error("quota controller: list namespaces", "error", err)
		return
	}
	a.limitsMu.Lock()
	for ns := range a.limits {
		names = append(names, ns)
	}
	a.limitsMu.Unlock()
	for _, ns := range names {
		a.markDirty(ns)
	}
}

// sync recalculates the status of ns's quotas and applies its slice
// limits.
func (a *Admitter) sync(ctx context.Context, ns string) {
	lock := a.nsLock(ns)
	lock.Lock()
	quotas, err := a.quotas(ns)
	if err == nil {
		for i := range quotas {
			q := &quotas[i]
			hard, used := q.Status.Hard, q.Status.Used
			a.status(q)
			if equality.Semantic.DeepEqual(hard, q.Status.Hard) && equality.Semantic.DeepEqual(used, q.Status.Used) {
				continue
			}
			if werr := a.writeStatus(ns, q.Name, q.Status.Hard, q.Status.Used); werr != nil {
				a.log.Warn("quota status", "quota", ns+"/"+q.Name, "error", werr)
			}
		}
	}
	lock.Unlock()
	if err != nil {
		a.log.Error("quota controller", "namespace", ns, "error", err)
		return
	}
	a.applyLimits(ctx, ns, quotas)
}

// SliceLimits are the kernel limits of a namespace's slice from its quotas:
// the smallest limits.cpu and limits.memory of the quotas that hold for
// every pod (no scopes, no scopeSelector: a scoped quota holds only for
// some pods, and the slice holds them all). 0: no limit.
func SliceLimits(quotas []corev1.ResourceQuota) (cpuMilli, memoryBytes int64) {
	for _, q := range quotas {
		if len(q.Spec.Scopes) > 0 || q.Spec.ScopeSelector != nil {
			continue
		}
		if v, ok := q.Spec.Hard[corev1.ResourceLimitsCPU]; ok {
			if m := v.MilliValue(); cpuMilli == 0 || m < cpuMilli {
				cpuMilli = max(m, 1)
			}
		}
		if v, ok := q.Spec.Hard[corev1.ResourceLimitsMemory]; ok {
			if b := v.Value(); memoryBytes == 0 || b < memoryBytes {
				memoryBytes = max(b, 1)
			}
		}
	}
	return cpuMilli, memoryBytes
}

func (a *Admitter) applyLimits(ctx context.Context, ns string, quotas []corev1.ResourceQuota) {
	cpu, mem := SliceLimits(quotas)
	want := [2]int64{cpu, mem}
	a.limitsMu.Lock()
	slices := a.slices
	had, known := a.limits[ns]
	a.limitsMu.Unlock()
	if slices == nil || (known && had == want) {
		return
	}
	// Not known: nothing applied by this process yet; a slice left with
	// limits by an earlier berthd is reset too (zeros on a namespace
	// without a slice do nothing).
	if err := slices.SetNamespaceLimits(ctx, ns, cpu, mem); err != nil {
		a.log.Error("namespace slice limits", "namespace", ns, "error", err)
		return
	}
	a.limitsMu.Lock()
	a.limits[ns] = want
	a.limitsMu.Unlock()
}
