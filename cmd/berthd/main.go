// Command berthd is berth's node agent. In this version it runs pods
// directly from the command line (the socket API comes next):
//
//	berthd pod run -f pod.yaml --layout DIR   start a pod from an OCI image layout
//	berthd pod status NAMESPACE/NAME           show its containers as systemd sees them
//	berthd pod rm NAMESPACE/NAME               stop and remove it
//
// Each command does its work and exits: systemd supervises the containers.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/agent/runtime"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/unitgen/systemd"
)

type globals struct {
	stateDir, runDir, initPath string
	pidsLimit                  int64
	allowPrivileged            bool
	logLevel                   string
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
	pod := &cobra.Command{Use: "pod", Short: "run, inspect and remove pods"}
	pod.AddCommand(runCmd(g), statusCmd(g), rmCmd(g))
	root.AddCommand(pod)
	return root
}

type env struct {
	rt    *runtime.Runtime
	store *image.Store
	conn  *systemd.Conn
}

func (g *globals) open(ctx context.Context) (*env, error) {
	log := hclog.New(&hclog.LoggerOptions{Name: "berthd", Level: hclog.LevelFromString(g.logLevel), Output: os.Stderr})
	initPath := g.initPath
	if initPath == "" {
		initPath = "/usr/libexec/berth/berth-init"
		if self, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(self), "berth-init"); fileExists(p) {
				initPath = p
			}
		}
	}
	if !fileExists(initPath) {
		return nil, fmt.Errorf("stage-1 binary %s not found (set --init)", initPath)
	}
	store, err := image.New(filepath.Join(g.stateDir, "store"))
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	conn, err := systemd.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	node := cgroup.NodeInfo{MemoryCapacity: memTotal(), CgroupV2: cgroup.IsV2(), PidsLimit: g.pidsLimit}
	rt := runtime.New(runtime.Config{
		StateDir: g.stateDir, RunDir: g.runDir, Init: initPath, Node: node,
		AllowPrivileged: g.allowPrivileged, Log: log,
	}, conn, store)
	return &env{rt: rt, store: store, conn: conn}, nil
}

func runCmd(g *globals) *cobra.Command {
	var file, layout string
	var wait bool
	c := &cobra.Command{
		Use:   "run -f POD.yaml --layout DIR",
		Short: "start a pod; each container's image is looked up by name in the OCI layout",
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
			images := map[string]*image.Image{}
			for _, c := range pod.Spec.Containers {
				img, err := image.OpenLayout(ctx, layout, c.Image)
				if err != nil {
					return fmt.Errorf("container %q: %w", c.Name, err)
				}
				imported, err := e.store.Import(ctx, img)
				if err != nil {
					return fmt.Errorf("container %q: import %s: %w", c.Name, c.Image, err)
				}
				images[c.Name] = imported
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
	c.Flags().StringVar(&layout, "layout", "", "OCI image layout directory holding the images")
	c.Flags().BoolVar(&wait, "wait", false, "stay in the foreground after starting")
	_ = c.MarkFlagRequired("filename")
	_ = c.MarkFlagRequired("layout")
	return c
}

func statusCmd(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "status NAMESPACE/NAME",
		Short: "show a pod's containers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, err := splitName(args[0])
			if err != nil {
				return err
			}
			e, err := g.open(cmd.Context())
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
			ns, name, err := splitName(args[0])
			if err != nil {
				return err
			}
			e, err := g.open(cmd.Context())
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

// memTotal is the node's memory in bytes (for Burstable oom_score_adj).
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int64
		if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); err == nil {
			return kb * 1024
		}
	}
	return 0
}
