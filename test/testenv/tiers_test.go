package testenv

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// modeProbes are the calls by which a test depends on the cgroup mode: it
// skips in one tier (CgroupTier, wherever it is called) or checks other
// files in each (the mode tests, in _test.go files; production code asking
// the mode is not a test's dependency). A package making them has a half
// that only the cgroup v2 tier runs.
const module = "github.com/berth-dev/berth"

var modeProbes = []struct {
	pkg, name string
	testsOnly bool
}{
	{module + "/test/testenv", "CgroupTier", false},
	{module + "/cgroup/own", "Unified", true},
	{module + "/cgroup", "IsV2", true},
}

// Every package whose tests depend on the cgroup mode runs in both tiers of
// make test: the v1 tier runs ./..., the v2 tier the Makefile's V2_PKGS.
// A package missing from V2_PKGS would have its v2 half skipped everywhere,
// with every run green.
func TestCgroupTiersRunEveryModeDependentPackage(t *testing.T) {
	root := moduleRoot(t)
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	uses, err := modeDependentPackages(root)
	if err != nil {
		t.Fatal(err)
	}
	for p, at := range uses {
		t.Logf("%s: %s", p, strings.Join(at, ", "))
	}
	if len(uses["./cgroup"]) == 0 {
		t.Fatalf("found no mode probe in ./cgroup's tests (found %v): the scan is broken", uses)
	}
	for _, p := range tierProblems(string(mk), uses, func(pkg string) bool {
		st, err := os.Stat(filepath.Join(root, pkg))
		return err == nil && st.IsDir()
	}) {
		t.Error(p)
	}
}

// The check itself, on Makefiles that lack what it looks for.
func TestTierProblems(t *testing.T) {
	uses := map[string][]string{"./cgroup": {"cgroup/stats_test.go:66"}, "./agent/x": {"agent/x/x_test.go:9"}}
	exists := func(string) bool { return true }
	v1 := "test-v1:\n\tBERTH_TEST_ALL=1 $(GO) test -p 1 -count=1 ./...\n"
	for _, tc := range []struct {
		name, makefile string
		want           []string // substrings, one problem each
	}{
		{"both tiers", v1 + "V2_PKGS := ./cgroup ./agent/x\n", nil},
		{"continued line", v1 + "V2_PKGS := ./cgroup \\\n\t./agent/x\n", nil},
		{"missing from V2_PKGS", v1 + "V2_PKGS := ./cgroup\n", []string{"./agent/x"}},
		{"no V2_PKGS", v1, []string{"no V2_PKGS"}},
		{"v1 tier not ./...", "test-v1:\n\t$(GO) test ./cgroup\nV2_PKGS := ./cgroup ./agent/x\n", []string{"./..."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tierProblems(tc.makefile, uses, exists)
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d about %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %q does not name %q", got[i], w)
				}
			}
		})
	}
	if got := tierProblems(v1+"V2_PKGS := ./cgroup ./agent/x ./gone\n", uses, func(p string) bool { return p != "./gone" }); len(got) != 1 || !strings.Contains(got[0], "./gone") {
		t.Errorf("a V2_PKGS entry with no directory: problems %q", got)
	}
}

// tierProblems says what keeps a mode-dependent package (uses: package →
// where it probes the mode) from running in both tiers.
func tierProblems(makefile string, uses map[string][]string, exists func(pkg string) bool) []string {
	var problems []string
	if !v1RunsAll(makefile) {
		problems = append(problems, "the Makefile's test-v1 recipe does not run `go test ./...`: the v1 tier must run every package")
	}
	v2, ok := makeVar(makefile, "V2_PKGS")
	if !ok {
		return append(problems, "no V2_PKGS in the Makefile")
	}
	in := map[string]bool{}
	for _, p := range v2 {
		in[p] = true
		if !exists(p) {
			problems = append(problems, fmt.Sprintf("V2_PKGS names %s, which is not a directory", p))
		}
	}
	var pkgs []string
	for p := range uses {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for _, p := range pkgs {
		if !in[p] {
			problems = append(problems, fmt.Sprintf("%s depends on the cgroup mode in its tests (%s) but is not in the Makefile's V2_PKGS: its cgroup v2 half never runs",
				p, strings.Join(uses[p], ", ")))
		}
	}
	return problems
}

// makeVar returns the words of a `NAME := …` or `NAME = …` line, with
// backslash continuations.
func makeVar(makefile, name string) ([]string, bool) {
	lines := strings.Split(makefile, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), name)
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		if r, ok := strings.CutPrefix(rest, ":="); ok {
			rest = r
		} else if r, ok := strings.CutPrefix(rest, "="); ok {
			rest = r
		} else {
			continue
		}
		for strings.HasSuffix(strings.TrimSpace(rest), "\\") && i+1 < len(lines) {
			i++
			rest = strings.TrimSuffix(strings.TrimSpace(rest), "\\") + " " + lines[i]
		}
		return strings.Fields(rest), true
	}
	return nil, false
}

// v1RunsAll tells whether the test-v1 recipe runs go test on ./... .
func v1RunsAll(makefile string) bool {
	in := false
	for _, l := range strings.Split(makefile, "\n") {
		switch {
		case strings.HasPrefix(l, "test-v1:"):
			in = true
		case in && strings.HasPrefix(l, "\t"):
			if strings.Contains(l, " test ") && strings.HasSuffix(strings.TrimSpace(l), "./...") {
				return true
			}
		case in && strings.TrimSpace(l) != "":
			in = false
		}
	}
	return false
}

// modeDependentPackages parses every Go file of the module (go/parser,
// imports resolved per file) and returns the packages, as ./dir, that call
// one of modeProbes, with file:line of each call. testenv itself, which
// defines CgroupTier, is left out.
func modeDependentPackages(root string) (map[string][]string, error) {
	uses := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		local := map[string]string{} // local import name → probed package
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			name := p[strings.LastIndex(p, "/")+1:]
			if imp.Name != nil {
				name = imp.Name.Name
			}
			local[name] = p
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := "./" + filepath.ToSlash(rel)
		ast.Inspect(f, func(n ast.Node) bool {
			// Inside the probe's own package (an internal test), unqualified.
			if call, ok := n.(*ast.CallExpr); ok {
				if id, ok := call.Fun.(*ast.Ident); ok {
					for _, pr := range modeProbes {
						if "./"+strings.TrimPrefix(pr.pkg, module+"/") == pkg && id.Name == pr.name && strings.HasSuffix(path, "_test.go") {
							pos := fset.Position(id.Pos())
							r, _ := filepath.Rel(root, pos.Filename)
							uses[pkg] = append(uses[pkg], fmt.Sprintf("%s:%d %s", filepath.ToSlash(r), pos.Line, pr.name))
						}
					}
				}
			}
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			x, ok := sel.X.(*ast.Ident)
			if !ok {
				return true
			}
			for _, pr := range modeProbes {
				if local[x.Name] == pr.pkg && sel.Sel.Name == pr.name && (!pr.testsOnly || strings.HasSuffix(path, "_test.go")) {
					pos := fset.Position(sel.Pos())
					r, _ := filepath.Rel(root, pos.Filename)
					uses[pkg] = append(uses[pkg], fmt.Sprintf("%s:%d %s", filepath.ToSlash(r), pos.Line, x.Name+"."+pr.name))
				}
			}
			return true
		})
		return nil
	})
	delete(uses, "./test/testenv")
	return uses, err
}

// moduleRoot is the directory of go.mod above the test's directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
