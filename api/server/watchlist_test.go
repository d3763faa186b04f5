package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/berth-dev/berth/agent/store"
)

// client-go ≥ 1.35 (the embedded kubectl's) syncs informers with
// watch-list: its reflector must sync from our initial events and their
// end bookmark, without falling back to LIST, and then see changes.
func TestClientGoWatchList(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := New(st, Options{NodeName: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var queries []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/pods") {
			mu.Lock()
			queries = append(queries, r.URL.RawQuery)
			mu.Unlock()
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	createPod(t, ts.URL)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: ts.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inf := cache.NewSharedIndexInformer(cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "pods", "default", fieldsEverything()), &corev1.Pod{}, 0, cache.Indexers{})
	seen := make(chan string, 10)
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(o any) { seen <- o.(*corev1.Pod).Name }}); err != nil {
		t.Fatal(err)
	}
	go inf.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	if n := <-seen; n != "web" {
		t.Errorf("initial %s", n)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "second"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-seen:
		if n != "second" {
			t.Errorf("then %s", n)
		}
	case <-ctx.Done():
		t.Fatal("the informer missed a change")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(queries) == 0 || !strings.Contains(queries[0], "sendInitialEvents=true") {
		t.Errorf("not a watch-list: %q", queries)
	}
	for _, q := range queries {
		if !strings.Contains(q, "watch=true") {
			t.Errorf("a LIST (fallback): %q", q)
		}
	}
}

func fieldsEverything() fields.Selector { return fields.Everything() }
