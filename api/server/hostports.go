package server

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// hostPortKey is one host port a pod binds: protocol, port and host
// address ("" for every address, as hostIP 0.0.0.0 is).
type hostPortKey struct {
	proto corev1.Protocol
	port  int32
	ip    string
}

// overlaps is the scheduler's NodePorts rule: the same protocol and port,
// and the same address or either one every address.
func (a hostPortKey) overlaps(b hostPortKey) bool {
	return a.proto == b.proto && a.port == b.port && (a.ip == "" || b.ip == "" || a.ip == b.ip)
}

type hostPortUse struct {
	key  hostPortKey
	path *field.Path
}

// hostPortsOf lists the host ports a pod asks for, with the field of each.
// A host-network pod's container ports are host ports (the API defaults
// hostPort to containerPort for it).
func hostPortsOf(pod *corev1.Pod) []hostPortUse {
	var out []hostPortUse
	add := func(p *field.Path, cs []corev1.Container) {
		for i, c := range cs {
			for j, port := range c.Ports {
				if port.HostPort == 0 {
					continue
				}
				ip := port.HostIP
				if ip == "0.0.0.0" || ip == "::" {
					ip = ""
				}
				proto := port.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				out = append(out, hostPortUse{hostPortKey{proto, port.HostPort, ip}, p.Index(i).Child("ports").Index(j).Child("hostPort")})
			}
		}
	}
	add(field.NewPath("spec", "initContainers"), pod.Spec.InitContainers)
	add(field.NewPath("spec", "containers"), pod.Spec.Containers)
	return out
}

// admitHostPorts refuses a pod whose host ports another pod of this node
// holds. On a cluster the scheduler would leave such a pod Pending on
// every node ("didn't have free ports for the requested pod ports"); berth
// is the one node, so the create is refused, naming the port and its
// holder. Creates of pods with host ports are serialised from this check
// until the returned unlock (after the store's create), so that two
// concurrent creates cannot both take a port.
func (s *Server) admitHostPorts(obj store.Object) (unlock func(), err error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return func() {}, nil
	}
	want := hostPortsOf(pod)
	if len(want) == 0 {
		return func() {}, nil
	}
	if errs := duplicateHostPorts(pod); len(errs) > 0 {
		return nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Pod").GroupKind(), pod.Name, errs)
	}
	s.hostPortMu.Lock()
	unlock = s.hostPortMu.Unlock
	var errs field.ErrorList
	_, err = s.store.List(store.Resource("pods"), "", func(data []byte) error {
		var other corev1.Pod
		if err := json.Unmarshal(data, &other); err != nil {
			return err
		}
		// A finished pod's containers hold nothing; a deleting one holds
		// its ports until it is gone, as the scheduler counts it.
		if other.Status.Phase == corev1.PodSucceeded || other.Status.Phase == corev1.PodFailed ||
			(other.Namespace == pod.Namespace && other.Name == pod.Name) {
			return nil
		}
		for _, h := range hostPortsOf(&other) {
			for _, w := range want {
				if w.key.overlaps(h.key) {
					errs = append(errs, field.Invalid(w.path, w.key.port,
						fmt.Sprintf("provided port is already allocated to pod %s/%s (%d/%s)", other.Namespace, other.Name, w.key.port, w.key.proto)))
				}
			}
		}
		return nil
	})
	if err == nil && len(errs) > 0 {
		err = apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Pod").GroupKind(), pod.Name, errs)
	}
	if err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// duplicateHostPorts is the apiserver's checkHostPortConflicts
// (AccumulateUniqueHostPorts over spec.containers): one pod naming a host
// port twice, with its words.
func duplicateHostPorts(pod *corev1.Pod) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, c := range pod.Spec.Containers {
		for j, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			str := fmt.Sprintf("%s/%s/%d", p.Protocol, p.HostIP, p.HostPort)
			if seen[str] {
				errs = append(errs, field.Duplicate(field.NewPath("spec", "containers").Index(i).Child("ports").Index(j).Child("hostPort"), str))
			}
			seen[str] = true
		}
	}
	return errs
}
