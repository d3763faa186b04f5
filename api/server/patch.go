package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/mergepatch"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"

	"github.com/berth-dev/berth/agent/store"
)

// patchTypes are the patches berth applies, in the order the apiserver
// lists them in its 415. Server-side apply (application/apply-patch+yaml)
// is not among them: berth keeps no managedFields, so `kubectl apply
// --server-side` gets the apiserver's answer for a patch type it does not
// serve, "the body of the request was in an unknown format - accepted
// media types include: ...", and client-side apply (a strategic merge
// patch) is the way to apply.
var patchTypes = []string{string(types.JSONPatchType), string(types.MergePatchType), string(types.StrategicMergePatchType)}

// maxJSONPatchOperations is the apiserver's bound on an RFC 6902 patch.
const maxJSONPatchOperations = 10000

// patch serves PATCH on an object or its status subresource, as the
// apiserver's patch handler: the patch is applied to the stored object in
// one store transaction, the result decoded with the fieldValidation
// directive and stored as an update (replace), so a resourceVersion in
// the patch is a precondition.
func (s *Server) patch(w http.ResponseWriter, r *http.Request, k *kind, ns, name, sub string) {
	ct := r.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	pt := types.PatchType(strings.TrimSpace(ct))
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
	if errs := metav1validation.ValidatePatchOptions(&popts, pt); len(errs) > 0 {
		s.writeStatus(w, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "PatchOptions"}, "", errs), r)
		return
	}
	fv := popts.FieldValidation
	if fv == "" {
		fv = metav1.FieldValidationWarn
	}
	body, se := readBody(w, r)
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	var warnings []string
	out, err := s.replace(k, ns, name, sub, len(popts.DryRun) > 0, func(cur store.Object) (store.Object, error) {
		orig, err := json.Marshal(cur)
		if err != nil {
			return nil, err
		}
		obj := k.new()
		warnings, err = applyPatch(pt, orig, body, obj, fv)
		if err != nil {
			return nil, err
		}
		if se := checkKind(k, obj); se != nil {
			return nil, se
		}
		return obj, nil
	})
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	addWarnings(w, warnings)
	writeJSON(w, http.StatusOK, out)
}

// applyPatch applies a patch of type pt to the JSON orig and decodes the
// result into obj, with the apiserver's errors (handlers/patch.go:
// jsonPatcher, smpPatcher, interpretStrategicMergePatchError). Where the
// apiserver would pass an unexpected patch library error through as a 500,
// berth answers 400: a patch a client sent is never the server's fault.
func applyPatch(pt types.PatchType, orig, patch []byte, obj store.Object, fv string) (_ []string, err error) {
	defer func() {
		// The patch libraries' panics on malformed patches are the client's
		// error (see applyJSONPatch).
		if r := recover(); r != nil {
			err = apierrors.NewBadRequest(fmt.Sprintf("the patch cannot be applied: %v", r))
		}
	}()
	strictOn := fv == metav1.FieldValidationStrict || fv == metav1.FieldValidationWarn
	var patched []byte
	var strictErrs []error
	var badValue string
	switch pt {
	case types.JSONPatchType:
		ops, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		if len(ops) > maxJSONPatchOperations {
			return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("The allowed maximum operations in a JSON patch is %d, got %d", maxJSONPatchOperations, len(ops)))
		}
		if patched, err = applyJSONPatch(ops, orig); err != nil {
			return nil, apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", err.Error(), 0, false)
		}
		badValue = string(patched)
	case types.MergePatchType:
		if strictOn {
			var v map[string]any
			var err error
			if strictErrs, err = sigsjson.UnmarshalStrict(patch, &v); err != nil {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("error decoding patch: %v", err))
			}
		}
		var err error
		if patched, err = jsonpatch.MergePatch(orig, patch); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		badValue = string(patched)
	case types.StrategicMergePatchType:
		patchMap := map[string]any{}
		var err error
		if strictOn {
			strictErrs, err = sigsjson.UnmarshalStrict(patch, &patchMap)
		} else {
			err = sigsjson.UnmarshalCaseSensitivePreserveInts(patch, &patchMap)
		}
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		// Decoded as the patch is (integers kept as int64, as the
		// apiserver's patcher does): a merge key that is a number (a
		// Service's port, a container's containerPort) must compare
		// equal in both, or a $patch: delete of it matches nothing.
		var origMap map[string]any
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(orig, &origMap); err != nil {
			return nil, err
		}
		schemaRef, err := strategicpatch.NewPatchMetaFromStruct(obj)
		if err != nil {
			return nil, err
		}
		out, err := strategicpatch.StrategicMergeMapPatchUsingLookupPatchMeta(origMap, patchMap, schemaRef)
		if err != nil {
			return nil, smpError(err)
		}
		if patched, err = json.Marshal(out); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		badValue = fmt.Sprintf("%+v", patchMap)
	}
	if len(patched) > maxBody {
		// No patch makes an object bigger than a request could send it
		// (the apiserver's storage limit has the same words).
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", maxBody))
	}
	invalid := func(msg string) *apierrors.StatusError {
		return apierrors.NewInvalid(schema.GroupKind{}, "", field.ErrorList{field.Invalid(field.NewPath("patch"), badValue, msg)})
	}
	decodeErrs, err := sigsjson.UnmarshalStrict(patched, obj)
	if err != nil {
		return nil, invalid(err.Error())
	}
	if !strictOn {
		decodeErrs = nil
	}
	warnings, se := strictResult(append(strictErrs, decodeErrs...), fv, invalid)
	if se != nil {
		return nil, se
	}
	return warnings, nil
}

func init() {
	// json-patch v4 copies without limit by default: a patch of a few
	// thousand "copy" operations doubling the document would exhaust
	// memory while the store's write lock is held. The copies one patch may
	// make are bounded by what a request body may carry.
	jsonpatch.AccumulatedCopySizeLimit = maxBody
}

// applyJSONPatch applies an RFC 6902 patch. json-patch v4 panics on some
// malformed operations (a "replace" of the root without a value); that is
// the client's error, answered 422 like any operation that does not apply,
// where the apiserver's panic handler would answer 500.
func applyJSONPatch(ops jsonpatch.Patch, doc []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("the patch cannot be applied: %v", r)
		}
	}()
	return ops.Apply(doc)
}

// smpError is interpretStrategicMergePatchError, with 400 for the rest.
func smpError(err error) error {
	switch {
	case errors.Is(err, mergepatch.ErrNoListOfLists), errors.Is(err, mergepatch.ErrPatchContentNotMatchRetainKeys):
		return apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", err.Error(), 0, false)
	}
	return apierrors.NewBadRequest(err.Error())
}
