// Package authz decides who may do what on berthd's API, before any work is
// done for the request (before its body is read), as Tailscale's local API
// decides on its socket's peer credentials.
//
// Two ways in, one read/write split:
//   - the Unix socket: the peer's uid from SO_PEERCRED (taken when the
//     connection is accepted, http.Server.ConnContext). root and members of
//     group berth (primary or supplementary, from the user database) are
//     writers; every other local user is a reader.
//   - the loopback HTTPS listener: a client certificate verified against
//     berthd's CA; Organization "berth:writers" is a writer, anything else a
//     reader. The Common Name is the user name.
//
// Writers may do everything. Readers may get, list and watch what
// `systemctl status` would show them anyway (pods and their status, events,
// nodes, namespaces), read discovery, /version, the health checks and
// /openapi, and fetch their own (reader) kubeconfig; everything else is
// 403 Forbidden with the apiserver's RBAC message.
package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The certificate Organizations of the two roles, as Kubernetes puts groups
// in a client certificate's O.
const (
	WritersGroup = "berth:writers"
	ReadersGroup = "berth:readers"
)

// Via says how a caller was identified.
type Via string

const (
	ViaSocket      Via = "socket"      // SO_PEERCRED on the Unix socket
	ViaCertificate Via = "certificate" // a verified client certificate
)

// Identity is an authenticated caller.
type Identity struct {
	// Name is the user name (the uid in decimal when the user database has
	// no entry for it), or the certificate's Common Name.
	Name string
	// UID is the peer's uid on the socket, -1 for a certificate.
	UID int
	// Writer may do everything; otherwise the caller is a reader.
	Writer bool
	Via    Via
}

// Group is WritersGroup or ReadersGroup.
func (id Identity) Group() string {
	if id.Writer {
		return WritersGroup
	}
	return ReadersGroup
}

type identityKey struct{}

// IdentityFrom is the caller of a request that went through the
// Authorizer.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// WithIdentity returns ctx carrying id (tests, and handlers mounted
// behind the Authorizer in another way).
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

type peerKey struct{}

type peer struct {
	uid, gid uint32
	err      error
}

// Options configure an Authorizer.
type Options struct {
	// Group is the writers' Unix group ("berth"; empty: root only).
	Group string
	// CacheTTL is how long a uid's user-database answer is kept (default
	// 5 s): long enough that a burst of kubectl requests looks the user up
	// once, short enough that adding someone to the group takes effect
	// without a restart.
	CacheTTL time.Duration
	// Log receives one debug line per refusal (default: none).
	Log hclog.Logger
	// lookup replaces the user database (tests of the decision table).
	lookup func(uid uint32) (name string, gids []string, err error)
}

// Authorizer is the middleware.
type Authorizer struct {
	next  http.Handler
	opts  Options
	mu    sync.Mutex
	cache map[uint32]cached
	now   func() time.Time
}

type cached struct {
	id      Identity
	expires time.Time
}

// New wraps next.
func New(next http.Handler, opts Options) *Authorizer {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	if opts.lookup == nil {
		opts.lookup = lookupUser
	}
	return &Authorizer{next: next, opts: opts, cache: map[uint32]cached{}, now: time.Now}
}

// ConnContext is for the Unix socket's http.Server.ConnContext: it reads
// the peer's credentials once per connection, when it is accepted (the
// kernel records them at connect(2), so a later exec or setuid by the peer
// does not change them).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	p := peer{}
	raw, err := uc.SyscallConn()
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			var cred *unix.Ucred
			cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
			if err == nil {
				p.uid, p.gid = cred.Uid, cred.Gid
			}
		})
		if err == nil {
			err = cerr
		}
	}
	p.err = err
	return context.WithValue(ctx, peerKey{}, p)
}

// ServeHTTP authenticates, decides and only then calls the API.
func (a *Authorizer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, err := a.identify(r)
	if err != nil {
		a.opts.Log.Debug("unauthenticated", "path", r.URL.Path, "error", err)
		writeStatus(w, apierrors.NewUnauthorized("Unauthorized"))
		return
	}
	if se := impersonation(id, r.Header); se != nil {
		// kubectl --as/--as-group: berth decides by who is on the other end
		// of the socket or the certificate, and grants nobody the right to
		// act as someone else, so every impersonation is refused as the
		// apiserver refuses it without the impersonate verb.
		writeStatus(w, se)
		return
	}
	ri := Parse(r)
	if !Allowed(id, ri) {
		a.opts.Log.Debug("forbidden", "user", id.Name, "via", id.Via, "verb", ri.Verb, "path", r.URL.Path)
		writeStatus(w, Forbidden(id, ri))
		return
	}
	a.next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
}

