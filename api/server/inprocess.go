package server

import (
	"fmt"
	"reflect"

	"github.com/containerd/errdefs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/store"
)

// The API for berthd's own controllers (agent/controllers): their creates
// and deletes take the path a client's POST and DELETE take, with the same
// defaults, admission (a quota holds a ReplicaSet's pods as a client's),
// validation and errors, as the kube-controller-manager's go through the
// apiserver. They read and write status through the store.

// Create creates obj, of the kind resource names ("pods",
// "apps/replicasets"), in its namespace; generateName is honoured. On
// success obj is what was stored. An error is the API's
// (*apierrors.StatusError): its message is what a client would print.
func (s *Server) Create(resource string, obj store.Object) error {
	k := s.kinds[resource]
	if k == nil {
		return fmt.Errorf("create %s: no such kind: %w", resource, errdefs.ErrNotFound)
	}
	setTypeMeta(k, obj)
	out, se := s.createObject(k, obj.GetNamespace(), obj, false)
	if se != nil {
		return se
	}
	if out != obj {
		reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(out).Elem())
	}
	return nil
}

// Delete deletes ns/name of the kind resource names as a DELETE with
// the kind's default grace period and a precondition on its uid (empty:
// none), as a controller deletes what it owns.
func (s *Server) Delete(resource, ns, name string, uid types.UID) error {
	return s.DeletePropagating(resource, ns, name, uid, "")
}

// DeletePropagating is Delete with a propagation policy (empty: the
// kind's default), as the garbage collector deletes a dependent of an
// owner deleted in the foreground.
func (s *Server) DeletePropagating(resource, ns, name string, uid types.UID, policy metav1.DeletionPropagation) error {
	k := s.kinds[resource]
	if k == nil {
		return fmt.Errorf("delete %s: no such kind: %w", resource, errdefs.ErrNotFound)
	}
	opts := &metav1.DeleteOptions{}
	if policy != "" {
		opts.PropagationPolicy = &policy
	}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	if _, _, err := s.deleteObject(k, ns, name, opts); err != nil {
		return toStatus(err, k.gr(), k.gk(), name)
	}
	return nil
}
