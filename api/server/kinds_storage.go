package server

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/storage"
	"github.com/berth-dev/berth/agent/store"
)

// PersistentVolumeClaims, PersistentVolumes and StorageClasses, stored as
// the apiserver stores them, with its defaulting
// (pkg/apis/core/v1/defaults.go, pkg/apis/storage/v1/defaults.go), its
// strategies (pkg/registry/core/persistentvolume{,claim},
// pkg/registry/storage/storageclass), its validation
// (pkg/apis/core/validation ValidatePersistentVolume{,Claim}{,Update},
// pkg/apis/storage/validation ValidateStorageClass{,Update}) and the
// admission plugins that act on them (DefaultStorageClass,
// StorageObjectInUseProtection, PersistentVolumeClaimResize). What makes
// them volumes is agent/storage: the local-path provisioner and the PV
// controller's binding and reclaim.

// persistentVolumeClaimKind is PersistentVolumeClaim; st is where the DefaultStorageClass
// admission looks the default class up.
func persistentVolumeClaimKind(st Store) *kind {
	k := &kind{version: "v1", resource: "persistentvolumeclaims", singular: "persistentvolumeclaim", kind: "PersistentVolumeClaim",
		namespaced: true, shortNames: []string{"pvc"}, subresources: []string{"status"}}
	k.new = func() store.Object { return &corev1.PersistentVolumeClaim{} }
	k.prepare = func(o store.Object) {
		c := o.(*corev1.PersistentVolumeClaim)
		c.TypeMeta = metav1.TypeMeta{Kind: "PersistentVolumeClaim", APIVersion: "v1"}
		defaultClaim(c)
		// PrepareForCreate: the status is the PV controller's; Pending is
		// what the defaulting of the empty status reads as.
		c.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}
		// DefaultStorageClass admission: a claim that names no class (nil,
		// not "") gets the default one.
		if _, beta := c.Annotations[corev1.BetaStorageClassAnnotation]; c.Spec.StorageClassName == nil && !beta {
			if def := defaultStorageClass(st); def != nil {
				c.Spec.StorageClassName = &def.Name
			}
		}
		// StorageObjectInUseProtection admission.
		addFinalizer(c, storage.PVCProtectionFinalizer)
	}
	k.prepareUpdate = func(o, old store.Object) {
		c := o.(*corev1.PersistentVolumeClaim)
		defaultClaim(c)
		c.Status = old.(*corev1.PersistentVolumeClaim).Status
	}
	k.prepareStatus = func(o, old store.Object) {
		o.(*corev1.PersistentVolumeClaim).Spec = old.(*corev1.PersistentVolumeClaim).Spec
	}
	k.validate = func(o store.Object) error { return fieldErrs(validateClaim(o.(*corev1.PersistentVolumeClaim))) }
	k.validateUpdate = func(o, old store.Object) error {
		c, oc := o.(*corev1.PersistentVolumeClaim), old.(*corev1.PersistentVolumeClaim)
		if err := fieldErrs(validateClaimUpdate(c, oc)); err != nil {
			return err
		}
		return admitClaimResize(st, c, oc)
	}
	k.fields = func(o store.Object) fields.Set { return metaFields(o, true) }
	// The apiserver's columns (pkg/printers/internalversion, v1.32).
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Status", Type: "string", Description: corev1.PersistentVolumeClaimStatus{}.SwaggerDoc()["phase"]},
		{Name: "Volume", Type: "string", Description: corev1.PersistentVolumeClaimSpec{}.SwaggerDoc()["volumeName"]},
		{Name: "Capacity", Type: "string", Description: corev1.PersistentVolumeClaimStatus{}.SwaggerDoc()["capacity"]},
		{Name: "Access Modes", Type: "string", Description: corev1.PersistentVolumeClaimStatus{}.SwaggerDoc()["accessModes"]},
		{Name: "StorageClass", Type: "string", Description: "StorageClass of the pvc"},
		{Name: "VolumeAttributesClass", Type: "string", Description: "VolumeAttributesClass of the pvc"},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
		{Name: "VolumeMode", Type: "string", Priority: 1, Description: corev1.PersistentVolumeClaimSpec{}.SwaggerDoc()["volumeMode"]},
	}
	k.cells = func(o store.Object) []any {
		c := o.(*corev1.PersistentVolumeClaim)
		phase := string(c.Status.Phase)
		if c.DeletionTimestamp != nil {
			phase = "Terminating"
		}
		var capacity, modes string
		if c.Spec.VolumeName != "" {
			modes = storage.AccessModesString(c.Status.AccessModes)
			q := c.Status.Capacity[corev1.ResourceStorage]
			capacity = q.String()
		}
		return []any{c.Name, phase, c.Spec.VolumeName, capacity, modes, storage.ClaimClass(c),
			unsetOr(c.Spec.VolumeAttributesClassName), age(c.CreationTimestamp), unsetOrMode(c.Spec.VolumeMode)}
	}
	return k
}

