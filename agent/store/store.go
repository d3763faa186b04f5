// Package store keeps berthd's desired state: Kubernetes objects in one
// bbolt file, with the apiserver's bookkeeping (uid, creationTimestamp,
// generation, one monotonic resourceVersion across all objects, 409 on a
// stale update) and a watch that resumes from a resourceVersion or says it
// is too old (the apiserver's 410 Gone), so that the API and the
// controllers see every change in order.
//
// The file is /var/lib/berth/state.db by default. Its schema is versioned:
// a berthd refuses a file written by a newer schema rather than guess, and
// upgrades an older one in place (none exists yet: schema 1 is the first).
//
// Writes are the apiserver's: Update and Modify (one read-modify-write
// transaction, which the API's update, patch and delete use) keep what
// only the server sets, refuse a stale resourceVersion, write nothing for
// an unchanged object, and remove an object whose deletion has begun once
// its last finalizer is gone; FinishDeletion is the pod worker's end of a
// graceful deletion. Watches get bookmarks on request (Watch.Bookmark).
//
// Errors carry errdefs classes: ErrNotFound, ErrAlreadyExists, ErrConflict
// (a stale resourceVersion), ErrInvalidArgument, ErrFailedPrecondition (a
// state file this berthd cannot read); a watch from a resourceVersion older
// than the store remembers is *TooOldError (errdefs.ErrOutOfRange), which
// api/server answers with 410 Gone "too old resource version".
package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
)

// DefaultHistoryBytes is Options.HistoryBytes's default: at 2.5 kB a
// pod, the last few hundred changes of pods with their status, or a
// couple of thousand Events; the apiserver's watch cache starts at 100
// changes a resource.
const DefaultHistoryBytes = 2 << 20

// SchemaVersion is the layout of the file this package writes: a bucket
// "meta" with "schema" and "rv", and one bucket per Resource holding
// "<namespace>/<name>" (or "/<name>" for cluster-scoped objects) → the
// object's JSON.
const SchemaVersion = 1

var (
	metaBucket = []byte("meta")
	schemaKey  = []byte("schema")
	rvKey      = []byte("rv")
)

// Object is what the store keeps: any Kubernetes object.
type Object interface {
	metav1.Object
	runtime.Object
}

// Resource names a kind's collection, group-qualified as the API path
// names it: "pods", "namespaces", "events.k8s.io/events".
type Resource string

// EventType is what happened to an object, as in a watch.
type EventType string

// The watch event types of metav1.WatchEvent.
const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	// Bookmark carries only a resourceVersion: every change up to it has been
	// delivered (Watch.Bookmark).
	Bookmark EventType = "BOOKMARK"
)

// Event is one change, with the object as stored after it (before it, for
// a deletion, but with the deletion's resourceVersion).
type Event struct {
	Type            EventType
	Resource        Resource
	Namespace, Name string
	ResourceVersion uint64
	Object          []byte // JSON
	// Prev is the object before a Modified or Deleted change by an update
	// (nil otherwise), so that a watch with a selector can tell an object
	// that stopped matching (the apiserver then sends DELETED).
	Prev []byte
}

// Options tune a store.
type Options struct {
	// History is how many recent changes a watch can resume from
	// (default 4096); older resourceVersions get TooOldError.
	History int
	// HistoryBytes bounds the memory those changes hold, their objects
	// (and the objects before them) counted (default DefaultHistoryBytes):
	// whichever of History and HistoryBytes is reached first drops the
	// oldest change. Without it the history holds thousands of whole
	// objects, tens of MB at a few hundred pods, for the rare watcher that
	// resumes from far back, which can list again (the apiserver's 410).
	HistoryBytes int
	// WatchBuffer is how many events a watcher may fall behind before it is
	// closed with ErrWatchTooSlow (default 1024), as the apiserver closes a
	// watcher that does not keep up.
	WatchBuffer int
	// Now is the clock for creationTimestamp (tests).
	Now func() time.Time
}

// Store is the state file and its watchers.
type Store struct {
	db   *bolt.DB
	opts Options

	mu       sync.Mutex // serialises writes with their events
	history  []Event    // the last events (opts.History, opts.HistoryBytes), oldest first
	histSize int        // the bytes history's events hold (eventSize)
	oldest   uint64     // events with RV > oldest-1 are in history; 0: none yet
	watchers map[*watcher]bool
}

