// Package deptest holds the import arrows of docs/architecture.md, so that
// the layout is kept by a test rather than by review:
//   - nothing imports cmd/; only test/, test helper packages (named …test,
//     like httptest) and berth-node import test/;
//   - each top-level folder imports only the berth folders its row allows
//     (the leaves cgroup, image, verify and unitgen never import agent);
//   - only unitgen/systemd speaks D-Bus; nothing but cmd/ imports api/server;
//   - berth-init, a separate binary and a security boundary, links exactly
//     the packages listed in berthInitLinks, and the bundle contract links
//     nothing of berth.
//
// It is Tailscale's tstest/deptest idea: `go list -deps` is the truth.
package deptest

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

const mod = "github.com/berth-dev/berth"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
	Error      *struct{ Err string }
	DepsErrors []*struct{ Err string }
}

// list runs `go list -e -json` and fails on any error it reports, so that a
// package that does not build cannot pass the arrows by having no imports.
func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-e", "-json"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var ps []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Error != nil {
			t.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		for _, e := range p.DepsErrors {
			t.Errorf("go list: %s: dependency: %s", p.ImportPath, e.Err)
		}
		ps = append(ps, p)
	}
	return ps
}

func under(p, dir string) bool {
	return p == mod+"/"+dir || strings.HasPrefix(p, mod+"/"+dir+"/")
}

func berth(p string) bool { return p == mod || strings.HasPrefix(p, mod+"/") }

// topOf is the top-level folder of a berth package ("agent", "unitgen", ...).
func topOf(p string) string {
	rest := strings.TrimPrefix(p, mod+"/")
	top, _, _ := strings.Cut(rest, "/")
	return top
}

// mayImport is the table of docs/architecture.md: which berth folders each
// top-level folder may import (besides itself). cmd/ and test/ may import
// anything below them.
var mayImport = map[string][]string{
	"cgroup":    {},
	"image":     {},
	"verify":    {},
	"unitgen":   {"cgroup"},
	"agent":     {"unitgen", "cgroup", "image", "verify"},
	"api":       {"agent", "unitgen", "cgroup", "image", "verify"},
	"packaging": {},
}

func TestImportArrows(t *testing.T) {
	ps := list(t, mod+"/...")
	if len(ps) < 20 {
		t.Fatalf("go list found only %d packages", len(ps))
	}
	tops := map[string]bool{}
	for _, p := range ps {
		top := topOf(p.ImportPath)
		tops[top] = true
		allowed, ruled := mayImport[top]
		if !ruled && top != "cmd" && top != "test" {
			t.Errorf("%s: top-level folder %q has no row in the import table (docs/architecture.md)", p.ImportPath, top)
		}
		for _, imp := range p.Imports {
			switch {
			case under(imp, "cmd"):
				t.Errorf("%s imports %s: nothing imports cmd/", p.ImportPath, imp)
			case under(imp, "test"):
				if !under(p.ImportPath, "test") && !under(p.ImportPath, "cmd/berth-node") && !testHelper(p.ImportPath) {
					t.Errorf("%s imports %s: only test/, test helper packages (…test, like httptest) and berth-node may import test/", p.ImportPath, imp)
				}
			case under(imp, "api/server") && !under(p.ImportPath, "cmd") && !under(p.ImportPath, "api/server") && !under(p.ImportPath, "test"):
				t.Errorf("%s imports %s: only cmd/ wires api/server", p.ImportPath, imp)
			case berth(imp) && ruled && topOf(imp) != top && !slices.Contains(allowed, topOf(imp)):
				t.Errorf("%s imports %s: %s/ may import only %v (docs/architecture.md)", p.ImportPath, imp, top, allowed)
			case imp == "github.com/coreos/go-systemd/v22/journal":
				// The journal's native protocol (a datagram socket), not
				// D-Bus: berth-hook's own messages (berthinit.HookLog).
				if p.ImportPath != mod+"/cmd/berth-hook" {
					t.Errorf("%s imports %s: only berth-hook writes to the journal natively", p.ImportPath, imp)
				}
			case strings.HasPrefix(imp, "github.com/godbus/") || strings.HasPrefix(imp, "github.com/coreos/go-systemd/"):
				if !under(p.ImportPath, "unitgen/systemd") {
					t.Errorf("%s imports %s: only unitgen/systemd speaks D-Bus", p.ImportPath, imp)
				}
			}
		}
	}
	for _, top := range []string{"agent", "cgroup", "cmd", "image", "test", "unitgen", "verify"} {
		if !tops[top] {
			t.Errorf("no package under %s/: the test reads the wrong tree", top)
		}
	}
}

// berthInitLinks is everything berth-init may link besides the standard
// library: it runs before the container's root exists, at every start, and
// is the boundary between berthd's decisions and the workload. Adding a
// package here is a decision to review (size, exec time, attack surface).
var berthInitLinks = []string{
	mod + "/agent/berthinit",      // stage-1, stage-2, poststop
	mod + "/agent/bundle",         // the contract with berthd
	mod + "/agent/seccomp/filter", // loads the filter berthd compiled
	mod + "/cgroup/own",           // the unit's own cgroup: OOM baseline
	mod + "/cmd/berth-init",
	mod + "/unitgen/caps", // capability names
	"github.com/opencontainers/runtime-spec/specs-go",
	"golang.org/x/sys/unix",
}

func TestBerthInitLinks(t *testing.T) {
	ps := list(t, "-deps", mod+"/cmd/berth-init")
	var got []string
	for _, p := range ps {
		if !p.Standard {
			got = append(got, p.ImportPath)
		}
	}
	sort.Strings(got)
	want := slices.Clone(berthInitLinks)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("berth-init links\n  %s\nwant exactly\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// Nor does berth-init link the standard library's network and TLS stack:
// their initialisation made every exec of it milliseconds slower, and it
// talks to nobody (the httpGet lifecycle hook is berth-hook's).
func TestBerthInitLinksNoNetwork(t *testing.T) {
	for _, p := range list(t, "-deps", mod+"/cmd/berth-init") {
		switch p.ImportPath {
		case "net", "net/http", "crypto/tls", "crypto/x509":
			t.Errorf("berth-init links %s", p.ImportPath)
		}
	}
}

// berth-hook is berth-init's hook code with the httpGet handler linked in.
func TestBerthHookLinks(t *testing.T) {
	allowed := append(slices.Clone(berthInitLinks), mod+"/cmd/berth-hook", mod+"/agent/berthinit/httphook",
		"github.com/coreos/go-systemd/v22/journal") // its messages, out of the container's log (berthinit.HookLog)
	for _, p := range list(t, "-deps", mod+"/cmd/berth-hook") {
		if !p.Standard && !slices.Contains(allowed, p.ImportPath) && p.ImportPath != mod+"/cmd/berth-init" {
			t.Errorf("berth-hook links %s", p.ImportPath)
		}
	}
}

// The bundle contract is shared by both binaries and must stay small.
func TestBundleLinksNothingOfBerth(t *testing.T) {
	for _, p := range list(t, "-deps", mod+"/agent/bundle") {
		if !p.Standard && p.ImportPath != mod+"/agent/bundle" && p.ImportPath != "golang.org/x/sys/unix" {
			t.Errorf("agent/bundle links %s", p.ImportPath)
		}
	}
}

// testHelper: a package like image/registrytest exists for tests only.
func testHelper(p string) bool {
	return strings.HasSuffix(p[strings.LastIndex(p, "/")+1:], "test")
}
