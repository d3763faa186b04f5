package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const pods Resource = "pods"

func open(t *testing.T, path string, o Options) *Store {
	t.Helper()
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newPod(ns, name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
}

func TestCRUDWithTheApiserversBookkeeping(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 500, time.UTC)
	s := open(t, filepath.Join(t.TempDir(), "state.db"), Options{Now: func() time.Time { return now }})
	p := newPod("default", "web")
	if err := s.Create(pods, p); err != nil {
		t.Fatal(err)
	}
	if p.UID == "" || p.Generation != 1 || p.ResourceVersion != "1" || !p.CreationTimestamp.Time.Equal(now.Truncate(time.Second)) {
		t.Fatalf("created %+v", p.ObjectMeta)
	}
	if err := s.Create(pods, newPod("default", "web")); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second create: %v", err)
	}
	withRV := newPod("default", "other")
	withRV.ResourceVersion = "7"
	if err := s.Create(pods, withRV); !errdefs.IsInvalidArgument(err) {
		t.Errorf("create with a resourceVersion: %v", err)
	}
	var got corev1.Pod
	if err := s.Get(pods, "default", "web", &got); err != nil || got.UID != p.UID || got.Spec.Containers[0].Image != "app" {
		t.Fatalf("get: %+v, %v", got.ObjectMeta, err)
	}
	if err := s.Get(pods, "default", "nope", &got); !errdefs.IsNotFound(err) || err.Error() != `pods "nope": not found` {
		t.Errorf("get missing: %v", err)
	}

	// Update: uid and creationTimestamp kept, generation as told, a new RV.
	up := got.DeepCopy()
	up.UID, up.CreationTimestamp = "forged", metav1.Time{}
	up.Spec.Containers[0].Image = "app:2"
	if err := s.Update(pods, up, true); err != nil {
		t.Fatal(err)
	}
	if up.UID != p.UID || !up.CreationTimestamp.Equal(&p.CreationTimestamp) || up.Generation != 2 || up.ResourceVersion != "2" {
		t.Fatalf("updated %+v", up.ObjectMeta)
	}
	stale := got.DeepCopy() // still resourceVersion 1
	stale.Labels = map[string]string{"a": "b"}
	err := s.Update(pods, stale, false)
	if !errdefs.IsConflict(err) || !errors.Is(err, ErrModified) || err.Error() != `pods "web": the object has been modified; please apply your changes to the latest version and try again` {
		t.Errorf("stale update: %v", err)
	}
	status := up.DeepCopy()
	status.Status.Phase = corev1.PodRunning
	if err := s.Update(pods, status, false); err != nil || status.Generation != 2 {
		t.Fatalf("status update: generation %d, %v", status.Generation, err)
	}

	// List: per namespace or all, with the list's resourceVersion.
	for _, n := range [][2]string{{"kube-system", "a"}, {"default", "b"}, {"defaults", "c"}} {
		if err := s.Create(pods, newPod(n[0], n[1])); err != nil {
			t.Fatal(err)
		}
	}
	names := func(ns string) (out []string, rv uint64) {
		rv, err := s.List(pods, ns, func(b []byte) error {
			var p corev1.Pod
			if err := json.Unmarshal(b, &p); err != nil {
				return err
			}
			out = append(out, p.Namespace+"/"+p.Name)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out, rv
	}
	if got, rv := names("default"); fmt.Sprint(got) != "[default/b default/web]" || rv != 6 {
		t.Errorf("list default: %v at %d", got, rv)
	}
	if got, _ := names(""); len(got) != 4 {
		t.Errorf("list all: %v", got)
	}

	// Delete with preconditions.
	if _, err := s.Delete(pods, "default", "web", "wrong-uid", ""); !errdefs.IsConflict(err) {
		t.Errorf("delete with a wrong uid: %v", err)
	}
	if _, err := s.Delete(pods, "default", "web", "", "1"); !errdefs.IsConflict(err) {
		t.Errorf("delete with a stale resourceVersion: %v", err)
	}
	gone, err := s.Delete(pods, "default", "web", p.UID, status.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	var last corev1.Pod
	if err := json.Unmarshal(gone, &last); err != nil || last.ResourceVersion != "7" || last.Status.Phase != corev1.PodRunning {
		t.Errorf("deleted object %+v, %v", last.ObjectMeta, err)
	}
	if _, err := s.Delete(pods, "default", "web", "", ""); !errdefs.IsNotFound(err) {
		t.Errorf("second delete: %v", err)
	}
}

// State survives a restart, resourceVersions continue, and a file written by
// a newer schema is refused rather than guessed at.
func TestPersistenceAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(pods, newPod("default", "web")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path, Options{})
	var p corev1.Pod
	if err := s.Get(pods, "default", "web", &p); err != nil || p.ResourceVersion != "1" {
		t.Fatalf("after reopen: %+v, %v", p.ObjectMeta, err)
	}
	q := newPod("default", "two")
	if err := s.Create(pods, q); err != nil || q.ResourceVersion != "2" {
		t.Fatalf("resourceVersion after reopen: %q, %v", q.ResourceVersion, err)
	}
	s.Close()

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(metaBucket).Put(schemaKey, binary.BigEndian.AppendUint64(nil, SchemaVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path, Options{}); !errdefs.IsFailedPrecondition(err) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("newer schema: %v", err)
	}
}

func recv(t *testing.T, w *Watch) Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch closed: %v", w.Err())
		}
		return ev
	case <-time.After(30 * time.Second): // a hang, not a timing check
		t.Fatal("no event")
		return Event{}
	}
}

