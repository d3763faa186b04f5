package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.yaml.in/yaml/v3"
)

const example = "../../packaging/berthd.yaml"

// The shipped example is the documentation of every key: it must name each
// one, with exactly the built-in default.
func TestExampleIsTheDefaults(t *testing.T) {
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	if err := Parse(data, &c); err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("packaging/berthd.yaml\n  %+v\nbuilt-in defaults\n  %+v", c, want)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, key := range keys(reflect.TypeOf(Config{}), "") {
		if !has(doc, strings.Split(key, ".")) {
			t.Errorf("packaging/berthd.yaml does not document %s", key)
		}
	}
}

func keys(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		k := prefix + f.Tag.Get("yaml")
		if f.Type.Kind() == reflect.Struct {
			out = append(out, keys(f.Type, k+".")...)
		} else {
			out = append(out, k)
		}
	}
	return out
}

func has(doc map[string]any, path []string) bool {
	v, ok := doc[path[0]]
	if !ok || len(path) == 1 {
		return ok
	}
	m, ok := v.(map[string]any)
	return ok && has(m, path[1:])
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		doc, err string
	}{
		{"logLevel: debug\nhttps: {enabled: true}\n", ""},
		{"", ""},
		{"stateDir: /srv/berth\nshutdownTimeout: 1m\n", ""},
		{"stateDirectory: /x\n", "field stateDirectory not found in type config.Config"},
		{"https: {enable: true}\n", "field enable not found in type config.HTTPS"},
		{"logLevel: info\n---\nlogLevel: debug\n", "one YAML document expected"},
		{"stateDir: var/lib/berth\n", `stateDir: "var/lib/berth" is not an absolute path`},
		{"logLevel: loud\n", `logLevel: "loud" is not one of`},
		{"socket: {mode: rw}\n", `socket.mode: "rw" is not an octal file mode`},
		{"https: {enabled: true, address: 0.0.0.0:6443}\n", `https.address: "0.0.0.0" is not a loopback address`},
		{"https: {enabled: false, address: 0.0.0.0:6443}\n", ""}, // off: not checked
		{"shutdownTimeout: 0s\n", "shutdownTimeout: 0s is not positive"},
		{"pidsLimit: many\n", "cannot unmarshal"},
	} {
		c := Default()
		err := Parse([]byte(tc.doc), &c)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.doc, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.doc, err, tc.err)
		case tc.err != "" && !errors.Is(err, errdefs.ErrInvalidArgument):
			t.Errorf("%q: %v is not ErrInvalidArgument", tc.doc, err)
		}
	}
	c := Default()
	if err := Parse([]byte("stateDir: /srv/berth\nshutdownTimeout: 1m\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/srv/berth" || c.ShutdownTimeout != time.Minute || c.Socket.Path != "/run/berth/berth.sock" {
		t.Errorf("keys over defaults: %+v", c)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.yaml")
	if c, err := Load(missing, false); err != nil || !reflect.DeepEqual(c, Default()) {
		t.Errorf("absent default file: %+v, %v", c, err)
	}
	if _, err := Load(missing, true); err == nil {
		t.Error("absent file named on the command line accepted")
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("nodename: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad, false); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "nodename") {
		t.Errorf("unknown key: %v, want the file and the key named", err)
	}
}
