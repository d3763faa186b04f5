package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// The scale subresource of Deployments and ReplicaSets, as the apiserver's
// ScaleREST serves it: an autoscaling/v1 Scale read from the object
// (spec.replicas, status.replicas, the selector as a string), and written
// back into spec.replicas by PUT or PATCH (kubectl scale patches it), as
// an update of the object: its strategy, its preconditions, a new
// generation.

var scaleGK = schema.GroupKind{Group: autoscalingv1.GroupName, Kind: "Scale"}

// scaleSubresource is discovery's entry for <resource>/scale: another
// group's kind, which kubectl's scale client looks up there.
var scaleSubresource = schema.GroupVersionKind{Group: autoscalingv1.GroupName, Version: "v1", Kind: "Scale"}

// scaleOf is scaleFromDeployment and scaleFromReplicaSet.
func scaleOf(obj store.Object) (*autoscalingv1.Scale, error) {
	var spec, status int32
	var ls *metav1.LabelSelector
	switch o := obj.(type) {
	case *appsv1.Deployment:
		spec, status, ls = replicasOf(o.Spec.Replicas), o.Status.Replicas, o.Spec.Selector
	case *appsv1.ReplicaSet:
		spec, status, ls = replicasOf(o.Spec.Replicas), o.Status.Replicas, o.Spec.Selector
	default:
		return nil, fmt.Errorf("no scale for %T", obj)
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("invalid label selector: %v", err))
	}
	return &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: obj.GetName(), Namespace: obj.GetNamespace(), UID: obj.GetUID(),
			ResourceVersion: obj.GetResourceVersion(), CreationTimestamp: obj.GetCreationTimestamp()},
		Spec:   autoscalingv1.ScaleSpec{Replicas: spec},
		Status: autoscalingv1.ScaleStatus{Replicas: status, Selector: sel.String()},
	}, nil
}

// setReplicas writes a Scale's spec.replicas into the object.
func setReplicas(obj store.Object, n int32) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		o.Spec.Replicas = &n
	case *appsv1.ReplicaSet:
		o.Spec.Replicas = &n
	}
}

// serveScale answers GET, PUT and PATCH on <resource>/<name>/scale.
func (s *Server) serveScale(w http.ResponseWriter, r *http.Request, k *kind, ns, name string) {
	switch r.Method {
	case http.MethodGet:
		obj := k.new()
		if err := s.store.Get(store.Resource(k.resource), ns, name, obj); err != nil {
			s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
			return
		}
		sc, err := scaleOf(obj)
		if err != nil {
			s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
			return
		}
		writeJSON(w, http.StatusOK, sc)
	case http.MethodPut, http.MethodPatch:
		s.writeScale(w, r, k, ns, name)
	default:
		s.writeStatus(w, apierrors.NewMethodNotSupported(k.gr(), strings.ToLower(r.Method)), r)
	}
}

// writeScale is ScaleREST.Update: the new Scale, from the body (PUT) or
// the patch applied to the current Scale (PATCH), is validated
// (ValidateScale), its resourceVersion a precondition, and its replicas
// stored as an update of the object.
func (s *Server) writeScale(w http.ResponseWriter, r *http.Request, k *kind, ns, name string) {
	put := r.Method == http.MethodPut
	var pt types.PatchType
	dryRun, fv := false, metav1.FieldValidationWarn
	if put {
		opts, se := writeOptionsOf(r, "UpdateOptions")
		if se != nil {
			s.writeStatus(w, se, r)
			return
		}
		dryRun, fv = opts.dryRun, opts.fieldValidation
	} else {
		ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
		pt = types.PatchType(strings.TrimSpace(ct))
		known := false
		for _, t := range patchTypes {
			known = known || string(pt) == t
		}
		if !known {
			s.writeStatus(w, unsupportedMediaType(patchTypes...), r)
			return
		}
		var popts metav1.PatchOptions
		if err := parameterCodec.DecodeParameters(r.URL.Query(), metav1.SchemeGroupVersion, &popts); err != nil {
			s.writeStatus(w, apierrors.NewBadRequest(err.Error()), r)
			return
		}
		dryRun = len(popts.DryRun) > 0
		if popts.FieldValidation != "" {
			fv = popts.FieldValidation
		}
	}
	body, se := readBody(w, r)
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	var warnings []string
	out, err := s.replace(k, ns, name, "scale", dryRun, func(cur store.Object) (store.Object, error) {
		old, err := scaleOf(cur)
		if err != nil {
			return nil, err
		}
		sc := &autoscalingv1.Scale{}
		if put {
			if warnings, se = decodeObject(r, body, sc, fv); se != nil {
				return nil, se
			}
		} else {
			orig, err := json.Marshal(old)
			if err != nil {
				return nil, err
			}
			if warnings, err = applyPatch(pt, orig, body, sc, fv); err != nil {
				return nil, err
			}
		}
		if sc.Name != "" && sc.Name != name {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", sc.Name, name))
		}
		if errs := apivalidation.ValidateNonnegativeField(int64(sc.Spec.Replicas), field.NewPath("spec", "replicas")); len(errs) > 0 {
			return nil, apierrors.NewInvalid(scaleGK, name, errs)
		}
		// The Scale's resourceVersion is the object's: a precondition.
		cur.SetResourceVersion(sc.ResourceVersion)
		setReplicas(cur, sc.Spec.Replicas)
		return cur, nil
	})
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	sc, err := scaleOf(out)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	addWarnings(w, warnings)
	writeJSON(w, http.StatusOK, sc)
}
