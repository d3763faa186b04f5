package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/admission"
	"github.com/berth-dev/berth/agent/config"
	"github.com/berth-dev/berth/agent/controllers/deployment"
	"github.com/berth-dev/berth/agent/controllers/endpoints"
	"github.com/berth-dev/berth/agent/controllers/gc"
	"github.com/berth-dev/berth/agent/controllers/replicaset"
	"github.com/berth-dev/berth/agent/dns"
	"github.com/berth-dev/berth/agent/events"
	"github.com/berth-dev/berth/agent/exporter"
	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/agent/logs"
	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/agent/node"
	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/probe"
	"github.com/berth-dev/berth/agent/proxy"
	"github.com/berth-dev/berth/agent/reconcile"
	"github.com/berth-dev/berth/agent/remote"
	"github.com/berth-dev/berth/agent/storage"
	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/agent/streams"
	"github.com/berth-dev/berth/agent/usage"
	"github.com/berth-dev/berth/agent/worker"
	"github.com/berth-dev/berth/api/authz"
	"github.com/berth-dev/berth/api/instrument"
	"github.com/berth-dev/berth/api/pki"
	"github.com/berth-dev/berth/api/server"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
)

type serveFlags struct {
	configPath string
	socket     string
	group      string
	mode       string
	nodeName   string
	https      bool
	httpsAddr  string
	shutdown   time.Duration
}

// serveCmd is the daemon: what packaging/berthd.service runs.
func serveCmd(g *globals) *cobra.Command {
	f := &serveFlags{}
	c := &cobra.Command{
		Use:   "serve",
		Short: "run the node agent: the Kubernetes API on the socket (systemd Type=notify service)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, g, f)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), g, cfg)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.configPath, "config", config.DefaultPath, "configuration file (absent default path: built-in defaults)")
	fl.StringVar(&f.socket, "socket", "", "API socket (berthd.yaml socket.path)")
	fl.StringVar(&f.group, "socket-group", "", "group owning the socket, whose members may write (socket.group)")
	fl.StringVar(&f.mode, "socket-mode", "", "socket file mode, octal (socket.mode)")
	fl.StringVar(&f.nodeName, "node-name", "", "this node's name (nodeName)")
	fl.BoolVar(&f.https, "https", false, "serve the loopback HTTPS listener (https.enabled)")
	fl.StringVar(&f.httpsAddr, "https-address", "", "loopback HTTPS address (https.address)")
	fl.DurationVar(&f.shutdown, "shutdown-timeout", 0, "bound on the graceful shutdown (shutdownTimeout)")
	return c
}

// loadConfig is berthd.yaml with the flags given on the command line on
// top: a flag overrides its key only when it was set.
func loadConfig(cmd *cobra.Command, g *globals, f *serveFlags) (config.Config, error) {
	cfg, err := config.Load(f.configPath, cmd.Flags().Changed("config"))
	if err != nil {
		return cfg, err
	}
	set := func(name string, apply func()) {
		if cmd.Flags().Changed(name) {
			apply()
		}
	}
	set("state-dir", func() { cfg.StateDir = g.stateDir })
	set("run-dir", func() { cfg.RunDir = g.runDir })
	set("init", func() { cfg.Init = g.initPath })
	set("pids-limit", func() { cfg.PidsLimit = g.pidsLimit })
	set("allow-privileged", func() { cfg.AllowPrivileged = g.allowPrivileged })
	set("log-level", func() { cfg.LogLevel = g.logLevel })
	set("policy", func() { cfg.Policy = g.policy })
	set("registries", func() { cfg.Registries = g.registries })
	set("socket", func() { cfg.Socket.Path = f.socket })
	set("socket-group", func() { cfg.Socket.Group = f.group })
	set("socket-mode", func() { cfg.Socket.Mode = f.mode })
	set("node-name", func() { cfg.NodeName = f.nodeName })
	set("https", func() { cfg.HTTPS.Enabled = f.https })
	set("https-address", func() { cfg.HTTPS.Address = f.httpsAddr })
	set("shutdown-timeout", func() { cfg.ShutdownTimeout = f.shutdown })
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("configuration (flags over %s): %w", f.configPath, err)
	}
	// The one-shot code paths (startAgents) read the globals.
	g.stateDir, g.runDir, g.initPath, g.pidsLimit = cfg.StateDir, cfg.RunDir, cfg.Init, cfg.PidsLimit
	g.allowPrivileged, g.logLevel, g.policy, g.registries = cfg.AllowPrivileged, cfg.LogLevel, cfg.Policy, cfg.Registries
	g.network, g.volumes = &cfg.Network, &cfg.Volumes
	return cfg, nil
}

