package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/agent/store"
)

// parameterCodec decodes the query parameters of the meta/v1 options
// types (metav1.ParameterCodec's scheme has no url.Values conversions
// registered).
var parameterCodec = func() runtime.ParameterCodec {
	sch := runtime.NewScheme()
	metav1.AddToGroupVersion(sch, metav1.SchemeGroupVersion)
	return runtime.NewParameterCodec(sch)
}()

// errDryRun rolls back a Modify whose result a dryRun=All request only
// wants to see.
var errDryRun = errors.New("dry run")

// readBody reads a request body, at most maxBody bytes (413 beyond, as the
// apiserver's MaxRequestBodyBytes).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apierrors.StatusError) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", maxBody))
	}
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	return body, nil
}

// writeOptions are the query parameters of create, update and patch.
type writeOptions struct {
	dryRun bool
	// fieldValidation: Strict refuses unknown and duplicate fields, Warn
	// (the apiserver's default) answers them in Warning headers, Ignore
	// drops them silently.
	fieldValidation string
}

// writeOptionsOf decodes and validates the options of a create, update or
// patch (kind "CreateOptions", "UpdateOptions" or "PatchOptions") with the
// apiserver's Invalid for a bad value.
func writeOptionsOf(r *http.Request, kind string) (writeOptions, *apierrors.StatusError) {
	var opts metav1.UpdateOptions
	if err := parameterCodec.DecodeParameters(r.URL.Query(), metav1.SchemeGroupVersion, &opts); err != nil {
		return writeOptions{}, apierrors.NewBadRequest(err.Error())
	}
	errs := metav1validation.ValidateUpdateOptions(&opts)
	if len(errs) > 0 {
		return writeOptions{}, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: kind}, "", errs)
	}
	fv := opts.FieldValidation
	if fv == "" {
		fv = metav1.FieldValidationWarn
	}
	return writeOptions{dryRun: len(opts.DryRun) > 0, fieldValidation: fv}, nil
}

// decodeObject decodes a create or update body into obj by its
// Content-Type (JSON, the default; YAML; Kubernetes protobuf), applying the
// fieldValidation directive to unknown and duplicate fields. It returns the
// warnings to send for Warn.
func decodeObject(r *http.Request, body []byte, obj store.Object, fieldValidation string) ([]string, *apierrors.StatusError) {
	ct := r.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	switch strings.TrimSpace(ct) {
	case protobufType:
		// client-go's typed clients send protobuf; there are no unknown
		// fields to refuse in it.
		if _, _, err := protobufCodec.Decode(body, nil, obj); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		return nil, nil
	case "application/yaml":
		j, err := yaml.YAMLToJSONStrict(body)
		if err != nil {
			if fieldValidation != metav1.FieldValidationStrict {
				j, err = yaml.YAMLToJSON(body)
			}
			if err != nil {
				return nil, apierrors.NewBadRequest(err.Error())
			}
		}
		body = j
	case "", "application/json":
	default:
		return nil, unsupportedMediaType("application/json", "application/yaml", protobufType)
	}
	strictErrs, err := sigsjson.UnmarshalStrict(body, obj)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	return strictResult(strictErrs, fieldValidation, func(msg string) *apierrors.StatusError {
		return apierrors.NewBadRequest(msg)
	})
}

// strictResult turns unknown and duplicate field errors into the answer
// the fieldValidation directive asks for: an error built by refuse from
// "strict decoding error: ..." (Strict), warnings (Warn), or nothing.
func strictResult(strictErrs []error, fieldValidation string, refuse func(msg string) *apierrors.StatusError) ([]string, *apierrors.StatusError) {
	if len(strictErrs) == 0 || fieldValidation == metav1.FieldValidationIgnore {
		return nil, nil
	}
	if fieldValidation == metav1.FieldValidationStrict {
		// runtime.NewStrictDecodingError's words.
		return nil, refuse(runtime.NewStrictDecodingError(strictErrs).Error())
	}
	warnings := make([]string, len(strictErrs))
	for i, e := range strictErrs {
		warnings[i] = e.Error()
	}
	return warnings, nil
}

// unsupportedMediaType is the apiserver's 415 for a body it cannot decode
// (negotiation.NewUnsupportedMediaTypeError).
func unsupportedMediaType(accepted ...string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType, Reason: metav1.StatusReasonUnsupportedMediaType,
		Message: "the body of the request was in an unknown format - accepted media types include: " + strings.Join(accepted, ", "),
	}}
}

// addWarnings sends warnings as the apiserver does: one
// `Warning: 299 - "text"` header each, without repeats.
func addWarnings(w http.ResponseWriter, warnings []string) {
	seen := map[string]bool{}
	for _, text := range warnings {
		if seen[text] {
			continue
		}
		seen[text] = true
		if h, err := utilnet.NewWarningHeader(299, "-", text); err == nil {
			w.Header().Add("Warning", h)
		}
	}
}

