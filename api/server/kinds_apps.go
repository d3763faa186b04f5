package server

import (
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// Deployments and ReplicaSets (apps/v1), stored as the apiserver stores
// them: defaulted as apps/v1's SetDefaults_Deployment and
// SetDefaults_ReplicaSet, validated as pkg/apis/apps/validation with its
// messages, printed with kubectl's columns, scaled through the scale
// subresource (scale.go).

func deploymentKind() *kind {
	k := &kind{group: "apps", version: "v1", resource: "deployments", singular: "deployment", kind: "Deployment", namespaced: true,
		shortNames: []string{"deploy"}, categories: []string{"all"}, subresources: []string{"status", "scale"}}
	k.new = func() store.Object { return &appsv1.Deployment{} }
	k.ownsDependents = true // its ReplicaSets
	// deploymentStrategy.PrepareForUpdate: annotations are copied to the
	// Deployment's ReplicaSets, so a change of them is a new generation.
	k.annotationsBumpGeneration = true
	k.prepare = func(o store.Object) {
		d := o.(*appsv1.Deployment)
		d.TypeMeta = metav1.TypeMeta{Kind: "Deployment", APIVersion: "apps/v1"}
		defaultDeployment(d)
		// deploymentStrategy.PrepareForCreate: the status is the
		// controller's.
		d.Status = appsv1.DeploymentStatus{}
	}
	k.prepareUpdate = func(o, old store.Object) {
		d, od := o.(*appsv1.Deployment), old.(*appsv1.Deployment)
		defaultDeployment(d)
		d.Status = od.Status
	}
	k.validate = func(o store.Object) error {
		d := o.(*appsv1.Deployment)
		return fieldErrs(validateDeploymentSpec(&d.Spec, field.NewPath("spec")))
	}
	k.validateUpdate = func(o, old store.Object) error {
		// apps/v1's selector cannot change (deploymentStrategy.ValidateUpdate).
		return fieldErrs(apivalidation.ValidateImmutableField(o.(*appsv1.Deployment).Spec.Selector, old.(*appsv1.Deployment).Spec.Selector, field.NewPath("spec", "selector")))
	}
	k.fields = func(o store.Object) fields.Set { return metaFields(o, true) }
	// kubectl's columns (pkg/printers/internalversion printDeployment).
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Ready", Type: "string", Description: "Number of the pod with ready state"},
		{Name: "Up-to-date", Type: "integer", Description: appsv1.DeploymentStatus{}.SwaggerDoc()["updatedReplicas"]},
		{Name: "Available", Type: "integer", Description: appsv1.DeploymentStatus{}.SwaggerDoc()["availableReplicas"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
		{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
		{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
		{Name: "Selector", Type: "string", Priority: 1, Description: appsv1.DeploymentSpec{}.SwaggerDoc()["selector"]},
	}
	k.cells = func(o store.Object) []any {
		d := o.(*appsv1.Deployment)
		containers, images := containerCells(d.Spec.Template.Spec.Containers)
		return []any{d.Name, fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, replicasOf(d.Spec.Replicas)), int64(d.Status.UpdatedReplicas),
			int64(d.Status.AvailableReplicas), age(d.CreationTimestamp), containers, images, selectorString(d.Spec.Selector)}
	}
	return k
}

func replicaSetKind() *kind {
	k := &kind{group: "apps", version: "v1", resource: "replicasets", singular: "replicaset", kind: "ReplicaSet", namespaced: true,
		shortNames: []string{"rs"}, categories: []string{"all"}, subresources: []string{"status", "scale"}}
	k.new = func() store.Object { return &appsv1.ReplicaSet{} }
	k.ownsDependents = true // its pods
	k.prepare = func(o store.Object) {
		rs := o.(*appsv1.ReplicaSet)
		rs.TypeMeta = metav1.TypeMeta{Kind: "ReplicaSet", APIVersion: "apps/v1"}
		defaultReplicaSet(rs)
		rs.Status = appsv1.ReplicaSetStatus{}
	}
	k.prepareUpdate = func(o, old store.Object) {
		rs, ors := o.(*appsv1.ReplicaSet), old.(*appsv1.ReplicaSet)
		defaultReplicaSet(rs)
		rs.Status = ors.Status
	}
	k.validate = func(o store.Object) error {
		rs := o.(*appsv1.ReplicaSet)
		return fieldErrs(validateReplicaSetSpec(&rs.Spec, field.NewPath("spec")))
	}
	k.validateUpdate = func(o, old store.Object) error {
		return fieldErrs(apivalidation.ValidateImmutableField(o.(*appsv1.ReplicaSet).Spec.Selector, old.(*appsv1.ReplicaSet).Spec.Selector, field.NewPath("spec", "selector")))
	}
	k.fields = func(o store.Object) fields.Set {
		s := metaFields(o, true)
		// ReplicaSetToSelectableFields.
		s["status.replicas"] = strconv.Itoa(int(o.(*appsv1.ReplicaSet).Status.Replicas))
		return s
	}
	// kubectl's columns (printReplicaSet).
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Desired", Type: "integer", Description: appsv1.ReplicaSetSpec{}.SwaggerDoc()["replicas"]},
		{Name: "Current", Type: "integer", Description: appsv1.ReplicaSetStatus{}.SwaggerDoc()["replicas"]},
		{Name: "Ready", Type: "integer", Description: appsv1.ReplicaSetStatus{}.SwaggerDoc()["readyReplicas"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
		{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
		{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
		{Name: "Selector", Type: "string", Priority: 1, Description: appsv1.ReplicaSetSpec{}.SwaggerDoc()["selector"]},
	}
	k.cells = func(o store.Object) []any {
		rs := o.(*appsv1.ReplicaSet)
		containers, images := containerCells(rs.Spec.Template.Spec.Containers)
		return []any{rs.Name, int64(replicasOf(rs.Spec.Replicas)), int64(rs.Status.Replicas), int64(rs.Status.ReadyReplicas),
			age(rs.CreationTimestamp), containers, images, selectorString(rs.Spec.Selector)}
	}
	return k
}

// replicasOf is spec.replicas, defaulted to 1 (a stored object always has it).
func replicasOf(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

// containerCells are layoutContainerCells: names and images, comma-joined.
func containerCells(cs []corev1.Container) (string, string) {
	names, images := make([]string, len(cs)), make([]string, len(cs))
	for i, c := range cs {
		names[i], images[i] = c.Name, c.Image
	}
	return strings.Join(names, ","), strings.Join(images, ",")
}

// selectorString prints a selector as kubectl's wide column does.
func selectorString(ls *metav1.LabelSelector) string {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return "<invalid>"
	}
	return sel.String()
}

// defaultDeployment is apps/v1 SetDefaults_Deployment, with the pod
// template's defaults.
func defaultDeployment(d *appsv1.Deployment) {
	if d.Spec.Replicas == nil {
		d.Spec.Replicas = ptr(int32(1))
	}
	st := &d.Spec.Strategy
	if st.Type == "" {
		st.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if st.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if st.RollingUpdate == nil {
			st.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		if st.RollingUpdate.MaxUnavailable == nil {
			st.RollingUpdate.MaxUnavailable = ptr(intstr.FromString("25%"))
		}
		if st.RollingUpdate.MaxSurge == nil {
			st.RollingUpdate.MaxSurge = ptr(intstr.FromString("25%"))
		}
	}
	if d.Spec.RevisionHistoryLimit == nil {
		d.Spec.RevisionHistoryLimit = ptr(int32(10))
	}
	if d.Spec.ProgressDeadlineSeconds == nil {
		d.Spec.ProgressDeadlineSeconds = ptr(int32(600))
	}
	defaultTemplate(&d.Spec.Template)
}

// defaultReplicaSet is apps/v1 SetDefaults_ReplicaSet.
func defaultReplicaSet(rs *appsv1.ReplicaSet) {
	if rs.Spec.Replicas == nil {
		rs.Spec.Replicas = ptr(int32(1))
	}
	defaultTemplate(&rs.Spec.Template)
}

// defaultTemplate gives a pod template the pod's defaults (decoding
// defaults the template as the pod it describes).
func defaultTemplate(t *corev1.PodTemplateSpec) {
	p := &corev1.Pod{Spec: t.Spec}
	defaultPod(p)
	t.Spec = p.Spec
}

// validateDeploymentSpec is ValidateDeploymentSpec.
func validateDeploymentSpec(spec *appsv1.DeploymentSpec, path *field.Path) field.ErrorList {
	errs := apivalidation.ValidateNonnegativeField(int64(replicasOf(spec.Replicas)), path.Child("replicas"))
	errs = append(errs, validateWorkloadSelector(spec.Selector, &spec.Template, path)...)
	errs = append(errs, validateDeploymentStrategy(&spec.Strategy, path.Child("strategy"))...)
	errs = append(errs, apivalidation.ValidateNonnegativeField(int64(spec.MinReadySeconds), path.Child("minReadySeconds"))...)
	if spec.RevisionHistoryLimit != nil {
		errs = append(errs, apivalidation.ValidateNonnegativeField(int64(*spec.RevisionHistoryLimit), path.Child("revisionHistoryLimit"))...)
	}
	if spec.ProgressDeadlineSeconds != nil {
		errs = append(errs, apivalidation.ValidateNonnegativeField(int64(*spec.ProgressDeadlineSeconds), path.Child("progressDeadlineSeconds"))...)
		if *spec.ProgressDeadlineSeconds <= spec.MinReadySeconds {
			errs = append(errs, field.Invalid(path.Child("progressDeadlineSeconds"), *spec.ProgressDeadlineSeconds, "must be greater than minReadySeconds"))
		}
	}
	return errs
}

// validateReplicaSetSpec is ValidateReplicaSetSpec.
func validateReplicaSetSpec(spec *appsv1.ReplicaSetSpec, path *field.Path) field.ErrorList {
	errs := apivalidation.ValidateNonnegativeField(int64(replicasOf(spec.Replicas)), path.Child("replicas"))
	errs = append(errs, apivalidation.ValidateNonnegativeField(int64(spec.MinReadySeconds), path.Child("minReadySeconds"))...)
	return append(errs, validateWorkloadSelector(spec.Selector, &spec.Template, path)...)
}

// validateWorkloadSelector is what ValidateDeploymentSpec and
// ValidateReplicaSetSpec check of the selector and the template
// (ValidatePodTemplateSpecForReplicaSet), in their order and words (both
// say "deployment" of an empty selector, as upstream does).
func validateWorkloadSelector(ls *metav1.LabelSelector, t *corev1.PodTemplateSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if ls == nil {
		errs = append(errs, field.Required(path.Child("selector"), ""))
	} else {
		errs = append(errs, metav1validation.ValidateLabelSelector(ls, metav1validation.LabelSelectorValidationOptions{}, path.Child("selector"))...)
		if len(ls.MatchLabels)+len(ls.MatchExpressions) == 0 {
			errs = append(errs, field.Invalid(path.Child("selector"), ls, "empty selector is invalid for deployment"))
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return append(errs, field.Invalid(path.Child("selector"), ls, "invalid label selector"))
	}
	tp := path.Child("template")
	if !sel.Empty() && !sel.Matches(labels.Set(t.Labels)) {
		errs = append(errs, field.Invalid(tp.Child("metadata", "labels"), t.Labels, "`selector` does not match template `labels`"))
	}
	errs = append(errs, metav1validation.ValidateLabels(t.Labels, tp.Child("metadata", "labels"))...)
	errs = append(errs, validateTemplateSpec(&t.Spec, tp.Child("spec"))...)
	if t.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		errs = append(errs, field.NotSupported(tp.Child("spec", "restartPolicy"), t.Spec.RestartPolicy, []string{string(corev1.RestartPolicyAlways)}))
	}
	if t.Spec.ActiveDeadlineSeconds != nil {
		errs = append(errs, field.Invalid(tp.Child("spec", "activeDeadlineSeconds"), t.Spec.ActiveDeadlineSeconds, "activeDeadlineSeconds in ReplicaSet is not Supported"))
	}
	return errs
}

// validateTemplateSpec is what berth checks of a pod at create, for the
// pods a template will make (the pod kind's validate): containers, and
// the init containers' rules, their paths under path.
func validateTemplateSpec(spec *corev1.PodSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(spec.Containers) == 0 {
		errs = append(errs, field.Required(path.Child("containers"), ""))
	}
	for i, c := range spec.Containers {
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			errs = append(errs, field.Invalid(path.Child("containers").Index(i).Child("name"), c.Name, msg))
		}
	}
	for _, e := range validateInitContainers(spec) {
		e.Field = path.String() + strings.TrimPrefix(e.Field, "spec")
		errs = append(errs, e)
	}
	return errs
}

// validateDeploymentStrategy is ValidateDeploymentStrategy.
func validateDeploymentStrategy(st *appsv1.DeploymentStrategy, path *field.Path) field.ErrorList {
	switch st.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if st.RollingUpdate != nil {
			return field.ErrorList{field.Forbidden(path.Child("rollingUpdate"), "may not be specified when strategy `type` is '"+string(appsv1.RecreateDeploymentStrategyType)+"'")}
		}
	case appsv1.RollingUpdateDeploymentStrategyType:
		if st.RollingUpdate == nil {
			return field.ErrorList{field.Required(path.Child("rollingUpdate"), "this should be defaulted and never be nil")}
		}
		return validateRollingUpdate(st.RollingUpdate, path.Child("rollingUpdate"))
	default:
		return field.ErrorList{field.NotSupported(path, st, []string{string(appsv1.RecreateDeploymentStrategyType), string(appsv1.RollingUpdateDeploymentStrategyType)})}
	}
	return nil
}

// validateRollingUpdate is ValidateRollingUpdateDeployment.
func validateRollingUpdate(ru *appsv1.RollingUpdateDeployment, path *field.Path) field.ErrorList {
	var unavailable, surge intstr.IntOrString
	if ru.MaxUnavailable != nil {
		unavailable = *ru.MaxUnavailable
	}
	if ru.MaxSurge != nil {
		surge = *ru.MaxSurge
	}
	errs := validatePositiveIntOrPercent(unavailable, path.Child("maxUnavailable"))
	errs = append(errs, validatePositiveIntOrPercent(surge, path.Child("maxSurge"))...)
	if intOrPercentValue(unavailable) == 0 && intOrPercentValue(surge) == 0 {
		errs = append(errs, field.Invalid(path.Child("maxUnavailable"), unavailable, "may not be 0 when `maxSurge` is 0"))
	}
	if v, pct := percentValue(unavailable); pct && v > 100 {
		errs = append(errs, field.Invalid(path.Child("maxUnavailable"), unavailable, "must not be greater than 100%"))
	}
	return errs
}

func validatePositiveIntOrPercent(v intstr.IntOrString, path *field.Path) field.ErrorList {
	switch v.Type {
	case intstr.String:
		var errs field.ErrorList
		for _, msg := range validation.IsValidPercent(v.StrVal) {
			errs = append(errs, field.Invalid(path, v, msg))
		}
		return errs
	case intstr.Int:
		return apivalidation.ValidateNonnegativeField(int64(v.IntValue()), path)
	}
	return field.ErrorList{field.Invalid(path, v, "must be an integer or percentage (e.g '5%')")}
}

func percentValue(v intstr.IntOrString) (int, bool) {
	if v.Type != intstr.String || len(validation.IsValidPercent(v.StrVal)) != 0 {
		return 0, false
	}
	n, _ := strconv.Atoi(v.StrVal[:len(v.StrVal)-1])
	return n, true
}

func intOrPercentValue(v intstr.IntOrString) int {
	if n, pct := percentValue(v); pct {
		return n
	}
	return v.IntValue()
}
