package pods

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/unitgen"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// Network is the node's pod network; *network.Network provides it. The id
// of a pod's attachment is its key (unitgen.PodKey), which names its
// directories too, so a removal needs no record to find it.
type Network interface {
	Attach(ctx context.Context, id, netns string, ports []network.PortMapping) ([]netip.Addr, error)
	Detach(ctx context.Context, id, netns string) error
	GC(ctx context.Context, keep func(id string) bool) error
}

var _ Network = (*network.Network)(nil)

// Recorder records events about a pod (*events.Recorder).
type Recorder interface {
	Event(ref *corev1.ObjectReference, eventtype, reason, message string)
}

func (r *Runtime) event(pod *corev1.Pod, eventtype, reason, message string) {
	if r.cfg.Recorder == nil {
		return
	}
	r.cfg.Recorder.Event(&corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace,
		Name: pod.Name, UID: pod.UID}, eventtype, reason, message)
}

// networkRecord, in the pod's run directory, holds the addresses the pod
// network gave the pod: volatile like the attachment itself.
const networkRecord = "network.json"

type netRecord struct {
	IPs []string `json:"ips"`
}

// hostPorts are the pod's hostPorts in portmap's terms. hostIP "" binds
// every address of the node, as the kubelet's CNI plugins do.
func hostPorts(pod *corev1.Pod) []network.PortMapping {
	var out []network.PortMapping
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if p.HostPort == 0 {
					continue
				}
				proto := p.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				out = append(out, network.PortMapping{HostPort: p.HostPort, ContainerPort: p.ContainerPort,
					Protocol: strings.ToLower(string(proto)), HostIP: p.HostIP})
			}
		}
	}
	return out
}

// attach puts the pod's pinned network namespace on the pod network and
// records its addresses. Without a pod network (the runtime alone) the pod
// has loopback only and no address.
func (r *Runtime) attach(ctx context.Context, d podDirs, pod *corev1.Pod) ([]string, error) {
	if r.cfg.Network == nil || pod.Spec.HostNetwork {
		return nil, nil
	}
	addrs, err := r.cfg.Network.Attach(ctx, unitgen.PodKey(d.ns, d.pod), filepath.Join(d.run, "ns", "net"), hostPorts(pod))
	if err != nil {
		return nil, err
	}
	ips := make([]string, len(addrs))
	for i, a := range addrs {
		ips[i] = a.String()
	}
	b, err := json.Marshal(netRecord{IPs: ips})
	if err != nil {
		return nil, err
	}
	if err := bndl.WriteFileAtomic(filepath.Join(d.run, networkRecord), b, 0o644); err != nil {
		return nil, err
	}
	return ips, nil
}

// detach takes the pod off the pod network (its lease, veth and hostPort
// rules); a pod that was never attached is no error. hostNetwork pods have
// nothing to detach.
func (r *Runtime) detach(ctx context.Context, key, runDir string, pod *corev1.Pod) error {
	if r.cfg.Network == nil || (pod != nil && pod.Spec.HostNetwork) {
		return nil
	}
	if err := r.cfg.Network.Detach(ctx, key, filepath.Join(runDir, "ns", "net")); err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	return nil
}

// PodIPs returns the addresses the pod network gave the pod (none for a
// host-network pod or a pod without one); errdefs.ErrNotFound's class when
// the pod is not attached (yet, or any more).
func (r *Runtime) PodIPs(ns, name string) ([]string, error) {
	d, err := r.dirs(ns, name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(d.run, networkRecord))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec netRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("pod %s/%s: network record: %w", ns, name, err)
	}
	return rec.IPs, nil
}

// GCNetwork detaches every attachment of the pod network that no pod
// directory with pinned namespaces accounts for: what a berthd killed in
// the middle of a start or a removal left leased or forwarded. Reconcile
// runs it after its removals, before the worker starts pods.
func (r *Runtime) GCNetwork(ctx context.Context) error {
	if r.cfg.Network == nil {
		return nil
	}
	return r.cfg.Network.GC(ctx, func(id string) bool {
		run, err := under(filepath.Join(r.cfg.RunDir, "pods"), id)
		return err == nil && namespacesPinned(filepath.Join(run, "ns"))
	})
}

// ReleaseNetwork takes a pod whose containers have all finished off the
// pod network, as the kubelet stops a finished pod's sandbox: its address
// returns to the pool. Its namespaces stay pinned until the pod is removed.
// A pod without an attachment record is left alone.
func (r *Runtime) ReleaseNetwork(ctx context.Context, ns, name string) error {
	d, err := r.dirs(ns, name)
	if err != nil {
		return err
	}
	unlock, err := r.lock(ctx, d)
	if err != nil {
		return err
	}
	defer unlock()
	rec := filepath.Join(d.run, networkRecord)
	if _, err := os.Stat(rec); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := r.detach(ctx, unitgen.PodKey(ns, name), d.run, nil); err != nil {
		return err
	}
	return os.Remove(rec)
}
