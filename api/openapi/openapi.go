// Package openapi serves the OpenAPI v3 documents of berth's Kubernetes API:
// the index at /openapi/v3 and one document per group-version
// (/openapi/v3/api/v1, /openapi/v3/apis/events.k8s.io/v1), with the
// apiserver's hash URLs and caching headers.
//
// kubectl needs them for apply and create with --validate=strict (its
// default): it looks for the PATCH operation of the object's kind and its
// fieldValidation parameter, then leaves validation to the server; apply
// computes its strategic merge patch from the component schemas
// (x-kubernetes-patch-strategy, -merge-key); explain prints the schemas'
// descriptions. The generated definitions the apiserver serves live only in
// k8s.io/kubernetes, so the schemas are built here by reflection over the
// k8s.io/api Go types (schema.go), once, on the first request: a berthd that
// nobody applies to never pays for them.
package openapi

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Resource is one served resource of a group-version.
type Resource struct {
	Group, Version string
	Resource       string // plural, as in the path: "pods"
	Kind           string
	Namespaced     bool
	// Verbs are the discovery verbs served: get, list, watch, create,
	// update, patch, delete, deletecollection.
	Verbs []string
	// Subresources served with get, update and patch: "status".
	Subresources []string
	// Object and List are zero values of the Go types (&corev1.Pod{},
	// &corev1.PodList{}) whose schemas the documents carry.
	Object, List any
}

// Handler serves /openapi/v3 and the group-version documents.
type Handler struct {
	resources []Resource
	once      sync.Once
	docs      map[string]*doc // by "api/v1", "apis/events.k8s.io/v1"
	index     *doc
	err       error
	built     time.Time
}

type doc struct {
	data []byte
	hash string
}

// NewHandler returns the handler for resources; nothing is built until the
// first request.
func NewHandler(resources []Resource) *Handler {
	return &Handler{resources: resources}
}

// gvPath is a group-version's key in the index: "api/v1" for the core group.
func gvPath(group, version string) string {
	if group == "" {
		return "api/" + version
	}
	return "apis/" + group + "/" + version
}

func (h *Handler) build() {
	h.once.Do(func() {
		h.built = time.Now()
		byGV := map[string][]Resource{}
		for _, r := range h.resources {
			byGV[gvPath(r.Group, r.Version)] = append(byGV[gvPath(r.Group, r.Version)], r)
		}
		h.docs = map[string]*doc{}
		index := map[string]any{}
		for gv, rs := range byGV {
			b, err := json.Marshal(document(rs))
			if err != nil {
				h.err = fmt.Errorf("openapi document %s: %w", gv, err)
				return
			}
			d := &doc{data: b, hash: hash(b)}
			h.docs[gv] = d
			index[gv] = map[string]string{"serverRelativeURL": serverRelativeURL(gv, d.hash)}
		}
		b, err := json.Marshal(map[string]any{"paths": index})
		if err != nil {
			h.err = err
			return
		}
		h.index = &doc{data: b, hash: hash(b)}
	})
}

// hash is the apiserver's ETag of a document: SHA-512, upper-case hex.
func hash(b []byte) string { return fmt.Sprintf("%X", sha512.Sum512(b)) }

func serverRelativeURL(gv, hash string) string {
	return (&url.URL{Path: "/openapi/v3/" + gv, RawQuery: url.Values{"hash": {hash}}.Encode()}).String()
}

// Document returns the JSON document of a group-version ("api/v1") and its
// hash.
func (h *Handler) Document(gv string) ([]byte, string, error) {
	h.build()
	if h.err != nil {
		return nil, "", h.err
	}
	d, ok := h.docs[gv]
	if !ok {
		return nil, "", fmt.Errorf("no OpenAPI document for %s", gv)
	}
	return d.data, d.hash, nil
}

