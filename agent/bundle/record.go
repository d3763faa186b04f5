package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// Absent is the fingerprint of a file that did not exist when it was read.
const Absent = "absent"

// Fingerprint is a file a trust judgement depended on and the sha256 (hex)
// of the content the judgement read, or Absent.
type Fingerprint struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// Sum is the fingerprint of data read from a file; nil data (the file was
// absent) is Absent. The judgement fingerprints the bytes it read, not the
// file read again afterwards: a file replaced in between must make the
// record stale, not vouch for content nobody judged.
func Sum(data []byte) string {
	if data == nil {
		return Absent
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// maxDepend bounds what SumFile reads: a policy, a key or a signature set.
const maxDepend = 8 << 20

// SumFile is the fingerprint of path's current content (Absent if it does
// not exist). Only a regular file of at most maxDepend bytes has one: a
// FIFO or device named by a policy must not hang berth-init, and anything
// else fails (the record is then stale).
func SumFile(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return Absent, nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return "", err
	} else if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxDepend+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxDepend {
		return "", fmt.Errorf("%s: longer than %d bytes", path, maxDepend)
	}
	return Sum(b), nil
}

// Record is the trust judgement of a container's image as berth-init checks
// it before every (re)start: when every file in Depends still has the
// fingerprinted content, Allowed and Message answer; otherwise the record is
// stale and berth-verify judges again.
type Record struct {
	Allowed bool          `json:"allowed"`
	Message string        `json:"message"` // the rejection, word for word
	Depends []Fingerprint `json:"depends"`
	// Judgement is the verifier's full judgement (verify.Judgement), kept
	// for operators and status; berth-init does not decode it, so that it
	// need not link the verifier.
	Judgement json.RawMessage `json:"judgement,omitempty"`
}

// ErrStale means a Record cannot answer: it is missing or unreadable, or a
// file it depended on changed.
var ErrStale = errors.New("trust record is stale")

// WriteRecord writes r to the bundle's RecordFile.
func WriteRecord(bundle string, r Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode trust record: %w", err)
	}
	return WriteFileAtomic(filepath.Join(bundle, RecordFile), b, 0o600)
}

// CheckRecord answers from the bundle's RecordFile: nil when it allows the
// image, the rejection when it refuses it, and an error wrapping ErrStale
// when it cannot answer.
func CheckRecord(bundle string) error {
	p := filepath.Join(bundle, RecordFile)
	b, err := readBounded(p, maxRecord)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStale, err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStale, p, err)
	}
	if len(r.Depends) == 0 {
		return fmt.Errorf("%w: %s names no files", ErrStale, p)
	}
	for _, d := range r.Depends {
		sum, err := SumFile(d.Path)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrStale, err)
		}
		if sum != d.SHA256 {
			return fmt.Errorf("%w: %s changed", ErrStale, d.Path)
		}
	}
	if !r.Allowed {
		return errors.New(r.Message)
	}
	return nil
}
