package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	utilrand "k8s.io/apimachinery/pkg/util/rand"

	"github.com/berth-dev/berth/agent/store"
)

// protobufType is Kubernetes' protobuf media type.
const protobufType = "application/vnd.kubernetes.protobuf"

// protobufCodec decodes the core types berth serves from Kubernetes'
// protobuf envelope (a "k8s\x00" magic and a runtime.Unknown).
var protobufCodec = func() runtime.Decoder {
	sch := runtime.NewScheme()
	// events.k8s.io/v1 too: client-go's typed clients send the group's
	// DeleteOptions in it.
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, eventsv1.AddToScheme, appsv1.AddToScheme, autoscalingv1.AddToScheme} {
		if err := add(sch); err != nil {
			panic(err)
		}
	}
	return protobuf.NewSerializer(sch, sch)
}()

// maxBody bounds a request body as the apiserver does (3 MiB,
// apiserver's MaxRequestBodyBytes default).
const maxBody = 3 << 20

func (s *Server) serveKind(w http.ResponseWriter, r *http.Request, k *kind, ns, name string) {
	sub := subresourceOf(r.URL.Path, k, name)
	q := r.URL.Query()
	switch {
	case sub == "log":
		s.podLog(w, r, k, ns, name)
	case k.resource == "pods" && isStreamSubresource(sub):
		s.podStream(w, r, k, ns, name, sub)
	case sub == "scale":
		s.serveScale(w, r, k, ns, name)
	case r.Method == http.MethodGet && name != "":
		s.get(w, r, k, ns, name)
	case r.Method == http.MethodGet && (q.Get("watch") == "true" || q.Get("watch") == "1"):
		s.watch(w, r, k, ns)
	case r.Method == http.MethodGet:
		s.list(w, r, k, ns)
	case r.Method == http.MethodPost && name == "":
		s.create(w, r, k, ns)
	case r.Method == http.MethodPut && name != "":
		s.update(w, r, k, ns, name, sub)
	case r.Method == http.MethodPatch && name != "":
		s.patch(w, r, k, ns, name, sub)
	case r.Method == http.MethodDelete && name != "" && sub == "":
		s.delete(w, r, k, ns, name)
	case r.Method == http.MethodDelete && name == "":
		s.deleteCollection(w, r, k, ns)
	default:
		s.writeStatus(w, apierrors.NewMethodNotSupported(k.gr(), strings.ToLower(r.Method)), r)
	}
}

// subresourceOf reads the subresource from a path that routing has
// already matched: ".../<resource>/<name>/<sub>" (the router passes only
// the name).
func subresourceOf(path string, k *kind, name string) string {
	parts := strings.Split(strings.TrimSuffix(path, "/"), "/")
	n := len(parts)
	if name == "" || n < 3 {
		return ""
	}
	if parts[n-1] == name && parts[n-2] == k.resource {
		return ""
	}
	if parts[n-2] == name && parts[n-3] == k.resource {
		return parts[n-1]
	}
	return ""
}

// wantsTable reports whether the client asked for a server-side Table, as
// kubectl get does (Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...).
func wantsTable(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if strings.Contains(part, "as=Table") && strings.Contains(part, "g=meta.k8s.io") {
			return true
		}
	}
	return false
}

