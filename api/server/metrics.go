package server

import (
	"net/http"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

// Metrics is the resource metrics API's source (agent/usage.Sampler):
// what metrics-server answers on a cluster, from the node's own cgroups.
type Metrics interface {
	// PodMetrics are the pods of ns ("": all) that have figures.
	PodMetrics(ns string) []metricsv1beta1.PodMetrics
	// NodeMetrics is the node's (false: no figures yet).
	NodeMetrics(node string) (metricsv1beta1.NodeMetrics, bool)
}

// metricsGroup is metrics.k8s.io, which kubectl top reads. Only
// v1beta1 exists: no kubectl asks for another.
const (
	metricsGroup   = "metrics.k8s.io"
	metricsVersion = "v1beta1"
)

var metricsGV = schema.GroupVersion{Group: metricsGroup, Version: metricsVersion}

// metricsResources are the group's resources for discovery: read only,
// as metrics-server serves them.
var metricsResources = []metav1.APIResource{
	{Name: "nodes", SingularName: "", Namespaced: false, Kind: "NodeMetrics", Verbs: []string{"get", "list"}},
	{Name: "pods", SingularName: "", Namespaced: true, Kind: "PodMetrics", Verbs: []string{"get", "list"}},
}

// serveMetrics answers metrics.k8s.io/v1beta1's paths below the version:
// nodes[/NAME], pods (every namespace), namespaces/NS/pods[/NAME].
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, parts []string) {
	var ns, res, name string
	switch {
	case len(parts) >= 3 && len(parts) <= 4 && parts[0] == "namespaces":
		ns, res = parts[1], parts[2]
		if len(parts) == 4 {
			name = parts[3]
		}
	case len(parts) <= 2:
		res = parts[0]
		if len(parts) == 2 {
			name = parts[1]
		}
	default:
		s.writeStatus(w, apierrors.NewNotFound(metricsGV.WithResource("").GroupResource(), ""), r)
		return
	}
	gr := schema.GroupResource{Group: metricsGroup, Resource: res}
	if (res != "pods" && res != "nodes") || (res == "nodes" && ns != "") {
		s.writeStatus(w, apierrors.NewNotFound(gr, name), r)
		return
	}
	if r.Method != http.MethodGet {
		s.writeStatus(w, apierrors.NewMethodNotSupported(gr, verbOf(r.Method)), r)
		return
	}
	if q := r.URL.Query().Get("watch"); q == "1" || q == "true" {
		s.writeStatus(w, apierrors.NewMethodNotSupported(gr, "watch"), r)
		return
	}
	sel := labels.Everything()
	if q := r.URL.Query().Get("labelSelector"); q != "" && name == "" {
		var err error
		if sel, err = labels.Parse(q); err != nil {
			s.writeStatus(w, apierrors.NewBadRequest(err.Error()), r)
			return
		}
	}
	if s.opts.Metrics == nil {
		s.writeStatus(w, apierrors.NewServiceUnavailable("the resource metrics API has no source on this node"), r)
		return
	}
	typeMeta := func(kind string) metav1.TypeMeta {
		return metav1.TypeMeta{Kind: kind, APIVersion: metricsGV.String()}
	}
	if res == "nodes" {
		nm, ok := s.opts.Metrics.NodeMetrics(s.nodeName())
		var node corev1.Node
		if ok && s.store.Get("nodes", "", nm.Name, &node) == nil {
			nm.Labels = node.Labels
		}
		if name != "" {
			if !ok || name != nm.Name {
				// metrics-server's words for a node it has no figures of.
				s.writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: metricsGroup, Resource: "nodemetrics"}, name), r)
				return
			}
			nm.TypeMeta = typeMeta("NodeMetrics")
			writeJSON(w, http.StatusOK, &nm)
			return
		}
		list := &metricsv1beta1.NodeMetricsList{TypeMeta: typeMeta("NodeMetricsList"), Items: []metricsv1beta1.NodeMetrics{}}
		if ok && sel.Matches(labels.Set(nm.Labels)) {
			list.Items = append(list.Items, nm)
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	pms := s.opts.Metrics.PodMetrics(ns)
	if name != "" {
		for i := range pms {
			if pms[i].Name == name {
				pms[i].TypeMeta = typeMeta("PodMetrics")
				writeJSON(w, http.StatusOK, &pms[i])
				return
			}
		}
		s.writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: metricsGroup, Resource: "podmetrics"}, name), r)
		return
	}
	list := &metricsv1beta1.PodMetricsList{TypeMeta: typeMeta("PodMetricsList"), Items: []metricsv1beta1.PodMetrics{}}
	for _, pm := range pms {
		if sel.Matches(labels.Set(pm.Labels)) {
			list.Items = append(list.Items, pm)
		}
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	writeJSON(w, http.StatusOK, list)
}

// verbOf is the API verb of a method other than GET, for the apiserver's
// MethodNotSupported message.
func verbOf(method string) string {
	switch method {
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return method
}
