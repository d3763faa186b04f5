// Command berthd is berth's node agent.
//
//	berthd serve [--config /etc/berth/berthd.yaml]  the daemon: the Kubernetes API on
//	                                           /run/berth/berth.sock (what berthd.service runs;
//	                                           docs/berthd.md)
//
// The one-shot commands below run pods directly from the command line (tests
// and the demo use them):
//
//	berthd pod run -f pod.yaml [--layout DIR] start a pod: images pulled from registries (or an OCI layout),
//	                                           each judged by the trust policy first
//	berthd image pull REF                      pull and verify an image
//	berthd image ls                            list stored images
//	berthd pod status NAMESPACE/NAME           show its containers as systemd sees them
//	berthd pod rm NAMESPACE/NAME               stop and remove it
//
// Each command does its work and exits: systemd supervises the containers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/agent/config"
	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/agent/logs"
	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/agent/node"
	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/storage"
	"github.com/berth-dev/berth/agent/volumes"
	"github.com/berth-dev/berth/agent/worker"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
	"github.com/berth-dev/berth/verify"
)

type globals struct {
	stateDir, runDir, initPath string
	policy, registries         string
	pidsLimit                  int64
	allowPrivileged            bool
	logLevel                   string
	log                        hclog.Logger // serve's logger (journald's form); nil: a terminal's
	// serve's pod network and the recorder of pods' events; `berthd pod`
	// runs pods with loopback only (network nil).
	network  *config.Network
	recorder pods.Recorder
	// serve's volume policy and the store its configMap and secret
	// volumes read; `berthd pod` has emptyDir and downwardAPI only.
	volumes *config.Volumes
	store   worker.Store
	hostIP  string

	// The image store and Images, opened once per process (serve shares
	// them between the API and the pod worker: one Store per root in a
	// process, so that its locks and leases see every pull).
	imgs     *images.Images
	imgStore *image.Store
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "berthd:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{Use: "berthd", Short: "berth node agent: OCI containers as systemd units", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", "/var/lib/berth", "persistent state (pods, containers, image store)")
	root.PersistentFlags().StringVar(&g.runDir, "run-dir", "/run/berth", "volatile state (pod namespaces)")
	root.PersistentFlags().StringVar(&g.initPath, "init", "", "berth-init binary (default: next to berthd, else /usr/libexec/berth/berth-init)")
	root.PersistentFlags().Int64Var(&g.pidsLimit, "pids-limit", 4096, "TasksMax of each container (<= 0: unlimited)")
	root.PersistentFlags().BoolVar(&g.allowPrivileged, "allow-privileged", false, "allow securityContext.privileged")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level")
	root.PersistentFlags().StringVar(&g.policy, "policy", verify.DefaultPolicyPath, "trust policy (containers-policy.json(5) format; absent = reject every image)")
	root.PersistentFlags().StringVar(&g.registries, "registries", image.DefaultRegistriesPath, "registry configuration: mirrors, plain-HTTP registries, CAs, credentials")
	pod := &cobra.Command{Use: "pod", Short: "run, inspect and remove pods"}
	pod.AddCommand(runCmd(g), statusCmd(g), rmCmd(g))
	img := &cobra.Command{Use: "image", Short: "pull and list images"}
	img.AddCommand(pullCmd(g), lsCmd(g), gcCmd(g))
	root.AddCommand(pod, img, serveCmd(g))
	// The man pages the packages ship (hack/package.sh), section 8 as a
	// daemon's; hidden from help. The date is SOURCE_DATE_EPOCH's.
	root.AddCommand(&cobra.Command{Use: "__man DIR", Hidden: true, Args: cobra.ExactArgs(1), RunE: func(_ *cobra.Command, args []string) error {
		return doc.GenManTree(root, &doc.GenManHeader{Section: "8", Source: "berth"}, args[0])
	}})
	return root
}

type env struct {
	rt     *pods.Runtime
	images *images.Images
	conn   *systemd.Conn
}

