package image

import (
	"errors"
	"fmt"
)

// Errors of this package carry the classes of github.com/containerd/errdefs
// (errdefs.ErrNotFound for an image, manifest, tag or file that is not
// there); the typed causes below say more and are reached with errors.As.

// Rule names one safety rule of Unpack; every refusal carries the rule it
// broke so that an operator can tell a hostile layer from a limit to raise.
type Rule string

// The rules Unpack enforces.
const (
	RuleAbsolutePath       Rule = "absolute-path"          // entry name starts with "/"
	RuleEscapesRoot        Rule = "escapes-root"           // ".." climbs above the layer root
	RuleSymlinkParent      Rule = "parent-through-symlink" // a parent component is a symlink
	RuleParentNotDir       Rule = "parent-not-directory"   // a parent component is a file
	RuleHardlinkTarget     Rule = "hardlink-target"        // absolute, escaping, via symlink or not earlier in this layer
	RuleDevice             Rule = "device-node"            // char/block devices are never created from a tar
	RuleUnsupported        Rule = "unsupported-type"       // tar type flag berth does not unpack
	RuleBadName            Rule = "bad-name"               // empty name, "." as a non-directory, ".wh." of nothing
	RuleBadOwner           Rule = "bad-owner"              // uid/gid outside 0..2^32-2
	RuleReplaceDir         Rule = "replace-directory"      // a non-directory replacing a non-empty directory
	RuleReservedXattr      Rule = "reserved-xattr"         // overlayfs' own xattrs may only come from whiteout conversion
	RuleMaxBytes           Rule = "max-bytes"              // Limits.MaxBytes
	RuleMaxCompressedBytes Rule = "max-compressed-bytes"   // Limits.MaxCompressedBytes
	RuleMaxEntries         Rule = "max-entries"            // Limits.MaxEntries
	RuleMaxPathLen         Rule = "max-path-length"        // Limits.MaxPathLen
)

// RefusedError reports a tar entry that Unpack refused. Nothing is written
// for the refused entry, and nothing is ever written outside the target.
type RefusedError struct {
	Entry  string // the entry name as written in the archive ("" if the stream as a whole)
	Rule   Rule
	Detail string
	// Layer is the layer blob's digest, set by Store.Import (the message
	// names it through the wrapping error).
	Layer string
}

func (e *RefusedError) Error() string {
	if e.Entry == "" {
		return fmt.Sprintf("layer refused by rule %s: %s", e.Rule, e.Detail)
	}
	return fmt.Sprintf("tar entry %q refused by rule %s: %s", e.Entry, e.Rule, e.Detail)
}

// InvalidParameter puts every refusal in errdefs' invalid-argument class:
// the layer is bad input, not a failure of berth.
func (e *RefusedError) InvalidParameter() {}

// isRefused reports whether err is (or wraps) a refusal by an unpack rule.
func isRefused(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}

func refuse(entry string, rule Rule, format string, args ...any) error {
	return &RefusedError{Entry: entry, Rule: rule, Detail: fmt.Sprintf(format, args...)}
}

// DigestError reports content whose hash differs from the digest that names it.
type DigestError struct {
	What string // e.g. "layer blob", "layer DiffID", "config", "manifest"
	Want string
	Got  string
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("%s digest mismatch: want %s, got %s", e.What, e.Want, e.Got)
}

// InvalidParameter puts a digest mismatch in errdefs' invalid-argument
// class: the content is not what its name promised.
func (e *DigestError) InvalidParameter() {}
