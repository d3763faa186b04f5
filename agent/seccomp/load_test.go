package seccomp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/agent/seccomp/filter"
)

func TestPrepare(t *testing.T) {
	spec := &specs.Spec{
		Annotations: map[string]string{"io.kubernetes.pod.name": "web"},
		Process:     &specs.Process{Capabilities: &specs.LinuxCapabilities{}},
		Linux:       &specs.Linux{},
	}
	prof, err := mobyseccomp.GetDefaultProfile(spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.Linux.Seccomp = prof

	out, b, err := Prepare(spec)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Linux.Seccomp != prof || len(spec.Annotations) != 1 {
		t.Errorf("the input spec was changed: %+v", spec.Annotations)
	}
	if out.Linux.Seccomp != nil || out.Annotations["io.kubernetes.pod.name"] != "web" {
		t.Errorf("prepared spec: seccomp %v, annotations %v", out.Linux.Seccomp, out.Annotations)
	}
	sum := sha256.Sum256(b)
	if out.Annotations[filter.Annotation] != hex.EncodeToString(sum[:]) {
		t.Errorf("annotation %q is not the filter's sha256", out.Annotations[filter.Annotation])
	}
	// The filter is the compiled profile.
	want, err := Compile(prof)
	if err != nil {
		t.Fatal(err)
	}
	var got filter.Filter
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if len(got.Insns) != len(want.Filter) || got.Flags != want.Flags {
		t.Fatalf("filter holds %d instructions, flags %#x; compiled %d, %#x", len(got.Insns), got.Flags, len(want.Filter), want.Flags)
	}
	for i := range got.Insns {
		if got.Insns[i] != want.Filter[i] {
			t.Fatalf("instruction %d differs", i)
		}
	}

	// A spec without a profile (Unconfined) gets no filter.
	plain := &specs.Spec{Linux: &specs.Linux{}}
	if out, b, err := Prepare(plain); err != nil || out != plain || b != nil {
		t.Fatalf("no profile: %v, %d bytes, %v", out, len(b), err)
	}

	// A profile that does not compile is bad input.
	bad := &specs.Spec{Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_NOPE"}}}
	if _, _, err := Prepare(bad); !errors.Is(err, ErrProfile) {
		t.Errorf("bad profile: err = %v, want ErrProfile", err)
	}
}
