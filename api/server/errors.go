package server

import (
	"context"
	"errors"

	"github.com/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// fieldErrors is a cause that carries the apiserver's field errors
// (pods.FieldErrors).
type fieldErrors interface{ FieldErrors() field.ErrorList }

// fieldError is a cause that names one field (unitgen.InvalidError).
type fieldError interface {
	error
	FieldPath() string
	Reason() string
}

// toStatus is the one place where berth's error classes (containerd's
// errdefs) become the Kubernetes Status a client expects: reason, code and
// the apiserver's message for the resource and name of the request.
func toStatus(err error, gr schema.GroupResource, kind schema.GroupKind, name string) *apierrors.StatusError {
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return se
	}
	switch {
	case errdefs.IsNotFound(err):
		return apierrors.NewNotFound(gr, name)
	case errdefs.IsAlreadyExists(err):
		return apierrors.NewAlreadyExists(gr, name)
	case errdefs.IsConflict(err):
		if errors.Is(err, store.ErrModified) {
			return apierrors.NewConflict(gr, name, store.ErrModified)
		}
		return apierrors.NewConflict(gr, name, err)
	case errdefs.IsInvalidArgument(err):
		var fes fieldErrors
		if errors.As(err, &fes) {
			return apierrors.NewInvalid(kind, name, fes.FieldErrors())
		}
		var fe fieldError
		if errors.As(err, &fe) {
			return apierrors.NewInvalid(kind, name, field.ErrorList{{Type: field.ErrorTypeInvalid, Field: fe.FieldPath(), BadValue: field.OmitValueType{}, Detail: fe.Reason()}})
		}
		return apierrors.NewBadRequest(err.Error())
	case errdefs.IsPermissionDenied(err):
		return apierrors.NewForbidden(gr, name, err)
	case errdefs.IsUnauthorized(err):
		return apierrors.NewUnauthorized(err.Error())
	case errdefs.IsOutOfRange(err):
		var old *store.TooOldError
		if errors.As(err, &old) {
			// 410 Gone, reason Expired: clients list again.
			return apierrors.NewResourceExpired(old.Error())
		}
		return apierrors.NewBadRequest(err.Error())
	case errdefs.IsResourceExhausted(err):
		return apierrors.NewTooManyRequests(err.Error(), 1)
	case errdefs.IsUnavailable(err):
		return apierrors.NewServiceUnavailable(err.Error())
	case errors.Is(err, context.DeadlineExceeded), errdefs.IsDeadlineExceeded(err):
		return apierrors.NewTimeoutError(err.Error(), 1)
	}
	return apierrors.NewInternalError(err)
}

// statusOf is the body of a StatusError, typed for the wire.
func statusOf(se *apierrors.StatusError) *metav1.Status {
	st := se.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	return &st
}