func serve(ctx context.Context, g *globals, cfg config.Config) error {
	log := newLogger(cfg.LogLevel)
	g.log = log
	// Memory: berthd's heap is mostly long-lived state (the pods, their
	// units, the store's watch history), so the GC may run at 50% growth
	// instead of Go's 100%: about a third less RSS with 500 pods for a GC
	// that runs twice as often (a few % of a core under load). GOGC in the
	// unit's environment overrides it.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	statePath := filepath.Join(cfg.StateDir, "state.db")
	_, statErr := os.Stat(statePath)
	fresh := errors.Is(statErr, fs.ErrNotExist)
	st, err := store.Open(statePath, store.Options{})
	if err != nil {
		return fmt.Errorf("open state: %w", err)
	}
	defer st.Close()
	var agents sync.WaitGroup
	// exec, attach and port-forward, for the API and for exec probes.
	strm := streams.New(streams.Config{Init: g.initBinary(), StateDir: cfg.StateDir, RunDir: cfg.RunDir, Units: streams.DialSystemd(), Log: log.Named("streams")})
	// Admission (LimitRanger, ResourceQuota) for every create, and the
	// quota controller keeping quotas' status and namespaces' slices.
	// Usage: one collection cycle of the pods' cgroups every interval,
	// read by metrics.k8s.io and /metrics alike.
	sampler := usage.New(usage.Config{Store: st, Interval: cfg.Metrics.Interval, Log: log.Named("usage")})
	own := exporter.NewOwn(sampler)
	adm := admission.New(st, admission.Options{Log: log, Observer: own})
	svcRange, err := cfg.Network.ServiceRange()
	if err != nil {
		return err
	}
	portBase, portSize, err := cfg.Network.NodePorts()
	if err != nil {
		return err
	}
	dnsAddr, err := cfg.Network.ClusterDNSAddr()
	if err != nil {
		return err
	}
	var reserved []netip.Addr
	if dnsAddr.IsValid() {
		reserved = append(reserved, dnsAddr)
	}
	exp := exporter.New(sampler, st)
	reg := prometheus.NewRegistry()
	reg.MustRegister(own, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metricsHandler := exporter.Handler(reg, exp)
	api, err := server.New(st, server.Options{Log: log.Named("api"), NodeName: cfg.NodeName, Logs: logs.New(nil), Streams: strm, Admission: adm,
		ServiceCIDR: svcRange, NodePortBase: portBase, NodePortSize: portSize, ReservedServiceIPs: reserved, Metrics: sampler})
	if err != nil {
		return err
	}
	adm.SetResources(api.ResourceNames())

	var ca *pki.CA
	if cfg.HTTPS.Enabled {
		if ca, err = pki.LoadOrCreate(filepath.Join(cfg.StateDir, "pki")); err != nil {
			return err
		}
	}
	// berth image and berth plan: the image store is opened here, once,
	// and shared with the pod worker (g.open); plans need no systemd.
	imgs, imgStore, err := g.openImages()
	if err != nil {
		return err
	}
	defer imgStore.Close()
	info, err := node.Info(cfg.PidsLimit)
	if err != nil {
		return err
	}
	planner := pods.New(g.podsConfig(g.initBinary(), info, log.Named("plan")), nil, imgStore)

	mux := http.NewServeMux()
	mux.Handle(authz.KubeconfigPath, pki.KubeconfigHandler(ca, cfg.HTTPS.Address))
	mux.Handle("/berth/v1/", api.Berth(server.BerthOptions{Images: images.Service{Images: imgs, Runtime: planner}}))
	mux.Handle("/metrics", metricsHandler)
	mux.Handle("/", api)
	handler := instrument.Handler(authz.New(mux, authz.Options{Group: cfg.Socket.Group, Log: log.Named("authz")}), own)

	// Requests' base context: cancelled when shutdown begins, so that
	// watches (which never go idle) end and Shutdown can finish.
	reqCtx, stopRequests := context.WithCancel(context.Background())
	defer stopRequests()
	base := func(net.Listener) context.Context { return reqCtx }
	errLog := log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})

	sockLn, err := listenSocket(cfg.Socket, log)
	if err != nil {
		return err
	}
	servers := []*http.Server{{
		Handler: handler, ConnContext: authz.ConnContext, BaseContext: base,
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog,
	}}
	listeners := []net.Listener{sockLn}
	if ca != nil {
		host, _, _ := net.SplitHostPort(cfg.HTTPS.Address)
		tlsCfg, err := ca.ServerTLS(filepath.Join(cfg.StateDir, "pki"), host)
		if err != nil {
			sockLn.Close()
			os.Remove(cfg.Socket.Path)
			return err
		}
		ln, err := net.Listen("tcp", cfg.HTTPS.Address)
		if err != nil {
			sockLn.Close()
			os.Remove(cfg.Socket.Path)
			return fmt.Errorf("https listener: %w", err)
		}
		servers = append(servers, &http.Server{
			Handler: handler, TLSConfig: tlsCfg, BaseContext: base,
			ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog,
		})
		listeners = append(listeners, ln)
	}

	// Remote write: the same series, pushed.
	var rw *remote.Writer
	if eps := cfg.Metrics.RemoteWrite.Endpoints; len(eps) > 0 {
		if rw, err = remoteWriter(cfg, exporter.Gatherer(reg, exp), log); err != nil {
			for _, l := range listeners {
				l.Close()
			}
			os.Remove(cfg.Socket.Path)
			return err
		}
		reg.MustRegister(rw)
	}
	if m := cfg.Metrics; m.Listen != "" {
		h, err := exporter.Listener(metricsHandler, m.BearerTokenFile)
		var tlsCfg *tls.Config
		if err == nil && m.TLSCertFile != "" {
			tlsCfg, err = exporter.TLSConfig(m.TLSCertFile, m.TLSKeyFile, m.ClientCAFile)
		}
		var ln net.Listener
		if err == nil {
			if ln, err = net.Listen("tcp", m.Listen); err != nil {
				err = fmt.Errorf("metrics listener: %w", err)
			}
		}
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			os.Remove(cfg.Socket.Path)
			return err
		}
		servers = append(servers, &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog})
		listeners = append(listeners, ln)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	agents.Add(1)
	go func() {
		defer agents.Done()
		_ = sampler.Run(ctx)
	}()
	if rw != nil {
		agents.Add(1)
		go func() {
			defer agents.Done()
			_ = rw.Run(ctx)
		}()
	}
	serveErr := make(chan error, len(servers))
	for i, srv := range servers {
		go func() {
			var err error
			if srv.TLSConfig != nil {
				err = srv.ServeTLS(listeners[i], "", "")
			} else {
				err = srv.Serve(listeners[i])
			}
			if !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}

	agentErr := make(chan error, 1)
	if err := startAgents(ctx, agentDeps{Config: cfg, Store: st, Log: log, Open: func(ctx context.Context, rec pods.Recorder, hostIP string) (*env, error) {
		g.recorder, g.store, g.hostIP = rec, st, hostIP
		return g.open(ctx)
	}, Failed: agentErr, FreshStore: fresh, Running: &agents, Exec: streams.Prober{S: strm}, Admission: adm, API: api, Events: own, Observer: own, Systemd: own.SetSystemd}); err != nil {
		stopRequests()
		shutdown(servers, cfg.ShutdownTimeout, log)
		os.Remove(cfg.Socket.Path)
		return fmt.Errorf("start controllers: %w", err)
	}
	agents.Add(1)
	go func() {
		defer agents.Done()
		if err := adm.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("quota controller", "error", err)
		}
	}()
	// The namespace controller's deleter: empties and removes namespaces
	// marked Terminating (resuming any a killed berthd left).
	agents.Add(1)
	go func() {
		defer agents.Done()
		api.RunNamespaces(ctx)
	}()

	status := "serving on " + cfg.Socket.Path
	if ca != nil {
		status += ", https://" + cfg.HTTPS.Address
	}
	log.Info("serving", "socket", cfg.Socket.Path, "https", cfg.HTTPS.Enabled, "https_address", cfg.HTTPS.Address)
	// READY only now: every listener accepts, so a unit ordered After=
	// berthd.service finds the socket answering.
	if _, err := systemd.Notify(systemd.NotifyReady, systemd.NotifyStatus(status)); err != nil {
		log.Warn("sd_notify", "error", err)
	}
	interval, err := systemd.WatchdogInterval()
	if err != nil {
		log.Warn("watchdog", "error", err)
	}
	// The watchdog pings only while the state file answers: a berthd
	// wedged on its store gets restarted by systemd.
	go systemd.RunWatchdog(ctx, interval, func() bool {
		_, err := st.ResourceVersion()
		return err == nil
	})

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	var runErr error
	select {
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
	case runErr = <-serveErr:
		log.Error("listener failed", "error", runErr)
	case runErr = <-agentErr:
		// A non-zero exit: systemd restarts berthd (Restart=on-failure).
		log.Error("pod worker stopped", "error", runErr)
	case <-ctx.Done():
	}
	_, _ = systemd.Notify(systemd.NotifyStopping, systemd.NotifyStatus("stopping"))
	cancel() // agents
	stopRequests()
	shutdown(servers, cfg.ShutdownTimeout, log)
	// The store closes (deferred) only after the agents stopped writing to
	// it, bounded: a pull or start under way may outlast the timeout, and
	// bbolt's transactions keep the file whole if the process then exits.
	stopped := make(chan struct{})
	go func() { agents.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(cfg.ShutdownTimeout):
		log.Warn("agents still busy at shutdown; exiting without them", "timeout", cfg.ShutdownTimeout)
	}
	// The socket file goes with the process, so a client sees "no such
	// file" rather than "connection refused" between runs. Containers are
	// deliberately left alone: they are systemd's units, not berthd's
	// children.
	os.Remove(cfg.Socket.Path)
	log.Info("stopped")
	return runErr
}

