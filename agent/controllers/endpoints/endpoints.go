// Package endpoints is the kube-controller-manager's EndpointSlice and
// Endpoints controllers on one node (pkg/controller/endpointslice and
// pkg/controller/endpoint, kubernetes-semantics.md §6): for every Service
// with a selector, the pods it selects that have an address, as
// discovery.k8s.io/v1 EndpointSlices (ready, serving and terminating as
// upstream sets them) and as the core/v1 Endpoints older clients read
// (ready and not-ready addresses; terminating pods left out). The node's
// forwarding rules and its DNS read the slices.
package endpoints

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/agent/controllers/loop"
	"github.com/berth-dev/berth/agent/store"
)

// Store is what the controller reads and writes of agent/store.
type Store interface {
	ScanKeyed(res store.Resource, ns string, fn func(key, data []byte) error) (uint64, error)
	Modify(res store.Resource, ns, name string, obj store.Object, fn func(cur store.Object) (store.Decision, error)) (bool, error)
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

var _ Store = (*store.Store)(nil)

// API is the API's create and delete, as a client's (api/server's
// in-process calls): defaults, validation, generateName.
type API interface {
	Create(resource string, obj store.Object) error
	Delete(resource, ns, name string, uid types.UID) error
}

// Config configures the controller.
type Config struct {
	Store Store
	API   API
	Log   hclog.Logger
	// Resync is the period of a full pass without any change (default 30 s).
	Resync time.Duration
	Now    func() time.Time
}

const (
	services       store.Resource = "services"
	pods           store.Resource = "pods"
	endpointSlices store.Resource = "endpointslices"
	endpoints      store.Resource = "endpoints"
	// The API's names of the kinds (api/server kindKey).
	sliceKind     = "discovery.k8s.io/endpointslices"
	endpointsKind = "endpoints"

	// ManagedBy is the EndpointSlice controller's value of
	// discoveryv1.LabelManagedBy: the slices it owns.
	ManagedBy = "endpointslice-controller.k8s.io"
	// headlessLabel marks the slices and Endpoints of a headless Service
	// (v1.IsHeadlessService).
	headlessLabel = "service.kubernetes.io/headless"
	// maxEndpointsPerSlice is the controller's --max-endpoints-per-slice
	// default.
	maxEndpointsPerSlice = 100
)

// Controller runs the passes.
type Controller struct {
	cfg  Config
	log  hclog.Logger
	loop *loop.Loop
	mu   sync.Mutex
	// The lists' decoded objects, read only (store.Decoded).
	svcs   *store.Decoded[corev1.Service]
	pods   *store.Decoded[corev1.Pod]
	slices *store.Decoded[discoveryv1.EndpointSlice]
	eps    *store.Decoded[corev1.Endpoints]
}

// New returns a controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{cfg: cfg, log: cfg.Log, loop: loop.New(),
		svcs: &store.Decoded[corev1.Service]{Resource: services}, pods: &store.Decoded[corev1.Pod]{Resource: pods},
		slices: &store.Decoded[discoveryv1.EndpointSlice]{Resource: endpointSlices}, eps: &store.Decoded[corev1.Endpoints]{Resource: endpoints}}
}

// Run follows Services, pods, EndpointSlices and Endpoints and makes a
// pass for each change until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return c.loop.Run(ctx, c.cfg.Store, []store.Resource{services, pods, endpointSlices, endpoints}, c.cfg.Resync, c.log, c.Sync)
}