func (a *Authorizer) identify(r *http.Request) (Identity, error) {
	if r.TLS != nil {
		// VerifiedChains, not PeerCertificates: only a chain to berthd's CA
		// counts, whatever the listener's ClientAuth says.
		if len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			return Identity{}, errors.New("no verified client certificate")
		}
		cert := r.TLS.VerifiedChains[0][0]
		if cert.Subject.CommonName == "" {
			return Identity{}, errors.New("client certificate without a Common Name")
		}
		writer := slices.Contains(cert.Subject.Organization, WritersGroup)
		if writer {
			// A writer's certificate lasts a year and cannot be revoked, so
			// it writes only while its user may write on the socket: removed
			// from the group (or deleted), the same certificate only reads.
			writer = a.stillWriter(cert.Subject.CommonName)
		}
		return Identity{
			Name:   cert.Subject.CommonName,
			UID:    -1,
			Writer: writer,
			Via:    ViaCertificate,
		}, nil
	}
	p, ok := r.Context().Value(peerKey{}).(peer)
	if !ok {
		return Identity{}, errors.New("no peer credentials (not the Unix socket, or ConnContext not set)")
	}
	if p.err != nil {
		return Identity{}, fmt.Errorf("peer credentials: %w", p.err)
	}
	return a.socketIdentity(p.uid, p.gid), nil
}

func (a *Authorizer) socketIdentity(uid, gid uint32) Identity {
	a.mu.Lock()
	c, ok := a.cache[uid]
	a.mu.Unlock()
	now := a.now()
	if ok && now.Before(c.expires) && (c.id.Writer || !a.isGroup(gid)) {
		return c.id
	}
	id := Identity{Name: strconv.FormatUint(uint64(uid), 10), UID: int(uid), Via: ViaSocket}
	name, gids, err := a.opts.lookup(uid)
	if err == nil {
		id.Name = name
	} else {
		a.opts.Log.Debug("user database", "uid", uid, "error", err)
	}
	id.Writer = uid == 0 || a.isGroup(gid) || slices.ContainsFunc(gids, func(g string) bool {
		n, err := strconv.ParseUint(g, 10, 32)
		return err == nil && a.isGroup(uint32(n))
	})
	a.mu.Lock()
	if len(a.cache) > 1024 {
		// Bounded: a host's users, not an attacker's uids.
		clear(a.cache)
	}
	a.cache[uid] = cached{id: id, expires: now.Add(a.opts.CacheTTL)}
	a.mu.Unlock()
	return id
}

// stillWriter tells whether the local user a writer's certificate was
// issued to (its Common Name: a user name, or a uid berthd could not name)
// is still root or in the writers' group.
func (a *Authorizer) stillWriter(name string) bool {
	uid, gid, err := lookupName(name)
	if err != nil {
		a.opts.Log.Debug("certificate user no longer known", "user", name, "error", err)
		return false
	}
	return a.socketIdentity(uid, gid).Writer
}

var lookupName = func(name string) (uid, gid uint32, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, perr := strconv.ParseUint(name, 10, 32); perr != nil {
			return 0, 0, err
		}
		if u, err = user.LookupId(name); err != nil {
			return 0, 0, err
		}
	}
	id, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, 0, err
	}
	g, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return 0, 0, err
	}
	return uint32(id), uint32(g), nil
}

// isGroup: gid is the writers' group. Looked up every time, which is a
// read of /etc/group only for callers the cache does not already answer.
func (a *Authorizer) isGroup(gid uint32) bool {
	if a.opts.Group == "" {
		return false
	}
	g, err := lookupGroup(a.opts.Group)
	return err == nil && g == strconv.FormatUint(uint64(gid), 10)
}

var lookupGroup = func(name string) (string, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return "", err
	}
	return g.Gid, nil
}

func lookupUser(uid uint32) (string, []string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return "", nil, err
	}
	gids, err := u.GroupIds()
	if err != nil {
		// The name is still good; the primary group is in the passwd entry.
		return u.Username, []string{u.Gid}, nil
	}
	return u.Username, gids, nil
}

// readable is what a reader may get, list and watch: "group/resource" or
// "group/resource/subresource".
var readable = map[string]bool{
	"/pods":                true,
	"/pods/status":         true,
	"/events":              true,
	"events.k8s.io/events": true,
	"/nodes":               true,
	"/nodes/status":        true,
	"/namespaces":          true,
	"/namespaces/status":   true,
	// The usage of what a reader may read (kubectl top).
	"metrics.k8s.io/pods":  true,
	"metrics.k8s.io/nodes": true,
}