// Open opens (creating if needed) the state file at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.History <= 0 {
		opts.History = 4096
	}
	if opts.HistoryBytes <= 0 {
		opts.HistoryBytes = DefaultHistoryBytes
	}
	if opts.WatchBuffer <= 0 {
		opts.WatchBuffer = 1024
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// A second berthd on the same file waits at most this long for the
	// first's lock, then fails instead of hanging.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		switch v := m.Get(schemaKey); {
		case v == nil:
			return m.Put(schemaKey, u64(SchemaVersion))
		case len(v) != 8:
			return fmt.Errorf("%w: state file %s: malformed schema version", errdefs.ErrFailedPrecondition, path)
		case binary.BigEndian.Uint64(v) > SchemaVersion:
			return fmt.Errorf("%w: state file %s has schema %d; this berthd reads up to %d (it was written by a newer berthd)",
				errdefs.ErrFailedPrecondition, path, binary.BigEndian.Uint64(v), SchemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, opts: opts, watchers: map[*watcher]bool{}}, nil
}

// Close closes the file and ends every watch.
func (s *Store) Close() error {
	s.mu.Lock()
	for w := range s.watchers {
		w.stop(nil)
	}
	s.mu.Unlock()
	return s.db.Close()
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func key(ns, name string) []byte { return []byte(ns + "/" + name) }

func rvString(v uint64) string { return strconv.FormatUint(v, 10) }

// ParseResourceVersion reads a resourceVersion as this store writes it;
// "" is 0.
func ParseResourceVersion(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: resourceVersion %q: not one this server issued", errdefs.ErrInvalidArgument, s)
	}
	return v, nil
}

// ResourceVersion is the store's current resourceVersion (what a list
// returns).
func (s *Store) ResourceVersion() (uint64, error) {
	var rv uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(metaBucket).Get(rvKey); v != nil {
			rv = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return rv, err
}

// write runs fn in one transaction with the next resourceVersion, then
// publishes the event fn returns, in resourceVersion order. fn returning no
// event changed nothing: the resourceVersion stays, nothing is published.
func (s *Store) write(res Resource, fn func(b *bolt.Bucket, rv uint64) (*Event, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ev *Event
	err := s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(metaBucket)
		var rv uint64
		if v := m.Get(rvKey); v != nil {
			rv = binary.BigEndian.Uint64(v)
		}
		rv++
		b, err := tx.CreateBucketIfNotExists([]byte(res))
		if err != nil {
			return err
		}
		if ev, err = fn(b, rv); err != nil || ev == nil {
			return err
		}
		return m.Put(rvKey, u64(rv))
	})
	if err != nil || ev == nil {
		return err
	}
	ev.Resource = res
	s.publish(*ev)
	return nil
}

// Create stores obj, which must not exist yet, setting uid,
// creationTimestamp, generation 1 and the resourceVersion in obj itself.
func (s *Store) Create(res Resource, obj Object) error {
	if obj.GetName() == "" {
		return fmt.Errorf("%w: %s: name is required", errdefs.ErrInvalidArgument, res)
	}
	if obj.GetResourceVersion() != "" {
		// The apiserver's words (registry/generic/registry/store.go).
		return fmt.Errorf("%w: resourceVersion should not be set on objects to be created", errdefs.ErrInvalidArgument)
	}
	return s.write(res, func(b *bolt.Bucket, rv uint64) (*Event, error) {
		k := key(obj.GetNamespace(), obj.GetName())
		if b.Get(k) != nil {
			return nil, fmt.Errorf("%s %q: %w", res, obj.GetName(), errdefs.ErrAlreadyExists)
		}
		obj.SetUID(types.UID(uuid.NewUUID()))
		obj.SetCreationTimestamp(metav1.NewTime(s.opts.Now().Truncate(time.Second)))
		obj.SetGeneration(1)
		obj.SetResourceVersion(rvString(rv))
		data, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("encode %s %q: %w", res, obj.GetName(), err)
		}
		if err := b.Put(k, data); err != nil {
			return nil, err
		}
		return &Event{Type: Added, Namespace: obj.GetNamespace(), Name: obj.GetName(), ResourceVersion: rv, Object: data}, nil
	})
}

