package bundle

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Reasons, as Kubernetes reports a terminated container
// (ContainerStateTerminated.Reason; containerd's CRI plugin sets the same).
const (
	ReasonCompleted = "Completed"
	ReasonError     = "Error"
	ReasonOOMKilled = "OOMKilled"
)

// ExitStatus is how a container's workload ended, written by
// `berth-init poststop` to ExitFile.
type ExitStatus struct {
	Result     string    `json:"result"`   // systemd's $SERVICE_RESULT
	ExitCode   int       `json:"exitCode"` // status, or 128+signal when killed
	Signal     int       `json:"signal"`   // killing signal, 0 if it exited
	OOMKilled  bool      `json:"oomKilled"`
	Reason     string    `json:"reason"` // Completed, Error or OOMKilled
	FinishedAt time.Time `json:"finishedAt"`
	// Message is what the workload wrote to its terminationMessagePath
	// (TerminationLogFile), at most MaxTerminationMessage bytes.
	Message string `json:"message,omitempty"`
}

// MaxTerminationMessage is the kubelet's bound on a termination message
// (kuberuntime maxMsgSize).
const MaxTerminationMessage = 4096

// ReadExit reads the bundle's ExitFile. A bundle whose workload has not
// ended yet has none: the error then wraps fs.ErrNotExist.
func ReadExit(bundle string) (*ExitStatus, error) {
	p := filepath.Join(bundle, ExitFile)
	b, err := readBounded(p, maxRecord)
	if err != nil {
		return nil, fmt.Errorf("read exit record: %w", err)
	}
	var st ExitStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", p, err)
	}
	return &st, nil
}

// WriteExit writes st to the bundle's ExitFile.
func WriteExit(bundle string, st ExitStatus) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode exit record: %w", err)
	}
	return WriteFileAtomic(filepath.Join(bundle, ExitFile), append(b, '\n'), 0o644)
}

// maxRecord bounds what is read of a bundle's JSON records: they are a few
// hundred bytes, and a bundle is not trusted to be well-formed.
const maxRecord = 1 << 20

// readBounded reads at most max bytes of path and fails on a longer file.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: longer than %d bytes", path, max)
	}
	return b, nil
}
