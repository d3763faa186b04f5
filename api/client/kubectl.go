package client

import (
	"fmt"
	"os"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
)

// Flags put kubectl's ConfigFlags on berthd's socket.
//
// Which server a command talks to:
//   - by default the socket: --socket, else $BERTH_SOCKET, else
//     DefaultSocket. No kubeconfig file is read ($KUBECONFIG and
//     ~/.kube/config are ignored), so an operator's cluster context can
//     never redirect `berth delete` to a cluster, nor lend it a namespace:
//     the namespace is "default" unless -n says otherwise, and --context,
//     --cluster and --user name nothing.
//   - with --kubeconfig or --server given explicitly: exactly kubectl
//     (that kubeconfig, ~/.kube/cache); --socket with either is an error.
//
// `berth config` edits kubeconfig files, so it needs --kubeconfig: without
// one it would act on files berth otherwise ignores.
type Flags struct {
	// Socket is berthd's socket, when the command talks to it.
	Socket string
	// Kube are kubectl's flags; Flags wraps their WrapConfigFn.
	Kube *genericclioptions.ConfigFlags

	socketMode bool
	proxyOnce  sync.Once
	proxy      *Proxy
	tempCache  string // removed by Close
}

// NewFlags wraps kube's WrapConfigFn so that every rest.Config it makes
// goes to the socket (unless Resolve decides otherwise).
func NewFlags(kube *genericclioptions.ConfigFlags) *Flags {
	f := &Flags{Socket: Socket(), Kube: kube, socketMode: true}
	prev := kube.WrapConfigFn
	kube.WithWrapConfigFn(func(c *rest.Config) *rest.Config {
		if prev != nil {
			c = prev(c)
		}
		if !f.socketMode {
			return c
		}
		return f.Configure(c)
	})
	return f
}

// AddFlags adds --socket.
func (f *Flags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.Socket, "socket", f.Socket, "berthd's API socket (default from $"+SocketEnv+", else "+DefaultSocket+"); not with --kubeconfig or --server")
}

// SocketMode reports whether commands talk to the socket (see Flags).
func (f *Flags) SocketMode() bool { return f.socketMode }

// Resolve decides, once fs (the root's persistent flags) is parsed, where the
// command goes. configCmd is true for `config` and its subcommands.
func (f *Flags) Resolve(fs *pflag.FlagSet, configCmd bool) error {
	if fs.Changed("kubeconfig") || fs.Changed("server") {
		if fs.Changed("socket") {
			return fmt.Errorf("--socket cannot be used with --kubeconfig or --server: %w", errdefs.ErrInvalidArgument)
		}
		f.socketMode = false
		return nil
	}
	if configCmd {
		return fmt.Errorf("berth talks to %s without a kubeconfig; `config` edits kubeconfig files: name one with --kubeconfig: %w", f.Socket, errdefs.ErrInvalidArgument)
	}
	f.socketMode = true
	// An empty kubeconfig: flags like -n still apply, files do not.
	*f.Kube.KubeConfig = os.DevNull
	if !fs.Changed("cache-dir") && f.Kube.CacheDir != nil {
		dir, err := CacheDir(f.Socket)
		if err != nil {
			// No home and no $XDG_CACHE_HOME (a unit, env -i): a cache
			// for this command only, rather than kubectl's, which would be
			// a relative .kube/cache here, or a shared one anyone could
			// fill. Discovery over the socket costs a few milliseconds.
			if dir, err = os.MkdirTemp("", "berth-cache-"); err != nil {
				return fmt.Errorf("berth cache directory: %w", err)
			}
			f.tempCache = dir
		}
		*f.Kube.CacheDir = dir
	}
	return nil
}

// Configure points c at the socket: Host, a Dial to the socket, no TLS and
// no credentials (berthd decides by the peer's credentials), and the
// streaming proxy for upgrade requests (which also keeps an environment
// HTTP_PROXY away from them). What kubectl set besides (timeouts, rate
// limits, user agent, its header-adding transport wrapper, impersonation)
// stays.
func (f *Flags) Configure(c *rest.Config) *rest.Config {
	f.proxyOnce.Do(func() { f.proxy = NewProxy(f.Socket) })
	c.Host = Host
	c.TLSClientConfig = rest.TLSClientConfig{}
	c.BearerToken, c.BearerTokenFile, c.Username, c.Password = "", "", "", ""
	c.AuthProvider, c.ExecProvider = nil, nil
	c.Dial = DialContext(f.Socket)
	c.Proxy = f.proxy.ProxyFunc
	return c
}

// Close stops the streaming proxy if a command started it and removes a
// temporary cache.
func (f *Flags) Close() error {
	if f.tempCache != "" {
		os.RemoveAll(f.tempCache)
	}
	if f.proxy == nil {
		return nil
	}
	return f.proxy.Close()
}
