// Command reconcilenode runs inside a test node for test/e2e/reconcile: it
// wires the real pods runtime to the node's systemd as berthd does, and
//
//	reconcilenode [--state-dir DIR] [--run-dir DIR] COMMAND ...
//	    (defaults /var/lib/berth and /run/berth, as berthd's)
//	reconcilenode die-at CONTAINER POD.yaml LAYOUT
//	    starts the pod and SIGKILLs itself when RunPod asks systemd for
//	    CONTAINER's unit: a berthd killed in the middle of a start, leaving
//	    whatever prefix of RunPod's steps it had done;
//	reconcilenode reconcile STORE.json
//	    reconciles against the pods listed in STORE.json (the store's
//	    desired state) and prints the report and the events as JSON.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/agent/node"
	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/reconcile"
	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/unitgen"
	"github.com/berth-dev/berth/unitgen/systemd"
)

const policy = "/var/tmp/policy.json"

func main() {
	flags := flag.NewFlagSet("reconcilenode", flag.ExitOnError)
	flags.StringVar(&stateDir, "state-dir", stateDir, "the berth's state directory")
	flags.StringVar(&runDir, "run-dir", runDir, "the berth's run directory")
	_ = flags.Parse(os.Args[1:])
	if err := run(context.Background(), flags.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "reconcilenode:", err)
		os.Exit(1)
	}
}

// The berth reconciled: two on one node have two state directories.
var (
	stateDir = "/var/lib/berth"
	runDir   = "/run/berth"
)

func run(ctx context.Context, args []string) error {
	log := hclog.New(&hclog.LoggerOptions{Name: "reconcilenode", Level: hclog.Debug, Output: os.Stderr})
	conn, err := systemd.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := image.New(filepath.Join(stateDir, "store"))
	if err != nil {
		return err
	}
	info, err := node.Info(4096)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	units := pods.SystemdUnits(conn)
	newRuntime := func(u pods.Units) *pods.Runtime {
		return pods.New(pods.Config{StateDir: stateDir, RunDir: runDir, Init: filepath.Join(filepath.Dir(self), "berth-init"),
			Node: info, Policy: policy, Log: log}, u, st)
	}
	switch {
	case len(args) == 4 && args[0] == "die-at":
		pod, err := readPod(args[2])
		if err != nil {
			return err
		}
		imgs, err := images.New(images.Config{Store: st, Registries: image.DefaultRegistries(), Policy: policy}).ForPod(ctx, pod, args[3])
		if err != nil {
			return err
		}
		ns := pod.Namespace
		if ns == "" {
			ns = "default"
		}
		rt := newRuntime(dieAt{Units: units, unit: unitgen.UnitName(ns, pod.Name, args[1])})
		if err := rt.RunPod(ctx, pod, imgs); err != nil {
			return err
		}
		return errors.New("RunPod returned: the container to die at was never started")
	case len(args) == 2 && args[0] == "reconcile":
		rec := &recorder{}
		r := reconcile.New(reconcile.Config{Store: fileStore(args[1]), Host: newRuntime(units), Recorder: rec, NodeName: "e2e-node", Log: log})
		rep, err := r.Run(ctx)
		out := struct {
			Report *reconcile.Report `json:"report"`
			Events []event           `json:"events"`
			Error  string            `json:"error,omitempty"`
		}{Report: rep, Events: rec.events}
		if err != nil {
			out.Error = err.Error()
		}
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	return fmt.Errorf("usage: die-at CONTAINER POD.yaml LAYOUT | reconcile STORE.json")
}

// dieAt is the node's systemd, until RunPod asks for unit: then the process
// dies as a SIGKILLed berthd would, with that container's bundle prepared
// and its release FIFO open.
type dieAt struct {
	pods.Units
	unit string
}

func (d dieAt) Start(ctx context.Context, name string, props []unitgen.Property) error {
	if name == d.unit {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	return d.Units.Start(ctx, name, props)
}

// ListUnits keeps the wrapper a lister (the runtime asks its Units).
func (d dieAt) ListUnits(ctx context.Context, prefix string) ([]pods.UnitSummary, error) {
	return d.Units.(pods.UnitLister).ListUnits(ctx, prefix)
}

// fileStore is the desired state: a JSON array of pods, as the store's List
// hands them out.
type fileStore string

func (f fileStore) List(res store.Resource, ns string, fn func([]byte) error) (uint64, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return 0, err
	}
	if res != reconcile.PodsResource {
		return 0, nil
	}
	for _, r := range raw {
		if err := fn(r); err != nil {
			return 0, err
		}
	}
	return 1, nil
}

type event struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) Event(ref *corev1.ObjectReference, typ, reason, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{ref.Kind, ref.Name, typ, reason, msg})
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
	return &pod, nil
}
