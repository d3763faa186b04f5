package seccomp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/agent/runtime/seccomp/filter"
)

func TestPrepareBundle(t *testing.T) {
	dir := t.TempDir()
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

	out, err := PrepareBundle(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Linux.Seccomp != prof || len(spec.Annotations) != 1 {
		t.Errorf("the input spec was changed: %+v", spec.Annotations)
	}
	if out.Linux.Seccomp != nil || out.Annotations["io.kubernetes.pod.name"] != "web" {
		t.Errorf("prepared spec: seccomp %v, annotations %v", out.Linux.Seccomp, out.Annotations)
	}
	b, err := os.ReadFile(filepath.Join(dir, filter.File))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if out.Annotations[filter.Annotation] != hex.EncodeToString(sum[:]) {
		t.Errorf("annotation %q is not the file's sha256", out.Annotations[filter.Annotation])
	}
	// The file is the compiled profile.
	want, err := Compile(prof)
	if err != nil {
		t.Fatal(err)
	}
	var got filter.Filter
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if len(got.Insns) != len(want.Filter) || got.Flags != want.Flags {
		t.Fatalf("file holds %d instructions, flags %#x; compiled %d, %#x", len(got.Insns), got.Flags, len(want.Filter), want.Flags)
	}
	for i := range got.Insns {
		if got.Insns[i] != want.Filter[i] {
			t.Fatalf("instruction %d differs", i)
		}
	}

	// A spec without a profile (Unconfined) removes the old filter.
	plain := &specs.Spec{Linux: &specs.Linux{}}
	if out, err := PrepareBundle(dir, plain); err != nil || out != plain {
		t.Fatalf("no profile: %v, %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(dir, filter.File)); !os.IsNotExist(err) {
		t.Errorf("old %s left for an unconfined container: %v", filter.File, err)
	}

	// A profile that does not compile is bad input.
	bad := &specs.Spec{Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_NOPE"}}}
	if _, err := PrepareBundle(dir, bad); !errors.Is(err, ErrProfile) {
		t.Errorf("bad profile: err = %v, want ErrProfile", err)
	}
}