// Non-resource paths every caller may GET: Kubernetes' system:discovery
// and system:public-info-viewer roles, the reader's own kubeconfig, and
// /metrics (system:monitoring's: it names nothing a reader cannot read
// through the API: pods, images, usage, quotas).
var (
	publicPaths    = []string{"/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi", "/metrics", KubeconfigPath}
	publicPrefixes = []string{"/api/", "/apis/", "/version/", "/healthz/", "/livez/", "/readyz/", "/openapi/"}
)

// KubeconfigPath is the socket endpoint that hands out kubeconfigs (api/pki
// serves it; readers get a reader's).
const KubeconfigPath = "/berth/v1/kubeconfig"

// Allowed is the decision table (docs/berthd.md, "Who may do what").
func Allowed(id Identity, ri RequestInfo) bool {
	if id.Writer {
		return true
	}
	if !ri.IsResourceRequest {
		if ri.Verb != "get" && ri.Verb != "head" {
			return false
		}
		return slices.Contains(publicPaths, ri.Path) || slices.ContainsFunc(publicPrefixes, func(p string) bool {
			return strings.HasPrefix(ri.Path, p)
		})
	}
	switch ri.Verb {
	case "get", "list", "watch":
	default:
		return false
	}
	key := ri.APIGroup + "/" + ri.Resource
	if ri.Subresource != "" {
		key += "/" + ri.Subresource
	}
	return readable[key]
}

// Forbidden is the apiserver's 403 for a refused request, word for word
// (k8s.io/apiserver/pkg/endpoints/handlers/responsewriters.Forbidden with
// RBAC's empty reason): `pods is forbidden: User "alice" cannot create
// resource "pods" in API group "" in the namespace "default"`.
func Forbidden(id Identity, ri RequestInfo) *apierrors.StatusError {
	var msg string
	switch {
	case !ri.IsResourceRequest:
		msg = fmt.Sprintf("User %q cannot %s path %q", id.Name, ri.Verb, ri.Path)
	default:
		res := ri.Resource
		if ri.Subresource != "" {
			res += "/" + ri.Subresource
		}
		if ri.Namespace != "" {
			msg = fmt.Sprintf("User %q cannot %s resource %q in API group %q in the namespace %q", id.Name, ri.Verb, res, ri.APIGroup, ri.Namespace)
		} else {
			msg = fmt.Sprintf("User %q cannot %s resource %q in API group %q at the cluster scope", id.Name, ri.Verb, res, ri.APIGroup)
		}
	}
	msg = sanitizer.Replace(msg)
	return apierrors.NewForbidden(schema.GroupResource{Group: ri.APIGroup, Resource: ri.Resource}, ri.Name, errors.New(msg))
}

// impersonation is the apiserver's refusal of an Impersonate-* header
// (k8s.io/apiserver/pkg/endpoints/filters/impersonation.go), or nil.
func impersonation(id Identity, h http.Header) *apierrors.StatusError {
	var res, name string
	switch {
	case h.Get("Impersonate-User") != "":
		res, name = "users", h.Get("Impersonate-User")
	case h.Get("Impersonate-Group") != "":
		res, name = "groups", h.Get("Impersonate-Group")
	case h.Get("Impersonate-Uid") != "":
		res, name = "uids", h.Get("Impersonate-Uid")
	default:
		for k := range h {
			if strings.HasPrefix(k, "Impersonate-Extra-") {
				res, name = "userextras/"+strings.ToLower(strings.TrimPrefix(k, "Impersonate-Extra-")), h.Get(k)
			}
		}
	}
	if res == "" {
		return nil
	}
	group := ""
	if res == "uids" || strings.HasPrefix(res, "userextras/") {
		group = "authentication.k8s.io"
	}
	msg := sanitizer.Replace(fmt.Sprintf("User %q cannot impersonate resource %q in API group %q at the cluster scope", id.Name, res, group))
	return apierrors.NewForbidden(schema.GroupResource{Group: group, Resource: res}, name, errors.New(msg))
}

// The apiserver's escaping of the message (responsewriters.sanitizer).
var sanitizer = strings.NewReplacer(`&`, "&amp;", `<`, "&lt;", `>`, "&gt;")

// writeStatus answers with a metav1.Status in JSON, which every client
// (kubectl included, whatever it asked for) decodes as the error.
func writeStatus(w http.ResponseWriter, e *apierrors.StatusError) {
	WriteStatus(w, e.Status())
}

// WriteStatus writes st as the apiserver does (also used by api/pki's
// kubeconfig endpoint, which sits in front of api/server).
func WriteStatus(w http.ResponseWriter, st metav1.Status) {
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	body, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(int(st.Code))
	_, _ = w.Write(append(body, '\n'))
}
