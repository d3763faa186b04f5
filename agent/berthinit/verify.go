package berthinit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// CheckTrust is the trust policy's judgement of the container's image, from
// the bundle's trust record when every file it depended on still has the
// content it had (bndl.CheckRecord). When the record cannot answer it returns
// an error wrapping bndl.ErrStale and the caller hands over to berth-verify,
// which judges again from the local store.
func CheckTrust(bundle string) error { return bndl.CheckRecord(bundle) }

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
	if !errors.Is(err, bndl.ErrStale) {
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