// Get decodes the stored object into obj.
func (s *Store) Get(res Resource, ns, name string, obj Object) error {
	return s.db.View(func(tx *bolt.Tx) error {
		var data []byte
		if b := tx.Bucket([]byte(res)); b != nil {
			data = b.Get(key(ns, name))
		}
		if data == nil {
			return fmt.Errorf("%s %q: %w", res, name, errdefs.ErrNotFound)
		}
		return json.Unmarshal(data, obj)
	})
}

// List calls fn with the JSON of every object of res in namespace ns ("" for
// all; fn may keep it), in key order, and returns the resourceVersion the list is
// consistent with.
func (s *Store) List(res Resource, ns string, fn func(data []byte) error) (uint64, error) {
	// A copy: bbolt's value lives in its memory map only while the
	// transaction does, and callers keep lists past it (a plain list passes
	// the JSON through, a watch sends it later).
	return s.Scan(res, ns, func(data []byte) error { return fn(bytes.Clone(data)) })
}

// Scan is List without the copies: data is valid only until fn returns
// (it is the state file's memory map), so fn must copy what it keeps. It
// is for a list that keeps little of each object (a Table's rows, a
// selector that matches few).
func (s *Store) Scan(res Resource, ns string, fn func(data []byte) error) (uint64, error) {
	return s.ScanKeyed(res, ns, func(_, data []byte) error { return fn(data) })
}