// shutdown stops every server gracefully, bounded by timeout, then
// closes what is left.
func shutdown(servers []*http.Server, timeout time.Duration, log hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				log.Warn("graceful shutdown incomplete, closing connections", "error", err)
				srv.Close()
			}
		}()
	}
	wg.Wait()
}

// agentDeps is what the controllers get from the daemon's wiring.
type agentDeps struct {
	Config config.Config
	Store  *store.Store
	Log    hclog.Logger
	// Open connects to systemd and builds the pods runtime and the image
	// service from the configuration (the one-shot commands' env).
	Open func(ctx context.Context, rec pods.Recorder, hostIP string) (*env, error)
	// Exec runs exec probes with the container's confinement.
	Exec probe.Execer
	// Failed receives a controller's fatal error; serve then stops.
	Failed chan<- error
	// FreshStore: the state file was created by this start (reconcile then
	// leaves running containers alone).
	FreshStore bool
	// Running counts the agents' goroutines; serve waits for them before
	// it closes the store.
	Running *sync.WaitGroup
	// Admission gets the runtime once systemd answers: namespaces' quota
	// limits go to their slices.
	Admission *admission.Admitter
	// API is the API's create and delete for the controllers.
	API *server.Server
	// Events counts the Events recorded, Observer the worker's pulls,
	// trust refusals and syncs (for /metrics); Systemd receives the
	// connection's reconnect count once systemd answers.
	Events   events.Counter
	Observer worker.Observer
	Systemd  func(reconnects func() int)
}

