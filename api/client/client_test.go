package client

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func newFlagSet(t *testing.T) (*Flags, *pflag.FlagSet) {
	t.Helper()
	kube := genericclioptions.NewConfigFlags(true)
	f := NewFlags(kube)
	fs := pflag.NewFlagSet("berth", pflag.ContinueOnError)
	kube.AddFlags(fs)
	f.AddFlags(fs)
	return f, fs
}

func TestSocketFromFlagEnvDefault(t *testing.T) {
	t.Setenv(SocketEnv, "")
	if f, _ := newFlagSet(t); f.Socket != DefaultSocket {
		t.Errorf("default: %q", f.Socket)
	}
	t.Setenv(SocketEnv, "/env.sock")
	f, fs := newFlagSet(t)
	if f.Socket != "/env.sock" {
		t.Errorf("env: %q", f.Socket)
	}
	if err := fs.Parse([]string{"--socket", "/flag.sock"}); err != nil || f.Socket != "/flag.sock" {
		t.Errorf("flag: %q %v", f.Socket, err)
	}
}

// In socket mode no kubeconfig file counts: not $KUBECONFIG's context, its
// server or its namespace.
func TestSocketModeIgnoresKubeconfigFiles(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "config")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://cluster.example:6443"}}]
users: [{name: u, user: {token: secret}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: team}}]
current-context: x
`), 0o600)
	t.Setenv("KUBECONFIG", kc)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	t.Setenv(SocketEnv, "")

	f, fs := newFlagSet(t)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Resolve(fs, false); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.Kube.ToRESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != Host || cfg.BearerToken != "" || cfg.Dial == nil || cfg.Proxy == nil {
		t.Errorf("socket mode config: host %q token %q dial %v proxy %v", cfg.Host, cfg.BearerToken, cfg.Dial != nil, cfg.Proxy != nil)
	}
	if ns, _, err := f.Kube.ToRawKubeConfigLoader().Namespace(); err != nil || ns != "default" {
		t.Errorf("namespace %q %v, want default", ns, err)
	}
	want := filepath.Join(dir, "cache", "berth", "kube", "_run_berth_berth.sock")
	if *f.Kube.CacheDir != want {
		t.Errorf("cache dir %q, want %q", *f.Kube.CacheDir, want)
	}
	f.Close()

	// -n still applies.
	f, fs = newFlagSet(t)
	fs.Parse([]string{"-n", "web"})
	f.Resolve(fs, false)
	if ns, _, _ := f.Kube.ToRawKubeConfigLoader().Namespace(); ns != "web" {
		t.Errorf("-n web: %q", ns)
	}
}

func TestExplicitKubeconfigIsPlainKubectl(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "config")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://cluster.example:6443"}}]
users: [{name: u, user: {token: secret}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: team}}]
current-context: x
`), 0o600)
	f, fs := newFlagSet(t)
	fs.Parse([]string{"--kubeconfig", kc})
	if err := f.Resolve(fs, false); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.Kube.ToRESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	if f.SocketMode() || cfg.Host != "https://cluster.example:6443" || cfg.BearerToken != "secret" || cfg.Dial != nil {
		t.Errorf("--kubeconfig: host %q token %q", cfg.Host, cfg.BearerToken)
	}
	if ns, _, _ := f.Kube.ToRawKubeConfigLoader().Namespace(); ns != "team" {
		t.Errorf("--kubeconfig namespace %q", ns)
	}

	f, fs = newFlagSet(t)
	fs.Parse([]string{"--server", "https://other:6443"})
	if err := f.Resolve(fs, false); err != nil || f.SocketMode() {
		t.Errorf("--server: socket mode %v, %v", f.SocketMode(), err)
	}

	f, fs = newFlagSet(t)
	fs.Parse([]string{"--socket", "/x.sock", "--kubeconfig", kc})
	if err := f.Resolve(fs, false); !errdefs.IsInvalidArgument(err) {
		t.Errorf("--socket with --kubeconfig: %v", err)
	}

	f, fs = newFlagSet(t)
	fs.Parse(nil)
	if err := f.Resolve(fs, true); !errdefs.IsInvalidArgument(err) {
		t.Errorf("config without --kubeconfig: %v", err)
	}
	f, fs = newFlagSet(t)
	fs.Parse([]string{"--kubeconfig", kc})
	if err := f.Resolve(fs, true); err != nil {
		t.Errorf("config with --kubeconfig: %v", err)
	}
}

func TestCacheDirPerSocket(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/c")
	a, _ := CacheDir("/run/berth/berth.sock")
	b, _ := CacheDir("/run/other/berth.sock")
	if a == b || a != "/c/berth/kube/_run_berth_berth.sock" {
		t.Errorf("cache dirs %q %q", a, b)
	}
}

func TestNoHomeGetsATemporaryCache(t *testing.T) {
	t.Setenv("HOME", "")
	t.Setenv("XDG_CACHE_HOME", "")
	f, fs := newFlagSet(t)
	fs.Parse(nil)
	if err := f.Resolve(fs, false); err != nil {
		t.Fatal(err)
	}
	dir := *f.Kube.CacheDir
	if !filepath.IsAbs(dir) || !strings.HasPrefix(filepath.Base(dir), "berth-cache-") {
		t.Errorf("cache dir without a home: %q", dir)
	}
	f.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temporary cache left behind: %v", err)
	}
}
