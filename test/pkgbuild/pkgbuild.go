// Package pkgbuild builds berth's .deb and .rpm for tests the way `make
// package` does (hack/package.sh with nfpm), from this tree's binaries.
package pkgbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/test/nodeberthd"
	"github.com/berth-dev/berth/test/testenv"
)

// Packages are one build's files.
type Packages struct {
	Version string
	Deb     string
	RPM     string
}

// Build builds the binaries into dir/bin (`make build`) and packages them
// into dir with version (empty: git's, hack/version.sh). Packaging the same
// binaries again with another version is Package.
func Build(dir, version string) (*Packages, error) {
	bin := filepath.Join(dir, "bin")
	if err := nodeberthd.Build(bin); err != nil {
		return nil, err
	}
	return Package(bin, dir, version)
}

// BuildRev builds the binaries of an earlier revision of this repository
// (git archive of rev into dir/src, `make build` there) and packages them
// with this tree's packaging as version: an earlier build to upgrade from,
// with the berthd that build had.
func BuildRev(dir, rev, version string) (*Packages, error) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("git archive %s: %w\n%s", rev, err, out)
	}
	bin := filepath.Join(dir, "bin")
	build := exec.Command("make", "-s", "-C", src, "build", "BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("make build of %s: %w\n%s", rev, err, out)
	}
	return Package(bin, dir, version)
}

// Package runs hack/package.sh on the binaries in bin into out.
func Package(bin, out, version string) (*Packages, error) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(root, "hack/package.sh"), out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "BERTH_BIN="+bin, "VERSION="+version)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("hack/package.sh: %w\n%s", err, b)
	}
	p := &Packages{}
	for _, l := range strings.Fields(string(b)) {
		switch {
		case strings.HasSuffix(l, ".deb"):
			p.Deb = l
		case strings.HasSuffix(l, ".rpm"):
			p.RPM = l
		}
	}
	if p.Deb == "" || p.RPM == "" {
		return nil, fmt.Errorf("hack/package.sh made no .deb and .rpm: %s", b)
	}
	v, err := exec.Command("dpkg-deb", "-f", p.Deb, "Version").Output()
	if err != nil {
		return nil, fmt.Errorf("dpkg-deb -f %s: %w", p.Deb, err)
	}
	p.Version = strings.TrimSuffix(strings.TrimSpace(string(v)), "-1")
	return p, nil
}