// checkKind refuses a body of another kind or version than the URL's.
func checkKind(k *kind, obj store.Object) *apierrors.StatusError {
	gvk := obj.GetObjectKind().GroupVersionKind()
	want := schema.GroupVersion{Group: k.group, Version: k.version}
	if want.Version == "" {
		want.Version = "v1"
	}
	if gvk.Kind != "" && gvk.Kind != k.kind {
		return apierrors.NewBadRequest(fmt.Sprintf("the kind in the data (%s) does not match the expected kind (%s)", gvk.Kind, k.kind))
	}
	if (gvk.Kind != "" || gvk.GroupVersion() != schema.GroupVersion{}) && gvk.GroupVersion() != want {
		return apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)", gvk.GroupVersion(), want))
	}
	return nil
}

// update serves PUT on an object or its status subresource: the body
// replaces the object, with the apiserver's update semantics (replace).
func (s *Server) update(w http.ResponseWriter, r *http.Request, k *kind, ns, name, sub string) {
	opts, se := writeOptionsOf(r, "UpdateOptions")
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
	if se == nil && obj.GetName() != name {
		// handlers/rest.go checkName's words.
		se = apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", obj.GetName(), name))
	}
	if se == nil && k.namespaced && obj.GetNamespace() != "" && obj.GetNamespace() != ns {
		se = apierrors.NewBadRequest(fmt.Sprintf("the namespace of the object (%s) does not match the namespace on the URL (%s)", obj.GetNamespace(), ns))
	}
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	if k.namespaced {
		obj.SetNamespace(ns)
	}
	out, err := s.replace(k, ns, name, sub, opts.dryRun, func(store.Object) (store.Object, error) { return obj, nil })
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	addWarnings(w, warnings)
	writeJSON(w, http.StatusOK, out)
}

// replace is the apiserver's update (registry Store.Update with the kind's
// strategy), shared by PUT and PATCH: in one store transaction, change
// computes the new object from the stored one; what the client may not set
// is kept (uid, creationTimestamp, deletion, and per the strategy the
// status or the spec), the result is validated against the old object,
// and the generation is bumped when the spec changed. A resourceVersion in
// the new object is a precondition (409 when stale); none is an
// unconditional update. An update that takes the last finalizer of an
// object being deleted removes it.
//
// Admission sees the update after validation, as the apiserver's registry
// runs it inside its guaranteed update (ResourceQuota charges a claim's
// growth; LimitRanger checks a claim's new size). Subresources are not
// admitted: upstream's LimitRanger and ResourceQuota ignore them.
func (s *Server) replace(k *kind, ns, name, sub string, dryRun bool, change func(cur store.Object) (store.Object, error)) (store.Object, error) {
	var out store.Object
	var used *serviceAllocs
	if k.resource == "services" && k.group == "" && sub == "" {
		// Taken before the store's write, and before admission's
		// namespace lock as a create takes them (createOne): the other
		// Services are read outside the write.
		var unlock func()
		var err error
		if used, unlock, err = s.beginServiceAlloc(ns, name); err != nil {
			return nil, err
		}
		defer unlock()
	}
	admit := func(store.Resource, runtime.Object, runtime.Object) error { return nil }
	done := func(bool) {}
	if s.opts.Admission != nil && k.namespaced && sub == "" {
		// The namespace's admissions wait for this write, as for a
		// create; taken before the store's write, never inside it.
		admit, done = s.opts.Admission.Update(ns)
	}
	committed := false
	defer func() {
		if !committed {
			done(false)
		}
	}()
	_, err := s.modify(k, ns, name, func(cur store.Object) (store.Decision, error) {
		old := cur.DeepCopyObject().(store.Object)
		obj, err := change(cur)
		if err != nil {
			return store.Decision{}, err
		}
		if !k.namespaced {
			obj.SetNamespace("") // rest.BeforeUpdate
		} else if obj.GetNamespace() == "" {
			obj.SetNamespace(ns)
		}
		setTypeMeta(k, obj)
		// rest.BeforeUpdate: what only the server sets comes from the stored
		// object; an update without resourceVersion is unconditional.
		if obj.GetResourceVersion() == "" {
			obj.SetResourceVersion(old.GetResourceVersion())
		}
		if obj.GetUID() == "" {
			obj.SetUID(old.GetUID())
		}
		obj.SetCreationTimestamp(old.GetCreationTimestamp())
		obj.SetDeletionTimestamp(old.GetDeletionTimestamp())
		obj.SetDeletionGracePeriodSeconds(old.GetDeletionGracePeriodSeconds())
		obj.SetGeneration(old.GetGeneration())
		obj.SetManagedFields(old.GetManagedFields())
		prepare := k.prepareUpdate
		if sub == "status" {
			prepare = k.prepareStatus
		}
		if prepare != nil {
			prepare(obj, old)
		} else {
			genericPrepareUpdate(obj, old, sub == "status")
		}
		if used != nil {
			if err := s.svcRanges.allocateService(obj.(*corev1.Service), old.(*corev1.Service), used); err != nil {
				return store.Decision{}, err
			}
		}
		errs := apivalidation.ValidateObjectMetaAccessorUpdate(obj, old, field.NewPath("metadata"))
		if len(errs) > 0 {
			return store.Decision{}, apierrors.NewInvalid(k.gk(), name, errs)
		}
		if k.validate != nil {
			if err := k.validate(obj); err != nil {
				return store.Decision{}, err
			}
		}
		if k.validateUpdate != nil {
			if err := k.validateUpdate(obj, old); err != nil {
				return store.Decision{}, err
			}
		}
		if err := admit(store.Resource(kindKey(k.group, k.resource)), obj, old); err != nil {
			return store.Decision{}, err
		}
		// The scale subresource changes the spec as an update does.
		bump := (sub == "" || sub == "scale") && (specChanged(obj, old) ||
			k.annotationsBumpGeneration && !apiequality.Semantic.DeepEqual(obj.GetAnnotations(), old.GetAnnotations()))
		if dryRun {
			if obj.GetResourceVersion() != old.GetResourceVersion() {
				return store.Decision{}, store.ErrModified
			}
			if bump {
				obj.SetGeneration(old.GetGeneration() + 1)
			}
			out = obj
			return store.Decision{}, errDryRun
		}
		out = obj
		return store.Decision{Replace: obj, BumpGeneration: bump}, nil
	})
	committed = true
	done(err == nil)
	if errors.Is(err, errDryRun) {
		return out, nil
	}
	return out, err
}