// Sync makes one pass over every Service.
func (c *Controller) Sync(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	svcs, _, err := c.svcs.List(c.cfg.Store, "")
	if err != nil {
		return err
	}
	allPods, _, err := c.pods.List(c.cfg.Store, "")
	if err != nil {
		return err
	}
	allSlices, _, err := c.slices.List(c.cfg.Store, "")
	if err != nil {
		return err
	}
	allEps, _, err := c.eps.List(c.cfg.Store, "")
	if err != nil {
		return err
	}
	byName := map[string]*corev1.Service{}
	for _, s := range svcs {
		byName[s.Namespace+"/"+s.Name] = s
	}
	slicesOf := map[string][]*discoveryv1.EndpointSlice{}
	var errs []error
	for _, es := range allSlices {
		if es.Labels[discoveryv1.LabelManagedBy] != ManagedBy {
			continue // another writer's (a client's own slices)
		}
		if metav1.GetControllerOf(es) == nil {
			continue // released by an orphaning delete of its Service (agent/controllers/gc)
		}
		key := es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]
		svc := byName[key]
		if svc == nil || !ownedBy(es, svc) {
			// Its Service is gone (the garbage collector's part) or is
			// another one of that name.
			if err := c.delete(sliceKind, es.Namespace, es.Name, es.UID); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		slicesOf[key] = append(slicesOf[key], es)
	}
	epsOf := map[string]*corev1.Endpoints{}
	for _, ep := range allEps {
		key := ep.Namespace + "/" + ep.Name
		if byName[key] == nil {
			// The Endpoints controller deletes a deleted Service's
			// Endpoints; one it never wrote (no trigger time) is a
			// client's and stays.
			if _, ours := ep.Annotations[corev1.EndpointsLastChangeTriggerTime]; ours {
				if err := c.delete(endpointsKind, ep.Namespace, ep.Name, ep.UID); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		epsOf[key] = ep
	}
	podsOf := map[string][]*corev1.Pod{}
	for _, p := range allPods {
		podsOf[p.Namespace] = append(podsOf[p.Namespace], p)
	}
	for _, svc := range svcs {
		key := svc.Namespace + "/" + svc.Name
		if svc.Spec.Selector == nil || svc.DeletionTimestamp != nil {
			continue // not managed: a client keeps its Endpoints and slices
		}
		selected := selectPods(svc, podsOf[svc.Namespace])
		if err := c.syncSlices(svc, selected, slicesOf[key]); err != nil {
			errs = append(errs, fmt.Errorf("service %s endpointslices: %w", key, err))
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		if err := c.syncEndpoints(svc, selected, epsOf[key]); err != nil {
			errs = append(errs, fmt.Errorf("service %s endpoints: %w", key, err))
		}
	}
	return errors.Join(errs...)
}

func (c *Controller) delete(kind, ns, name string, uid types.UID) error {
	err := c.cfg.API.Delete(kind, ns, name, uid)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete %s %s/%s: %w", kind, ns, name, err)
	}
	return nil
}

func ownedBy(o metav1.Object, svc *corev1.Service) bool {
	ref := metav1.GetControllerOf(o)
	return ref != nil && ref.UID == svc.UID
}

// selectPods is the Service's selector over its namespace's pods.
func selectPods(svc *corev1.Service, ps []*corev1.Pod) []*corev1.Pod {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var out []*corev1.Pod
	for _, p := range ps {
		if sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// inEndpoints is ShouldPodBeInEndpoints: a pod with an address that has
// not finished for good; a deleting one only when asked for
// (includeTerminating).
func inEndpoints(p *corev1.Pod, includeTerminating bool) bool {
	if p.Status.PodIP == "" {
		return false
	}
	if !includeTerminating && p.DeletionTimestamp != nil {
		return false
	}
	switch p.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded
	case corev1.RestartPolicyOnFailure:
		return p.Status.Phase != corev1.PodSucceeded
	}
	return true
}

// podReady is podutil.IsPodReady.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// findPort is podutil.FindPort: a number as it is; a name looked up among
// the pod's containers' ports (sidecars' included) of the same protocol.
func findPort(p *corev1.Pod, sp *corev1.ServicePort) (int32, bool) {
	if sp.TargetPort.Type == intstr.Int {
		return int32(sp.TargetPort.IntValue()), true
	}
	name := sp.TargetPort.StrVal
	cs := p.Spec.Containers
	for _, ic := range p.Spec.InitContainers {
		if ic.RestartPolicy != nil && *ic.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			cs = append(cs[:len(cs):len(cs)], ic)
		}
	}
	for _, c := range cs {
		for _, port := range c.Ports {
			proto := port.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			if port.Name == name && proto == sp.Protocol {
				return port.ContainerPort, true
			}
		}
	}
	return 0, false
}

func isHeadless(svc *corev1.Service) bool { return svc.Spec.ClusterIP == corev1.ClusterIPNone }

// shouldSetHostname is endpointutil.ShouldSetHostname.
func shouldSetHostname(p *corev1.Pod, svc *corev1.Service) bool {
	return p.Spec.Hostname != "" && p.Spec.Subdomain == svc.Name && p.Namespace == svc.Namespace
}

// desiredSlice is one slice's content: its ports and endpoints.
type desiredSlice struct {
	ports     []discoveryv1.EndpointPort
	endpoints []discoveryv1.Endpoint
}

// desiredSlices groups the pods' endpoints by the ports they resolve
// (a named targetPort may differ pod by pod), at most 100 a slice, as the
// reconciler does; a Service that selects nothing gets one empty slice
// (upstream's placeholder).
func desiredSlices(svc *corev1.Service, ps []*corev1.Pod) []desiredSlice {
	type group struct {
		ports     []discoveryv1.EndpointPort
		endpoints []discoveryv1.Endpoint
	}
	groups := map[string]*group{}
	var order []string
	for _, p := range ps {
		if !inEndpoints(p, true) {
			continue
		}
		var ports []discoveryv1.EndpointPort
		for i := range svc.Spec.Ports {
			sp := &svc.Spec.Ports[i]
			n, ok := findPort(p, sp)
			if !ok {
				continue
			}
			name, proto := sp.Name, sp.Protocol
			ports = append(ports, discoveryv1.EndpointPort{Name: &name, Port: &n, Protocol: &proto, AppProtocol: sp.AppProtocol})
		}
		key := portsKey(ports)
		g := groups[key]
		if g == nil {
			g = &group{ports: ports}
			groups[key] = g
			order = append(order, key)
		}
		serving := podReady(p)
		terminating := p.DeletionTimestamp != nil
		// "ready" is never true for a terminating pod, unless the Service
		// publishes not-ready addresses.
		ready := svc.Spec.PublishNotReadyAddresses || serving && !terminating
		ep := discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		}
		if p.Spec.NodeName != "" {
			node := p.Spec.NodeName
			ep.NodeName = &node
		}
		if shouldSetHostname(p, svc) {
			h := p.Spec.Hostname
			ep.Hostname = &h
		}
		g.endpoints = append(g.endpoints, ep)
	}
	sort.Strings(order)
	var out []desiredSlice
	for _, key := range order {
		g := groups[key]
		for len(g.endpoints) > 0 {
			n := min(len(g.endpoints), maxEndpointsPerSlice)
			out = append(out, desiredSlice{ports: g.ports, endpoints: g.endpoints[:n]})
			g.endpoints = g.endpoints[n:]
		}
	}
	if len(out) == 0 {
		out = []desiredSlice{{}}
	}
	return out
}

func portsKey(ports []discoveryv1.EndpointPort) string {
	b, _ := json.Marshal(ports)
	return string(b)
}

// sliceLabels is setEndpointSliceLabels: the Service's labels, the
// Service's name, who manages it, headless or not.
func sliceLabels(svc *corev1.Service) map[string]string {
	l := map[string]string{}
	for k, v := range svc.Labels {
		if k == discoveryv1.LabelServiceName || k == discoveryv1.LabelManagedBy || k == headlessLabel {
			continue
		}
		l[k] = v
	}
	l[discoveryv1.LabelServiceName] = svc.Name
	l[discoveryv1.LabelManagedBy] = ManagedBy
	if isHeadless(svc) {
		l[headlessLabel] = ""
	}
	return l
}

func ownerRef(svc *corev1.Service) []metav1.OwnerReference {
	t := true
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: &t, BlockOwnerDeletion: &t}}
}