// startAgents starts what acts on desired state: the node keeper, the
// events' expiry, and, once systemd answers, reconcile and the pod worker.
// They run until ctx ends (SIGTERM) and never stop containers when it does.
// It is called after the listeners accept and before READY=1.
func startAgents(ctx context.Context, d agentDeps) error {
	name, err := d.Config.Node()
	if err != nil {
		return err
	}
	// The Node object (kubectl get nodes), kept current as the kubelet's
	// node status loop keeps it.
	build := func() (*corev1.Node, error) {
		return node.Object(name, node.ObjectOptions{
			KubeletVersion: server.GitVersion, RuntimeVersion: server.GitVersion, StateDir: d.Config.StateDir,
		})
	}
	self, err := build()
	if err != nil {
		return err
	}
	keeper := node.NewKeeper(d.Store, build, 0, d.Log.Named("node"))
	goAgent := func(f func()) {
		d.Running.Add(1)
		go func() {
			defer d.Running.Done()
			f()
		}()
	}
	goAgent(func() {
		if err := keeper.Run(ctx); err != nil && ctx.Err() == nil {
			d.Log.Error("node status", "error", err)
		}
	})
	var hostIP string
	for _, a := range self.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			hostIP = a.Address
			break
		}
	}
	// Events count against a namespace's quota as the kubelet's do.
	rec := events.New(events.Config{Store: admission.AdmittedStore{Store: d.Store, A: d.Admission}, Host: name, Log: d.Log.Named("events"), Counter: d.Events})
	goAgent(func() {
		if err := rec.Run(ctx); err != nil && ctx.Err() == nil {
			d.Log.Error("events", "error", err)
		}
	})
	// PersistentVolumeClaims: the local-path provisioner and the PV
	// controller's binding and reclaim; it needs no systemd.
	pvc := storage.New(storage.Config{Store: d.Store, StateDir: d.Config.StateDir, NodeName: name, FreshStore: d.FreshStore,
		Events: rec.WithComponent("persistentvolume-controller"), Log: d.Log.Named("storage")})
	goAgent(func() {
		if err := pvc.Run(ctx); err != nil && ctx.Err() == nil {
			d.Log.Error("persistent volumes", "error", err)
		}
	})
	// ReplicaSets: their pods, made through the API as the
	// kube-controller-manager's are.
	rsc := replicaset.New(replicaset.Config{Store: d.Store, API: d.API, Events: rec.WithComponent("replicaset-controller"), Log: d.Log.Named("replicasets")})
	goAgent(func() {
		if err := rsc.Run(ctx); err != nil && ctx.Err() == nil {
			d.Log.Error("replicasets", "error", err)
		}
	})
	// Deployments: their ReplicaSets, rolled out by their strategy.
	dc := deployment.New(deployment.Config{Store: d.Store, API: d.API, Events: rec.WithComponent("deployment-controller"), Log: d.Log.Named("deployments")})
	goAgent(func() {
		if err := dc.Run(ctx); err != nil && ctx.Err() == nil {
			d.Log.Error("deployments", "error", err)
		}
	})
	// Services: their EndpointSlices and Endpoints, from the pods they
	// select.
	epc := endpoints.New(endpoints.Config{Store: d.Store, API: d.API, Log: d.Log.Named("endpoints")})
	goAgent(func() {
		if err := epc.Run(ctx); err != nil && ctx.Err() == nil {
			d.Log.Error("endpoints", "error", err)
		}
	})
	// Orphan and Foreground deletes: the garbage collector's part.
	gcc := gc.New(gc.Config{Store: d.Store, API: d.API, Log: d.Log.Named("gc")})
	goAgent(func() {
		if err := gcc.Run(ctx); err != nil && ctx.Err() == nil {
			d.Log.Error("garbage collector", "error", err)
		}
	})
	// The cluster DNS, on its address held by lo.
	if a, err := d.Config.Network.ClusterDNSAddr(); err == nil && a.IsValid() {
		var upstream []string
		if p := d.Config.Network.ResolvConf; p != "" {
			if b, err := os.ReadFile(network.HostResolvConf(p)); err == nil {
				upstream = dns.Upstream(b, a.String())
			}
		}
		if err := dns.HoldAddress(a); err != nil {
			d.Log.Error("cluster DNS", "error", err)
		} else {
			srv := dns.New(dns.Config{Store: d.Store, Domain: unitgen.ClusterDomain, Addr: net.JoinHostPort(a.String(), "53"), Upstream: upstream, Log: d.Log.Named("dns")})
			goAgent(func() {
				if err := srv.Run(ctx); err != nil && ctx.Err() == nil {
					d.Log.Error("cluster DNS", "error", err)
				}
			})
		}
	}
	// Services' forwarding in the kernel (nftables); it stays programmed
	// when berthd stops.
	if svcRange, err := d.Config.Network.ServiceRange(); err == nil {
		if px, err := proxy.New(proxy.Config{Store: d.Store, Routes: proxy.LoopbackRoutes{}, Conntrack: proxy.NetlinkConntrack{}, ServiceCIDR: svcRange, Log: d.Log.Named("proxy")}); err != nil {
			d.Log.Error("Services will not forward", "error", err)
		} else {
			goAgent(func() {
				if err := px.Run(ctx); err != nil && ctx.Err() == nil {
					d.Log.Error("proxy", "error", err)
				}
			})
		}
	}
	goAgent(func() {
		// The API serves whether or not systemd answers (kubectl works, pods
		// wait): the runtime is opened, retrying with back-off, and only
		// then do reconcile and the worker start.
		var e *env
		for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
			var err error
			if e, err = d.Open(ctx, rec, hostIP); err == nil {
				break
			}
			d.Log.Error("cannot reach systemd; pods wait", "error", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
		if d.Admission != nil {
			d.Admission.SetSlices(e.rt)
		}
		if d.Systemd != nil && e.conn != nil {
			d.Systemd(e.conn.Reconnects)
		}
		rc := reconcile.New(reconcile.Config{Store: d.Store, Host: e.rt, Recorder: rec, NodeName: name,
			Log: d.Log.Named("reconcile"), FreshStore: d.FreshStore})
		w := worker.New(worker.Config{
			Store: d.Store, Runtime: e.rt, Images: e.images, Units: e.conn, Reconciler: rc,
			Events: rec, Scheduler: rec.WithComponent("default-scheduler"),
			NodeName: name, HostIP: hostIP, Exec: d.Exec, Log: d.Log.Named("worker"), Observer: d.Observer,
		})
		// ConfigMap and Secret changes reach running pods' volumes.
		goAgent(func() {
			vs := &worker.VolumeSyncer{Store: d.Store, Updater: e.rt, Log: d.Log.Named("volumes")}
			_ = vs.Run(ctx)
		})
		// The worker reconciles first, then follows the store and systemd;
		// it ends only with ctx. Its failure leaves every container running
		// (systemd supervises them) and makes systemd restart berthd.
		if err := w.Run(ctx); err != nil && ctx.Err() == nil {
			d.Failed <- fmt.Errorf("pod worker: %w", err)
		}
	})
	return nil
}