// modify runs the store's read-modify-write on one object of k.
func (s *Server) modify(k *kind, ns, name string, fn func(cur store.Object) (store.Decision, error)) (bool, error) {
	if k.toStored == nil {
		return s.store.Modify(store.Resource(k.resource), ns, name, k.new(), fn)
	}
	// Served in another form than stored: fn decides on the served form
	// (k.new decodes either), the stored form is written, and the object
	// fn left is refreshed from it.
	var served, stored store.Object
	deleted, err := s.store.Modify(store.Resource(k.resource), ns, name, k.new(), func(cur store.Object) (store.Decision, error) {
		d, err := fn(cur)
		if err != nil {
			return d, err
		}
		served = cur
		if d.Replace != nil {
			served = d.Replace
		}
		stored = k.toStored(served)
		d.Replace = stored
		return d, nil
	})
	if err == nil && stored != nil {
		k.fromStored(stored, served)
	}
	return deleted, err
}

// setTypeMeta sets the kind and apiVersion every stored object carries.
func setTypeMeta(k *kind, obj store.Object) {
	gv := schema.GroupVersion{Group: k.group, Version: k.version}
	if gv.Version == "" {
		gv.Version = "v1"
	}
	obj.GetObjectKind().SetGroupVersionKind(gv.WithKind(k.kind))
}

// genericPrepareUpdate is the usual strategy: an update of the object
// keeps its status, an update of the status subresource changes only the
// status (and metadata), as the apiserver's status strategies do. Kinds
// without a status are unaffected.
func genericPrepareUpdate(obj, old store.Object, status bool) {
	nm, err1 := toMap(obj)
	om, err2 := toMap(old)
	if err1 != nil || err2 != nil {
		return
	}
	if status {
		for key := range nm {
			if key != "status" && key != "metadata" && key != "kind" && key != "apiVersion" {
				delete(nm, key)
			}
		}
		for key, v := range om {
			if key != "status" && key != "metadata" {
				nm[key] = v
			}
		}
	} else if _, has := om["status"]; has {
		nm["status"] = om["status"]
	} else {
		delete(nm, "status")
	}
	if b, err := json.Marshal(nm); err == nil {
		v := reflect.ValueOf(obj).Elem()
		v.Set(reflect.Zero(v.Type()))
		_ = json.Unmarshal(b, obj)
	}
}

func toMap(obj any) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	return m, json.Unmarshal(b, &m)
}

// specChanged reports a change to the object's spec, for which the
// apiserver bumps metadata.generation.
func specChanged(obj, old store.Object) bool {
	nm, err1 := toMap(obj)
	om, err2 := toMap(old)
	if err1 != nil || err2 != nil {
		return false
	}
	var ns, os any
	_ = json.Unmarshal(nm["spec"], &ns)
	_ = json.Unmarshal(om["spec"], &os)
	return !apiequality.Semantic.DeepEqual(ns, os)
}