func (s *Server) decode(k *kind, data []byte) (store.Object, error) {
	obj := k.new()
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, k *kind, ns, name string) {
	obj := k.new()
	if err := s.store.Get(store.Resource(k.resource), ns, name, obj); err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	if wantsTable(r) {
		writeJSON(w, http.StatusOK, s.table(k, []store.Object{obj}, obj.GetResourceVersion(), r, true))
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// selectors parses labelSelector and fieldSelector, with the apiserver's
// BadRequest for a malformed one.
func selectors(r *http.Request) (labels.Selector, fields.Selector, error) {
	q := r.URL.Query()
	ls, err := labels.Parse(q.Get("labelSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("unable to parse requirement: %v", err))
	}
	fs, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("invalid field selector: %v", err))
	}
	return ls, fs, nil
}

func matches(k *kind, obj store.Object, ls labels.Selector, fs fields.Selector) bool {
	// The field set is built only for a field selector (it is a map for
	// each object).
	return ls.Matches(labels.Set(obj.GetLabels())) && (fs.Empty() || fs.Matches(k.fields(obj)))
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, k *kind, ns string) {
	ls, fs, err := selectors(r)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
		return
	}
	table := wantsTable(r)
	// A plain list without selectors passes the stored JSON through: no
	// object needs decoding (list.go).
	passThrough := !table && ls.Empty() && fs.Empty()
	// The items' JSON (list.go's itemBuffer); items one by one only for
	// a kind that converts them (newList).
	var raws [][]byte
	var body itemBuffer
	// The chunks go back once written (net/http has copied or sent them
	// when Write returns).
	defer body.release()
	var seen map[string]bool
	if !passThrough && k.cache != nil {
		seen = map[string]bool{}
	}
	whole := r.URL.Query().Get("includeObject") == string(metav1.IncludeObject)
	var row []byte // a Table row, reused
	// Scan, not List: only what is kept is copied (a Table keeps each
	// object's row, not the object).
	keep := func(data []byte) {
		if k.newList != nil {
			raws = append(raws, bytes.Clone(data))
			return
		}
		body.add(data)
	}
	rv, err := s.store.Scan(store.Resource(k.resource), ns, func(data []byte) error {
		if passThrough {
			keep(data)
			return nil
		}
		obj, err := s.decodeForList(k, data)
		if err != nil {
			return err
		}
		if seen != nil {
			seen[obj.GetNamespace()+"/"+obj.GetName()] = true
		}
		switch {
		case !matches(k, obj, ls, fs):
		case !table:
			keep(data)
		default:
			// The row, into the body: of the stored JSON only the metadata
			// (or the whole object) is copied, once.
			var object, md []byte
			switch {
			case whole && k.newList != nil:
				// Served in another form than stored: the object converted.
				if object, err = json.Marshal(obj); err != nil {
					return err
				}
			case whole:
				object = data
			default:
				if m, ok := metadataOf(data); ok {
					md = m
				}
			}
			if row, err = appendRow(row[:0], k, obj, object, md); err != nil {
				return err
			}
			body.add(row)
		}
		return nil
	})
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), ""), r)
		return
	}
	if seen != nil {
		k.cache.forget(ns, seen)
	}
	if table {
		writeItems(w, tableHead(k, fmt.Sprint(rv)), &body)
		return
	}
	if k.newList != nil {
		s.writeList(w, k, raws, fmt.Sprint(rv))
		return
	}
	writeRawItems(w, k.apiVersion(), k.kind+"List", &body, fmt.Sprint(rv))
}

// table renders objs as a metav1.Table with kubectl's columns; each row
// carries the object's metadata (or the object with includeObject=Object),
// so that kubectl fills NAMESPACE and --show-labels.
func (s *Server) table(k *kind, objs []store.Object, rv string, r *http.Request, columns bool) *metav1.Table {
	t := &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}, ListMeta: metav1.ListMeta{ResourceVersion: rv}}
	if columns {
		t.ColumnDefinitions = k.columns
	}
	whole := r.URL.Query().Get("includeObject") == string(metav1.IncludeObject)
	t.Rows = []metav1.TableRow{}
	for _, obj := range objs {
		row := metav1.TableRow{Cells: k.cells(obj)}
		if whole {
			row.Object = runtime.RawExtension{Object: obj}
		} else {
			m := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}}
			m.ObjectMeta = *obj.(metav1.ObjectMetaAccessor).GetObjectMeta().(*metav1.ObjectMeta)
			row.Object = runtime.RawExtension{Object: m}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, k *kind, ns string) {
	opts, se := writeOptionsOf(r, "CreateOptions")
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	body, se := readBody(w, r)
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	obj := k.new()
	warnings, se := decodeObject(r, body, obj, opts.fieldValidation)
	if se == nil {
		se = checkKind(k, obj)
	}
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	out, se := s.createObject(k, ns, obj, opts.dryRun)
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	addWarnings(w, warnings)
	writeJSON(w, http.StatusCreated, out)
}

// maxGenerateNameAttempts is how often a create with generateName tries
// another name when the one it made exists (the apiserver's
// RetryGenerateName, GA in 1.32: 8 attempts).
const maxGenerateNameAttempts = 8

