package bundle

import (
	"encoding/json"
	"fmt"
	"path/filepath"
)

// Source says which image a container runs and where it came from, which
// decides how the trust policy judges it (SourceFile).
type Source struct {
	Ref    string `json:"ref"`              // as the pod wrote it
	Repo   string `json:"repo,omitempty"`   // registry images: the normalised repository
	Layout string `json:"layout,omitempty"` // local OCI layouts: the directory (symlinks resolved)
	Digest string `json:"digest"`           // manifest digest the container runs
	Store  string `json:"store"`            // image store root
	Policy string `json:"policy"`           // trust policy file
}

// WriteSource writes src to the bundle's SourceFile.
func WriteSource(bundle string, src Source) error {
	b, err := json.MarshalIndent(src, "", "  ")
	if err != nil {
		return fmt.Errorf("encode image source: %w", err)
	}
	return WriteFileAtomic(filepath.Join(bundle, SourceFile), b, 0o600)
}

// ReadSource reads the bundle's SourceFile.
func ReadSource(bundle string) (Source, error) {
	var s Source
	p := filepath.Join(bundle, SourceFile)
	b, err := readBounded(p, maxRecord)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("parse %s: %w", p, err)
	}
	return s, nil
}