// listenSocket listens on the API socket: its directory 0755, a stale
// socket from a killed berthd replaced, another berthd's live one refused,
// the file chowned to root:group and chmod'ed before anything is served
// (api/authz decides per connection in any case; the mode is the outer
// wall).
func listenSocket(s config.Socket, log hclog.Logger) (net.Listener, error) {
	mode, err := s.FileMode()
	if err != nil {
		return nil, err
	}
	gid := -1
	if s.Group != "" {
		g, err := user.LookupGroup(s.Group)
		if err != nil {
			return nil, fmt.Errorf("socket group %q: %w (systemd-sysusers creates it from packaging/sysusers.d/berth.conf)", s.Group, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, err
		}
	}
	dir := filepath.Dir(s.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(s.Path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", s.Path)
		}
		if c, err := net.DialTimeout("unix", s.Path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another berthd is serving it", s.Path)
		}
		log.Info("replacing stale socket", "path", s.Path)
		if err := os.Remove(s.Path); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("unix", s.Path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.Path, err)
	}
	// Removal is ours (serve removes the file after shutdown, and a stale
	// one is replaced above); net's unlink-on-close would race a
	// successor that already listens on the same path.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chown(s.Path, 0, gid); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chown %s: %w", s.Path, err)
	}
	if err := os.Chmod(s.Path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", s.Path, err)
	}
	return ln, nil
}