func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path, Options{History: 4, WatchBuffer: 8})
	ctx := context.Background()
	a := newPod("default", "a")
	must(t, s.Create(pods, a))                                         // rv 1
	must(t, s.Create(pods, newPod("other", "b")))                      // rv 2
	must(t, s.Create(Resource("configmaps"), newPod("default", "cm"))) // rv 3: another resource

	// Resume from rv 1: the changes after it, of this resource and namespace.
	w, err := s.Watch(ctx, pods, "default", 1)
	must(t, err)
	a.Labels = map[string]string{"x": "y"}
	must(t, s.Update(pods, a, false)) // rv 4
	if ev := recv(t, w); ev.Type != Modified || ev.Name != "a" || ev.ResourceVersion != 4 {
		t.Errorf("first event %+v", ev)
	}
	_, err = s.Delete(pods, "default", "a", "", "")
	must(t, err) // rv 5
	if ev := recv(t, w); ev.Type != Deleted || ev.ResourceVersion != 5 {
		t.Errorf("second event %+v", ev)
	}
	// From all namespaces, rv 1: the other namespace's create is replayed.
	all, err := s.Watch(ctx, pods, "", 1)
	must(t, err)
	var seen []uint64
	for range 3 {
		seen = append(seen, recv(t, all).ResourceVersion)
	}
	if fmt.Sprint(seen) != "[2 4 5]" {
		t.Errorf("replayed %v, want [2 4 5]", seen)
	}
	all.Stop()
	if _, ok := <-all.Events(); ok || all.Err() != nil {
		t.Errorf("stopped watch: still open or error %v", all.Err())
	}

	// History holds 4 events (2..5): rv 0 and 1 are too old, rv 1 needs 2.. which is there.
	must(t, s.Create(pods, newPod("default", "c"))) // rv 6; history now 3..6
	var old *TooOldError
	if _, err := s.Watch(ctx, pods, "", 1); !errors.As(err, &old) || !errdefs.IsOutOfRange(err) || old.Oldest != 3 {
		t.Errorf("watch from rv 1 past history: %v", err)
	}
	if _, err := s.Watch(ctx, pods, "", 99); !errdefs.IsInvalidArgument(err) {
		t.Errorf("watch from a future rv: %v", err)
	}

	// After a restart the history is gone: only the current rv resumes.
	w.Stop()
	s.Close()
	s = open(t, path, Options{})
	if _, err := s.Watch(ctx, pods, "", 5); !errors.As(err, &old) {
		t.Errorf("resume after restart from rv 5 of 6: %v, want too old", err)
	}
	cur, err := s.Watch(ctx, pods, "", 6)
	must(t, err)
	must(t, s.Create(pods, newPod("default", "d")))
	if ev := recv(t, cur); ev.ResourceVersion != 7 {
		t.Errorf("after restart: %+v", ev)
	}

	// Cancelling the context ends the watch.
	cctx, cancel := context.WithCancel(ctx)
	cw, err := s.Watch(cctx, pods, "", 0)
	must(t, err)
	cancel()
	for range cw.Events() {
	}
}

// A watcher that does not read is closed with ErrWatchTooSlow; the store and
// the other watchers go on.
func TestSlowWatcherClosed(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"), Options{WatchBuffer: 2})
	slow, err := s.Watch(context.Background(), pods, "", 0)
	must(t, err)
	for i := range 5 {
		must(t, s.Create(pods, newPod("default", fmt.Sprint("p", i))))
	}
	n := 0
	for range slow.Events() {
		n++
	}
	if n != 2 || !errors.Is(slow.Err(), ErrWatchTooSlow) || !errdefs.IsResourceExhausted(slow.Err()) {
		t.Errorf("slow watcher got %d events, err %v", n, slow.Err())
	}
}

// Concurrent writers get distinct, increasing resourceVersions, and a
// watcher sees them in order.
func TestConcurrentWritesOrdered(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"), Options{WatchBuffer: 1000})
	w, err := s.Watch(context.Background(), pods, "", 0)
	must(t, err)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Create(pods, newPod("default", fmt.Sprint("p", i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for want := uint64(1); want <= 100; want++ {
		if ev := recv(t, w); ev.ResourceVersion != want {
			t.Fatalf("event %d has resourceVersion %d", want, ev.ResourceVersion)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The history holds at most HistoryBytes of objects: a watch from before
// the changes it dropped is too old, one from after them resumes with all
// of them.
func TestHistoryBytes(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"), Options{HistoryBytes: 4 << 10})
	ctx := context.Background()
	var size int
	for i := 0; i < 20; i++ {
		p := newPod("default", fmt.Sprintf("p%02d", i))
		must(t, s.Create(pods, p)) // rv i+1
		data, _ := json.Marshal(p)
		size = len(data)
	}
	s.mu.Lock()
	held, n, oldest := s.histSize, len(s.history), s.oldest
	s.mu.Unlock()
	if held > 4<<10 || n < 2 || n > (4<<10)/size {
		t.Fatalf("history holds %d events, %d bytes, of %d-byte objects; want at most 4 kB", n, held, size)
	}
	var old *TooOldError
	if _, err := s.Watch(ctx, pods, "", oldest-2); !errors.As(err, &old) || old.Oldest != oldest {
		t.Errorf("watch from before the history: %v", err)
	}
	w, err := s.Watch(ctx, pods, "", oldest-1)
	must(t, err)
	defer w.Stop()
	for rv := oldest; rv <= 20; rv++ {
		if ev := recv(t, w); ev.ResourceVersion != rv {
			t.Fatalf("resumed with rv %d, want %d", ev.ResourceVersion, rv)
		}
	}
}