// ServeHTTP answers /openapi/v3 (the index) and /openapi/v3/<gv> as
// k8s.io/kube-openapi's handler3 does for the apiserver: an ETag, and with
// ?hash= the current hash, an immutable public cache; a stale hash is a 301
// to the current URL. Only JSON is served; a client that accepts nothing
// else (protobuf only) gets 406.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.build()
	if h.err != nil {
		http.Error(w, h.err.Error(), http.StatusInternalServerError)
		return
	}
	p := strings.TrimSuffix(r.URL.Path, "/")
	if p == "/openapi/v3" {
		w.Header().Set("Etag", strconv.Quote(h.index.hash))
		w.Header().Set("Content-Type", "application/json")
		http.ServeContent(w, r, "/openapi/v3", h.built, bytes.NewReader(h.index.data))
		return
	}
	gv := strings.TrimPrefix(p, "/openapi/v3/")
	d, ok := h.docs[gv]
	if !ok {
		writeNotFound(w, gv)
		return
	}
	w.Header().Add("Vary", "Accept")
	if !acceptsJSON(r.Header.Get("Accept")) {
		w.WriteHeader(http.StatusNotAcceptable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Etag", strconv.Quote(d.hash))
	if want := r.URL.Query().Get("hash"); want != "" {
		if want != d.hash {
			http.Redirect(w, r, serverRelativeURL(gv, d.hash), http.StatusMovedPermanently)
			return
		}
		w.Header().Set("Cache-Control", "public, immutable")
		w.Header().Set("Expires", time.Now().AddDate(1, 0, 0).Format(time.RFC1123))
	}
	http.ServeContent(w, r, "", h.built, bytes.NewReader(d.data))
}

func acceptsJSON(accept string) bool {
	if accept == "" {
		return true
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		switch mt {
		case "application/json", "application/*", "*/*":
			return true
		}
	}
	return false
}

func writeNotFound(w http.ResponseWriter, gv string) {
	st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
		Message: fmt.Sprintf("the server could not find the requested resource (openapi/v3/%s)", gv),
		Reason:  metav1.StatusReasonNotFound, Code: http.StatusNotFound}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_ = json.NewEncoder(w).Encode(&st)
}

// document is one group-version's OpenAPI v3 document: a path per resource
// and operation served, and the component schemas they reach.
func document(rs []Resource) map[string]any {
	g := newGenerator()
	sort.Slice(rs, func(i, j int) bool { return rs[i].Resource < rs[j].Resource })
	for _, r := range rs {
		gvk := func(kind string) map[string]string {
			return map[string]string{"group": r.Group, "version": r.Version, "kind": kind}
		}
		g.gvks[typeOf(r.Object)] = append(g.gvks[typeOf(r.Object)], gvk(r.Kind))
		g.gvks[typeOf(r.List)] = append(g.gvks[typeOf(r.List)], gvk(r.Kind+"List"))
	}
	// The meta types the operations refer to, named for this group-version
	// as the apiserver names them.
	status := g.define(reflect.TypeOf(metav1.Status{}))
	deleteOptions := g.define(reflect.TypeOf(metav1.DeleteOptions{}))
	g.define(reflect.TypeOf(metav1.WatchEvent{}))
	g.define(reflect.TypeOf(metav1.Patch{}))
	paths := map[string]any{}
	for _, r := range rs {
		obj, list := g.define(typeOf(r.Object)), g.define(typeOf(r.List))
		addPaths(paths, r, obj, list, status, deleteOptions)
	}
	title := "Kubernetes"
	return map[string]any{
		"openapi": "3.0.0",
		"info":    map[string]any{"title": title, "version": "unversioned"},
		"paths":   paths,
		"components": map[string]any{
			"schemas":         g.schemas,
			"securitySchemes": map[string]any{},
		},
	}
}