func persistentVolumeKind() *kind {
	k := &kind{version: "v1", resource: "persistentvolumes", singular: "persistentvolume", kind: "PersistentVolume",
		shortNames: []string{"pv"}, subresources: []string{"status"}}
	k.new = func() store.Object { return &corev1.PersistentVolume{} }
	k.prepare = func(o store.Object) {
		v := o.(*corev1.PersistentVolume)
		v.TypeMeta = metav1.TypeMeta{Kind: "PersistentVolume", APIVersion: "v1"}
		defaultPersistentVolume(v)
		// PrepareForCreate: the status is the controller's, from Pending
		// (PersistentVolumeLastPhaseTransitionTime, GA in 1.31).
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		v.Status = corev1.PersistentVolumeStatus{Phase: corev1.VolumePending, LastPhaseTransitionTime: &now}
		addFinalizer(v, storage.PVProtectionFinalizer)
	}
	k.prepareUpdate = func(o, old store.Object) {
		v := o.(*corev1.PersistentVolume)
		defaultPersistentVolume(v)
		v.Status = old.(*corev1.PersistentVolume).Status
	}
	k.prepareStatus = func(o, old store.Object) {
		// persistentvolumeStatusStrategy: the spec stays; a phase change
		// the client did not stamp gets lastPhaseTransitionTime now.
		v, ov := o.(*corev1.PersistentVolume), old.(*corev1.PersistentVolume)
		v.Spec = ov.Spec
		switch {
		case v.Status.Phase == ov.Status.Phase && v.Status.LastPhaseTransitionTime == nil:
			v.Status.LastPhaseTransitionTime = ov.Status.LastPhaseTransitionTime
		case v.Status.Phase != ov.Status.Phase && (v.Status.LastPhaseTransitionTime == nil || v.Status.LastPhaseTransitionTime.Equal(ov.Status.LastPhaseTransitionTime)):
			now := metav1.NewTime(time.Now().Truncate(time.Second))
			v.Status.LastPhaseTransitionTime = &now
		}
	}
	k.validate = func(o store.Object) error { return fieldErrs(validateVolume(o.(*corev1.PersistentVolume))) }
	k.validateUpdate = func(o, old store.Object) error {
		return fieldErrs(validateVolumeUpdate(o.(*corev1.PersistentVolume), old.(*corev1.PersistentVolume)))
	}
	k.fields = func(o store.Object) fields.Set { return metaFields(o, false) }
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Capacity", Type: "string", Description: corev1.PersistentVolumeSpec{}.SwaggerDoc()["capacity"]},
		{Name: "Access Modes", Type: "string", Description: corev1.PersistentVolumeSpec{}.SwaggerDoc()["accessModes"]},
		{Name: "Reclaim Policy", Type: "string", Description: corev1.PersistentVolumeSpec{}.SwaggerDoc()["persistentVolumeReclaimPolicy"]},
		{Name: "Status", Type: "string", Description: corev1.PersistentVolumeStatus{}.SwaggerDoc()["phase"]},
		{Name: "Claim", Type: "string", Description: corev1.PersistentVolumeSpec{}.SwaggerDoc()["claimRef"]},
		{Name: "StorageClass", Type: "string", Description: "StorageClass of the pv"},
		{Name: "VolumeAttributesClass", Type: "string", Description: "VolumeAttributesClass of the pv"},
		{Name: "Reason", Type: "string", Description: corev1.PersistentVolumeStatus{}.SwaggerDoc()["reason"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
		{Name: "VolumeMode", Type: "string", Priority: 1, Description: corev1.PersistentVolumeSpec{}.SwaggerDoc()["volumeMode"]},
	}
	k.cells = func(o store.Object) []any {
		v := o.(*corev1.PersistentVolume)
		var claim string
		if r := v.Spec.ClaimRef; r != nil {
			claim = r.Namespace + "/" + r.Name
		}
		q := v.Spec.Capacity[corev1.ResourceStorage]
		phase := string(v.Status.Phase)
		if v.DeletionTimestamp != nil {
			phase = "Terminating"
		}
		return []any{v.Name, q.String(), storage.AccessModesString(v.Spec.AccessModes), string(v.Spec.PersistentVolumeReclaimPolicy),
			phase, claim, storage.VolumeClass(v), unsetOr(v.Spec.VolumeAttributesClassName), v.Status.Reason,
			age(v.CreationTimestamp), unsetOrMode(v.Spec.VolumeMode)}
	}
	return k
}

func storageClassKind() *kind {
	k := &kind{group: storagev1.GroupName, version: "v1", resource: "storageclasses", singular: "storageclass", kind: "StorageClass",
		shortNames: []string{"sc"}}
	k.new = func() store.Object { return &storagev1.StorageClass{} }
	k.prepare = func(o store.Object) {
		c := o.(*storagev1.StorageClass)
		c.TypeMeta = metav1.TypeMeta{Kind: "StorageClass", APIVersion: storagev1.SchemeGroupVersion.String()}
		defaultStorageClassFields(c)
	}
	// Defaulting runs on every decode, an update's body too; a class has
	// no status to keep.
	k.prepareUpdate = func(o, _ store.Object) { defaultStorageClassFields(o.(*storagev1.StorageClass)) }
	k.validate = func(o store.Object) error { return fieldErrs(validateStorageClass(o.(*storagev1.StorageClass))) }
	k.validateUpdate = func(o, old store.Object) error {
		return fieldErrs(validateStorageClassUpdate(o.(*storagev1.StorageClass), old.(*storagev1.StorageClass)))
	}
	k.fields = func(o store.Object) fields.Set { return metaFields(o, false) }
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Provisioner", Type: "string", Description: storagev1.StorageClass{}.SwaggerDoc()["provisioner"]},
		{Name: "ReclaimPolicy", Type: "string", Description: storagev1.StorageClass{}.SwaggerDoc()["reclaimPolicy"]},
		{Name: "VolumeBindingMode", Type: "string", Description: storagev1.StorageClass{}.SwaggerDoc()["volumeBindingMode"]},
		{Name: "AllowVolumeExpansion", Type: "string", Description: storagev1.StorageClass{}.SwaggerDoc()["allowVolumeExpansion"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
	}
	k.cells = func(o store.Object) []any {
		c := o.(*storagev1.StorageClass)
		name := c.Name
		if storage.IsDefaultClass(c.ObjectMeta) {
			name += " (default)"
		}
		reclaim := string(corev1.PersistentVolumeReclaimDelete)
		if c.ReclaimPolicy != nil {
			reclaim = string(*c.ReclaimPolicy)
		}
		binding := string(storagev1.VolumeBindingImmediate)
		if c.VolumeBindingMode != nil {
			binding = string(*c.VolumeBindingMode)
		}
		expand := c.AllowVolumeExpansion != nil && *c.AllowVolumeExpansion
		return []any{name, c.Provisioner, reclaim, binding, expand, age(c.CreationTimestamp)}
	}
	return k
}

func unsetOr(s *string) string {
	if s == nil {
		return "<unset>"
	}
	return *s
}

func unsetOrMode(m *corev1.PersistentVolumeMode) string {
	if m == nil {
		return "<unset>"
	}
	return string(*m)
}

func addFinalizer(o metav1.Object, f string) {
	for _, x := range o.GetFinalizers() {
		if x == f {
			return
		}
	}
	o.SetFinalizers(append(o.GetFinalizers(), f))
}

// defaultStorageClass is the DefaultStorageClass admission's lookup
// (volume/util GetDefaultClass): nil without one, or if the classes
// cannot be read.
func defaultStorageClass(st Store) *storagev1.StorageClass {
	var classes []*storagev1.StorageClass
	_, err := st.List(storage.Classes, "", func(b []byte) error {
		var c storagev1.StorageClass
		if err := json.Unmarshal(b, &c); err != nil {
			return err
		}
		classes = append(classes, &c)
		return nil
	})
	if err != nil {
		return nil
	}
	return storage.DefaultClass(classes)
}

// defaultClaim is SetDefaults_PersistentVolumeClaimSpec (volumeMode
// Filesystem) and SetDefaults_ResourceList (quantities rounded up to
// milli units).
func defaultClaim(c *corev1.PersistentVolumeClaim) {
	if c.Spec.VolumeMode == nil {
		c.Spec.VolumeMode = ptr(corev1.PersistentVolumeFilesystem)
	}
	roundUp(c.Spec.Resources.Requests)
	roundUp(c.Spec.Resources.Limits)
}

// defaultPersistentVolume is SetDefaults_PersistentVolume: reclaim policy Retain,
// volumeMode Filesystem; and a hostPath's type "" (SetDefaults_HostPathVolumeSource).
func defaultPersistentVolume(v *corev1.PersistentVolume) {
	if v.Spec.PersistentVolumeReclaimPolicy == "" {
		v.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
	}
	if v.Spec.VolumeMode == nil {
		v.Spec.VolumeMode = ptr(corev1.PersistentVolumeFilesystem)
	}
	if hp := v.Spec.HostPath; hp != nil && hp.Type == nil {
		hp.Type = ptr(corev1.HostPathUnset)
	}
	roundUp(v.Spec.Capacity)
}

// defaultStorageClassFields is SetDefaults_StorageClass: reclaimPolicy
// Delete, volumeBindingMode Immediate.
func defaultStorageClassFields(c *storagev1.StorageClass) {
	if c.ReclaimPolicy == nil {
		c.ReclaimPolicy = ptr(corev1.PersistentVolumeReclaimDelete)
	}
	if c.VolumeBindingMode == nil {
		c.VolumeBindingMode = ptr(storagev1.VolumeBindingImmediate)
	}
}

func roundUp(l corev1.ResourceList) {
	for k, q := range l {
		q.RoundUp(resource.Milli)
		l[k] = q
	}
}

var (
	supportedAccessModes  = []string{string(corev1.ReadOnlyMany), string(corev1.ReadWriteMany), string(corev1.ReadWriteOnce), string(corev1.ReadWriteOncePod)}
	supportedVolumeModes  = []string{string(corev1.PersistentVolumeBlock), string(corev1.PersistentVolumeFilesystem)}
	supportedReclaim      = []string{string(corev1.PersistentVolumeReclaimDelete), string(corev1.PersistentVolumeReclaimRecycle), string(corev1.PersistentVolumeReclaimRetain)}
	supportedClassReclaim = []string{string(corev1.PersistentVolumeReclaimDelete), string(corev1.PersistentVolumeReclaimRetain)}
	supportedBindingModes = []string{string(storagev1.VolumeBindingImmediate), string(storagev1.VolumeBindingWaitForFirstConsumer)}
)

func isOneOf(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// validateAccessModes is the access-mode part of ValidatePersistentVolumeSpec
// and ValidatePersistentVolumeClaimSpec.
func validateAccessModes(modes []corev1.PersistentVolumeAccessMode, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(modes) == 0 {
		errs = append(errs, field.Required(p, "at least 1 access mode is required"))
	}
	rwop, other := false, false
	for _, m := range modes {
		if !isOneOf(supportedAccessModes, string(m)) {
			errs = append(errs, field.NotSupported(p, m, supportedAccessModes))
		}
		if m == corev1.ReadWriteOncePod {
			rwop = true
		} else {
			other = true
		}
	}
	if rwop && other {
		errs = append(errs, field.Forbidden(p, "may not use ReadWriteOncePod with other access modes"))
	}
	return errs
}

// validatePositive is ValidatePositiveQuantityValue.
func validatePositive(q resource.Quantity, p *field.Path) field.ErrorList {
	if q.Cmp(resource.Quantity{}) <= 0 {
		return field.ErrorList{field.Invalid(p, q.String(), "must be greater than zero")}
	}
	return nil
}

func validateClassName(name string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range apivalidation.NameIsDNSSubdomain(name, false) {
		errs = append(errs, field.Invalid(p, name, msg))
	}
	return errs
}

// validateClaim is ValidatePersistentVolumeClaim: metadata, access modes,
// a positive storage request, the class name, volumeMode, the selector.
func validateClaim(c *corev1.PersistentVolumeClaim) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&c.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	spec := field.NewPath("spec")
	errs = append(errs, validateAccessModes(c.Spec.AccessModes, spec.Child("accessModes"))...)
	if c.Spec.Selector != nil {
		errs = append(errs, metavalidation.ValidateLabelSelector(c.Spec.Selector, metavalidation.LabelSelectorValidationOptions{}, spec.Child("selector"))...)
	}
	sp := spec.Child("resources").Key(string(corev1.ResourceStorage))
	if q, ok := c.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
		errs = append(errs, field.Required(sp, ""))
	} else {
		errs = append(errs, validatePositive(q, sp)...)
	}
	if n := c.Spec.StorageClassName; n != nil && *n != "" {
		errs = append(errs, validateClassName(*n, spec.Child("storageClassName"))...)
	}
	if m := c.Spec.VolumeMode; m != nil && !isOneOf(supportedVolumeModes, string(*m)) {
		errs = append(errs, field.NotSupported(spec.Child("volumeMode"), *m, supportedVolumeModes))
	}
	return errs
}

// validateClaimUpdate is ValidatePersistentVolumeClaimUpdate: the spec is
// immutable but for volumeName set once (the PV controller's binding), a
// class given to a claim that had none (the retroactive default) and,
// for a bound claim, resources.requests, whose storage may not shrink to
// status.capacity or below.
func validateClaimUpdate(c, old *corev1.PersistentVolumeClaim) field.ErrorList {
	errs := validateClaim(c)
	newSpec, oldSpec := c.Spec.DeepCopy(), old.Spec.DeepCopy()
	if old.Spec.VolumeName == "" {
		oldSpec.VolumeName = newSpec.VolumeName
	}
	_, oldBeta := old.Annotations[corev1.BetaStorageClassAnnotation]
	_, newBeta := c.Annotations[corev1.BetaStorageClassAnnotation]
	if oldBeta || newBeta {
		errs = append(errs, apivalidation.ValidateImmutableField(c.Annotations[corev1.BetaStorageClassAnnotation], old.Annotations[corev1.BetaStorageClassAnnotation],
			field.NewPath("metadata").Child("annotations").Key(corev1.BetaStorageClassAnnotation))...)
	}
	if !oldBeta && old.Spec.StorageClassName == nil && c.Spec.StorageClassName != nil {
		// validateStorageClassUpgradeFromNil.
		newSpec.StorageClassName = nil
	}
	if c.Status.Phase == corev1.ClaimBound && newSpec.Resources.Requests != nil {
		newSpec.Resources.Requests[corev1.ResourceStorage] = old.Spec.Resources.Requests[corev1.ResourceStorage]
	}
	if !apiequality.Semantic.DeepEqual(newSpec, oldSpec) {
		errs = append(errs, field.Forbidden(field.NewPath("spec"),
			fmt.Sprintf("spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n%v", diff.Diff(*oldSpec, *newSpec))))
	}
	oldSize, newSize := old.Spec.Resources.Requests[corev1.ResourceStorage], c.Spec.Resources.Requests[corev1.ResourceStorage]
	// RecoverVolumeExpansionFailure (beta, on, in 1.32): a request may
	// shrink back, to above status.capacity, to recover from a failed
	// expansion; volumes themselves never shrink.
	if statusSize := old.Status.Capacity[corev1.ResourceStorage]; newSize.Cmp(oldSize) < 0 && newSize.Cmp(statusSize) <= 0 {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "resources", "requests", "storage"), "field can not be less than status.capacity"))
	}
	errs = append(errs, apivalidation.ValidateImmutableField(c.Spec.VolumeMode, old.Spec.VolumeMode, field.NewPath("volumeMode"))...)
	return errs
}