// ScanKeyed is Scan with each object's key ("<namespace>/<name>", or
// "/<name>" for a cluster-scoped object), valid as long as data is.
func (s *Store) ScanKeyed(res Resource, ns string, fn func(key, data []byte) error) (uint64, error) {
	var rv uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(metaBucket).Get(rvKey); v != nil {
			rv = binary.BigEndian.Uint64(v)
		}
		b := tx.Bucket([]byte(res))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		prefix := []byte(ns + "/")
		var k, v []byte
		if ns == "" {
			k, v = c.First()
		} else {
			k, v = c.Seek(prefix)
		}
		for ; k != nil; k, v = c.Next() {
			if ns != "" && !hasPrefix(k, prefix) {
				break
			}
			if err := fn(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	return rv, err
}

func hasPrefix(b, p []byte) bool { return len(b) >= len(p) && string(b[:len(p)]) == string(p) }

// Update replaces the stored object with obj. obj's resourceVersion, when
// set, must be the stored one (else errdefs.ErrConflict, the apiserver's
// optimistic concurrency); uid, creationTimestamp, deletionTimestamp and
// deletionGracePeriodSeconds are kept from the stored object (the
// apiserver's rest.BeforeUpdate: only a delete starts or shortens a
// deletion). bumpGeneration says whether the change is to the spec (the
// caller knows the kind). An update that changes nothing writes nothing and
// keeps the resourceVersion, as the apiserver's GuaranteedUpdate does.
//
// An update that removes the last finalizer of an object whose deletion
// has begun and whose grace period is over (deletionGracePeriodSeconds unset
// or 0) removes the object instead, as the apiserver does
// (shouldDeleteDuringUpdate): watchers see DELETED, and Finalized(obj)
// reports it to the caller.
func (s *Store) Update(res Resource, obj Object, bumpGeneration bool) error {
	_, err := s.Modify(res, obj.GetNamespace(), obj.GetName(), &anyObject{}, func(cur Object) (Decision, error) {
		obj.SetDeletionTimestamp(cur.GetDeletionTimestamp())
		obj.SetDeletionGracePeriodSeconds(cur.GetDeletionGracePeriodSeconds())
		return Decision{Replace: obj, BumpGeneration: bumpGeneration}, nil
	})
	return err
}

// Decision is what a Modify function decided to do with the object.
type Decision struct {
	// Replace, when set, is stored instead of the object Modify decoded
	// (which the function may also change in place).
	Replace Object
	// Delete removes the object instead of storing it; watchers see DELETED
	// with the object as the function left it.
	Delete bool
	// BumpGeneration increments metadata.generation (a change to the spec).
	BumpGeneration bool
}

// Finalized reports whether an object written by Update or Modify was
// removed instead of stored: its deletion had begun, its grace period was
// over and it had no finalizers left.
func Finalized(obj metav1.Object) bool {
	g := obj.GetDeletionGracePeriodSeconds()
	if n, ok := obj.(*corev1.Namespace); ok && len(n.Spec.Finalizers) > 0 {
		// A namespace is also held by spec.finalizers (the namespace
		// controller's "kubernetes"), as the namespace REST holds it.
		return false
	}
	return obj.GetDeletionTimestamp() != nil && len(obj.GetFinalizers()) == 0 && (g == nil || *g == 0)
}

// Modify is the store's read-modify-write, in one transaction: it decodes
// the stored object ns/name into obj (a new, empty object of the kind),
// calls fn with it, and stores what fn decided. The apiserver's bookkeeping
// is applied to the result: its resourceVersion, when set, must still be
// the stored one (else ErrModified); uid and creationTimestamp are kept;
// generation is bumped on request; a result equal to what is stored writes
// nothing. A result whose deletion has begun (deletionTimestamp set by fn or
// before), whose grace period is over and that has no finalizers left is
// removed instead (Finalized). deleted says the object is gone.
//
// fn runs with the store locked: it must not call the store.
func (s *Store) Modify(res Resource, ns, name string, obj Object, fn func(cur Object) (Decision, error)) (deleted bool, err error) {
	err = s.write(res, func(b *bolt.Bucket, rv uint64) (*Event, error) {
		ev, err := modifyIn(b, rv, res, ns, name, obj, fn)
		deleted = ev != nil && ev.Type == Deleted
		return ev, err
	})
	if err != nil {
		deleted = false
	}
	return deleted, err
}

// ModifyEach is Modify of several objects of res in ns in one transaction
// (one sync to disk instead of one per object): each name in turn, with a
// new, empty object from newObj; the first error undoes them all. Each
// change gets its own resourceVersion and event, in the order of names.
func (s *Store) ModifyEach(res Resource, ns string, names []string, newObj func() Object, fn func(cur Object) (Decision, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var evs []Event
	err := s.db.Update(func(tx *bolt.Tx) error {
		evs = evs[:0]
		m := tx.Bucket(metaBucket)
		var rv uint64
		if v := m.Get(rvKey); v != nil {
			rv = binary.BigEndian.Uint64(v)
		}
		b, err := tx.CreateBucketIfNotExists([]byte(res))
		if err != nil {
			return err
		}
		for _, name := range names {
			ev, err := modifyIn(b, rv+1, res, ns, name, newObj(), fn)
			if err != nil {
				return err
			}
			if ev != nil {
				rv++
				evs = append(evs, *ev)
			}
		}
		if len(evs) == 0 {
			return nil
		}
		return m.Put(rvKey, u64(rv))
	})
	if err != nil {
		return err
	}
	for _, ev := range evs {
		ev.Resource = res
		s.publish(ev)
	}
	return nil
}

// modifyIn is Modify's change of one object in bucket b with
// resourceVersion rv; a nil event changed nothing.
func modifyIn(b *bolt.Bucket, rv uint64, res Resource, ns, name string, obj Object, fn func(cur Object) (Decision, error)) (*Event, error) {
	k := key(ns, name)
	// A copy: the event keeps it as Prev after the transaction, when
	// bbolt's memory map no longer holds it.
	old := bytes.Clone(b.Get(k))
	if old == nil {
		return nil, fmt.Errorf("%s %q: %w", res, name, errdefs.ErrNotFound)
	}
	if err := json.Unmarshal(old, obj); err != nil {
		return nil, fmt.Errorf("%w: stored %s %q: %v", errdefs.ErrDataLoss, res, name, err)
	}
	var cur metav1.PartialObjectMetadata
	if err := json.Unmarshal(old, &cur); err != nil {
		return nil, fmt.Errorf("%w: stored %s %q: %v", errdefs.ErrDataLoss, res, name, err)
	}
	d, err := fn(obj)
	if err != nil {
		return nil, err
	}
	out := obj
	if d.Replace != nil {
		out = d.Replace
	}
	if out.GetName() != name || out.GetNamespace() != ns {
		return nil, fmt.Errorf("%w: %s %q: an update may not rename an object", errdefs.ErrInvalidArgument, res, name)
	}
	if want := out.GetResourceVersion(); want != "" && want != cur.ResourceVersion {
		return nil, fmt.Errorf("%s %q: %w", res, name, ErrModified)
	}
	out.SetUID(cur.UID)
	out.SetCreationTimestamp(cur.CreationTimestamp)
	gen := cur.Generation
	if d.BumpGeneration {
		gen++
	}
	out.SetGeneration(gen)
	del := d.Delete || Finalized(out)
	if !del {
		// Unchanged: nothing to write, no new resourceVersion.
		out.SetResourceVersion(cur.ResourceVersion)
		same, err := json.Marshal(out)
		if err != nil {
			return nil, fmt.Errorf("encode %s %q: %w", res, name, err)
		}
		if string(same) == string(old) {
			return nil, nil
		}
	}
	out.SetResourceVersion(rvString(rv))
	data, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode %s %q: %w", res, name, err)
	}
	if del {
		if err := b.Delete(k); err != nil {
			return nil, err
		}
		return &Event{Type: Deleted, Namespace: ns, Name: name, ResourceVersion: rv, Object: data, Prev: old}, nil
	}
	if err := b.Put(k, data); err != nil {
		return nil, err
	}
	return &Event{Type: Modified, Namespace: ns, Name: name, ResourceVersion: rv, Object: data, Prev: old}, nil
}

// FinishDeletion is the pod worker's last step of a graceful deletion (the
// kubelet's Delete with grace period 0 and a uid precondition). The
// protocol: the API marks a pod bound to this node with
// metadata.deletionTimestamp (now + grace) and deletionGracePeriodSeconds;
// the worker stops its containers (the stop signal, at most the grace
// period, then SIGKILL) and then calls FinishDeletion with the uid it
// stopped. An object without finalizers is then removed (watchers see
// DELETED; kubectl delete's wait returns); one with finalizers gets
// deletionGracePeriodSeconds 0 and stays until an update removes the last
// finalizer, which removes it (see Update). uid guards against removing a
// pod of the same name created since: a different uid is ErrConflict, a pod
// already gone ErrNotFound (both mean there is nothing left to finish).
// Calling it for an object whose deletion has not begun deletes it at once,
// as a delete with grace period 0 would.
func (s *Store) FinishDeletion(res Resource, ns, name string, uid types.UID) error {
	_, err := s.Modify(res, ns, name, &anyObject{}, func(cur Object) (Decision, error) {
		if uid != "" && cur.GetUID() != uid {
			return Decision{}, fmt.Errorf("%w: Precondition failed: UID in precondition: %s, UID in object meta: %s", errdefs.ErrConflict, uid, cur.GetUID())
		}
		// markAsDeleting's bookkeeping (registry/generic/registry/store.go).
		now := metav1.NewTime(s.opts.Now().Truncate(time.Second))
		if ts := cur.GetDeletionTimestamp(); ts == nil || ts.After(now.Time) {
			cur.SetDeletionTimestamp(&now)
		}
		var zero int64
		cur.SetDeletionGracePeriodSeconds(&zero)
		return Decision{Delete: len(cur.GetFinalizers()) == 0}, nil
	})
	return err
}

// Delete removes the object, if its uid and resourceVersion match the
// preconditions given (empty: any), and returns what was stored, with the
// deletion's resourceVersion.
func (s *Store) Delete(res Resource, ns, name string, uid types.UID, resourceVersion string) ([]byte, error) {
	var gone []byte
	err := s.write(res, func(b *bolt.Bucket, rv uint64) (*Event, error) {
		k := key(ns, name)
		old := b.Get(k)
		if old == nil {
			return nil, fmt.Errorf("%s %q: %w", res, name, errdefs.ErrNotFound)
		}
		var cur map[string]any
		if err := json.Unmarshal(old, &cur); err != nil {
			return nil, fmt.Errorf("%w: stored %s %q: %v", errdefs.ErrDataLoss, res, name, err)
		}
		md, _ := cur["metadata"].(map[string]any)
		if uid != "" && md["uid"] != string(uid) {
			return nil, fmt.Errorf("%w: Precondition failed: UID in precondition: %s, UID in object meta: %v", errdefs.ErrConflict, uid, md["uid"])
		}
		if resourceVersion != "" && md["resourceVersion"] != resourceVersion {
			return nil, fmt.Errorf("%w: Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %v", errdefs.ErrConflict, resourceVersion, md["resourceVersion"])
		}
		if md == nil {
			md = map[string]any{}
			cur["metadata"] = md
		}
		md["resourceVersion"] = rvString(rv)
		data, err := json.Marshal(cur)
		if err != nil {
			return nil, err
		}
		if err := b.Delete(k); err != nil {
			return nil, err
		}
		gone = data
		return &Event{Type: Deleted, Namespace: ns, Name: name, ResourceVersion: rv, Object: data}, nil
	})
	return gone, err
}

// ErrModified is an update from a stale resourceVersion, in the
// apiserver's words (registry/generic/registry/store.go, OptimisticLock).
var ErrModified = errdefs.ErrConflict.WithMessage("the object has been modified; please apply your changes to the latest version and try again")

// TooOldError is a watch from a resourceVersion the store no longer
// remembers the changes after (after a restart, or past its history).
type TooOldError struct{ Requested, Oldest uint64 }

func (e *TooOldError) Error() string {
	// The apiserver's words for 410 Gone (storage/cacher: "too old resource version").
	return fmt.Sprintf("too old resource version: %d (%d)", e.Requested, e.Oldest)
}

// OutOfRange puts TooOldError in errdefs' out-of-range class.
func (*TooOldError) OutOfRange() {}

// ErrWatchTooSlow ends a watch whose reader fell WatchBuffer events behind.
var ErrWatchTooSlow = errdefs.ErrResourceExhausted.WithMessage("watch closed: the client did not keep up")

type watcher struct {
	res  Resource
	ns   string
	ch   chan Event
	err  error
	done chan struct{}
	once sync.Once
}

func (w *watcher) stop(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.done)
		close(w.ch)
	})
}

