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
		// metrics: the interval, the listener's protection, remote write.
		{"metrics: {interval: 500ms}\n", "metrics.interval: 500ms is shorter than 1s"},
		{"metrics: {listen: 127.0.0.1:9465}\n", ""}, // loopback: may go bare
		{"metrics: {listen: 9465}\n", `metrics.listen: "9465" is not host:port`},
		{"metrics: {listen: 0.0.0.0:9465, bearerTokenFile: /etc/t}\n", `metrics.listen: "0.0.0.0:9465" is not a loopback address: it needs TLS`},
		{"metrics: {listen: 0.0.0.0:9465, tlsCertFile: /c, tlsKeyFile: /k}\n", "needs TLS and a bearer token or client certificates"},
		{"metrics: {listen: 0.0.0.0:9465, tlsCertFile: /c, tlsKeyFile: /k, bearerTokenFile: /t}\n", ""},
		{"metrics: {listen: 127.0.0.1:9465, tlsCertFile: /c}\n", "tlsCertFile and tlsKeyFile go together"},
		{"metrics: {listen: 127.0.0.1:9465, clientCAFile: /ca}\n", "client certificates need TLS"},
		{"metrics: {bearerTokenFile: token}\n", `metrics.bearerTokenFile: "token" is not an absolute path`},
		{"metrics: {remoteWrite: {endpoints: [{url: http://prom:9090/api/v1/write, queueMaxBytes: 1048576, labels: {site: a}}]}}\n", ""},
		{"metrics: {remoteWrite: {endpoints: [{url: prom:9090}]}}\n", `metrics.remoteWrite.endpoints[0].url: "prom:9090" is not an http or https URL`},
		{"metrics: {remoteWrite: {endpoints: [{url: http://a/w}, {url: http://a/w}]}}\n", `endpoints[1].url: "http://a/w" is listed twice`},
		{"metrics: {remoteWrite: {endpoints: [{url: http://a/w, queueMaxBytes: -1}]}}\n", "queueMaxBytes: -1 is negative"},
		{"metrics: {remoteWrite: {endpoints: [{url: http://a/w, certFile: /c}]}}\n", "certFile and keyFile go together"},
		{"metrics: {remoteWrite: {externalLabels: {__name__: x}}}\n", `"__name__" is not a label name`},
		{"metrics: {remoteWrite: {endpoints: [{url: http://a/w, labels: {a-b: x}}]}}\n", `endpoints[0].labels: "a-b" is not a label name`},
		{"metrics: {remoteWrite: {queueDir: q}}\n", `metrics.remoteWrite.queueDir: "q" is not an absolute path`},
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