// admitClaimResize is the PersistentVolumeClaimResize admission plugin: a
// larger request needs a bound claim whose class allows expansion.
func admitClaimResize(st Store, c, old *corev1.PersistentVolumeClaim) error {
	oldSize, newSize := old.Spec.Resources.Requests[corev1.ResourceStorage], c.Spec.Resources.Requests[corev1.ResourceStorage]
	if newSize.Cmp(oldSize) <= 0 {
		return nil
	}
	if old.Status.Phase != corev1.ClaimBound {
		return errdefs.ErrPermissionDenied.WithMessage("only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize")
	}
	var sc storagev1.StorageClass
	if name := storage.ClaimClass(c); name == "" || st.Get(storage.Classes, "", name, &sc) != nil ||
		sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion {
		return errdefs.ErrPermissionDenied.WithMessage("only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize")
	}
	return nil
}

// volumeSources counts the sources a PersistentVolumeSource sets.
func volumeSources(s *corev1.PersistentVolumeSource) int {
	n := 0
	v := reflect.ValueOf(s).Elem()
	for i := 0; i < v.NumField(); i++ {
		if !v.Field(i).IsNil() {
			n++
		}
	}
	return n
}

// validateVolume is ValidatePersistentVolume's essentials: metadata,
// access modes, capacity (storage only, positive), reclaim policy, class,
// volumeMode, exactly one source; a hostPath's path without "..", a local
// volume's absolute path and the node affinity it needs.
func validateVolume(v *corev1.PersistentVolume) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&v.ObjectMeta, false, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	spec := field.NewPath("spec")
	errs = append(errs, validateAccessModes(v.Spec.AccessModes, spec.Child("accessModes"))...)
	cp := spec.Child("capacity")
	if len(v.Spec.Capacity) == 0 {
		errs = append(errs, field.Required(cp, ""))
	}
	if _, ok := v.Spec.Capacity[corev1.ResourceStorage]; !ok || len(v.Spec.Capacity) > 1 {
		errs = append(errs, field.NotSupported(cp, v.Spec.Capacity, []string{string(corev1.ResourceStorage)}))
	}
	if q, ok := v.Spec.Capacity[corev1.ResourceStorage]; ok {
		errs = append(errs, validatePositive(q, cp.Key(string(corev1.ResourceStorage)))...)
	}
	if p := v.Spec.PersistentVolumeReclaimPolicy; p != "" && !isOneOf(supportedReclaim, string(p)) {
		errs = append(errs, field.NotSupported(spec.Child("persistentVolumeReclaimPolicy"), p, supportedReclaim))
	}
	if n := v.Spec.StorageClassName; n != "" {
		errs = append(errs, validateClassName(n, spec.Child("storageClassName"))...)
	}
	if m := v.Spec.VolumeMode; m != nil && !isOneOf(supportedVolumeModes, string(*m)) {
		errs = append(errs, field.NotSupported(spec.Child("volumeMode"), *m, supportedVolumeModes))
	}
	switch n := volumeSources(&v.Spec.PersistentVolumeSource); {
	case n == 0:
		errs = append(errs, field.Required(spec, "must specify a volume type"))
	case n > 1:
		errs = append(errs, field.Forbidden(spec, "may not specify more than 1 volume type"))
	}
	if hp := v.Spec.HostPath; hp != nil {
		p := spec.Child("hostPath", "path")
		if hp.Path == "" {
			errs = append(errs, field.Required(p, ""))
		}
		for _, el := range strings.Split(hp.Path, "/") {
			if el == ".." {
				errs = append(errs, field.Invalid(p, hp.Path, "must not contain '..'"))
				break
			}
		}
	}
	if l := v.Spec.Local; l != nil {
		p := spec.Child("local", "path")
		switch {
		case l.Path == "":
			errs = append(errs, field.Required(p, ""))
		case !strings.HasPrefix(l.Path, "/"):
			errs = append(errs, field.Invalid(p, l.Path, "must be an absolute path"))
		}
		if v.Spec.NodeAffinity == nil {
			errs = append(errs, field.Required(spec.Child("nodeAffinity"), "Local volume requires node affinity"))
		}
	}
	return errs
}

