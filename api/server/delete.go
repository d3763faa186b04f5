package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/berth-dev/berth/agent/store"
)

// Deletion, as the apiserver's registry does it (rest.BeforeDelete,
// Store.Delete, updateForGracefulDeletionAndFinalizers, markAsDeleting):
//
//   - A kind with a graceful strategy (pods) asks it for the grace period
//     (podGracePeriod: the request's, else spec.terminationGracePeriodSeconds;
//     0 for unscheduled or finished pods). A period above 0 sets
//     metadata.deletionTimestamp = now + period and
//     deletionGracePeriodSeconds = period, bumps the generation, and keeps
//     the object: the pod worker stops its containers, then calls
//     store.FinishDeletion, which removes it (or, with finalizers, sets the
//     grace period to 0 and leaves it to the last finalizer's removal).
//   - A second delete of an object being deleted may only shorten the
//     period (deletionTimestamp moves earlier by the difference); 0 removes
//     it at once (kubectl delete --force --grace-period=0). A longer or no
//     period changes nothing and answers the object.
//   - An object with finalizers is never removed by a delete: it gets
//     deletionTimestamp (now) and deletionGracePeriodSeconds 0, and goes
//     when an update removes its last finalizer.
//   - Anything else is removed at once.
//
// propagationPolicy (and the older orphanDependents) of a kind whose
// objects own others here (Deployments, ReplicaSets, Services: ownsDependents)
// is the apiserver's: Orphan adds the finalizer "orphan", Foreground
// "foregroundDeletion", and the object stays, being deleted, until the
// garbage collector (agent/controllers/gc) has released or deleted its
// dependents and removed the finalizer. Background (the default) removes
// it now; the controllers delete what it owned. For other kinds, which own
// nothing here, every policy acts as Background.

// deleteOptionsOf reads DeleteOptions from the body, or from the query
// when there is none, as the apiserver's delete handler does, and
// validates them.
func deleteOptionsOf(w http.ResponseWriter, r *http.Request) (*metav1.DeleteOptions, *apierrors.StatusError) {
	opts := &metav1.DeleteOptions{}
	body, se := readBody(w, r)
	if se != nil {
		return nil, se
	}
	if len(body) > 0 {
		var err error
		if strings.HasPrefix(r.Header.Get("Content-Type"), protobufType) {
			_, _, err = protobufCodec.Decode(body, nil, opts)
		} else {
			err = json.Unmarshal(body, opts)
		}
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
	} else if err := parameterCodec.DecodeParameters(r.URL.Query(), metav1.SchemeGroupVersion, opts); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if errs := metav1validation.ValidateDeleteOptions(opts); len(errs) > 0 {
		return nil, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "DeleteOptions"}, "", errs)
	}
	return opts, nil
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, k *kind, ns, name string) {
	opts, se := deleteOptionsOf(w, r)
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	if k.resource == "namespaces" && name == metav1.NamespaceDefault {
		s.writeStatus(w, apierrors.NewForbidden(k.gr(), name, errors.New("this namespace may not be deleted")), r)
		return
	}
	del := s.deleteObject
	if k.resource == "namespaces" {
		// Marked Terminating; RunNamespaces empties and removes it
		// (namespace.go).
		del = func(k *kind, _, name string, opts *metav1.DeleteOptions) (store.Object, bool, error) {
			return s.deleteNamespace(k, name, opts)
		}
	}
	out, deleted, err := del(k, ns, name, opts)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	s.writeDeleted(w, k, out, deleted)
}

