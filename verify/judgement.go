package verify

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"
)

// ErrRejected is every refusal by the trust policy, a value of errdefs'
// permission-denied class. Callers test it with errors.Is (or
// errdefs.IsPermissionDenied) and reach the judgement with errors.As on
// *RejectedError; its message says which image, scope and rule, and why.
var ErrRejected = errdefs.ErrPermissionDenied.WithMessage("rejected by trust policy")

// Judgement is the policy's verdict on one image digest. The image store
// records it next to the image, with the rule that decided, and shows it
// long after the policy that made it may have changed, so it carries
// everything needed to explain the decision without the policy at hand.
type Judgement struct {
	Allowed bool `json:"allowed"`
	// Image is the repository in the policy's fully expanded form
	// (docker.io/library/nginx, 127.0.0.1:5000/demo/app).
	Image string `json:"image"`
	// Digest is the manifest digest judged ("sha256:…").
	Digest string `json:"digest"`
	// Scope is the policy scope that applied: "default" for the global
	// default, "docker:default" for transports.docker[""], otherwise the
	// scope key exactly as written in the policy file.
	Scope string `json:"scope"`
	// Rule names the requirement that decided, as <type>[<index in the
	// scope's list>], e.g. "sigstoreSigned[0]". When an image is accepted,
	// every requirement of the scope had to accept it (containers-policy.json(5)
	// semantics), so Rule lists them all, joined by "+".
	Rule string `json:"rule"`
	// Reason says what was verified, or exactly what was missing or wrong.
	Reason string `json:"reason"`
	// PolicyDigest identifies the policy that judged (see Policy.Digest).
	PolicyDigest string `json:"policyDigest"`
	// Time is when the judgement was made.
	Time time.Time `json:"time"`
}

// Error returns nil if the image is allowed, otherwise an error of class
// ErrRejected whose message says exactly why, e.g.
//
//	image 127.0.0.1:5000/demo/app@sha256:ab… rejected by policy scope "127.0.0.1:5000/demo" rule sigstoreSigned[0]: no signature verifies with key /etc/berth/keys/team.pub: invalid signature when validating ASN.1 encoded signature
func (j Judgement) Error() error {
	if j.Allowed {
		return nil
	}
	return &RejectedError{Judgement: j}
}

// RejectedError is the error form of a negative Judgement.
type RejectedError struct {
	Judgement Judgement
}

func (e *RejectedError) Error() string {
	j := e.Judgement
	return fmt.Sprintf("image %s@%s rejected by policy scope %q rule %s: %s", j.Image, j.Digest, j.Scope, j.Rule, j.Reason)
}

// Is makes errors.Is(err, ErrRejected) true.
func (e *RejectedError) Is(target error) bool { return target == ErrRejected }

// Forbidden puts a rejection in errdefs' permission-denied class
// (errdefs.IsPermissionDenied): the image is not allowed to run, which
// api/server answers as 403 Forbidden.
func (e *RejectedError) Forbidden() {}
