// Package deptest holds the import arrows of architecture.md: nothing imports
// cmd/ or test/ (but test/ itself), the leaves (cgroup, image, verify,
// unitgen) never import agent, and only unitgen/systemd speaks D-Bus.
package deptest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/berth-dev/berth/"

type pkg struct {
	ImportPath string
	Imports    []string
}

func packages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json", mod+"...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var ps []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(ps) < 10 {
		t.Fatalf("go list found only %d packages", len(ps))
	}
	return ps
}

func under(p, dir string) bool {
	return p == mod+dir || strings.HasPrefix(p, mod+dir+"/")
}

func TestImportArrows(t *testing.T) {
	for _, p := range packages(t) {
		for _, imp := range p.Imports {
			switch {
			case under(imp, "cmd"):
				t.Errorf("%s imports %s: nothing imports cmd/", p.ImportPath, imp)
			case under(imp, "test") && !under(p.ImportPath, "test") && !under(p.ImportPath, "cmd/berth-node") && !testHelper(p.ImportPath):
				t.Errorf("%s imports %s: only test/, test helper packages (…test, like httptest) and berth-node may import test/", p.ImportPath, imp)
			case under(imp, "agent"):
				for _, leaf := range []string{"cgroup", "image", "verify", "unitgen"} {
					if under(p.ImportPath, leaf) {
						t.Errorf("leaf %s imports %s", p.ImportPath, imp)
					}
				}
			case strings.HasPrefix(imp, "github.com/godbus/") || strings.HasPrefix(imp, "github.com/coreos/go-systemd/"):
				if !under(p.ImportPath, "unitgen/systemd") {
					t.Errorf("%s imports %s: only unitgen/systemd speaks D-Bus", p.ImportPath, imp)
				}
			}
		}
	}
}

// testHelper: a package like image/registrytest exists for tests only.
func testHelper(p string) bool {
	return strings.HasSuffix(p[strings.LastIndex(p, "/")+1:], "test")
}
