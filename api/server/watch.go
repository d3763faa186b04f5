package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// watch streams metav1.WatchEvents, one JSON object each, from the
// resourceVersion asked for: "" from now, "0" with the current objects as
// ADDED first (the apiserver's "any" semantics), a number from the changes
// after it, or 410 Gone when the store no longer has them.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, k *kind, ns string) {
	q := r.URL.Query()
	if q.Get("sendInitialEvents") == "true" {
		// Watch-list is not served: this is the apiserver's answer without the
		// WatchList feature, on which clients fall back to list+watch.
		s.writeStatus(w, apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "ListOptions"}, "",
			field.ErrorList{field.Forbidden(field.NewPath("sendInitialEvents"), "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")}), r)
		return
	}
	ls, fs, err := selectors(r)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
		return
	}
	rvParam := q.Get("resourceVersion")
	from, err := store.ParseResourceVersion(rvParam)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
		return
	}
	var initial [][]byte
	if rvParam == "0" {
		from, err = s.store.List(store.Resource(k.resource), ns, func(data []byte) error {
			initial = append(initial, data)
			return nil
		})
		if err != nil {
			s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
			return
		}
	}
	ctx := r.Context()
	if t := q.Get("timeoutSeconds"); t != "" {
		var secs int
		if _, err := fmt.Sscan(t, &secs); err == nil && secs > 0 {
			var cancel func()
			ctx, cancel = context.WithTimeout(ctx, time.Duration(secs)*time.Second)
			defer cancel()
		}
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
	enc := json.NewEncoder(w)
	table, first := wantsTable(r), true
	send := func(typ string, data []byte) bool {
		obj, err := s.decode(k, data)
		if err != nil {
			s.log.Error("decode stored object", "resource", k.resource, "error", err)
			return false
		}
		if !matches(k, obj, ls, fs) {
			return true
		}
		ev := metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: data}}
		if table {
			// Column definitions come with the first event only, as the
			// apiserver sends them.
			t := s.table(k, []store.Object{obj}, obj.GetResourceVersion(), r, first)
			first = false
			b, err := json.Marshal(t)
			if err != nil {
				return false
			}
			ev.Object = runtime.RawExtension{Raw: b}
		}
		if err := enc.Encode(&ev); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	for _, data := range initial {
		if !send(string(store.Added), data) {
			return
		}
	}
	for ev := range wt.Events() {
		if !send(string(ev.Type), ev.Object) {
			return
		}
	}
	if err := wt.Err(); err != nil {
		st := statusOf(toStatus(err, k.gr(), k.gk(), ""))
		b, _ := json.Marshal(st)
		_ = enc.Encode(&metav1.WatchEvent{Type: "ERROR", Object: runtime.RawExtension{Raw: b}})
	}
}
