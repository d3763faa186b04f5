package berthinit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/agent/seccomp/filter"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// LoadSeccomp returns the container's precompiled seccomp filter, or nil when
// the spec asks for none. berth-init does not compile profiles itself: a
// spec with linux.seccomp was not prepared by the agent and is refused
// rather than run unconfined.
func LoadSeccomp(bundle string, spec *specs.Spec) (*filter.Filter, error) {
	want, ok := spec.Annotations[filter.Annotation]
	if spec.Linux.Seccomp != nil {
		return nil, fmt.Errorf("spec: linux.seccomp must be compiled into %s (annotation %s) before the start; berth-init loads only precompiled filters (a bundle written by an older berthd: run the pod again)", bndl.SeccompFile, filter.Annotation)
	}
	if !ok {
		return nil, nil
	}
	p := filepath.Join(bundle, bndl.SeccompFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, fmt.Errorf("seccomp filter %s has sha256 %s, the spec's %s says %s", p, got, filter.Annotation, want)
	}
	f := &filter.Filter{}
	if err := f.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return f, nil
}