func (g *globals) open(ctx context.Context) (*env, error) {
	log := g.log
	if log == nil {
		log = hclog.New(&hclog.LoggerOptions{Name: "berthd", Level: hclog.LevelFromString(g.logLevel), Output: os.Stderr})
	}
	initPath := g.initBinary()
	if !fileExists(initPath) {
		return nil, fmt.Errorf("stage-1 binary %s not found (set --init)", initPath)
	}
	imgs, store, err := g.openImages()
	if err != nil {
		return nil, err
	}
	info, err := node.Info(g.pidsLimit)
	if err != nil {
		return nil, err
	}
	conn, err := systemd.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	cfg := g.podsConfig(initPath, info, log)
	if g.network != nil {
		pn, err := network.Open(ctx, network.Config{ConfDir: g.network.CNIConfDir, PluginDirs: g.network.CNIPluginDirs,
			RunDir: filepath.Join(g.runDir, "cni"), Log: log})
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("pod network: %w", err)
		}
		cfg.Network, cfg.Recorder = pn, g.recorder
		cfg.DNS = network.DNS{ClusterDomain: unitgen.ClusterDomain}
		if g.network.ResolvConf != "" {
			cfg.DNS.ResolvConf = network.HostResolvConf(g.network.ResolvConf)
		}
		if a, err := g.network.ClusterDNSAddr(); err == nil && a.IsValid() {
			// serve runs the cluster DNS there (agent/dns).
			cfg.DNS.ClusterDNS = []string{a.String()}
		}
	}
	if g.volumes != nil {
		var src volumes.Source
		if g.store != nil {
			src = worker.VolumeSource{Store: g.store}
		}
		vc := volumes.Config{HostPathPrefixes: g.volumes.HostPathPrefixes, NodeAllocatableMemory: info.MemoryCapacity,
			LocalPathRoot: storage.Dir(g.stateDir)}
		if g.store != nil {
			// persistentVolumeClaim volumes: the claims and their volumes.
			vc.Claims = storage.ClaimSource{Store: g.store}
		}
		cfg.Volumes = volumes.New(vc, src)
		cfg.Objects, cfg.HostIP = src, g.hostIP
		cfg.Logs = logs.New(nil)
	}
	rt := pods.New(cfg, pods.SystemdUnits(conn), store)
	return &env{rt: rt, images: imgs, conn: conn}, nil
}

// initBinary is berth-init: --init, else beside this binary, else where
// the packages install it.
func (g *globals) initBinary() string {
	if g.initPath != "" {
		return g.initPath
	}
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), "berth-init"); fileExists(p) {
			return p
		}
	}
	return "/usr/libexec/berth/berth-init"
}

func (g *globals) podsConfig(initPath string, info cgroup.NodeInfo, log hclog.Logger) pods.Config {
	return pods.Config{
		StateDir: g.stateDir, RunDir: g.runDir, Init: initPath, Node: info,
		AllowPrivileged: g.allowPrivileged, Policy: g.policy, Log: log,
	}
}

func (g *globals) openImages() (*images.Images, *image.Store, error) {
	if g.imgs != nil {
		return g.imgs, g.imgStore, nil
	}
	store, err := image.New(filepath.Join(g.stateDir, "store"))
	if err != nil {
		return nil, nil, fmt.Errorf("image store: %w", err)
	}
	regs, err := image.LoadRegistries(g.registries)
	if errors.Is(err, fs.ErrNotExist) {
		// No file: every registry with the defaults (HTTPS, system CAs).
		regs, err = image.DefaultRegistries(), nil
	}
	if err != nil {
		return nil, nil, err
	}
	last := map[string]int64{}
	var mu sync.Mutex // the daemon pulls for several pods at once
	progress := func(ref string, p image.Progress) {
		if g.log != nil {
			// The daemon: one line per layer fetched, in the journal.
			if p.Done {
				g.log.Debug("layer pulled", "image", ref, "layer", shortDigest(p.Layer), "bytes", p.LayerTotal)
			}
			return
		}
		mu.Lock()
		defer mu.Unlock()
		// A terminal: one line per layer per 10 %, and when it is done.
		step := p.LayerTotal / 10
		if p.Done || step == 0 || p.LayerBytes-last[p.Layer] >= step {
			last[p.Layer] = p.LayerBytes
			fmt.Fprintf(os.Stderr, "%s: %s %d/%d bytes (total %d/%d)\n", ref, shortDigest(p.Layer), p.LayerBytes, p.LayerTotal, p.Bytes, p.Total)
		}
	}
	g.imgs, g.imgStore = images.New(images.Config{Store: store, Registries: regs, Policy: g.policy, Progress: progress}), store
	return g.imgs, g.imgStore, nil
}

// runtime is the pods runtime without systemd, for what only reads state
// (the images containers use).
func (g *globals) runtime(store *image.Store) *pods.Runtime {
	return pods.New(pods.Config{StateDir: g.stateDir, RunDir: g.runDir}, nil, store)
}

func shortDigest(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}

func pullCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "pull REF",
		Short: "pull an image by tag or digest, verified against the trust policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			imgs, store, err := g.openImages()
			if err != nil {
				return err
			}
			p, err := imgs.Pull(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if _, err := imgs.GC(cmd.Context(), g.runtime(store), false, p.Image.Digest); err != nil {
				fmt.Fprintln(os.Stderr, "berthd:", err)
			}
			fmt.Printf("%s@%s\n", p.Resolved.Repo.Name(), p.Image.Digest)
			fmt.Printf("trusted: scope %q rule %s: %s\n", p.Judgement.Scope, p.Judgement.Rule, p.Judgement.Reason)
			return nil
		},
	}
}

