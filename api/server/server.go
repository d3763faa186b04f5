// Package server serves the Kubernetes API on berthd's socket: hand-written
// handlers on k8s.io/api types and apimachinery's wire types (not
// k8s.io/apiserver, whose generic server would cost more memory than the
// whole agent). The real kubectl is the measure of what it must answer.
//
// It serves /version, the health checks, discovery (aggregated and legacy),
// /openapi/v3 (api/openapi), and the kinds: Namespace, Pod (kinds_core.go),
// ConfigMap, Secret (kinds_config.go), Event in core/v1 and events.k8s.io/v1
// (kinds_events.go), Node (kinds_node.go), ResourceQuota, LimitRange
// (kinds_quota.go), PersistentVolumeClaim, PersistentVolume and
// StorageClass (kinds_storage.go), each with the generic verbs
// (handlers.go and its neighbours), the apiserver's validation and field
// selectors, and server-side Tables with kubectl's columns. docs/api.md
// says what is served and how it differs from a cluster. Errors become
// metav1.Status here only (errors.go).
package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/api/openapi"
)

// KubernetesMinor is the Kubernetes minor version whose API berth serves
// (k8s.io/api's): kubectl's version skew check and /usr/bin/kubectl's
// dispatcher read it from /version.
const KubernetesMinor = "32"

// GitVersion is berth's version as /version reports it: a Kubernetes version
// kubectl accepts, with berth's own build after "-berth.".
var GitVersion = "v1.32.0-berth.0"

// Store is what the API needs of desired state; *store.Store provides it.
type Store interface {
	Create(res store.Resource, obj store.Object) error
	Get(res store.Resource, ns, name string, obj store.Object) error
	List(res store.Resource, ns string, fn func(data []byte) error) (uint64, error)
	// Scan is List without copies: data is valid only until fn returns.
	Scan(res store.Resource, ns string, fn func(data []byte) error) (uint64, error)
	Update(res store.Resource, obj store.Object, bumpGeneration bool) error
	// Modify is a read-modify-write in one transaction: update, patch and
	// delete decide on the object as stored, never on a stale copy.
	Modify(res store.Resource, ns, name string, obj store.Object, fn func(cur store.Object) (store.Decision, error)) (bool, error)
	Delete(res store.Resource, ns, name string, uid types.UID, resourceVersion string) ([]byte, error)
	Watch(ctx context.Context, res store.Resource, ns string, from uint64) (*store.Watch, error)
}

var _ Store = (*store.Store)(nil)

// Options configure the API.
type Options struct {
	Log hclog.Logger
	// NodeName is this node's name: pods are bound to it on create, as the
	// scheduler would bind them (default: the host name).
	NodeName string
	// Logs serves pods/log (agent/logs.Journal); nil: pods/log answers
	// 503.
	Logs Logs
	// Streams serves pods/exec, pods/attach and pods/portforward
	// (agent/streams.Service); nil: they answer 503.
	Streams Streams
	// Admission is the admission chain every create and update goes through
	// (agent/admission.Admitter); nil: none (tests of other parts).
	Admission Admission
	// ServiceCIDR is the IPv4 range Services' cluster IPs come from
	// (default DefaultServiceCIDR); NodePortBase and NodePortSize the
	// node ports' (default 30000 and 2768: 30000-32767).
	ServiceCIDR                netip.Prefix
	NodePortBase, NodePortSize int
	// ReservedServiceIPs are addresses of the range no Service gets (the
	// cluster DNS's).
	ReservedServiceIPs []netip.Addr
	// Metrics serves metrics.k8s.io (agent/usage.Sampler); nil: the group
	// is not served.
	Metrics Metrics
}

// Admission is the agent's admission chain: LimitRanger and ResourceQuota
// (agent/admission.Admitter provides it).
type Admission interface {
	// Mutate is mutating admission (LimitRanger's defaults) of a write of
	// obj to res; old is nil for a create.
	Mutate(res store.Resource, obj, old runtime.Object) error
	// Validate is validating admission (LimitRanger, then ResourceQuota)
	// of a create, after the object's own validation. commit must be
	// called once the write is done, stored or not.
	Validate(res store.Resource, obj, old runtime.Object, dryRun bool) (commit func(stored bool), err error)
	// Update starts validating admission of an update in namespace ns:
	// validate runs inside the store's write, after the object's own
	// validation, with the stored object as old; done must be called once
	// the write is done, stored or not.
	Update(ns string) (validate func(res store.Resource, obj, old runtime.Object) error, done func(stored bool))
}

