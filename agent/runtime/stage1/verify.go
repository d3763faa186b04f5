package stage1

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// CheckTrust is the trust policy's judgement of the container's image, from
// bundle/trust.json when every file it depended on still has the content it
// had. Otherwise it returns errStale and the caller hands over to
// berth-verify, which judges again from the local store.
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

// verifierPath is berth-verify, installed next to berth-init.
func verifierPath() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(self), "berth-verify"), nil
}

// verifyMain is `berth-init verify`: the judgement alone, exit 0 when the
// image may start.
func verifyMain(bundle string) int {
	if err := verifyImage(bundle); err != nil {
		fmt.Fprintf(os.Stderr, "berth-init verify: %v\n", err)
		return 1
	}
	return 0
}

// verifyImage is start's judgement of the image: CheckTrust from the record,
// or, when it is stale, a full offline judgement by berth-verify (whose
// reasons go to the journal on its stderr).
func verifyImage(bundle string) error {
	err := CheckTrust(bundle)
	if !errors.Is(err, errStale) {
		return err
	}
	full, err := verifierPath()
	if err != nil {
		return err
	}
	cmd := exec.Command(full, bundle)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return fmt.Errorf("the trust policy refuses the image (berth-verify %s)", exit.ProcessState)
	}
	return fmt.Errorf("the trust record is stale and the image cannot be judged again: %s: %w", full, err)
}
