// Command workerd runs agent/worker inside a test node, as berthd will,
// over a store of its own, and offers the test a small control socket in
// place of the API (which another package tests): create, get, delete
// gracefully or outright, list Events.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/events"
	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/agent/node"
	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/reconcile"
	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/agent/worker"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/unitgen/systemd"
)

func main() {
	dir := flag.String("dir", "/var/tmp/worker", "store file and control socket")
	policy := flag.String("policy", "/var/tmp/policy.json", "trust policy")
	layout := flag.String("layout", "/var/tmp/images", "OCI layout the images come from")
	initPath := flag.String("init", "/opt/berth/bin/berth-init", "stage-1")
	flag.Parse()
	if err := run(*dir, *policy, *layout, *initPath); err != nil {
		fmt.Fprintln(os.Stderr, "workerd:", err)
		os.Exit(1)
	}
}

func run(dir, policy, layout, initPath string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGUSR1 dumps every goroutine: the test asks for it when it failed.
	dump := make(chan os.Signal, 1)
	signal.Notify(dump, syscall.SIGUSR1)
	go func() {
		for range dump {
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		}
	}()
	log := hclog.New(&hclog.LoggerOptions{Name: "workerd", Level: hclog.Trace, Output: os.Stderr})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	imgStore, err := image.New("/var/lib/berth/store")
	if err != nil {
		return err
	}
	info, err := node.Info(0)
	if err != nil {
		return err
	}
	conn, err := systemd.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := pods.New(pods.Config{Init: initPath, Node: info, Policy: policy, Log: log}, pods.SystemdUnits(conn), imgStore)
	imgs := images.New(images.Config{Store: imgStore, Registries: image.DefaultRegistries(), Policy: policy})
	hostname, _ := os.Hostname()
	rec := events.New(events.Config{Store: st, Host: hostname, Log: log})
	// The orphan removal berthd runs first (agent/reconcile): among others
	// it removes starts a SIGKILL cut short before their bundles were released.
	recon := reconcile.New(reconcile.Config{Store: st, Host: rt, Recorder: rec, NodeName: hostname, Log: log})
	w := worker.New(worker.Config{
		Store: st, Runtime: rt, Images: imgs, Units: conn, Reconciler: recon,
		Events: rec, Scheduler: rec.WithComponent("default-scheduler"),
		NodeName: hostname, HostIP: "10.0.0.1", Layout: layout, Log: log,
	})

	sock := filepath.Join(dir, "ctl.sock")
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(st, hostname)}
	go srv.Serve(l)
	defer srv.Close()
	go rec.Run(ctx)
	return w.Run(ctx)
}

func handler(st *store.Store, nodeName string) http.Handler {
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, err error) { http.Error(w, err.Error(), http.StatusInternalServerError) }
	// Create: as api/server stores a pod (Pending, on this node).
	mux.HandleFunc("POST /pods", func(w http.ResponseWriter, r *http.Request) {
		var pod corev1.Pod
		if err := json.NewDecoder(r.Body).Decode(&pod); err != nil {
			fail(w, err)
			return
		}
		pod.Spec.NodeName = nodeName
		pod.Status = corev1.PodStatus{Phase: corev1.PodPending}
		if pod.Spec.RestartPolicy == "" {
			pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
		}
		if err := st.Create("pods", &pod); err != nil {
			fail(w, err)
			return
		}
		json.NewEncoder(w).Encode(&pod)
	})
	mux.HandleFunc("GET /pods/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		var pod corev1.Pod
		if err := st.Get("pods", r.PathValue("ns"), r.PathValue("name"), &pod); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(&pod)
	})
	// Delete: graceful as the apiserver marks it (deletionTimestamp and
	// deletionGracePeriodSeconds), or outright with grace=0.
	mux.HandleFunc("DELETE /pods/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		ns, name := r.PathValue("ns"), r.PathValue("name")
		grace, _ := strconv.ParseInt(r.URL.Query().Get("grace"), 10, 64)
		if grace == 0 {
			if _, err := st.Delete("pods", ns, name, "", ""); err != nil {
				fail(w, err)
			}
			return
		}
		at := metav1.NewTime(time.Now().Add(time.Duration(grace) * time.Second).Truncate(time.Second))
		if _, err := st.Modify("pods", ns, name, &corev1.Pod{}, func(cur store.Object) (store.Decision, error) {
			cur.SetDeletionTimestamp(&at)
			cur.SetDeletionGracePeriodSeconds(&grace)
			return store.Decision{}, nil
		}); err != nil {
			fail(w, err)
		}
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		list := corev1.EventList{}
		if _, err := st.List(events.Resource, "", func(b []byte) error {
			var ev corev1.Event
			if err := json.Unmarshal(b, &ev); err != nil {
				return err
			}
			list.Items = append(list.Items, ev)
			return nil
		}); err != nil {
			fail(w, err)
			return
		}
		json.NewEncoder(w).Encode(&list)
	})
	return mux
}