// syncSlices makes the Service's slices what desiredSlices says: those of
// the same ports updated in place, what is missing created, the rest
// deleted. An ExternalName Service has none.
func (c *Controller) syncSlices(svc *corev1.Service, ps []*corev1.Pod, have []*discoveryv1.EndpointSlice) error {
	var want []desiredSlice
	if svc.Spec.Type != corev1.ServiceTypeExternalName {
		want = desiredSlices(svc, ps)
	}
	sort.Slice(have, func(i, j int) bool { return have[i].Name < have[j].Name })
	byPorts := map[string][]*discoveryv1.EndpointSlice{}
	for _, es := range have {
		k := portsKey(es.Ports)
		byPorts[k] = append(byPorts[k], es)
	}
	lbls := sliceLabels(svc)
	var errs []error
	var unmatched []desiredSlice
	for _, d := range want {
		k := portsKey(d.ports)
		if len(byPorts[k]) == 0 {
			unmatched = append(unmatched, d)
			continue
		}
		es := byPorts[k][0]
		byPorts[k] = byPorts[k][1:]
		if err := c.updateSlice(svc, es, d, lbls); err != nil {
			errs = append(errs, err)
		}
	}
	// The slices left over are reused for what is unmatched before any is
	// created, as the reconciler fills existing slices first.
	var spare []*discoveryv1.EndpointSlice
	for _, k := range slices.Sorted(maps.Keys(byPorts)) {
		spare = append(spare, byPorts[k]...)
	}
	for _, d := range unmatched {
		if len(spare) > 0 {
			if err := c.updateSlice(svc, spare[0], d, lbls); err != nil {
				errs = append(errs, err)
			}
			spare = spare[1:]
			continue
		}
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{GenerateName: slicePrefix(svc.Name), Namespace: svc.Namespace, Labels: lbls, OwnerReferences: ownerRef(svc)},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   d.endpoints,
			Ports:       d.ports,
		}
		if err := c.cfg.API.Create(sliceKind, es); err != nil {
			errs = append(errs, fmt.Errorf("create endpointslice: %w", err))
		}
	}
	for _, es := range spare {
		if err := c.delete(sliceKind, es.Namespace, es.Name, es.UID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// slicePrefix is getEndpointSlicePrefix: "<service>-" (the API cuts a
// long one to 58 characters before the random 5).
func slicePrefix(name string) string { return name + "-" }

var errUnchanged = errors.New("unchanged")

func (c *Controller) updateSlice(svc *corev1.Service, es *discoveryv1.EndpointSlice, d desiredSlice, lbls map[string]string) error {
	_, err := c.cfg.Store.Modify(endpointSlices, es.Namespace, es.Name, &discoveryv1.EndpointSlice{}, func(cur store.Object) (store.Decision, error) {
		x := cur.(*discoveryv1.EndpointSlice)
		if x.UID != es.UID {
			return store.Decision{}, errUnchanged
		}
		next := x.DeepCopy()
		next.Labels, next.OwnerReferences = lbls, ownerRef(svc)
		next.Endpoints, next.Ports = d.endpoints, d.ports
		if same(x.Labels, next.Labels) && same(x.OwnerReferences, next.OwnerReferences) && same(x.Endpoints, next.Endpoints) && same(x.Ports, next.Ports) {
			return store.Decision{}, errUnchanged
		}
		*x = *next
		return store.Decision{}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("update endpointslice %s: %w", es.Name, err)
	}
	return nil
}

// same compares two values as their JSON (nil and empty alike).
func same(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb) || (isEmptyJSON(ja) && isEmptyJSON(jb))
}

func isEmptyJSON(b []byte) bool {
	s := string(b)
	return s == "null" || s == "[]" || s == "{}"
}

// desiredSubsets is the Endpoints controller's subsets: each pod's
// address under the ports it resolves (a headless Service without ports:
// the address alone), ready or not ready, terminating pods left out unless
// the Service publishes not-ready addresses; repacked as RepackSubsets
// does, addresses with the same ports in one subset.
func desiredSubsets(svc *corev1.Service, ps []*corev1.Pod) []corev1.EndpointSubset {
	type entry struct {
		addr  corev1.EndpointAddress
		ready bool
		ports []corev1.EndpointPort
	}
	var entries []entry
	for _, p := range ps {
		if !inEndpoints(p, svc.Spec.PublishNotReadyAddresses) {
			continue
		}
		a := corev1.EndpointAddress{IP: p.Status.PodIP, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}}
		if p.Spec.NodeName != "" {
			node := p.Spec.NodeName
			a.NodeName = &node
		}
		if shouldSetHostname(p, svc) {
			a.Hostname = p.Spec.Hostname
		}
		e := entry{addr: a, ready: svc.Spec.PublishNotReadyAddresses || podReady(p)}
		if len(svc.Spec.Ports) == 0 {
			if !isHeadless(svc) {
				continue
			}
		} else {
			for i := range svc.Spec.Ports {
				sp := &svc.Spec.Ports[i]
				n, ok := findPort(p, sp)
				if !ok {
					continue
				}
				e.ports = append(e.ports, corev1.EndpointPort{Name: sp.Name, Port: n, Protocol: sp.Protocol, AppProtocol: sp.AppProtocol})
			}
			if len(e.ports) == 0 {
				continue
			}
		}
		sort.Slice(e.ports, func(i, j int) bool {
			if e.ports[i].Name != e.ports[j].Name {
				return e.ports[i].Name < e.ports[j].Name
			}
			return e.ports[i].Port < e.ports[j].Port
		})
		entries = append(entries, e)
	}
	subsets := map[string]*corev1.EndpointSubset{}
	for _, e := range entries {
		b, _ := json.Marshal(e.ports)
		ss := subsets[string(b)]
		if ss == nil {
			ss = &corev1.EndpointSubset{Ports: e.ports}
			subsets[string(b)] = ss
		}
		if e.ready {
			ss.Addresses = append(ss.Addresses, e.addr)
		} else {
			ss.NotReadyAddresses = append(ss.NotReadyAddresses, e.addr)
		}
	}
	out := []corev1.EndpointSubset{}
	for _, k := range slices.Sorted(maps.Keys(subsets)) {
		ss := subsets[k]
		byIP := func(as []corev1.EndpointAddress) func(i, j int) bool {
			return func(i, j int) bool {
				if as[i].IP != as[j].IP {
					return as[i].IP < as[j].IP
				}
				return as[i].TargetRef.UID < as[j].TargetRef.UID
			}
		}
		sort.Slice(ss.Addresses, byIP(ss.Addresses))
		sort.Slice(ss.NotReadyAddresses, byIP(ss.NotReadyAddresses))
		out = append(out, *ss)
	}
	return out
}

// endpointsLabels are the Service's labels, and the headless mark.
func endpointsLabels(svc *corev1.Service) map[string]string {
	l := map[string]string{}
	for k, v := range svc.Labels {
		l[k] = v
	}
	if isHeadless(svc) {
		l[headlessLabel] = ""
	} else {
		delete(l, headlessLabel)
	}
	if len(l) == 0 {
		return nil
	}
	return l
}

// syncEndpoints writes the Service's Endpoints when its subsets or labels
// changed, with the time of the change (EndpointsLastChangeTriggerTime).
func (c *Controller) syncEndpoints(svc *corev1.Service, ps []*corev1.Pod, have *corev1.Endpoints) error {
	subsets := desiredSubsets(svc, ps)
	lbls := endpointsLabels(svc)
	now := c.cfg.Now().UTC().Format(time.RFC3339Nano)
	if have == nil {
		ep := &corev1.Endpoints{
			ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: lbls,
				Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: now}},
			Subsets: subsets,
		}
		if err := c.cfg.API.Create(endpointsKind, ep); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create: %w", err)
		}
		return nil
	}
	_, err := c.cfg.Store.Modify(endpoints, have.Namespace, have.Name, &corev1.Endpoints{}, func(cur store.Object) (store.Decision, error) {
		x := cur.(*corev1.Endpoints)
		if same(x.Subsets, subsets) && same(x.Labels, lbls) {
			return store.Decision{}, errUnchanged
		}
		x.Subsets, x.Labels = subsets, lbls
		if x.Annotations == nil {
			x.Annotations = map[string]string{}
		}
		x.Annotations[corev1.EndpointsLastChangeTriggerTime] = now
		return store.Decision{}, nil
	})
	if errors.Is(err, errUnchanged) || errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return nil
}