// Watch is a running watch: Events delivers changes in resourceVersion
// order until it is closed; Err then says why (nil after Stop or Close).
type Watch struct {
	s *Store
	w *watcher
}

// Events is the channel of changes.
func (w *Watch) Events() <-chan Event { return w.w.ch }

// Err is why the channel closed.
func (w *Watch) Err() error {
	select {
	case <-w.w.done:
		return w.w.err
	default:
		return nil
	}
}

// Stop ends the watch.
func (w *Watch) Stop() {
	w.s.mu.Lock()
	delete(w.s.watchers, w.w)
	w.s.mu.Unlock()
	w.w.stop(nil)
}

// Bookmark asks for a Bookmark event with the store's current
// resourceVersion, queued after every change up to it, so that a client
// that has read it may resume from it (the apiserver's watch bookmarks). A
// watcher whose queue is full gets none this time.
func (w *Watch) Bookmark() {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	rv, err := w.s.ResourceVersion()
	if err != nil {
		return
	}
	// Only a registered watcher's channel is open (Stop unregisters first).
	if w.s.watchers[w.w] {
		w.w.send(Event{Type: Bookmark, Resource: w.w.res, ResourceVersion: rv})
	}
}

// Watch streams the changes to res in namespace ns ("" for all) after
// resourceVersion from: those still in history first, then live ones. A
// from older than history is *TooOldError; from == 0 starts at the current
// resourceVersion.
func (s *Store) Watch(ctx context.Context, res Resource, ns string, from uint64) (*Watch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.ResourceVersion()
	if err != nil {
		return nil, err
	}
	if from == 0 {
		from = cur
	}
	if from > cur {
		// The apiserver waits for a future resourceVersion to arrive; this
		// store has issued none past cur, so it is not one it issued.
		return nil, fmt.Errorf("%w: resourceVersion %d is newer than the store's %d", errdefs.ErrInvalidArgument, from, cur)
	}
	// Events after from are all in history only if history begins at or
	// before from+1 (or nothing happened since from).
	if from < cur && (s.oldest == 0 || s.oldest > from+1) {
		oldest := s.oldest
		if oldest == 0 {
			oldest = cur
		}
		return nil, &TooOldError{Requested: from, Oldest: oldest}
	}
	w := &watcher{res: res, ns: ns, ch: make(chan Event, s.opts.WatchBuffer), done: make(chan struct{})}
	for _, ev := range s.history {
		if ev.ResourceVersion > from && w.matches(ev) {
			if !w.send(ev) {
				return nil, fmt.Errorf("%w: %d changes since resourceVersion %d", ErrWatchTooSlow, cur-from, from)
			}
		}
	}
	s.watchers[w] = true
	wt := &Watch{s: s, w: w}
	go func() {
		select {
		case <-ctx.Done():
			wt.Stop()
		case <-w.done:
		}
	}()
	return wt, nil
}