// writeDeleted answers a delete: the object, unless the kind answers a
// removed object with a Status (the apiserver's finalizeDelete without
// ReturnDeletedObject).
func (s *Server) writeDeleted(w http.ResponseWriter, k *kind, out store.Object, deleted bool) {
	if deleted && !k.returnDeletedObject {
		writeJSON(w, http.StatusOK, &metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess,
			Details: &metav1.StatusDetails{Name: out.GetName(), Group: k.group, Kind: k.resource, UID: out.GetUID()},
		})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteObject deletes ns/name of k with opts (see the comment at the top
// of this file) and returns the object as it was left, and whether it is
// gone.
func (s *Server) deleteObject(k *kind, ns, name string, opts *metav1.DeleteOptions) (store.Object, bool, error) {
	dryRun := len(opts.DryRun) > 0
	var out store.Object
	var outDeleted bool
	deleted, err := s.modify(k, ns, name, func(cur store.Object) (store.Decision, error) {
		out = cur
		if err := checkPreconditions(k, name, opts, cur); err != nil {
			return store.Decision{}, err
		}
		grace := opts.GracePeriodSeconds
		if grace != nil && *grace < 0 {
			grace = ptr(int64(1)) // a negative period is 1 s on the delete path
		}
		now := time.Now()
		graceful, bump := false, false
		var period int64
		if k.gracePeriod != nil {
			if ts := cur.GetDeletionTimestamp(); ts != nil {
				g := cur.GetDeletionGracePeriodSeconds()
				switch {
				case g == nil || *g == 0:
					// Being deleted with no grace left: remove now.
				case grace == nil || *grace >= *g:
					// Pending: only a shorter period changes anything.
					return done(dryRun, store.Decision{})
				default:
					t := metav1.NewTime(ts.Add(-time.Duration(*g) * time.Second).Add(time.Duration(*grace) * time.Second))
					cur.SetDeletionTimestamp(&t)
					cur.SetDeletionGracePeriodSeconds(ptr(*grace))
					graceful, period = true, *grace
				}
			} else {
				period = k.gracePeriod(cur, grace)
				t := metav1.NewTime(now.Add(time.Duration(period) * time.Second))
				cur.SetDeletionTimestamp(&t)
				cur.SetDeletionGracePeriodSeconds(ptr(period))
				graceful, bump = true, cur.GetGeneration() > 0
			}
		}
		if k.ownsDependents && cur.GetDeletionTimestamp() == nil {
			if f := deletionFinalizer(opts); f != "" && !has(cur.GetFinalizers(), f) {
				cur.SetFinalizers(append(cur.GetFinalizers(), f))
			}
		}
		pending := len(cur.GetFinalizers()) > 0
		switch {
		case pending && !graceful:
			// markAsDeleting.
			if cur.GetDeletionTimestamp() == nil && cur.GetGeneration() > 0 {
				bump = true
			}
			if ts := cur.GetDeletionTimestamp(); ts == nil || ts.After(now) {
				t := metav1.NewTime(now)
				cur.SetDeletionTimestamp(&t)
			}
			cur.SetDeletionGracePeriodSeconds(ptr(int64(0)))
			return done(dryRun, store.Decision{BumpGeneration: bump})
		case pending || (graceful && period > 0):
			return done(dryRun, store.Decision{BumpGeneration: bump})
		}
		outDeleted = true
		return done(dryRun, store.Decision{Delete: true})
	})
	if errors.Is(err, errDryRun) {
		return out, outDeleted, nil
	}
	if err != nil {
		return nil, false, err
	}
	return out, deleted, nil
}

// deletionFinalizer is the finalizer the garbage collector acts on for a
// delete's propagation policy (deletionFinalizersForGarbageCollection):
// "orphan", "foregroundDeletion", or none for Background.
func deletionFinalizer(opts *metav1.DeleteOptions) string {
	switch {
	case opts.PropagationPolicy != nil && *opts.PropagationPolicy == metav1.DeletePropagationOrphan,
		opts.PropagationPolicy == nil && opts.OrphanDependents != nil && *opts.OrphanDependents:
		return metav1.FinalizerOrphanDependents
	case opts.PropagationPolicy != nil && *opts.PropagationPolicy == metav1.DeletePropagationForeground:
		return metav1.FinalizerDeleteDependents
	}
	return ""
}

// checkPreconditions is BeforeDelete's precondition check, in its words
// (the object's Kind where the resource would be).
func checkPreconditions(k *kind, name string, opts *metav1.DeleteOptions, cur store.Object) error {
	p := opts.Preconditions
	if p == nil {
		return nil
	}
	kgr := schema.GroupResource{Group: k.group, Resource: k.kind}
	if p.UID != nil && *p.UID != cur.GetUID() {
		return apierrors.NewConflict(kgr, name, fmt.Errorf("the UID in the precondition (%s) does not match the UID in record (%s). The object might have been deleted and then recreated", *p.UID, cur.GetUID()))
	}
	if p.ResourceVersion != nil && *p.ResourceVersion != cur.GetResourceVersion() {
		return apierrors.NewConflict(kgr, name, fmt.Errorf("the ResourceVersion in the precondition (%s) does not match the ResourceVersion in record (%s). The object might have been modified", *p.ResourceVersion, cur.GetResourceVersion()))
	}
	return nil
}

// done is a delete's decision, or for dryRun=All the end of the
// transaction with nothing written.
func done(dryRun bool, d store.Decision) (store.Decision, error) {
	if dryRun {
		return store.Decision{}, errDryRun
	}
	return d, nil
}

// deleteCollection serves DELETE on a collection: every object matching
// the label and field selectors is deleted with the request's
// DeleteOptions, as the apiserver's DeleteCollection does; the answer is
// the list of what was deleted (or marked for deletion).
func (s *Server) deleteCollection(w http.ResponseWriter, r *http.Request, k *kind, ns string) {
	if k.resource == "namespaces" {
		// The apiserver serves no deletecollection for namespaces.
		s.writeStatus(w, apierrors.NewMethodNotSupported(k.gr(), "deletecollection"), r)
		return
	}
	ls, fs, err := selectors(r)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
		return
	}
	opts, se := deleteOptionsOf(w, r)
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	type ref struct{ ns, name string }
	var refs []ref
	rv, err := s.store.List(store.Resource(k.resource), ns, func(data []byte) error {
		obj, err := s.decode(k, data)
		if err != nil {
			return err
		}
		if matches(k, obj, ls, fs) {
			refs = append(refs, ref{obj.GetNamespace(), obj.GetName()})
		}
		return nil
	})
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
		return
	}
	var items [][]byte
	for _, o := range refs {
		out, _, err := s.deleteObject(k, o.ns, o.name, opts)
		if errdefs.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			s.writeStatus(w, toStatus(err, k.gr(), k.gk(), o.name), r)
			return
		}
		b, err := json.Marshal(out)
		if err != nil {
			s.writeStatus(w, toStatus(err, k.gr(), k.gk(), o.name), r)
			return
		}
		items = append(items, b)
	}
	if st, ok := s.store.(interface{ ResourceVersion() (uint64, error) }); ok {
		if now, err := st.ResourceVersion(); err == nil {
			rv = now
		}
	}
	s.writeList(w, k, items, fmt.Sprint(rv))
}

// deleteAll deletes every object of k in namespace ns, with a delete's
// default options (for the namespace's deletion).
func (s *Server) deleteAll(k *kind, ns string) {
	var names []string
	_, err := s.store.List(store.Resource(k.resource), ns, func(data []byte) error {
		var m metav1.PartialObjectMetadata
		if err := json.Unmarshal(data, &m); err != nil {
			return err
		}
		names = append(names, m.Name)
		return nil
	})
	if err != nil {
		s.log.Error("list for namespace deletion", "namespace", ns, "error", err)
		return
	}
	for _, n := range names {
		if _, _, err := s.deleteObject(k, ns, n, &metav1.DeleteOptions{}); err != nil && !errdefs.IsNotFound(err) {
			s.log.Error("delete with namespace", "namespace", ns, "name", n, "error", err)
		}
	}
}
