package seccomp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/agent/seccomp/filter"
)

// Compiled is p's filter as berth-init loads it (and as it is stored in a
// bundle's seccomp.bpf).
func (p *Program) Compiled() *filter.Filter {
	return &filter.Filter{Insns: p.Filter, Flags: p.Flags}
}

// Load installs p on the calling thread only; see filter.Filter.Load.
func Load(p *Program) error {
	if p == nil {
		return (*filter.Filter)(nil).Load() // reports the empty program
	}
	return p.Compiled().Load()
}

// ErrProfile marks a profile that does not compile (bad input, not I/O).
var ErrProfile = errors.New("seccomp profile")

// Prepare compiles spec's seccomp profile for a bundle. It returns the spec
// to write as the bundle's config.json, a copy whose linux.seccomp is
// replaced by the filter's sha256 in the filter.Annotation annotation, and
// the filter to write as the bundle's seccomp filter file (bundle.SeccompFile). A spec without a profile
// is returned as is, with no filter. A profile that does not compile is an
// ErrProfile, before anything starts.
func Prepare(spec *specs.Spec) (*specs.Spec, []byte, error) {
	if spec.Linux == nil || spec.Linux.Seccomp == nil {
		return spec, nil, nil
	}
	p, err := Compile(spec.Linux.Seccomp)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrProfile, err)
	}
	b, err := p.Compiled().MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(b)
	out, linux := *spec, *spec.Linux
	linux.Seccomp = nil
	out.Linux = &linux
	out.Annotations = maps.Clone(spec.Annotations)
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[filter.Annotation] = hex.EncodeToString(sum[:])
	return &out, b, nil
}
