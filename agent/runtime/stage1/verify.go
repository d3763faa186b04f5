package stage1

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// trustRecord mirrors agent/trust.Record, the fields berth-init needs. It is
// read here without importing agent/trust, whose cosign verifier would make
// berth-init an order of magnitude larger and slower to exec.
type trustRecord struct {
	Allowed bool   `json:"allowed"`
	Message string `json:"message"`
	Depends []struct {
		Path   string `json:"path"`
		SHA256 string `json:"sha256"`
	} `json:"depends"`
}

// errStale means the record cannot answer: a file the judgement depended on
// (policy, key, stored signatures) changed or the record is missing.
var errStale = errors.New("trust record is stale")

// CheckTrust is the unit's ExecStartPre: the trust policy's judgement of
// the container's image, from bundle/trust.json when every file it depended
// on still has the content it had. Otherwise it returns errStale and the
// caller hands over to berth-verify, which judges again from the local store.
func CheckTrust(bundle string) error {
	b, err := os.ReadFile(filepath.Join(bundle, "trust.json"))
	if err != nil {
		return errStale
	}
	var r trustRecord
	if err := json.Unmarshal(b, &r); err != nil || len(r.Depends) == 0 {
		return errStale
	}
	for _, d := range r.Depends {
		if HashFile(d.Path) != d.SHA256 {
			return errStale
		}
	}
	if !r.Allowed {
		return errors.New(r.Message)
	}
	return nil
}

// HashFile is the sha256 of a file's content, or "absent": the fingerprint
// agent/trust records and CheckTrust compares.
func HashFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "absent"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// verifyMain runs CheckTrust and, when the record is stale, execs
// berth-verify (installed next to berth-init) on the bundle.
func verifyMain(bundle string) int {
	err := CheckTrust(bundle)
	switch {
	case err == nil:
		return 0
	case !errors.Is(err, errStale):
		fmt.Fprintf(os.Stderr, "berth-init verify: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth-init verify: %v\n", err)
		return 1
	}
	full := filepath.Join(filepath.Dir(self), "berth-verify")
	err = unix.Exec(full, []string{full, bundle}, os.Environ())
	fmt.Fprintf(os.Stderr, "berth-init verify: exec %s: %v\n", full, err)
	return 1
}
