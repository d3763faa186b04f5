package authz

import (
	"net/http"
	"strings"
)

// RequestInfo is what a request asks to do, in the apiserver's terms.
type RequestInfo struct {
	// IsResourceRequest is false for /version, /healthz, discovery, ...
	IsResourceRequest bool
	// Path is the URL path (for non-resource requests).
	Path string
	// Verb is get, list, watch, create, update, patch, delete,
	// deletecollection, proxy for resource requests; the lowercase HTTP
	// method for the others.
	Verb                                   string
	APIPrefix, APIGroup, APIVersion        string
	Namespace, Resource, Subresource, Name string
}

// Parse reads a request the way k8s.io/apiserver's RequestInfoFactory
// (pkg/endpoints/request/requestinfo.go, Apache-2.0, The Kubernetes
// Authors) does, restricted to what berth serves: prefixes "api"
// (groupless) and "apis", the special verbs "watch" and "proxy", and the
// namespace subresources "status" and "finalize". k8s.io/apiserver is not
// a dependency (its generic server is what berth chose not to carry), and
// neither client-go nor apimachinery export this parser.
//
// Paths it cannot make sense of are non-resource requests, as there.
func Parse(r *http.Request) RequestInfo {
	ri := RequestInfo{Path: r.URL.Path, Verb: strings.ToLower(r.Method)}
	parts := splitPath(r.URL.Path)
	if len(parts) < 3 || (parts[0] != "api" && parts[0] != "apis") {
		return ri
	}
	ri.APIPrefix = parts[0]
	parts = parts[1:]
	if ri.APIPrefix == "apis" {
		// Four parts at least: /apis/GROUP/VERSION/RESOURCE.
		if len(parts) < 3 {
			return ri
		}
		ri.APIGroup = parts[0]
		parts = parts[1:]
	}
	ri.IsResourceRequest = true
	ri.APIVersion = parts[0]
	parts = parts[1:]

	if parts[0] == "watch" || parts[0] == "proxy" {
		if len(parts) < 2 {
			// The apiserver answers this with an error; nothing
			// here may be allowed by it, so a verb no rule grants.
			ri.Verb = "unknown"
			return ri
		}
		ri.Verb = parts[0]
		parts = parts[1:]
	} else {
		switch r.Method {
		case http.MethodPost:
			ri.Verb = "create"
		case http.MethodGet, http.MethodHead:
			ri.Verb = "get"
		case http.MethodPut:
			ri.Verb = "update"
		case http.MethodPatch:
			ri.Verb = "patch"
		case http.MethodDelete:
			ri.Verb = "delete"
		default:
			ri.Verb = ""
		}
	}

	if parts[0] == "namespaces" {
		if len(parts) > 1 {
			ri.Namespace = parts[1]
			// /namespaces/NS/RESOURCE...: the resource in its own right,
			// unless it is the namespace's own subresource.
			if len(parts) > 2 && parts[2] != "status" && parts[2] != "finalize" {
				parts = parts[2:]
			}
		}
	}

	switch {
	case len(parts) >= 3 && ri.Verb != "proxy":
		ri.Subresource = parts[2]
		fallthrough
	case len(parts) >= 2:
		ri.Name = parts[1]
		fallthrough
	case len(parts) >= 1:
		ri.Resource = parts[0]
	}

	if ri.Name == "" && ri.Verb == "get" {
		// metav1.ListOptions' watch parameter, decoded as the
		// apiserver's parameter codec decodes a bool.
		if w := r.URL.Query().Get("watch"); w == "true" || w == "1" {
			ri.Verb = "watch"
		} else {
			ri.Verb = "list"
		}
		if name, ok := exactName(r.URL.Query().Get("fieldSelector")); ok {
			ri.Name = name
		}
	}
	if ri.Name == "" && ri.Verb == "delete" {
		ri.Verb = "deletecollection"
	}
	return ri
}

// exactName is fieldSelector's metadata.name=X (or ==X) when that is the
// whole selector, as the apiserver narrows a list to one name for
// authorization (kubectl get pod x -w lists with it).
func exactName(sel string) (string, bool) {
	if sel == "" || strings.Contains(sel, ",") {
		return "", false
	}
	k, v, ok := strings.Cut(sel, "=")
	if !ok || strings.HasSuffix(k, "!") {
		return "", false
	}
	v = strings.TrimPrefix(v, "=")
	if strings.TrimSpace(k) != "metadata.name" || v == "" || v == "." || v == ".." || strings.ContainsAny(v, "/%") {
		return "", false
	}
	return v, true
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}