// ResourceNames are the resources the API serves, as the store names them:
// what a quota may count (count/<resource>).
func (s *Server) ResourceNames() []store.Resource {
	var out []store.Resource
	for _, k := range s.order {
		if k.namespaced && k.toStored == nil {
			out = append(out, store.Resource(kindKey(k.group, k.resource)))
		}
	}
	return out
}

// Server is the API's http.Handler.
type Server struct {
	store   Store
	log     hclog.Logger
	opts    Options
	kinds   map[string]*kind // by kindKey
	order   []*kind          // as discovery lists them
	openapi *openapi.Handler
	nsKick  chan struct{} // a namespace was marked for deletion (RunNamespaces)
	// hostPortMu serialises creates of pods with host ports (admitHostPorts).
	hostPortMu sync.Mutex
	// serviceMu serialises Services' allocations (servicealloc.go);
	// svcRanges are the ranges they come from.
	serviceMu sync.Mutex
	svcRanges serviceRanges
}

// kindKey names a kind in Server.kinds: the resource for the core group
// ("pods"), group/resource for others ("events.k8s.io/events").
func kindKey(group, resource string) string {
	if group == "" {
		return resource
	}
	return group + "/" + resource
}

// New returns the API over st, making sure the namespace "default" exists
// as on every cluster.
func New(st Store, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	s := &Server{store: st, log: opts.Log.Named("api"), opts: opts, kinds: map[string]*kind{}, nsKick: make(chan struct{}, 1)}
	s.svcRanges = serviceRanges{cidr: opts.ServiceCIDR, portBase: opts.NodePortBase, portSize: opts.NodePortSize, reserved: opts.ReservedServiceIPs}
	if !s.svcRanges.cidr.IsValid() {
		s.svcRanges.cidr = DefaultServiceCIDR
	}
	if s.svcRanges.portBase == 0 {
		s.svcRanges.portBase, s.svcRanges.portSize = DefaultNodePortBase, DefaultNodePortSize
	}
	if c := s.svcRanges.cidr; !c.Addr().Is4() || c.Bits() > 30 || c.Bits() < 8 {
		return nil, fmt.Errorf("service range %s: want an IPv4 range from /8 to /30", c)
	}
	if b, n := s.svcRanges.portBase, s.svcRanges.portSize; b < 1 || n < 1 || b+n-1 > 65535 {
		return nil, fmt.Errorf("node port range %d-%d: out of 1-65535", b, b+n-1)
	}
	for _, k := range []*kind{namespaceKind(), podKind(), configMapKind(), secretKind(), eventKind(), nodeKind(), deploymentKind(), replicaSetKind(), eventsV1Kind(),
		resourceQuotaKind(), limitRangeKind(), persistentVolumeClaimKind(st), persistentVolumeKind(), storageClassKind(),
		serviceKind(), endpointsKind(), endpointSliceKind()} {
		if k.version == "" {
			k.version = "v1"
		}
		if k.decodeList == nil {
			k.decodeList = func(data []byte) (store.Object, error) {
				obj := k.new()
				if err := json.Unmarshal(data, obj); err != nil {
					return nil, err
				}
				return obj, nil
			}
		}
		s.kinds[kindKey(k.group, k.resource)] = k
		s.order = append(s.order, k)
	}
	var err error
	if s.openapi, err = s.openAPI(); err != nil {
		return nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: metav1.NamespaceDefault}}
	s.kinds["namespaces"].prepare(ns)
	if err := st.Create("namespaces", ns); err != nil && !apierrors.IsAlreadyExists(toStatus(err, s.kinds["namespaces"].gr(), s.kinds["namespaces"].gk(), ns.Name)) {
		return nil, fmt.Errorf("create namespace default: %w", err)
	}
	return s, nil
}

