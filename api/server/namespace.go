package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

// A namespace is deleted as on a cluster: the DELETE marks it (a
// deletionTimestamp and phase Terminating, the namespace REST's Delete in
// pkg/registry/core/namespace/storage), nothing new may be created in it
// (the NamespaceLifecycle admission's Forbidden), and the namespace
// controller's deleter (pkg/controller/namespace/deletion) removes what is
// in it, pods first and gracefully (so the worker stops their units), then
// the rest, reports progress in the namespace's conditions, removes the
// "kubernetes" finalizer and deletes the namespace. kubectl delete
// namespace waits for that last delete.

// deleteNamespace is the namespace REST's Delete: the first DELETE marks
// the namespace Terminating and returns it; a later one deletes it only
// once it is finalized (spec.finalizers empty). The content is the
// deleter's (RunNamespaces), kicked here.
func (s *Server) deleteNamespace(k *kind, name string, opts *metav1.DeleteOptions) (store.Object, bool, error) {
	dryRun := len(opts.DryRun) > 0
	var out store.Object
	var outDeleted bool
	deleted, err := s.modify(k, "", name, func(cur store.Object) (store.Decision, error) {
		out = cur
		if err := checkPreconditions(k, name, opts, cur); err != nil {
			return store.Decision{}, err
		}
		n := cur.(*corev1.Namespace)
		if n.DeletionTimestamp == nil || n.Status.Phase != corev1.NamespaceTerminating {
			if n.DeletionTimestamp == nil {
				now := metav1.Now()
				n.DeletionTimestamp = &now
				if !slices.Contains(n.Spec.Finalizers, corev1.FinalizerKubernetes) {
					// A namespace stored before berth kept the finalizer:
					// without it the mark would be the deletion, and its
					// content would stay.
					n.Spec.Finalizers = append(n.Spec.Finalizers, corev1.FinalizerKubernetes)
				}
			}
			n.Status.Phase = corev1.NamespaceTerminating
			return done(dryRun, store.Decision{})
		}
		if len(n.Spec.Finalizers) != 0 {
			// The namespace REST's answer to a second delete while its
			// content goes (kubectl delete namespace on a Terminating one).
			return store.Decision{}, apierrors.NewConflict(k.gr(), name, errors.New("The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system."))
		}
		if len(n.Finalizers) != 0 {
			return done(dryRun, store.Decision{})
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
	if !deleted {
		s.kickNamespaces()
	}
	return out, deleted, nil
}

// kickNamespaces wakes RunNamespaces without waiting for it.
func (s *Server) kickNamespaces() {
	select {
	case s.nsKick <- struct{}{}:
	default:
	}
}

// refuseInTerminating is the NamespaceLifecycle admission for a create in
// namespace ns (nsObj, as stored): Forbidden while it is being deleted,
// with the apiserver's words and cause.
func refuseInTerminating(k *kind, nsObj store.Object, name string) *apierrors.StatusError {
	n, ok := nsObj.(*corev1.Namespace)
	if !ok || (n.DeletionTimestamp == nil && n.Status.Phase != corev1.NamespaceTerminating) {
		return nil
	}
	se := apierrors.NewForbidden(k.gr(), name, fmt.Errorf("unable to create new content in namespace %s because it is being terminated", n.Name))
	se.ErrStatus.Details.Causes = append(se.ErrStatus.Details.Causes, metav1.StatusCause{
		Type:    corev1.NamespaceTerminatingCause,
		Message: fmt.Sprintf("namespace %s is being terminated", n.Name),
		Field:   "metadata.namespace",
	})
	return se
}

// recheckNamespace closes the window between NamespaceLifecycle's check
// and the store's create: a create that lands after the deleter emptied
// its kind would outlive the namespace. Once stored, the object is checked
// against its namespace again and removed, with the admission's Forbidden,
// if the namespace is being deleted or gone.
func (s *Server) recheckNamespace(k *kind, stored store.Object) *apierrors.StatusError {
	if !k.namespaced {
		return nil
	}
	nsObj := s.kinds["namespaces"].new()
	err := s.store.Get("namespaces", "", stored.GetNamespace(), nsObj)
	if err == nil && nsObj.GetDeletionTimestamp() == nil {
		return nil
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return nil // unknown: the deleter's next pass sees the object
	}
	if _, derr := s.store.Delete(store.Resource(k.resource), stored.GetNamespace(), stored.GetName(), stored.GetUID(), ""); derr != nil && !errdefs.IsNotFound(derr) {
		s.log.Error("remove an object created in a namespace being deleted", "namespace", stored.GetNamespace(), "name", stored.GetName(), "error", derr)
	}
	if err != nil {
		return toStatus(err, s.kinds["namespaces"].gr(), s.kinds["namespaces"].gk(), stored.GetNamespace())
	}
	return refuseInTerminating(k, nsObj, stored.GetName())
}

// beingDeleted is the generic store's AlreadyExists for an object whose
// deletion has begun (a Terminating namespace, a pod in its grace period):
// "object is being deleted: namespaces "x" already exists".
func (s *Server) beingDeleted(k *kind, obj store.Object, se *apierrors.StatusError) *apierrors.StatusError {
	if !apierrors.IsAlreadyExists(se) {
		return se
	}
	cur := k.new()
	if err := s.store.Get(store.Resource(k.resource), obj.GetNamespace(), obj.GetName(), cur); err != nil || cur.GetDeletionTimestamp() == nil {
		return se
	}
	se.ErrStatus.Message = "object is being deleted: " + se.ErrStatus.Message
	return se
}

// RunNamespaces is the namespace controller's deleter: it empties every
// Terminating namespace and deletes it, at start (a berthd killed in the
// middle of a deletion resumes it) and whenever a namespace is marked,
// checking again every second while one waits for its pods. It returns
// when ctx ends.
func (s *Server) RunNamespaces(ctx context.Context) error {
	for {
		pending := s.finalizeNamespaces(ctx)
		var tick <-chan time.Time
		if pending {
			tick = time.After(time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.nsKick:
		case <-tick:
		}
	}
}

// finalizeNamespaces makes one pass over the Terminating namespaces; true
// when one of them is still waiting.
func (s *Server) finalizeNamespaces(ctx context.Context) bool {
	k := s.kinds["namespaces"]
	var terminating []string
	_, err := s.store.List("namespaces", "", func(data []byte) error {
		obj, err := s.decode(k, data)
		if err != nil {
			return err
		}
		if obj.GetDeletionTimestamp() != nil {
			terminating = append(terminating, obj.GetName())
		}
		return nil
	})
	if err != nil {
		s.log.Error("namespace deletion: list namespaces", "error", err)
		return true
	}
	pending := false
	for _, ns := range terminating {
		if ctx.Err() != nil {
			return false
		}
		done, err := s.finalizeNamespace(ns)
		if err != nil && !errdefs.IsNotFound(err) {
			s.log.Error("namespace deletion", "namespace", ns, "error", err)
		}
		pending = pending || (!done && err == nil) || (err != nil && !errdefs.IsNotFound(err))
	}
	return pending
}

// finalizeNamespace is one step of the deleter for ns (deleteAllContent,
// then finalizeNamespace and deleteNamespace): true once the namespace is
// gone.
func (s *Server) finalizeNamespace(ns string) (bool, error) {
	nk := s.kinds["namespaces"]
	cur := nk.new()
	if err := s.store.Get("namespaces", "", ns, cur); err != nil {
		return false, err
	}
	n := cur.(*corev1.Namespace)
	if n.DeletionTimestamp == nil {
		return true, nil
	}
	if len(n.Spec.Finalizers) == 0 {
		// Finalized (by an earlier pass that was cut short): delete it.
		_, _, err := s.deleteNamespace(nk, ns, &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &n.UID}})
		return err == nil, err
	}
	// Pods first, gracefully: the worker stops their units and removes
	// them; the rest once no pod is left (a pod's last events are written
	// while it stops).
	remaining := map[string]int{}
	s.deleteAll(s.kinds["pods"], ns)
	if c := s.count("pods", ns); c > 0 {
		remaining["pods"] = c
	} else {
		for _, kk := range s.order {
			if kk.namespaced && kk.group == "" && kk.resource != "pods" {
				// Kinds of another group that share a core kind's storage,
				// events.k8s.io's Events, are covered by it.
				s.deleteAll(kk, ns)
				if c := s.count(kk.resource, ns); c > 0 {
					remaining[kk.resource] = c
				}
			}
		}
	}
	conds := deletionConditions(remaining)
	var finalized bool
	gone, err := s.modify(nk, "", ns, func(cur store.Object) (store.Decision, error) {
		n := cur.(*corev1.Namespace)
		if n.DeletionTimestamp == nil {
			return store.Decision{}, nil
		}
		changed := setConditions(&n.Status.Conditions, conds)
		if len(remaining) == 0 && slices.Contains(n.Spec.Finalizers, corev1.FinalizerKubernetes) {
			n.Spec.Finalizers = slices.DeleteFunc(n.Spec.Finalizers, func(f corev1.FinalizerName) bool { return f == corev1.FinalizerKubernetes })
			changed = true
		}
		finalized = len(n.Spec.Finalizers) == 0
		if !changed {
			return store.Decision{}, errUnchanged
		}
		return store.Decision{}, nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return false, err
	}
	if gone {
		// The store removed it with its last finalizer (store.Finalized).
		return true, nil
	}
	if !finalized {
		return false, nil
	}
	cur = nk.new()
	if err := s.store.Get("namespaces", "", ns, cur); err != nil {
		return false, err
	}
	uid := cur.GetUID()
	_, _, err = s.deleteNamespace(nk, ns, &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	return err == nil, err
}

// errUnchanged ends a Modify that has nothing to write.
var errUnchanged = errors.New("unchanged")

// count is how many objects of resource ns holds.
func (s *Server) count(resource, ns string) int {
	n := 0
	if _, err := s.store.List(store.Resource(resource), ns, func([]byte) error { n++; return nil }); err != nil {
		return 1 // unknown: not empty
	}
	return n
}

// deletionConditions are the namespace controller's conditions on a
// Terminating namespace (pkg/controller/namespace/deletion
// namespaced_resources_deleter.go, status_condition_utils.go), with their
// reasons and messages.
func deletionConditions(remaining map[string]int) []corev1.NamespaceCondition {
	conds := []corev1.NamespaceCondition{
		{Type: corev1.NamespaceDeletionDiscoveryFailure, Status: corev1.ConditionFalse, Reason: "ResourcesDiscovered", Message: "All resources successfully discovered"},
		{Type: corev1.NamespaceDeletionGVParsingFailure, Status: corev1.ConditionFalse, Reason: "ParsedGroupVersions", Message: "All legacy kube types successfully parsed"},
		{Type: corev1.NamespaceDeletionContentFailure, Status: corev1.ConditionFalse, Reason: "ContentDeleted", Message: "All content successfully deleted, may be waiting on finalization"},
	}
	if len(remaining) == 0 {
		conds = append(conds, corev1.NamespaceCondition{Type: corev1.NamespaceContentRemaining, Status: corev1.ConditionFalse, Reason: "ContentRemoved", Message: "All content successfully removed"})
	} else {
		var parts []string
		for r, n := range remaining {
			parts = append(parts, fmt.Sprintf("%s has %d resource instances", r, n))
		}
		sort.Strings(parts)
		conds = append(conds, corev1.NamespaceCondition{Type: corev1.NamespaceContentRemaining, Status: corev1.ConditionTrue, Reason: "SomeResourcesRemain", Message: "Some resources are remaining: " + strings.Join(parts, ", ")})
	}
	return append(conds, corev1.NamespaceCondition{Type: corev1.NamespaceFinalizersRemaining, Status: corev1.ConditionFalse, Reason: "ContentHasNoFinalizers", Message: "All content-preserving finalizers finished"})
}

// setConditions puts want into conds, keeping a condition's transition
// time while its status stays; true when anything changed.
func setConditions(conds *[]corev1.NamespaceCondition, want []corev1.NamespaceCondition) bool {
	changed := false
	for _, w := range want {
		i := slices.IndexFunc(*conds, func(c corev1.NamespaceCondition) bool { return c.Type == w.Type })
		if i >= 0 {
			c := &(*conds)[i]
			if c.Status == w.Status && c.Reason == w.Reason && c.Message == w.Message {
				continue
			}
			if c.Status == w.Status {
				w.LastTransitionTime = c.LastTransitionTime
			} else {
				w.LastTransitionTime = metav1.Now()
			}
			*c = w
		} else {
			w.LastTransitionTime = metav1.Now()
			*conds = append(*conds, w)
		}
		changed = true
	}
	return changed
}
