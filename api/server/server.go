// Package server serves the Kubernetes API on berthd's socket: hand-written
// handlers on k8s.io/api types and apimachinery's wire types (not
// k8s.io/apiserver, whose generic server would cost more memory than the
// whole agent). The real kubectl is the measure of what it must answer.
//
// This first part serves /version, the health checks, legacy discovery
// (/api, /api/v1, /apis), Namespaces and Pods (get, list with label and
// field selectors, watch with resumption, create with strict decoding,
// delete with preconditions) and server-side Tables with kubectl's
// columns. Errors become metav1.Status here only (errors.go).
package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"

	"github.com/berth-dev/berth/agent/store"
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
	Update(res store.Resource, obj store.Object, bumpGeneration bool) error
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
}

// Server is the API's http.Handler.
type Server struct {
	store Store
	log   hclog.Logger
	opts  Options
	kinds map[string]*kind // by resource name
}

// New returns the API over st, making sure the namespace "default" exists
// as on every cluster.
func New(st Store, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	s := &Server{store: st, log: opts.Log.Named("api"), opts: opts, kinds: map[string]*kind{}}
	for _, k := range []*kind{namespaceKind(), podKind()} {
		s.kinds[k.resource] = k
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: metav1.NamespaceDefault}}
	s.kinds["namespaces"].prepare(ns)
	if err := st.Create("namespaces", ns); err != nil && !apierrors.IsAlreadyExists(toStatus(err, s.kinds["namespaces"].gr(), s.kinds["namespaces"].gk(), ns.Name)) {
		return nil, fmt.Errorf("create namespace default: %w", err)
	}
	return s, nil
}

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch path {
	case "/version":
		writeJSON(w, http.StatusOK, version.Info{
			Major: "1", Minor: KubernetesMinor, GitVersion: GitVersion,
			GoVersion: runtime.Version(), Compiler: runtime.Compiler, Platform: runtime.GOOS + "/" + runtime.GOARCH,
		})
		return
	case "/healthz", "/livez", "/readyz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "ok")
		return
	case "/api":
		writeJSON(w, http.StatusOK, &metav1.APIVersions{
			TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}},
		})
		return
	case "/apis":
		writeJSON(w, http.StatusOK, &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}})
		return
	case "/api/v1":
		s.discovery(w)
		return
	}
	if rest, ok := strings.CutPrefix(path, "/api/v1/"); ok {
		s.serveCore(w, r, strings.Split(rest, "/"))
		return
	}
	s.writeStatus(w, apierrors.NewNotFound(schemaGR("", ""), ""), r)
}

// discovery lists what /api/v1 serves, with verbs and subresources.
func (s *Server) discovery(w http.ResponseWriter) {
	list := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: "v1"}
	for _, name := range []string{"namespaces", "pods"} {
		k := s.kinds[name]
		list.APIResources = append(list.APIResources, metav1.APIResource{
			Name: k.resource, SingularName: k.singular, Namespaced: k.namespaced, Kind: k.kind,
			Verbs: metav1.Verbs{"create", "delete", "get", "list", "watch"}, ShortNames: k.shortNames,
			Categories: k.categories,
		})
		for _, sub := range k.subresources {
			list.APIResources = append(list.APIResources, metav1.APIResource{
				Name: k.resource + "/" + sub, Namespaced: k.namespaced, Kind: k.kind, Verbs: metav1.Verbs{"get"},
			})
		}
	}
	writeJSON(w, http.StatusOK, list)
}

// serveCore routes /api/v1/... :
//
//	namespaces[/NAME]             pods (all namespaces)
//	namespaces/NS/pods[/NAME[/status]]
func (s *Server) serveCore(w http.ResponseWriter, r *http.Request, parts []string) {
	var ns, res, name, sub string
	switch {
	case len(parts) == 1:
		res = parts[0]
	case len(parts) == 2 && parts[0] == "namespaces":
		res, name = parts[0], parts[1]
	case len(parts) >= 3 && parts[0] == "namespaces" && len(parts) <= 5:
		ns, res = parts[1], parts[2]
		if len(parts) >= 4 {
			name = parts[3]
		}
		if len(parts) == 5 {
			sub = parts[4]
		}
	default:
		s.writeStatus(w, apierrors.NewNotFound(schemaGR("", ""), strings.Join(parts, "/")), r)
		return
	}
	k := s.kinds[res]
	if k == nil || (ns != "" && !k.namespaced) || (sub != "" && !k.hasSubresource(sub)) {
		s.writeStatus(w, apierrors.NewNotFound(schemaGR("", res), name), r)
		return
	}
	s.serveKind(w, r, k, ns, name)
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