// verbs is what discovery (and OpenAPI) says k serves: every kind all of
// them.
func verbs(k *kind) []string {
	return []string{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
}

// apiScheme knows the Go types of the kinds served, for their list types.
var apiScheme = func() *runtime.Scheme {
	sch := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, eventsv1.AddToScheme, storagev1.AddToScheme, appsv1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(sch); err != nil {
			panic(err)
		}
	}
	return sch
}()

// openAPI describes the kinds served for /openapi/v3.
func (s *Server) openAPI() (*openapi.Handler, error) {
	var rs []openapi.Resource
	for _, k := range s.order {
		gv := schema.GroupVersion{Group: k.group, Version: k.version}
		obj, err := apiScheme.New(gv.WithKind(k.kind))
		if err != nil {
			return nil, fmt.Errorf("openapi: %w", err)
		}
		list, err := apiScheme.New(gv.WithKind(k.kind + "List"))
		if err != nil {
			return nil, fmt.Errorf("openapi: %w", err)
		}
		rs = append(rs, openapi.Resource{Group: k.group, Version: k.version, Resource: k.resource, Kind: k.kind,
			Namespaced: k.namespaced, Verbs: verbs(k), Subresources: objectSubresources(k.subresources), Object: obj, List: list})
	}
	return openapi.NewHandler(rs), nil
}

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch path {
	case "/version":
		writeJSON(w, http.StatusOK, version.Info{
			Major: "1", Minor: KubernetesMinor, GitVersion: GitVersion,
			GoVersion: goruntime.Version(), Compiler: goruntime.Compiler, Platform: goruntime.GOOS + "/" + goruntime.GOARCH,
		})
		return
	case "/healthz", "/livez", "/readyz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "ok")
		return
	case "/api":
		if wantsAggregated(r) {
			s.aggregated(w, "")
			return
		}
		writeJSON(w, http.StatusOK, &metav1.APIVersions{
			TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}},
		})
		return
	case "/apis":
		if wantsAggregated(r) {
			s.aggregated(w, "apis")
			return
		}
		writeJSON(w, http.StatusOK, &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: s.groups()})
		return
	case "/api/v1":
		s.discovery(w, "", "v1")
		return
	case "/openapi/v3":
		s.openapi.ServeHTTP(w, r)
		return
	}
	if strings.HasPrefix(path, "/openapi/v3/") {
		s.openapi.ServeHTTP(w, r)
		return
	}
	if rest, ok := strings.CutPrefix(path, "/api/v1/"); ok {
		s.serveResource(w, r, "", strings.Split(rest, "/"))
		return
	}
	if rest, ok := strings.CutPrefix(path, "/apis/"); ok {
		parts := strings.Split(rest, "/")
		if parts[0] == metricsGroup && s.opts.Metrics != nil {
			switch {
			case len(parts) == 1:
				g := metricsAPIGroup()
				g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
				writeJSON(w, http.StatusOK, &g)
			case parts[1] != metricsVersion:
				s.writeStatus(w, apierrors.NewNotFound(schemaGR("", ""), ""), r)
			case len(parts) == 2:
				writeJSON(w, http.StatusOK, &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
					GroupVersion: metricsGV.String(), APIResources: metricsResources})
			default:
				s.serveMetrics(w, r, parts[2:])
			}
			return
		}
		for _, g := range s.groups() {
			switch {
			case g.Name != parts[0]:
				continue
			case len(parts) == 1:
				g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
				writeJSON(w, http.StatusOK, &g)
				return
			case parts[1] != g.PreferredVersion.Version:
				// Every group berth serves has one version.
			case len(parts) == 2:
				s.discovery(w, g.Name, parts[1])
				return
			default:
				s.serveResource(w, r, g.Name, parts[2:])
				return
			}
		}
	}
	s.writeStatus(w, apierrors.NewNotFound(schemaGR("", ""), ""), r)
}

