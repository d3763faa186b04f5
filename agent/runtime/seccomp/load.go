package seccomp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/agent/runtime/seccomp/filter"
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

// PrepareBundle compiles spec's seccomp profile into bundle/seccomp.bpf
// (filter.File) and returns the spec to write as the bundle's config.json:
// a copy whose linux.seccomp is replaced by the file's sha256 in the
// filter.Annotation annotation. A spec without a profile is returned as is
// and any old filter file removed. A profile that does not compile is an
// error here, before anything starts.
func PrepareBundle(bundle string, spec *specs.Spec) (*specs.Spec, error) {
	path := filepath.Join(bundle, filter.File)
	if spec.Linux == nil || spec.Linux.Seccomp == nil {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		return spec, nil
	}
	p, err := Compile(spec.Linux.Seccomp)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProfile, err)
	}
	b, err := p.Compiled().MarshalBinary()
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(bundle, "."+filter.File+".*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, err
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
	return &out, nil
}