func (w *watcher) matches(ev Event) bool {
	return ev.Resource == w.res && (w.ns == "" || ev.Namespace == w.ns)
}

// send queues ev without blocking; false when the watcher is full.
func (w *watcher) send(ev Event) bool {
	select {
	case w.ch <- ev:
		return true
	default:
		return false
	}
}

// publish records ev in history and hands it to every matching watcher; a
// watcher that is full is closed with ErrWatchTooSlow. Called with s.mu held.
func (s *Store) publish(ev Event) {
	s.history = append(s.history, ev)
	s.histSize += eventSize(ev)
	// Drop the oldest changes over either bound, keeping the newest. The
	// slot is cleared so that the array does not keep the objects alive
	// until append moves it.
	for len(s.history) > 1 && (len(s.history) > s.opts.History || s.histSize > s.opts.HistoryBytes) {
		s.histSize -= eventSize(s.history[0])
		s.history[0] = Event{}
		s.history = s.history[1:]
	}
	s.oldest = s.history[0].ResourceVersion
	for w := range s.watchers {
		if !w.matches(ev) {
			continue
		}
		if !w.send(ev) {
			delete(s.watchers, w)
			w.stop(ErrWatchTooSlow)
		}
	}
}

// eventSize is what an event in history holds: its objects' bytes, and a
// little for the rest.
func eventSize(ev Event) int { return cap(ev.Object) + cap(ev.Prev) + 128 }