// groups are the API groups served besides the core group, one version
// each.
func (s *Server) groups() []metav1.APIGroup {
	groups := []metav1.APIGroup{}
	seen := map[string]bool{}
	for _, k := range s.order {
		if k.group == "" || seen[k.group] {
			continue
		}
		seen[k.group] = true
		gv := metav1.GroupVersionForDiscovery{GroupVersion: k.group + "/" + k.version, Version: k.version}
		groups = append(groups, metav1.APIGroup{Name: k.group, Versions: []metav1.GroupVersionForDiscovery{gv}, PreferredVersion: gv})
	}
	if s.opts.Metrics != nil {
		groups = append(groups, metricsAPIGroup())
	}
	return groups
}

func metricsAPIGroup() metav1.APIGroup {
	gv := metav1.GroupVersionForDiscovery{GroupVersion: metricsGV.String(), Version: metricsVersion}
	return metav1.APIGroup{Name: metricsGroup, Versions: []metav1.GroupVersionForDiscovery{gv}, PreferredVersion: gv}
}

// discovery lists what a group-version serves, with verbs and
// subresources, as /api/v1 and /apis/GROUP/VERSION do.
func (s *Server) discovery(w http.ResponseWriter, group, version string) {
	gv := schema.GroupVersion{Group: group, Version: version}.String()
	list := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv}
	for _, k := range s.order {
		if k.group != group || k.version != version {
			continue
		}
		list.APIResources = append(list.APIResources, metav1.APIResource{
			Name: k.resource, SingularName: k.singular, Namespaced: k.namespaced, Kind: k.kind,
			Verbs: verbs(k), ShortNames: k.shortNames, Categories: k.categories,
		})
		for _, sub := range k.subresources {
			res := metav1.APIResource{Name: k.resource + "/" + sub, Namespaced: k.namespaced, Kind: k.kind, Verbs: subresourceVerbs(sub)}
			if sub == "scale" {
				res.Group, res.Version, res.Kind = scaleSubresource.Group, scaleSubresource.Version, scaleSubresource.Kind
			}
			list.APIResources = append(list.APIResources, res)
		}
	}
	sort.Slice(list.APIResources, func(i, j int) bool { return list.APIResources[i].Name < list.APIResources[j].Name })
	writeJSON(w, http.StatusOK, list)
}

// aggregatedType is the media type of aggregated discovery (apidiscovery
// v2), which kubectl asks for first: one request answers for every
// group-version, where legacy discovery takes one per group-version.
const aggregatedType = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

func wantsAggregated(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		params := map[string]bool{}
		for _, p := range strings.Split(part, ";") {
			params[strings.TrimSpace(p)] = true
		}
		if params["application/json"] && params["g=apidiscovery.k8s.io"] && params["v=v2"] && params["as=APIGroupDiscoveryList"] {
			return true
		}
	}
	return false
}

// aggregated answers /api (the core group) or /apis (the others) in the
// aggregated form, with the same resources and verbs as legacy discovery.
func (s *Server) aggregated(w http.ResponseWriter, root string) {
	list := &apidiscoveryv2.APIGroupDiscoveryList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupDiscoveryList", APIVersion: "apidiscovery.k8s.io/v2"},
		Items: []apidiscoveryv2.APIGroupDiscovery{}}
	var groups []string
	if root == "" {
		groups = []string{""}
	} else {
		for _, g := range s.groups() {
			groups = append(groups, g.Name)
		}
	}
	for _, group := range groups {
		item := apidiscoveryv2.APIGroupDiscovery{ObjectMeta: metav1.ObjectMeta{Name: group}}
		if group == metricsGroup {
			list.Items = append(list.Items, metricsDiscovery())
			continue
		}
		version := apidiscoveryv2.APIVersionDiscovery{Version: "v1", Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent}
		for _, k := range s.order {
			if k.group != group {
				continue
			}
			version.Version = k.version
			gvk := &metav1.GroupVersionKind{Group: k.group, Version: k.version, Kind: k.kind}
			scope := apidiscoveryv2.ScopeCluster
			if k.namespaced {
				scope = apidiscoveryv2.ScopeNamespace
			}
			rd := apidiscoveryv2.APIResourceDiscovery{Resource: k.resource, ResponseKind: gvk, Scope: scope, SingularResource: k.singular,
				Verbs: verbs(k), ShortNames: k.shortNames, Categories: k.categories}
			for _, sub := range k.subresources {
				kind := gvk
				if sub == "scale" {
					kind = &metav1.GroupVersionKind{Group: scaleSubresource.Group, Version: scaleSubresource.Version, Kind: scaleSubresource.Kind}
				}
				rd.Subresources = append(rd.Subresources, apidiscoveryv2.APISubresourceDiscovery{Subresource: sub, ResponseKind: kind, Verbs: subresourceVerbs(sub)})
			}
			version.Resources = append(version.Resources, rd)
		}
		sort.Slice(version.Resources, func(i, j int) bool { return version.Resources[i].Resource < version.Resources[j].Resource })
		item.Versions = []apidiscoveryv2.APIVersionDiscovery{version}
		list.Items = append(list.Items, item)
	}
	w.Header().Set("Content-Type", aggregatedType)
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(list)
}