// createObject is a create of a decoded object into namespace ns (the
// URL's): the apiserver's NamespaceLifecycle, generateName, what only the
// server sets, the kind's defaults, admission, validation, and the store.
// It answers the stored object (on a dry run: what would be stored).
func (s *Server) createObject(k *kind, ns string, obj store.Object, dryRun bool) (store.Object, *apierrors.StatusError) {
	if k.namespaced {
		if obj.GetNamespace() == "" {
			obj.SetNamespace(ns)
		}
		if obj.GetNamespace() != ns {
			return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
		// The apiserver's NamespaceLifecycle admission: the namespace
		// exists and is not being deleted.
		nsObj := s.kinds["namespaces"].new()
		if err := s.store.Get("namespaces", "", ns, nsObj); err != nil {
			return nil, toStatus(err, s.kinds["namespaces"].gr(), s.kinds["namespaces"].gk(), ns)
		}
		if se := refuseInTerminating(k, nsObj, obj.GetName()); se != nil {
			return nil, se
		}
	}
	if !k.namespaced {
		obj.SetNamespace("") // rest.BeforeCreate
	}
	generated := obj.GetName() == "" && obj.GetGenerateName() != ""
	for attempt := 1; ; attempt++ {
		try := obj
		if generated {
			// names.SimpleNameGenerator: the base, at most 58
			// characters, and 5 random ones; another on a collision.
			try = obj.DeepCopyObject().(store.Object)
			base := obj.GetGenerateName()
			if len(base) > 58 {
				base = base[:58]
			}
			try.SetName(base + utilrand.String(5))
		}
		out, se := s.createOne(k, try, dryRun)
		if se != nil && generated && apierrors.IsAlreadyExists(se) && attempt < maxGenerateNameAttempts {
			continue
		}
		return out, se
	}
}

// createOne is createObject's part for one name.
func (s *Server) createOne(k *kind, obj store.Object, dryRun bool) (store.Object, *apierrors.StatusError) {
	// What only the server sets (rest.BeforeCreate), then the kind's
	// defaults.
	obj.SetUID("")
	obj.SetCreationTimestamp(metav1.Time{})
	obj.SetDeletionTimestamp(nil)
	obj.SetDeletionGracePeriodSeconds(nil)
	obj.SetGeneration(0)
	if svc, ok := obj.(*corev1.Service); ok {
		// The service REST's BeginCreate: allocated before validation,
		// held until stored.
		k.prepare(obj)
		used, unlock, err := s.beginServiceAlloc(svc.Namespace, svc.Name)
		if err != nil {
			return nil, toStatus(err, k.gr(), k.gk(), obj.GetName())
		}
		defer unlock()
		if err := s.svcRanges.allocateService(svc, nil, used); err != nil {
			return nil, toStatus(err, k.gr(), k.gk(), obj.GetName())
		}
	}
	if err := s.prepareNew(k, obj); err != nil {
		return nil, toStatus(err, k.gr(), k.gk(), obj.GetName())
	}
	unlock, err := s.admitHostPorts(obj)
	if err != nil {
		return nil, toStatus(err, k.gr(), k.gk(), obj.GetName())
	}
	// Held until the pod is stored (or the dry run decided), not while a
	// slow client reads the answer.
	unlockPorts := sync.OnceFunc(unlock)
	defer unlockPorts()
	commit := func(bool) {}
	if s.opts.Admission != nil {
		if commit, err = s.opts.Admission.Validate(store.Resource(kindKey(k.group, k.resource)), obj, nil, dryRun); err != nil {
			return nil, toStatus(err, k.gr(), k.gk(), obj.GetName())
		}
	}
	// The namespace's admissions wait until the object is stored (or
	// the dry run decided), as host ports do.
	committed := false
	done := func(stored bool) {
		if !committed {
			committed = true
			commit(stored)
		}
	}
	defer done(false)
	if dryRun {
		if err := s.store.Get(store.Resource(k.resource), obj.GetNamespace(), obj.GetName(), k.new()); err == nil {
			return nil, apierrors.NewAlreadyExists(k.gr(), obj.GetName())
		}
		obj.SetResourceVersion("")
		return obj, nil
	}
	stored := obj
	if k.toStored != nil {
		stored = k.toStored(obj)
	}
	err = s.store.Create(store.Resource(k.resource), stored)
	done(err == nil)
	unlockPorts()
	if err != nil {
		return nil, s.beingDeleted(k, obj, toStatus(err, k.gr(), k.gk(), obj.GetName()))
	}
	if se := s.recheckNamespace(k, stored); se != nil {
		return nil, se
	}
	if k.fromStored != nil {
		k.fromStored(stored, obj)
	}
	return obj, nil
}

// prepareNew is what a create does to a new object after the request's
// own checks: the kind's defaults, the scheduler's binding of a pod (berth
// is the one node; the pod worker emits the Scheduled event), then the
// kind's validation. berth plan runs it too, so that a plan shows the pod a
// create would store.
func (s *Server) prepareNew(k *kind, obj store.Object) error {
	k.prepare(obj)
	if s.opts.Admission != nil {
		// Mutating admission after the API's defaults, before validation
		// (the apiserver's order: LimitRanger's defaults are validated).
		if err := s.opts.Admission.Mutate(store.Resource(kindKey(k.group, k.resource)), obj, nil); err != nil {
			return err
		}
	}
	if k.beforeCreate != nil {
		k.beforeCreate(obj)
	}
	if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName == "" {
		p.Spec.NodeName = s.nodeName()
	}
	return k.validate(obj)
}

// nodeName is the node pods are bound to: Options.NodeName, else the host
// name.
func (s *Server) nodeName() string {
	if s.opts.NodeName != "" {
		return s.opts.NodeName
	}
	h, _ := os.Hostname()
	return h
}