// newLogger logs for journald when stderr is the journal (JOURNAL_STREAM
// names it): no timestamp (journald adds its own), no colour, the level as
// a level= key and as the <N> prefix journald turns into the entry's
// priority, so `journalctl -p warning` works. Otherwise hclog's usual
// format.
func newLogger(level string) hclog.Logger {
	opts := &hclog.LoggerOptions{Name: "berthd", Level: hclog.LevelFromString(level), Output: os.Stderr, Color: hclog.ColorOff}
	if stderrIsJournal() {
		opts.DisableTime = true
		opts.Output = journalWriter{os.Stderr}
	}
	return hclog.New(opts)
}

// stderrIsJournal: JOURNAL_STREAM ("DEV:INODE") names stderr's stream, as
// systemd.exec(5) asks to check; a variable inherited by a process whose
// stderr went elsewhere does not count.
func stderrIsJournal() bool {
	v := os.Getenv("JOURNAL_STREAM")
	dev, ino, ok := strings.Cut(v, ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(os.Stderr.Fd()), &st); err != nil {
		return false
	}
	return dev == strconv.FormatUint(st.Dev, 10) && ino == strconv.FormatUint(st.Ino, 10)
}

// journalWriter rewrites hclog's "[INFO]  " line prefix (one Write per
// entry) to "<6>level=info ".
type journalWriter struct{ w io.Writer }