// validateVolumeUpdate is ValidatePersistentVolumeUpdate: the source and
// volumeMode never change; node affinity only from none.
func validateVolumeUpdate(v, old *corev1.PersistentVolume) field.ErrorList {
	errs := validateVolume(v)
	if !apiequality.Semantic.DeepEqual(v.Spec.PersistentVolumeSource, old.Spec.PersistentVolumeSource) {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "persistentvolumesource"),
			fmt.Sprintf("spec.persistentvolumesource is immutable after creation\n%v", diff.Diff(old.Spec.PersistentVolumeSource, v.Spec.PersistentVolumeSource))))
	}
	errs = append(errs, apivalidation.ValidateImmutableField(v.Spec.VolumeMode, old.Spec.VolumeMode, field.NewPath("volumeMode"))...)
	if old.Spec.NodeAffinity != nil {
		errs = append(errs, apivalidation.ValidateImmutableField(v.Spec.NodeAffinity, old.Spec.NodeAffinity, field.NewPath("nodeAffinity"))...)
	}
	return errs
}

// validateStorageClass is ValidateStorageClass: name, provisioner (a
// qualified name), parameters, reclaim policy, binding mode.
func validateStorageClass(c *storagev1.StorageClass) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&c.ObjectMeta, false, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	pp := field.NewPath("provisioner")
	if c.Provisioner == "" {
		errs = append(errs, field.Required(pp, c.Provisioner))
	} else {
		lower := strings.ToLower(c.Provisioner)
		for _, msg := range validation.IsQualifiedName(lower) {
			errs = append(errs, field.Invalid(pp, lower, msg))
		}
	}
	params := field.NewPath("parameters")
	total := 0
	if len(c.Parameters) > 512 {
		errs = append(errs, field.TooLong(params, "Provisioner Parameters exceeded max allowed", 512))
	}
	for _, key := range sortedKeys(c.Parameters) {
		if key == "" {
			errs = append(errs, field.Invalid(params, key, "field can not be empty."))
		}
		total += len(key) + len(c.Parameters[key])
	}
	if total > 256*(1<<10) {
		errs = append(errs, field.TooLong(params, "", 256*(1<<10)))
	}
	if p := c.ReclaimPolicy; p != nil && *p != "" && !isOneOf(supportedClassReclaim, string(*p)) {
		errs = append(errs, field.NotSupported(field.NewPath("reclaimPolicy"), *p, supportedClassReclaim))
	}
	switch m := c.VolumeBindingMode; {
	case m == nil:
		errs = append(errs, field.Required(field.NewPath("volumeBindingMode"), ""))
	case !isOneOf(supportedBindingModes, string(*m)):
		errs = append(errs, field.NotSupported(field.NewPath("volumeBindingMode"), *m, supportedBindingModes))
	}
	return errs
}

// validateStorageClassUpdate is ValidateStorageClassUpdate: parameters,
// provisioner, reclaimPolicy and volumeBindingMode never change.
func validateStorageClassUpdate(c, old *storagev1.StorageClass) field.ErrorList {
	errs := validateStorageClass(c)
	if !reflect.DeepEqual(old.Parameters, c.Parameters) {
		errs = append(errs, field.Forbidden(field.NewPath("parameters"), "updates to parameters are forbidden."))
	}
	if c.Provisioner != old.Provisioner {
		errs = append(errs, field.Forbidden(field.NewPath("provisioner"), "updates to provisioner are forbidden."))
	}
	if c.ReclaimPolicy != nil && old.ReclaimPolicy != nil && *c.ReclaimPolicy != *old.ReclaimPolicy {
		errs = append(errs, field.Forbidden(field.NewPath("reclaimPolicy"), "updates to reclaimPolicy are forbidden."))
	}
	errs = append(errs, apivalidation.ValidateImmutableField(c.VolumeBindingMode, old.VolumeBindingMode, field.NewPath("volumeBindingMode"))...)
	return errs
}
