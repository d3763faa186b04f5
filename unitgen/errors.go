package unitgen

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// InvalidError names the offending field of the pod, e.g.
// `spec.containers[0].securityContext.capabilities.add[1]: unsupported capability "FOO"`.
// Field is a Kubernetes field path (k8s.io/apimachinery field.Path syntax) so a
// user can find the line in their manifest.
type InvalidError struct {
	Field  string
	Detail string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Detail }

// InvalidParameter puts every *InvalidError in errdefs' invalid-argument
// class (errdefs.IsInvalidArgument): it is what the pod (or its image) asks
// for, as opposed to a caller mistake in Paths or Options. api/server maps
// the class to 422 Unprocessable Entity like the apiserver's field errors.
func (e *InvalidError) InvalidParameter() {}

func invalid(p *field.Path, format string, args ...any) error {
	return &InvalidError{Field: p.String(), Detail: fmt.Sprintf(format, args...)}
}

// FieldPath is the offending field (for the API's Invalid status).
func (e *InvalidError) FieldPath() string { return e.Field }

// Reason is what is wrong with it.
func (e *InvalidError) Reason() string { return e.Detail }
