package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/verify"
)

// Every error class below api/ becomes the Status the apiserver would send.
func TestToStatus(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	gk := schema.GroupKind{Kind: "Pod"}
	for _, tc := range []struct {
		name   string
		err    error
		code   int32
		reason metav1.StatusReason
		msg    string
	}{
		{"not found", fmt.Errorf("pod x: %w", errdefs.ErrNotFound), 404, metav1.StatusReasonNotFound, `pods "web" not found`},
		{"already exists", fmt.Errorf("pod x: %w", errdefs.ErrAlreadyExists), 409, metav1.StatusReasonAlreadyExists, `pods "web" already exists`},
		{"stale update", fmt.Errorf("pods %q: %w", "web", store.ErrModified), 409, metav1.StatusReasonConflict,
			`Operation cannot be fulfilled on pods "web": the object has been modified; please apply your changes to the latest version and try again`},
		{"field errors", fmt.Errorf("run: %w", pods.FieldErrors{field.Invalid(field.NewPath("metadata", "name"), "Web", "bad")}), 422, metav1.StatusReasonInvalid,
			`Pod "web" is invalid: metadata.name: Invalid value: "Web": bad`},
		{"unitgen field", fmt.Errorf("plan: %w", &unitgen.InvalidError{Field: "spec.hostNetwork", Detail: "not supported by berth yet"}), 422, metav1.StatusReasonInvalid,
			`Pod "web" is invalid: spec.hostNetwork: Invalid value: not supported by berth yet`},
		{"plain invalid", fmt.Errorf("%w: bad", errdefs.ErrInvalidArgument), 400, metav1.StatusReasonBadRequest, "bad"},
		{"policy rejection", fmt.Errorf("container: %w", &verify.RejectedError{Judgement: verify.Judgement{Image: "r/app", Digest: "sha256:1", Scope: "default", Rule: "reject[0]", Reason: "no"}}), 403, metav1.StatusReasonForbidden,
			`pods "web" is forbidden: container: image r/app@sha256:1 rejected by policy scope "default" rule reject[0]: no`},
		{"too old", &store.TooOldError{Requested: 1, Oldest: 5}, 410, metav1.StatusReasonExpired, "too old resource version: 1 (5)"},
		{"slow watcher", store.ErrWatchTooSlow, 429, metav1.StatusReasonTooManyRequests, "did not keep up"},
		{"unavailable", fmt.Errorf("%w: systemd", errdefs.ErrUnavailable), 503, metav1.StatusReasonServiceUnavailable, "systemd"},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), 504, metav1.StatusReasonTimeout, "deadline"},
		{"data loss", fmt.Errorf("%w: corrupt", errdefs.ErrDataLoss), 500, metav1.StatusReasonInternalError, "corrupt"},
		{"unclassified", errors.New("boom"), 500, metav1.StatusReasonInternalError, "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := statusOf(toStatus(tc.err, gr, gk, "web"))
			if st.Code != tc.code || st.Reason != tc.reason || !contains(st.Message, tc.msg) || st.Kind != "Status" || st.APIVersion != "v1" {
				t.Errorf("= %d %s %q, want %d %s containing %q", st.Code, st.Reason, st.Message, tc.code, tc.reason, tc.msg)
			}
		})
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