func gcCmd(g *globals) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "gc",
		Short: "remove images no container uses (above 85 % disk use down to 80 %, or all with --force)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			imgs, store, err := g.openImages()
			if err != nil {
				return err
			}
			rep, err := imgs.GC(cmd.Context(), g.runtime(store), force)
			if err != nil {
				return err
			}
			fmt.Printf("disk use %d%% -> %d%%; removed %d images, %d layers\n", rep.UsageBefore, rep.UsageAfter, len(rep.RemovedImages), len(rep.RemovedLayers))
			for _, d := range rep.RemovedImages {
				fmt.Println("removed", d)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "remove every image no container uses, whatever the disk use")
	return c
}

func lsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "list stored images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, store, err := g.openImages()
			if err != nil {
				return err
			}
			imgs, err := store.Images()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 6, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "DIGEST\tLAYERS\tREFERENCES")
			for _, im := range imgs {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", im.Digest, len(im.DiffIDs), strings.Join(im.Refs, ","))
			}
			return tw.Flush()
		},
	}
}

func runCmd(g *globals) *cobra.Command {
	var file, layout string
	var wait bool
	c := &cobra.Command{
		Use:   "run -f POD.yaml [--layout DIR]",
		Short: "start a pod; images are pulled from their registries, or looked up by name in an OCI layout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			pod, err := readPod(file)
			if err != nil {
				return err
			}
			e, err := g.open(ctx)
			if err != nil {
				return err
			}
			images, err := e.images.ForPod(ctx, pod, layout)
			if err != nil {
				return err
			}
			if err := e.rt.RunPod(ctx, pod, images); err != nil {
				return err
			}
			ns := pod.Namespace
			if ns == "" {
				ns = "default"
			}
			fmt.Printf("pod/%s created\n", pod.Name)
			if wait {
				// Stay until killed: the containers must not care (tests kill us).
				fmt.Println("waiting")
				<-ctx.Done()
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "filename", "f", "", "pod manifest (YAML or JSON)")
	c.Flags().StringVar(&layout, "layout", "", "OCI image layout directory holding the images (judged under the policy's oci transport)")
	c.Flags().BoolVar(&wait, "wait", false, "stay in the foreground after starting")
	_ = c.MarkFlagRequired("filename")
	return c
}

func statusCmd(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "status NAMESPACE/NAME",
		Short: "show a pod's containers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, ns, name, err := g.openPod(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			sts, err := e.rt.PodStatus(cmd.Context(), ns, name)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(sts)
			}
			tw := tabwriter.NewWriter(os.Stdout, 6, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "CONTAINER\tUNIT\tSTATE\tREASON\tEXIT\tRESTARTS")
			for _, s := range sts {
				state, reason, exit := "Waiting", "", ""
				switch {
				case s.State.Running != nil:
					state = "Running"
				case s.State.Terminated != nil:
					state, reason, exit = "Terminated", s.State.Terminated.Reason, strconv.Itoa(int(s.State.Terminated.ExitCode))
				case s.State.Waiting != nil:
					reason = s.State.Waiting.Reason
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", s.Name, s.Unit, state, reason, exit, s.RestartCount)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	return c
}

func rmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAMESPACE/NAME",
		Short: "stop and remove a pod",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, ns, name, err := g.openPod(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := e.rt.RemovePod(cmd.Context(), ns, name); err != nil {
				return err
			}
			fmt.Printf("pod/%s deleted\n", name)
			return nil
		},
	}
}

func readPod(file string) (*corev1.Pod, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if pod.Kind != "Pod" || pod.APIVersion != "v1" {
		return nil, fmt.Errorf("%s: want apiVersion v1, kind Pod; got %q %q", file, pod.APIVersion, pod.Kind)
	}
	return &pod, nil
}

// openPod parses NAMESPACE/NAME and opens the runtime.
func (g *globals) openPod(ctx context.Context, arg string) (*env, string, string, error) {
	ns, name, err := splitName(arg)
	if err != nil {
		return nil, "", "", err
	}
	// Refused before anything is opened or any path built from it.
	if err := pods.ValidateName(ns, name); err != nil {
		return nil, "", "", err
	}
	e, err := g.open(ctx)
	return e, ns, name, err
}

func splitName(s string) (string, string, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return "default", s, nil
	}
	if ns == "" || name == "" {
		return "", "", errors.New("want NAMESPACE/NAME")
	}
	return ns, name, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