// metricsDiscovery is metrics.k8s.io in aggregated discovery.
func metricsDiscovery() apidiscoveryv2.APIGroupDiscovery {
	v := apidiscoveryv2.APIVersionDiscovery{Version: metricsVersion, Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent}
	for _, r := range metricsResources {
		scope := apidiscoveryv2.ScopeCluster
		if r.Namespaced {
			scope = apidiscoveryv2.ScopeNamespace
		}
		v.Resources = append(v.Resources, apidiscoveryv2.APIResourceDiscovery{Resource: r.Name, Scope: scope, Verbs: r.Verbs,
			ResponseKind: &metav1.GroupVersionKind{Group: metricsGroup, Version: metricsVersion, Kind: r.Kind}})
	}
	return apidiscoveryv2.APIGroupDiscovery{ObjectMeta: metav1.ObjectMeta{Name: metricsGroup}, Versions: []apidiscoveryv2.APIVersionDiscovery{v}}
}

// serveResource routes the rest of a group-version's path:
//
//	RESOURCE[/NAME[/SUB]]                      cluster-scoped kinds, and
//	                                           namespaced ones in all namespaces (list, watch)
//	namespaces/NS/RESOURCE[/NAME[/SUB]]        namespaced kinds
func (s *Server) serveResource(w http.ResponseWriter, r *http.Request, group string, parts []string) {
	var ns, res, name, sub string
	switch {
	case len(parts) >= 3 && parts[0] == "namespaces" && len(parts) <= 5:
		ns, res = parts[1], parts[2]
		if len(parts) >= 4 {
			name = parts[3]
		}
		if len(parts) == 5 {
			sub = parts[4]
		}
	case len(parts) <= 3:
		res = parts[0]
		if len(parts) >= 2 {
			name = parts[1]
		}
		if len(parts) == 3 {
			sub = parts[2]
		}
	default:
		s.writeStatus(w, apierrors.NewNotFound(schemaGR(group, ""), strings.Join(parts, "/")), r)
		return
	}
	k := s.kinds[kindKey(group, res)]
	if k == nil || (ns != "" && !k.namespaced) || (ns == "" && k.namespaced && name != "") ||
		(sub != "" && !k.hasSubresource(sub)) || name == "" && sub != "" {
		s.writeStatus(w, apierrors.NewNotFound(schemaGR(group, res), name), r)
		return
	}
	if !has(verbs(k), "create") && r.Method != http.MethodGet {
		s.writeStatus(w, apierrors.NewMethodNotSupported(k.gr(), strings.ToLower(r.Method)), r)
		return
	}
	if q := r.URL.Query().Get("watch"); k.group == "events.k8s.io" && (q == "1" || q == "true") {
		// A watch streams objects as stored: their core/v1 form.
		w = &eventsV1Writer{ResponseWriter: w}
	}
	s.serveKind(w, r, k, ns, name)
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeStatus answers with se's Status; 5xx are logged, as the layer that
// handles them.
func (s *Server) writeStatus(w http.ResponseWriter, se *apierrors.StatusError, r *http.Request) {
	st := statusOf(se)
	if st.Code >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", st.Message)
	}
	writeJSON(w, int(st.Code), st)
}
