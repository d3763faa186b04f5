package berthinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// PostStop moves the termination message into the exit record, at most
// the kubelet's 4096 bytes, and empties the file for the next run.
func TestPostStopTerminationMessage(t *testing.T) {
	bundle := t.TempDir()
	log := filepath.Join(bundle, bndl.TerminationLogFile)
	if err := os.WriteFile(log, []byte(strings.Repeat("x", 5000)), 0o666); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "3"}
	noKills := func() (uint64, error) { return 0, nil }
	if err := PostStop(bundle, func(k string) string { return env[k] }, noKills, time.Now()); err != nil {
		t.Fatal(err)
	}
	st, err := bndl.ReadExit(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Message) != bndl.MaxTerminationMessage || st.ExitCode != 3 {
		t.Errorf("message of %d bytes, exit %d", len(st.Message), st.ExitCode)
	}
	if fi, err := os.Stat(log); err != nil || fi.Size() != 0 {
		t.Errorf("termination log not emptied: %v %v", fi, err)
	}
	// The next run wrote nothing: no message.
	if err := PostStop(bundle, func(k string) string { return env[k] }, noKills, time.Now()); err != nil {
		t.Fatal(err)
	}
	if st, _ := bndl.ReadExit(bundle); st.Message != "" {
		t.Errorf("a later run kept the message %q", st.Message)
	}
	// A symlink planted in its place is not followed.
	os.Remove(log)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("host secret"), 0o600)
	os.Symlink(secret, log)
	if err := PostStop(bundle, func(k string) string { return env[k] }, noKills, time.Now()); err != nil {
		t.Fatal(err)
	}
	if st, _ := bndl.ReadExit(bundle); st.Message != "" {
		t.Errorf("followed a symlink: %q", st.Message)
	}
}
