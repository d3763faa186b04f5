package unitgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/cgroup"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.unit.golden")

// Fixtures (Quadlet style): testdata/<name>.yaml is a pod manifest whose
// leading `## ` comment lines configure the test and state what to expect.
//
// Setup (all optional; defaults below are a busybox-like image on a cgroup v1
// host with BestEffort limits):
//
//	## container NAME               container to generate (default: the first)
//	## image {JSON}                 merged over the default ocispec.ImageConfig
//	## image-ref REF                image reference for the Description
//	## passwd LINE / ## group LINE  appended to the image's /etc/passwd, /etc/group
//	## no-passwd                    the image has neither file
//	## limits {JSON}                cgroup.Limits (replaces the default)
//	## options {JSON}               merged over the default Options
//	## paths {JSON}                 merged over the default Paths
//	## golden                       compare Render() with testdata/<name>.unit.golden
//
// Expectations:
//
//	## assert-name UNIT / ## assert-slice SLICE
//	## assert-property Name=Value   a rendered property line (see Render)
//	## assert-property-absent Name
//	## assert-spec path=JSON        value at a spec path, e.g. process.args, mounts[0].options
//	## assert-spec-contains path=JSON   the array at path has this element
//	## assert-spec-lacks path=JSON      the array at path lacks this element
//	## assert-spec-absent path      missing or null
//	## assert-error TEXT            Generate fails with an invalid-argument error containing TEXT
type fixture struct {
	name    string
	pod     *corev1.Pod
	in      Input
	golden  bool
	asserts []directive
}

type directive struct {
	line       int
	verb, args string
}

const (
	testPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	testGroup = `root:x:0:
daemon:x:1:
wheel:x:10:root
www-data:x:33:
staff:x:50:
nogroup:x:65534:
`
	testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func defaultImage() ImageInfo {
	return ImageInfo{
		Ref:    "docker.io/library/busybox:1.36",
		Digest: testDigest,
		Config: ocispec.ImageConfig{
			Cmd: []string{"sh"},
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		},
		Passwd: []byte(testPasswd),
		Group:  []byte(testGroup),
	}
}

func defaultPaths(ns, pod, ctr string) Paths {
	c := "/var/lib/berth/containers/" + ns + "_" + pod + "_" + ctr
	p := "/run/berth/pods/" + ns + "_" + pod
	return Paths{
		Init:       "/usr/libexec/berth/berth-init",
		Bundle:     c,
		Lowers:     []string{"/var/lib/berth/layers/sha256-bbbb", "/var/lib/berth/layers/sha256-aaaa"},
		Upper:      c + "/upper",
		Work:       c + "/work",
		Rootfs:     c + "/rootfs",
		PIDFile:    c + "/pid",
		NetNS:      p + "/ns/net",
		IPCNS:      p + "/ns/ipc",
		UTSNS:      p + "/ns/uts",
		Hosts:      p + "/hosts",
		Hostname:   p + "/hostname",
		ResolvConf: p + "/resolv.conf",
	}
}

func defaultLimits() cgroup.Limits {
	return cgroup.Limits{QOS: corev1.PodQOSBestEffort, CPUShares: 2, CPUWeight: 1, OOMScoreAdjust: 1000}
}

func loadFixture(t *testing.T, file string) *fixture {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{name: strings.TrimSuffix(filepath.Base(file), ".yaml"), pod: &corev1.Pod{}}
	if err := yaml.UnmarshalStrict(raw, f.pod); err != nil {
		t.Fatalf("%s: pod YAML: %v", file, err)
	}
	img := defaultImage()
	var (
		ctr                     string
		limits                  = defaultLimits()
		opts                    Options
		pathsJSON               []string
		passwdExtra, groupExtra []string
		noPasswd                bool
	)
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if !strings.HasPrefix(line, "## ") {
			continue
		}
		verb, args, _ := strings.Cut(strings.TrimPrefix(line, "## "), " ")
		args = strings.TrimSpace(args)
		fail := func(err error) { t.Fatalf("%s:%d: %s: %v", file, n, verb, err) }
		switch verb {
		case "container":
			ctr = args
		case "image":
			if err := json.Unmarshal([]byte(args), &img.Config); err != nil {
				fail(err)
			}
		case "image-ref":
			img.Ref = args
		case "passwd":
			passwdExtra = append(passwdExtra, args)
		case "group":
			groupExtra = append(groupExtra, args)
		case "no-passwd":
			noPasswd = true
		case "limits":
			limits = cgroup.Limits{}
			if err := json.Unmarshal([]byte(args), &limits); err != nil {
				fail(err)
			}
		case "options":
			if err := json.Unmarshal([]byte(args), &opts); err != nil {
				fail(err)
			}
		case "paths":
			pathsJSON = append(pathsJSON, args)
		case "golden":
			f.golden = true
		case "assert-name", "assert-slice", "assert-property", "assert-property-absent", "assert-spec",
			"assert-spec-contains", "assert-spec-lacks", "assert-spec-absent", "assert-error":
			f.asserts = append(f.asserts, directive{n, verb, args})
		default:
			t.Fatalf("%s:%d: unknown directive %q", file, n, verb)
		}
	}
	if noPasswd {
		img.Passwd, img.Group = nil, nil
	} else {
		img.Passwd = append(img.Passwd, []byte(strings.Join(append(passwdExtra, ""), "\n"))...)
		img.Group = append(img.Group, []byte(strings.Join(append(groupExtra, ""), "\n"))...)
	}
	if ctr == "" && len(f.pod.Spec.Containers) > 0 {
		ctr = f.pod.Spec.Containers[0].Name
	}
	paths := defaultPaths(f.pod.Namespace, f.pod.Name, ctr)
	for _, js := range pathsJSON {
		if err := json.Unmarshal([]byte(js), &paths); err != nil {
			t.Fatalf("%s: paths: %v", file, err)
		}
	}
	f.in = Input{Pod: f.pod, Container: ctr, Image: img, Paths: paths, Limits: limits, Options: opts}
	if len(f.asserts) == 0 && !f.golden {
		t.Fatalf("%s: fixture asserts nothing", file)
	}
	return f
}