var journalLevels = []struct{ tag, prefix string }{
	{"[TRACE] ", "<7>level=trace "},
	{"[DEBUG] ", "<7>level=debug "},
	{"[INFO]  ", "<6>level=info "},
	{"[WARN]  ", "<4>level=warn "},
	{"[ERROR] ", "<3>level=error "},
}

func (j journalWriter) Write(p []byte) (int, error) {
	s := string(p)
	for _, l := range journalLevels {
		if rest, ok := strings.CutPrefix(s, l.tag); ok {
			if _, err := io.WriteString(j.w, l.prefix+rest); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return j.w.Write(p)
}

// remoteWriter builds the remote write endpoints from the configuration:
// their queues under queueDir, node=<node name> among the external
// labels.
func remoteWriter(cfg config.Config, g prometheus.Gatherer, log hclog.Logger) (*remote.Writer, error) {
	r := cfg.Metrics.RemoteWrite
	ext := map[string]string{}
	if _, ok := r.ExternalLabels["node"]; !ok {
		name, err := cfg.Node()
		if err != nil {
			return nil, err
		}
		ext["node"] = name
	}
	for k, v := range r.ExternalLabels {
		ext[k] = v
	}
	dir := r.QueueDir
	if dir == "" {
		dir = filepath.Join(cfg.StateDir, "remote-write")
	}
	var eps []remote.Endpoint
	for _, e := range r.Endpoints {
		max := e.QueueMaxBytes
		if max == 0 {
			max = config.DefaultQueueMaxBytes
		}
		eps = append(eps, remote.Endpoint{URL: e.URL, CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile,
			BearerTokenFile: e.BearerTokenFile, MaxBytes: max, Labels: e.Labels})
	}
	return remote.New(remote.Config{Gatherer: g, Endpoints: eps, ExternalLabels: ext, Dir: dir, Interval: cfg.Metrics.Interval, Log: log.Named("remote-write")})
}