// anyObject is a stored object of any kind: its metadata typed, every
// other field kept as it was (unstructured.Unstructured would insist on a
// kind, which stored objects need not carry).
type anyObject struct {
	metav1.ObjectMeta
	rest map[string]json.RawMessage
}

func (o *anyObject) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (o *anyObject) DeepCopyObject() runtime.Object {
	c := &anyObject{ObjectMeta: *o.ObjectMeta.DeepCopy(), rest: make(map[string]json.RawMessage, len(o.rest))}
	for k, v := range o.rest {
		c.rest[k] = append(json.RawMessage(nil), v...)
	}
	return c
}

func (o *anyObject) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &o.rest); err != nil {
		return err
	}
	o.ObjectMeta = metav1.ObjectMeta{}
	if md, ok := o.rest["metadata"]; ok {
		return json.Unmarshal(md, &o.ObjectMeta)
	}
	return nil
}

func (o *anyObject) MarshalJSON() ([]byte, error) {
	md, err := json.Marshal(&o.ObjectMeta)
	if err != nil {
		return nil, err
	}
	m := make(map[string]json.RawMessage, len(o.rest)+1)
	for k, v := range o.rest {
		m[k] = v
	}
	m["metadata"] = md
	return json.Marshal(m)
}

// Watcher opens watches (*Store does).
type Watcher interface {
	Watch(ctx context.Context, res Resource, ns string, from uint64) (*Watch, error)
}

// Follow hands every change to res in all namespaces, from now on, to fn
// (in a goroutine of its own) until ctx is done, as a controller's informer
// does. A watch that ends (its watcher fell behind: ErrWatchTooSlow) is
// opened again, a second apart while that fails, and resync is called
// then: the changes in between are not delivered, so the follower looks at
// the whole state again, as an informer relists. Only the first watch's
// error is returned.
func Follow(ctx context.Context, st Watcher, res Resource, fn func(Event), resync func()) error {
	w, err := st.Watch(ctx, res, "", 0)
	if err != nil {
		return fmt.Errorf("watch %s: %w", res, err)
	}
	go func() {
		for {
			for ev := range w.Events() {
				if ev.Type != Bookmark {
					fn(ev)
				}
			}
			for {
				if ctx.Err() != nil {
					return
				}
				if w, err = st.Watch(ctx, res, "", 0); err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
			resync()
		}
	}()
	return nil
}
