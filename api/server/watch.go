package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// bookmarkInterval is how often a watch with allowWatchBookmarks=true gets
// a BOOKMARK (the apiserver's cacher sends one about every minute). Tests
// shorten it.
var bookmarkInterval = time.Minute

// watch streams metav1.WatchEvents, one JSON object each, from the
// resourceVersion asked for: "" or "0" with the current objects as ADDED
// first (the apiserver's "get state and start at most recent" and "start
// at any"), a number from the changes after it, or 410 Gone when the store
// no longer has them.
//
// Watch-list (sendInitialEvents=true, with resourceVersionMatch=NotOlderThan
// and allowWatchBookmarks=true, as client-go's reflector and kubectl ≥ 1.35
// send it) streams the current objects as ADDED, then a BOOKMARK annotated
// k8s.io/initial-events-end at the state's resourceVersion, then the
// changes. With allowWatchBookmarks=true a BOOKMARK carrying the store's
// resourceVersion comes every bookmarkInterval, queued after every change
// up to it, so a client may resume from it.
//
// A selector is applied to the object before and after each change, as
// the apiserver's watch cache does: an object that starts matching is
// ADDED, one that stops matching is DELETED.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, k *kind, ns string) {
	q := r.URL.Query()
	var lo metav1.ListOptions
	if err := parameterCodec.DecodeParameters(q, metav1.SchemeGroupVersion, &lo); err != nil {
		s.writeStatus(w, apierrors.NewBadRequest(err.Error()), r)
		return
	}
	watchList := lo.SendInitialEvents != nil && *lo.SendInitialEvents
	if lo.SendInitialEvents != nil {
		// The apiserver's ListOptions validation for watch-list
		// (apis/meta/internalversion/validation).
		var errs field.ErrorList
		if lo.ResourceVersionMatch != metav1.ResourceVersionMatchNotOlderThan {
			errs = append(errs, field.Forbidden(field.NewPath("resourceVersionMatch"), "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
		}
		if watchList && !lo.AllowWatchBookmarks {
			errs = append(errs, field.Forbidden(field.NewPath("allowWatchBookmarks"), "sendInitialEvents requires setting allowWatchBookmarks to true"))
		}
		if len(errs) > 0 {
			s.writeStatus(w, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "ListOptions"}, "", errs), r)
			return
		}
	}
	ls, fs, err := selectors(r)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
		return
	}
	from, err := store.ParseResourceVersion(lo.ResourceVersion)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
		return
	}
	var initial [][]byte
	sendInitial := watchList || (lo.SendInitialEvents == nil && (lo.ResourceVersion == "" || lo.ResourceVersion == "0"))
	if sendInitial {
		cur, err := s.store.List(store.Resource(k.resource), ns, func(data []byte) error {
			initial = append(initial, data)
			return nil
		})
		if err != nil {
			s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
			return
		}
		if from > cur {
			// The apiserver waits 3 s for a future resourceVersion, then
			// answers this; the store issues none past cur.
			s.writeStatus(w, apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", from, cur), 1), r)
			return
		}
		from = cur
	}
	ctx := r.Context()
	if lo.TimeoutSeconds != nil && *lo.TimeoutSeconds > 0 {
		var cancel func()
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*lo.TimeoutSeconds)*time.Second)
		defer cancel()
	}
	wt, err := s.store.Watch(ctx, store.Resource(k.resource), ns, from)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
		return
	}
	defer wt.Stop()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		// Clients wait for the headers before they read events.
		flusher.Flush()
	}
	ws := &watchStream{s: s, k: k, r: r, ls: ls, fs: fs, enc: json.NewEncoder(w), flusher: flusher, table: wantsTable(r), first: true}
	for _, data := range initial {
		if !ws.send(string(store.Added), data, nil) {
			return
		}
	}
	if watchList && !ws.bookmark(from, true) {
		return
	}
	var tick <-chan time.Time
	if lo.AllowWatchBookmarks {
		t := time.NewTicker(bookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case ev, ok := <-wt.Events():
			if !ok {
				if err := wt.Err(); err != nil {
					st := statusOf(toStatus(err, k.gr(), k.gk(), ""))
					b, _ := json.Marshal(st)
					_ = ws.enc.Encode(&metav1.WatchEvent{Type: "ERROR", Object: runtime.RawExtension{Raw: b}})
				}
				return
			}
			if ev.Type == store.Bookmark {
				if !ws.bookmark(ev.ResourceVersion, false) {
					return
				}
				continue
			}
			if !ws.send(string(ev.Type), ev.Object, ev.Prev) {
				return
			}
		case <-tick:
			// The store queues the bookmark after every change up to its
			// resourceVersion; it arrives through Events.
			wt.Bookmark()
		}
	}
}

type watchStream struct {
	s       *Server
	k       *kind
	r       *http.Request
	ls      labels.Selector
	fs      fields.Selector
	enc     *json.Encoder
	flusher http.Flusher
	table   bool
	first   bool
}

// send writes one change, typ, of the object data (prev: before it, for
// a selector's transitions); false when the stream is over.
func (ws *watchStream) send(typ string, data, prev []byte) bool {
	if !ws.table && ws.ls.Empty() && ws.fs.Empty() {
		// Every object matches and goes as stored: nothing to decode.
		return ws.write(&metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: data}})
	}
	obj, err := ws.s.decode(ws.k, data)
	if err != nil {
		ws.s.log.Error("decode stored object", "resource", ws.k.resource, "error", err)
		return false
	}
	match := matches(ws.k, obj, ws.ls, ws.fs)
	if prev != nil && typ == string(store.Modified) {
		if old, err := ws.s.decode(ws.k, prev); err == nil {
			switch was := matches(ws.k, old, ws.ls, ws.fs); {
			case was && !match:
				typ, match = string(store.Deleted), true
			case !was && match:
				typ = string(store.Added)
			}
		}
	}
	if !match {
		return true
	}
	ev := metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: data}}
	if ws.table {
		// Column definitions come with the first event only, as the
		// apiserver sends them.
		t := ws.s.table(ws.k, []store.Object{obj}, obj.GetResourceVersion(), ws.r, ws.first)
		ws.first = false
		b, err := json.Marshal(t)
		if err != nil {
			return false
		}
		ev.Object = runtime.RawExtension{Raw: b}
	}
	return ws.write(&ev)
}

// bookmark writes a BOOKMARK at rv: an object of the kind carrying only
// its resourceVersion (and, ending watch-list's initial events, the
// k8s.io/initial-events-end annotation), as the apiserver sends it; a
// Table watch gets an empty Table with the resourceVersion.
func (ws *watchStream) bookmark(rv uint64, initialEnd bool) bool {
	obj := ws.k.new()
	setTypeMeta(ws.k, obj)
	obj.SetResourceVersion(fmt.Sprint(rv))
	if initialEnd {
		obj.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	}
	var v any = obj
	if ws.table {
		t := &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}, ListMeta: metav1.ListMeta{ResourceVersion: fmt.Sprint(rv)}, Rows: []metav1.TableRow{}}
		if ws.first {
			t.ColumnDefinitions = ws.k.columns
			ws.first = false
		}
		v = t
	}
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return ws.write(&metav1.WatchEvent{Type: string(store.Bookmark), Object: runtime.RawExtension{Raw: b}})
}

func (ws *watchStream) write(ev *metav1.WatchEvent) bool {
	if err := ws.enc.Encode(ev); err != nil {
		return false
	}
	if ws.flusher != nil {
		ws.flusher.Flush()
	}
	return true
}