func typeOf(v any) reflect.Type {
	t := reflect.TypeOf(v)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Parameters as the apiserver declares them (query parameters kubectl
// looks for: fieldValidation on PATCH, above all).
func queryParam(name, typ, desc string) map[string]any {
	return map[string]any{"name": name, "in": "query", "description": desc, "schema": map[string]any{"type": typ, "uniqueItems": true}}
}

var (
	pDryRun          = queryParam("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed")
	pFieldManager    = queryParam("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.")
	pFieldValidation = queryParam("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.")
	pForce           = queryParam("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.")
	pPretty          = queryParam("pretty", "string", "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).")
	pLabelSelector   = queryParam("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything.")
	pFieldSelector   = queryParam("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything.")
	pResourceVersion = queryParam("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.")
	pWatch           = queryParam("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.")
	pTimeoutSeconds  = queryParam("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.")
)

func pathParam(name, desc string) map[string]any {
	return map[string]any{"name": name, "in": "path", "description": desc, "required": true, "schema": map[string]any{"type": "string", "uniqueItems": true}}
}

func refTo(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

func content(schemaName string, types ...string) map[string]any {
	c := map[string]any{}
	for _, t := range types {
		c[t] = map[string]any{"schema": refTo(schemaName)}
	}
	return c
}

var responseTypes = []string{"application/json", "application/yaml", "application/vnd.kubernetes.protobuf"}

func ok(schemaName string) map[string]any {
	return map[string]any{"description": "OK", "content": content(schemaName, responseTypes...)}
}

// addPaths adds r's paths, one operation per verb served.
func addPaths(paths map[string]any, r Resource, obj, list, status, deleteOptions string) {
	prefix := "/" + gvPath(r.Group, r.Version)
	collection := prefix + "/" + r.Resource
	if r.Namespaced {
		collection = prefix + "/namespaces/{namespace}/" + r.Resource
	}
	item := collection + "/{name}"
	// Operation ids as the apiserver's: listCoreV1NamespacedPod,
	// patchEventsV1NamespacedEvent.
	group, _, _ := strings.Cut(r.Group, ".")
	if group == "" {
		group = "core"
	}
	opID := title(group) + title(r.Version)
	scope := ""
	if r.Namespaced {
		scope = "Namespaced"
	}
	op := func(action, verbID, kind string, resp map[string]any, params ...map[string]any) map[string]any {
		o := map[string]any{
			"operationId":                     verbID + opID + scope + kind,
			"tags":                            []string{strings.ToLower(opID)},
			"x-kubernetes-action":             action,
			"x-kubernetes-group-version-kind": map[string]string{"group": r.Group, "version": r.Version, "kind": r.Kind},
			"responses":                       map[string]any{"200": resp, "401": map[string]any{"description": "Unauthorized"}},
		}
		if len(params) > 0 {
			o["parameters"] = params
		}
		return o
	}
	withBody := func(o map[string]any, schemaName string, types ...string) map[string]any {
		o["requestBody"] = map[string]any{"required": true, "content": content(schemaName, types...)}
		return o
	}
	pathParams := func(name bool) []any {
		var ps []any
		if name {
			ps = append(ps, pathParam("name", "name of the "+r.Kind))
		}
		if r.Namespaced {
			ps = append(ps, pathParam("namespace", "object name and auth scope, such as for teams and projects"))
		}
		return append(ps, pPretty)
	}

	coll := map[string]any{"parameters": pathParams(false)}
	if has(r.Verbs, "list") {
		coll["get"] = op("list", "list", r.Kind, ok(list), pLabelSelector, pFieldSelector, pResourceVersion, pTimeoutSeconds, pWatch)
	}
	if has(r.Verbs, "create") {
		coll["post"] = withBody(op("post", "create", r.Kind, ok(obj), pDryRun, pFieldManager, pFieldValidation), obj, "*/*")
	}
	if has(r.Verbs, "deletecollection") {
		coll["delete"] = withBody(op("deletecollection", "deleteCollection", r.Kind, ok(status), pLabelSelector, pFieldSelector, pDryRun), deleteOptions, "*/*")
	}
	paths[collection] = coll
	if r.Namespaced && has(r.Verbs, "list") {
		paths[prefix+"/"+r.Resource] = map[string]any{
			"parameters": []any{pPretty},
			"get":        op("list", "list", r.Kind+"ForAllNamespaces", ok(list), pLabelSelector, pFieldSelector, pResourceVersion, pTimeoutSeconds, pWatch),
		}
	}

	patchTypes := []string{"application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"}
	itemOps := func(path, suffix string, verbs []string) {
		it := map[string]any{"parameters": pathParams(true)}
		if has(verbs, "get") {
			it["get"] = op("get", "read", r.Kind+suffix, ok(obj))
		}
		if has(verbs, "update") {
			it["put"] = withBody(op("put", "replace", r.Kind+suffix, ok(obj), pDryRun, pFieldManager, pFieldValidation), obj, "*/*")
		}
		if has(verbs, "patch") {
			p := op("patch", "patch", r.Kind+suffix, ok(obj), pDryRun, pFieldManager, pFieldValidation, pForce)
			p["requestBody"] = map[string]any{"required": true, "content": func() map[string]any {
				c := map[string]any{}
				for _, t := range patchTypes {
					c[t] = map[string]any{"schema": refTo("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")}
				}
				return c
			}()}
			it["patch"] = p
		}
		if has(verbs, "delete") {
			it["delete"] = withBody(op("delete", "delete", r.Kind+suffix, ok(status), pDryRun), deleteOptions, "*/*")
		}
		paths[path] = it
	}
	itemOps(item, "", r.Verbs)
	for _, sub := range r.Subresources {
		itemOps(item+"/"+sub, title(sub), []string{"get", "update", "patch"})
	}
}

func title(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