func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		f := loadFixture(t, file)
		t.Run(f.name, func(t *testing.T) { f.run(t) })
	}
}

func (f *fixture) run(t *testing.T) {
	u, fails := f.check()
	for _, msg := range fails {
		t.Error(msg)
	}
	if u == nil || !f.golden {
		return
	}
	gf := filepath.Join("testdata", f.name+".unit.golden")
	got := u.Render()
	if *update {
		if err := os.WriteFile(gf, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(gf)
	if err != nil {
		t.Fatalf("%v (run `go test ./unitgen -update`)", err)
	}
	if got != string(want) {
		t.Errorf("Render() differs from %s (run `go test ./unitgen -update` and review the diff):\n%s", gf, lineDiff(string(want), got))
	}
}

// check runs Generate and returns the generated unit (nil on error) and one
// message per failed expectation.
func (f *fixture) check() (*Unit, []string) {
	var fails []string
	failf := func(line int, format string, args ...any) {
		fails = append(fails, fmt.Sprintf("line %d: ", line)+fmt.Sprintf(format, args...))
	}
	u, genErr := Generate(f.in)
	wantErr := false
	for _, a := range f.asserts {
		if a.verb != "assert-error" {
			continue
		}
		wantErr = true
		switch {
		case genErr == nil:
			failf(a.line, "want error containing %q, Generate succeeded", a.args)
		case !errdefs.IsInvalidArgument(genErr):
			failf(a.line, "error %q is not in the invalid-argument class", genErr)
		case !strings.Contains(genErr.Error(), a.args):
			failf(a.line, "error %q does not contain %q", genErr, a.args)
		}
	}
	if wantErr {
		if len(f.asserts) > 1 || f.golden {
			fails = append(fails, "an assert-error fixture can assert nothing else")
		}
		return nil, fails
	}
	if genErr != nil {
		return nil, append(fails, fmt.Sprintf("Generate: %v", genErr))
	}
	fails = append(fails, dbusTypeErrors(u)...)

	var lines []string
	for _, p := range u.Properties {
		lines = append(lines, propertyLines(p)...)
	}
	var spec any
	js, err := json.Marshal(u.Spec)
	if err == nil {
		err = json.Unmarshal(js, &spec)
	}
	if err != nil {
		return u, append(fails, fmt.Sprintf("spec JSON: %v", err))
	}

	for _, a := range f.asserts {
		switch a.verb {
		case "assert-name":
			if u.Name != a.args {
				failf(a.line, "name %q, want %q", u.Name, a.args)
			}
		case "assert-slice":
			if u.Slice != a.args {
				failf(a.line, "slice %q, want %q", u.Slice, a.args)
			}
		case "assert-property":
			if !contains(lines, a.args) {
				name, _, _ := strings.Cut(a.args, "=")
				failf(a.line, "want %s, have %q", a.args, withPrefix(lines, name+"="))
			}
		case "assert-property-absent":
			if have := withPrefix(lines, a.args+"="); len(have) > 0 {
				failf(a.line, "want no %s, have %q", a.args, have)
			}
		case "assert-spec", "assert-spec-contains", "assert-spec-lacks":
			p, want, ok := strings.Cut(a.args, "=")
			var wantV any
			if ok {
				err = json.Unmarshal([]byte(want), &wantV)
			}
			if !ok || err != nil {
				failf(a.line, "want path=JSON: %v", err)
				continue
			}
			got, err := specPath(spec, p)
			if err != nil {
				failf(a.line, "%v", err)
				continue
			}
			if a.verb == "assert-spec" {
				if !reflect.DeepEqual(got, wantV) {
					failf(a.line, "%s = %s, want %s", p, compact(got), compact(wantV))
				}
				continue
			}
			arr, isArr := got.([]any)
			if !isArr && got != nil {
				failf(a.line, "%s is %s, not an array", p, compact(got))
				continue
			}
			has := false
			for _, e := range arr {
				has = has || reflect.DeepEqual(e, wantV)
			}
			if has != (a.verb == "assert-spec-contains") {
				failf(a.line, "%s = %s; %s %s", p, compact(got), a.verb, want)
			}
		case "assert-spec-absent":
			if got, err := specPath(spec, a.args); err == nil && got != nil {
				failf(a.line, "%s = %s, want absent", a.args, compact(got))
			}
		}
	}
	return u, fails
}

// dbusTypes is the D-Bus signature systemd 252 expects for each property we
// may emit (org.freedesktop.systemd1(5), and what systemd 252 accepted in
// unitgen/systemd's node tests), as the Go type
// unitgen/systemd turns into a variant. A new property must be added here.
var dbusTypes = map[string]any{
	"Description": "", "Documentation": []string{}, "Slice": "", "Type": "", "PIDFile": "", "KillMode": "", "Restart": "",
	"CollectMode": "", "SyslogIdentifier": "", "DevicePolicy": "",
	"ExecStartPre": []ExecCommand{}, "ExecStart": []ExecCommand{}, "ExecStopPost": []ExecCommand{},
	"ExecStartPost": []ExecCommand{}, "ExecStop": []ExecCommand{}, "RestartPreventExitStatus": ExitStatusSet{},
	"KillSignal": int32(0), "OOMScoreAdjust": int32(0),
	"SendSIGKILL": false, "Delegate": false, "CPUAccounting": false, "MemoryAccounting": false, "TasksAccounting": false,
	"TimeoutStopUSec": uint64(0), "TimeoutStartUSec": uint64(0), "RestartUSec": uint64(0), "StartLimitIntervalUSec": uint64(0),
	"CPUShares": uint64(0), "CPUWeight": uint64(0), "CPUQuotaPerSecUSec": uint64(0), "CPUQuotaPeriodUSec": uint64(0),
	"MemoryMax": uint64(0), "MemoryMin": uint64(0), "TasksMax": uint64(0),
	"DeviceAllow": []DeviceAllow{}, "LogExtraFields": JournalFields{},
	"After": []string{}, "BindsTo": []string{}, "NoNewPrivileges": false, "CapabilityBoundingSet": uint64(0), // shareProcessNamespace (pause.go)
}

func dbusTypeErrors(u *Unit) []string {
	var errs []string
	seen := map[string]bool{}
	for _, p := range u.Properties {
		want, ok := dbusTypes[p.Name]
		if !ok {
			errs = append(errs, fmt.Sprintf("property %s has no known D-Bus type", p.Name))
		} else if reflect.TypeOf(p.Value) != reflect.TypeOf(want) {
			errs = append(errs, fmt.Sprintf("property %s is %T, systemd expects %T", p.Name, p.Value, want))
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Sprintf("property %s set twice", p.Name))
		}
		seen[p.Name] = true
		if p.Why == "" || strings.Contains(p.Why, "\n") {
			errs = append(errs, fmt.Sprintf("property %s: Why must be one non-empty line, is %q", p.Name, p.Why))
		}
		if cmds, ok := p.Value.([]ExecCommand); ok {
			for _, c := range cmds {
				if len(c.Args) == 0 || c.Args[0] != c.Path {
					errs = append(errs, fmt.Sprintf("%s: argv[0] of %q should be the path %q", p.Name, c.Args, c.Path))
				}
			}
		}
	}
	return errs
}

var pathSeg = regexp.MustCompile(`^([A-Za-z0-9_]+)((?:\[\d+\])*)$`)

// specPath walks a decoded JSON value along "a.b[0].c".
func specPath(v any, p string) (any, error) {
	for _, seg := range strings.Split(p, ".") {
		m := pathSeg.FindStringSubmatch(seg)
		if m == nil {
			return nil, fmt.Errorf("bad path segment %q in %s", seg, p)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: %q is not an object", p, seg)
		}
		v = obj[m[1]]
		for _, idx := range regexp.MustCompile(`\d+`).FindAllString(m[2], -1) {
			i, _ := strconv.Atoi(idx)
			arr, ok := v.([]any)
			if !ok || i >= len(arr) {
				return nil, fmt.Errorf("%s: no element %d at %q", p, i, seg)
			}
			v = arr[i]
		}
	}
	return v, nil
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

func withPrefix(lines []string, p string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, p) {
			out = append(out, l)
		}
	}
	return out
}

// lineDiff shows the first differing lines, enough to spot a golden change.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
			if shown++; shown == 10 {
				b.WriteString("  …\n")
				break
			}
		}
	}
	return b.String()
}
