package authz

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func req(method, target string) *http.Request {
	return httptest.NewRequest(method, target, nil)
}

// The parser against what k8s.io/apiserver's RequestInfoFactory answers
// for the same requests (its requestinfo_test.go cases, berth's prefixes).
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		method, url string
		want        RequestInfo
	}{
		{"GET", "/api/v1/namespaces/default/pods", RequestInfo{IsResourceRequest: true, Verb: "list", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods"}},
		{"GET", "/api/v1/namespaces/default/pods?watch=true", RequestInfo{IsResourceRequest: true, Verb: "watch", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods"}},
		{"GET", "/api/v1/namespaces/default/pods?watch=1&fieldSelector=metadata.name%3Dx", RequestInfo{IsResourceRequest: true, Verb: "watch", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods", Name: "x"}},
		{"GET", "/api/v1/watch/namespaces/default/pods", RequestInfo{IsResourceRequest: true, Verb: "watch", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods"}},
		{"GET", "/api/v1/namespaces/default/pods/x", RequestInfo{IsResourceRequest: true, Verb: "get", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods", Name: "x"}},
		{"GET", "/api/v1/namespaces/default/pods/x/log", RequestInfo{IsResourceRequest: true, Verb: "get", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods", Name: "x", Subresource: "log"}},
		{"POST", "/api/v1/namespaces/default/pods/x/exec", RequestInfo{IsResourceRequest: true, Verb: "create", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods", Name: "x", Subresource: "exec"}},
		{"POST", "/api/v1/namespaces/default/pods", RequestInfo{IsResourceRequest: true, Verb: "create", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods"}},
		{"PUT", "/api/v1/namespaces/default/pods/x/status", RequestInfo{IsResourceRequest: true, Verb: "update", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods", Name: "x", Subresource: "status"}},
		{"PATCH", "/api/v1/namespaces/default/pods/x", RequestInfo{IsResourceRequest: true, Verb: "patch", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods", Name: "x"}},
		{"DELETE", "/api/v1/namespaces/default/pods/x", RequestInfo{IsResourceRequest: true, Verb: "delete", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods", Name: "x"}},
		{"DELETE", "/api/v1/namespaces/default/pods", RequestInfo{IsResourceRequest: true, Verb: "deletecollection", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods"}},
		{"GET", "/api/v1/pods", RequestInfo{IsResourceRequest: true, Verb: "list", APIPrefix: "api", APIVersion: "v1", Resource: "pods"}},
		{"GET", "/api/v1/namespaces", RequestInfo{IsResourceRequest: true, Verb: "list", APIPrefix: "api", APIVersion: "v1", Resource: "namespaces"}},
		{"GET", "/api/v1/namespaces/x", RequestInfo{IsResourceRequest: true, Verb: "get", APIPrefix: "api", APIVersion: "v1", Namespace: "x", Resource: "namespaces", Name: "x"}},
		{"PUT", "/api/v1/namespaces/x/finalize", RequestInfo{IsResourceRequest: true, Verb: "update", APIPrefix: "api", APIVersion: "v1", Namespace: "x", Resource: "namespaces", Name: "x", Subresource: "finalize"}},
		{"GET", "/api/v1/namespaces/x/status", RequestInfo{IsResourceRequest: true, Verb: "get", APIPrefix: "api", APIVersion: "v1", Namespace: "x", Resource: "namespaces", Name: "x", Subresource: "status"}},
		{"POST", "/api/v1/namespaces", RequestInfo{IsResourceRequest: true, Verb: "create", APIPrefix: "api", APIVersion: "v1", Resource: "namespaces"}},
		{"GET", "/api/v1/nodes/n1", RequestInfo{IsResourceRequest: true, Verb: "get", APIPrefix: "api", APIVersion: "v1", Resource: "nodes", Name: "n1"}},
		{"GET", "/apis/events.k8s.io/v1/namespaces/default/events", RequestInfo{IsResourceRequest: true, Verb: "list", APIPrefix: "apis", APIGroup: "events.k8s.io", APIVersion: "v1", Namespace: "default", Resource: "events"}},
		{"GET", "/api/v1/proxy/namespaces/default/pods/x/a/b", RequestInfo{IsResourceRequest: true, Verb: "proxy", APIPrefix: "api", APIVersion: "v1", Namespace: "default", Resource: "pods", Name: "x"}},
		// Non-resource requests: the path and the lowercase method.
		{"GET", "/api", RequestInfo{Path: "/api", Verb: "get"}},
		{"GET", "/api/v1", RequestInfo{Path: "/api/v1", Verb: "get"}},
		{"GET", "/apis/events.k8s.io/v1", RequestInfo{Path: "/apis/events.k8s.io/v1", Verb: "get", APIPrefix: "apis"}}, // as the apiserver leaves it
		{"GET", "/version", RequestInfo{Path: "/version", Verb: "get"}},
		{"POST", "/berth/v1/kubeconfig", RequestInfo{Path: "/berth/v1/kubeconfig", Verb: "post"}},
		{"GET", "/other/v1/pods", RequestInfo{Path: "/other/v1/pods", Verb: "get"}},
	} {
		got := Parse(req(tc.method, tc.url))
		want := tc.want
		if want.IsResourceRequest {
			want.Path = strings.SplitN(tc.url, "?", 2)[0]
		}
		if got != want {
			t.Errorf("%s %s:\n got %+v\nwant %+v", tc.method, tc.url, got, want)
		}
	}
}

var (
	alice = Identity{Name: "alice", UID: 1000, Via: ViaSocket}
	admin = Identity{Name: "admin", UID: 1001, Writer: true, Via: ViaSocket}
)

// The decision table of docs/berthd.md.
func TestAllowed(t *testing.T) {
	for _, tc := range []struct {
		method, url    string
		reader, writer bool
	}{
		{"GET", "/version", true, true},
		{"GET", "/healthz", true, true},
		{"GET", "/readyz", true, true},
		{"GET", "/livez/ping", true, true},
		{"GET", "/api", true, true},
		{"GET", "/apis", true, true},
		{"GET", "/api/v1", true, true},
		{"GET", "/apis/events.k8s.io/v1", true, true},
		{"GET", "/openapi/v3", true, true},
		{"GET", "/openapi/v3/api/v1", true, true},
		{"GET", "/berth/v1/kubeconfig", true, true},
		{"POST", "/berth/v1/kubeconfig", false, true},
		{"GET", "/berth/v1/other", false, true},
		{"GET", "/metrics", true, true},
		{"POST", "/metrics", false, true},
		{"GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods", true, true},
		{"GET", "/apis/metrics.k8s.io/v1beta1/nodes/n1", true, true},
		{"POST", "/version", false, true},
		{"GET", "/api/v1/namespaces/default/pods", true, true},
		{"GET", "/api/v1/pods?watch=true", true, true},
		{"GET", "/api/v1/namespaces/default/pods/x", true, true},
		{"GET", "/api/v1/namespaces/default/pods/x/status", true, true},
		{"GET", "/api/v1/namespaces/default/events", true, true},
		{"GET", "/apis/events.k8s.io/v1/events", true, true},
		{"GET", "/api/v1/nodes", true, true},
		{"GET", "/api/v1/nodes/n1/status", true, true},
		{"GET", "/api/v1/namespaces", true, true},
		{"GET", "/api/v1/namespaces/default", true, true},
		{"GET", "/api/v1/namespaces/default/secrets", false, true},
		{"GET", "/api/v1/namespaces/default/secrets/s", false, true},
		{"GET", "/api/v1/namespaces/default/configmaps", false, true},
		{"GET", "/api/v1/namespaces/default/pods/x/log", false, true},
		{"POST", "/api/v1/namespaces/default/pods/x/exec", false, true},
		{"GET", "/api/v1/namespaces/default/pods/x/exec", false, true},
		{"POST", "/api/v1/namespaces/default/pods/x/attach", false, true},
		{"POST", "/api/v1/namespaces/default/pods/x/portforward", false, true},
		{"GET", "/api/v1/proxy/namespaces/default/pods/x", false, true},
		{"POST", "/api/v1/namespaces/default/pods", false, true},
		{"PUT", "/api/v1/namespaces/default/pods/x", false, true},
		{"PATCH", "/api/v1/namespaces/default/pods/x", false, true},
		{"DELETE", "/api/v1/namespaces/default/pods/x", false, true},
		{"DELETE", "/api/v1/namespaces/default/pods", false, true},
		{"PUT", "/api/v1/namespaces/default/pods/x/status", false, true},
		{"POST", "/api/v1/namespaces", false, true},
		{"GET", "/apis/apps/v1/namespaces/default/deployments", false, true},
	} {
		ri := Parse(req(tc.method, tc.url))
		if got := Allowed(alice, ri); got != tc.reader {
			t.Errorf("reader %s %s: allowed %v, want %v", tc.method, tc.url, got, tc.reader)
		}
		if got := Allowed(admin, ri); got != tc.writer {
			t.Errorf("writer %s %s: allowed %v, want %v", tc.method, tc.url, got, tc.writer)
		}
	}
}

// The messages kube-apiserver's RBAC denial prints, word for word.
func TestForbiddenMessage(t *testing.T) {
	for _, tc := range []struct {
		method, url, msg string
		kind, name       string
	}{
		{"POST", "/api/v1/namespaces/default/pods", `pods is forbidden: User "alice" cannot create resource "pods" in API group "" in the namespace "default"`, "pods", ""},
		{"DELETE", "/api/v1/namespaces/default/pods/web", `pods "web" is forbidden: User "alice" cannot delete resource "pods" in API group "" in the namespace "default"`, "pods", "web"},
		{"GET", "/api/v1/namespaces/default/pods/web/log", `pods "web" is forbidden: User "alice" cannot get resource "pods/log" in API group "" in the namespace "default"`, "pods", "web"},
		{"GET", "/api/v1/namespaces/default/secrets", `secrets is forbidden: User "alice" cannot list resource "secrets" in API group "" in the namespace "default"`, "secrets", ""},
		{"POST", "/api/v1/namespaces", `namespaces is forbidden: User "alice" cannot create resource "namespaces" in API group "" at the cluster scope`, "namespaces", ""},
		{"GET", "/apis/apps/v1/deployments", `deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps" at the cluster scope`, "deployments", ""},
		{"GET", "/berth/v1/images", `forbidden: User "alice" cannot get path "/berth/v1/images"`, "", ""},
	} {
		rec := httptest.NewRecorder()
		a := New(http.NotFoundHandler(), Options{})
		a.opts.lookup = func(uint32) (string, []string, error) { return "alice", []string{"1000"}, nil }
		r := req(tc.method, tc.url)
		a.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), peerKey{}, peer{uid: 1000, gid: 1000})))
		want := tc.msg
		var st metav1.Status
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatalf("%s %s: %v\n%s", tc.method, tc.url, err, rec.Body)
		}
		if rec.Code != 403 || st.Code != 403 || st.Reason != metav1.StatusReasonForbidden || st.Message != want || st.Kind != "Status" || st.APIVersion != "v1" || st.Status != metav1.StatusFailure {
			t.Errorf("%s %s: %d %+v\nwant message %q", tc.method, tc.url, rec.Code, st, want)
		}
		if st.Details == nil || st.Details.Kind != tc.kind || st.Details.Name != tc.name {
			t.Errorf("%s %s: details %+v, want kind %q name %q", tc.method, tc.url, st.Details, tc.kind, tc.name)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
	}
}

// The decision precedes any work: a refused request never reaches the
// handler, so its body is never read.
func TestRefusedNeverReachesTheAPI(t *testing.T) {
	reached := false
	a := New(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }), Options{Group: "berth"})
	a.opts.lookup = func(uint32) (string, []string, error) { return "alice", []string{"1000"}, nil }
	r := httptest.NewRequest("POST", "/api/v1/namespaces/default/pods", strings.NewReader("{}"))
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), peerKey{}, peer{uid: 1000, gid: 1000})))
	if reached || rec.Code != 403 {
		t.Errorf("reached %v, code %d", reached, rec.Code)
	}
	// No peer credentials at all: 401, not a guess.
	rec = httptest.NewRecorder()
	a.ServeHTTP(rec, req("GET", "/version"))
	if reached || rec.Code != 401 {
		t.Errorf("without credentials: reached %v, code %d", reached, rec.Code)
	}
}

// root is a writer without a group; group membership by primary gid of the
// connection or by the user database's supplementary groups.
func TestSocketIdentity(t *testing.T) {
	old := lookupGroup
	lookupGroup = func(name string) (string, error) { return "990", nil }
	defer func() { lookupGroup = old }()
	a := New(nil, Options{Group: "berth"})
	users := map[uint32][]string{0: {"0"}, 1000: {"1000"}, 1001: {"1001", "990"}, 1002: {"1002"}}
	a.opts.lookup = func(uid uint32) (string, []string, error) {
		return map[uint32]string{0: "root", 1000: "alice", 1001: "bob", 1002: "carol"}[uid], users[uid], nil
	}
	for _, tc := range []struct {
		uid, gid uint32
		name     string
		writer   bool
	}{
		{0, 0, "root", true},
		{1000, 1000, "alice", false},
		{1001, 1001, "bob", true},  // supplementary
		{1002, 990, "carol", true}, // the connecting process's gid (newgrp, sg)
	} {
		id := a.socketIdentity(tc.uid, tc.gid)
		if id.Name != tc.name || id.Writer != tc.writer || id.UID != int(tc.uid) || id.Via != ViaSocket {
			t.Errorf("uid %d gid %d: %+v", tc.uid, tc.gid, id)
		}
	}
	// Cached, but a newly joined group shows up once the entry expires.
	users[1000] = []string{"1000", "990"}
	if id := a.socketIdentity(1000, 1000); id.Writer {
		t.Error("cache not used")
	}
	a.cache = map[uint32]cached{}
	if id := a.socketIdentity(1000, 1000); !id.Writer {
		t.Error("new group membership not seen after expiry")
	}
}

// kubectl --as: refused for everyone, root included, with the apiserver's
// words, before the API sees the request.
func TestImpersonationRefused(t *testing.T) {
	reached := false
	a := New(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }), Options{Group: "berth"})
	a.opts.lookup = func(uint32) (string, []string, error) { return "root", []string{"0"}, nil }
	for _, tc := range []struct{ header, value, want string }{
		{"Impersonate-User", "alice", `users "alice" is forbidden: User "root" cannot impersonate resource "users" in API group "" at the cluster scope`},
		{"Impersonate-Group", "berth", `groups "berth" is forbidden: User "root" cannot impersonate resource "groups" in API group "" at the cluster scope`},
	} {
		r := httptest.NewRequest("GET", "/api/v1/namespaces/default/pods", nil)
		r.Header.Set(tc.header, tc.value)
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), peerKey{}, peer{uid: 0, gid: 0})))
		var st metav1.Status
		_ = json.Unmarshal(rec.Body.Bytes(), &st)
		if reached || rec.Code != 403 || st.Message != tc.want || st.Reason != metav1.StatusReasonForbidden {
			t.Errorf("%s: reached %v, code %d, body %s", tc.header, reached, rec.Code, rec.Body)
		}
	}
}

// A writer's certificate writes only while its user is still a writer on
// the host: taken out of the group, the same certificate reads.
func TestWriterCertificateFollowsGroup(t *testing.T) {
	oldGroup, oldName := lookupGroup, lookupName
	defer func() { lookupGroup, lookupName = oldGroup, oldName }()
	lookupGroup = func(string) (string, error) { return "990", nil }
	lookupName = func(name string) (uint32, uint32, error) {
		if name != "alice" {
			return 0, 0, errors.New("unknown user")
		}
		return 1000, 1000, nil
	}
	groups := []string{"1000", "990"}
	reached := 0
	a := New(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached++ }), Options{Group: "berth"})
	a.opts.lookup = func(uint32) (string, []string, error) { return "alice", groups, nil }
	post := func(cn string) int {
		r := httptest.NewRequest("POST", "/api/v1/namespaces/default/pods", strings.NewReader("{}"))
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: []string{WritersGroup}}}
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, r)
		return rec.Code
	}
	if code := post("alice"); code != 200 || reached != 1 {
		t.Fatalf("a writer in the group: %d (reached %d)", code, reached)
	}
	groups = []string{"1000"}
	a.mu.Lock()
	clear(a.cache) // what CacheTTL does a few seconds later
	a.mu.Unlock()
	if code := post("alice"); code != 403 || reached != 1 {
		t.Errorf("a writer taken out of the group: %d (reached %d)", code, reached)
	}
	if code := post("mallory"); code != 403 || reached != 1 {
		t.Errorf("a writer certificate of an unknown user: %d (reached %d)", code, reached)
	}
}
