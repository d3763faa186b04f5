package server

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/kubectl/pkg/util/qos"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/store"
)

func namespaceKind() *kind {
	k := &kind{resource: "namespaces", singular: "namespace", kind: "Namespace", shortNames: []string{"ns"}}
	k.new = func() store.Object { return &corev1.Namespace{} }
	k.prepare = func(o store.Object) {
		n := o.(*corev1.Namespace)
		n.TypeMeta = metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		// What the apiserver's NamespaceDefaultLabelName admission sets.
		n.Labels["kubernetes.io/metadata.name"] = n.Name
		n.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
		// The namespace strategy's PrepareForCreate: the namespace
		// controller's finalizer, which it removes once the namespace is
		// empty (namespace.go).
		n.Spec.Finalizers = []corev1.FinalizerName{corev1.FinalizerKubernetes}
	}
	k.prepareUpdate = func(o, old store.Object) {
		genericPrepareUpdate(o, old, false)
		n := o.(*corev1.Namespace)
		// The namespace strategy's PrepareForUpdate: spec.finalizers change
		// only through the finalize subresource (the namespace controller).
		n.Spec.Finalizers = old.(*corev1.Namespace).Spec.Finalizers
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		// NamespaceDefaultLabelName admission runs on update too.
		n.Labels["kubernetes.io/metadata.name"] = n.Name
	}
	k.validate = func(o store.Object) error {
		var errs field.ErrorList
		for _, msg := range apivalidation.ValidateNamespaceName(o.GetName(), false) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), o.GetName(), msg))
		}
		if len(errs) > 0 {
			return pods.FieldErrors(errs)
		}
		return nil
	}
	k.fields = func(o store.Object) fields.Set {
		s := metaFields(o, false)
		s["status.phase"] = string(o.(*corev1.Namespace).Status.Phase)
		return s
	}
	// kubectl's columns for namespaces (pkg/printers/internalversion).
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Status", Type: "string", Description: "The status of the namespace"},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
	}
	k.cells = func(o store.Object) []any {
		n := o.(*corev1.Namespace)
		return []any{n.Name, string(n.Status.Phase), age(n.CreationTimestamp)}
	}
	k.cache = &listCache{m: map[string]cachedObject{}}
	return k
}

func podKind() *kind {
	k := &kind{resource: "pods", singular: "pod", kind: "Pod", namespaced: true, shortNames: []string{"po"},
		categories: []string{"all"}, subresources: []string{"status", "log", "exec", "attach", "portforward"}}
	k.new = func() store.Object { return &corev1.Pod{} }
	k.returnDeletedObject = true
	k.prepare = func(o store.Object) {
		p := o.(*corev1.Pod)
		p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		defaultPod(p)
		admitPod(p, nil)
	}
	k.beforeCreate = func(o store.Object) {
		p := o.(*corev1.Pod)
		// What the kubelet reports before it has looked at a new pod, with
		// the QoS class the apiserver computes on create: after mutating
		// admission, so a LimitRange's defaults count.
		p.Status = corev1.PodStatus{Phase: corev1.PodPending, QOSClass: qos.ComputePodQOS(p)}
	}
	k.prepareUpdate = func(o, old store.Object) {
		p, op := o.(*corev1.Pod), old.(*corev1.Pod)
		// The body is defaulted as on create (decoding defaults it), then
		// admitted; podStrategy.PrepareForUpdate keeps the status.
		defaultPod(p)
		admitPod(p, op)
		p.Status = op.Status
	}
	k.prepareStatus = func(o, old store.Object) {
		// podStatusStrategy.PrepareForUpdate: the spec and owner references
		// stay as they are.
		p, op := o.(*corev1.Pod), old.(*corev1.Pod)
		p.Spec = op.Spec
		p.OwnerReferences = op.OwnerReferences
	}
	k.validateUpdate = func(o, old store.Object) error {
		if errs := validatePodUpdate(o.(*corev1.Pod), old.(*corev1.Pod)); len(errs) > 0 {
			return pods.FieldErrors(errs)
		}
		return nil
	}
	k.gracePeriod = podGracePeriod
	k.validate = func(o store.Object) error {
		p := o.(*corev1.Pod)
		if err := pods.ValidateName(p.Namespace, p.Name); err != nil {
			return err
		}
		if len(p.Spec.Containers) == 0 {
			return pods.FieldErrors{field.Required(field.NewPath("spec", "containers"), "")}
		}
		if errs := validateInitContainers(&p.Spec); len(errs) > 0 {
			return pods.FieldErrors(errs)
		}
		return nil
	}
	k.fields = func(o store.Object) fields.Set {
		s := metaFields(o, true)
		switch p := o.(type) {
		case *corev1.Pod:
			s["spec.nodeName"], s["spec.restartPolicy"] = p.Spec.NodeName, string(p.Spec.RestartPolicy)
			s["status.phase"], s["status.podIP"] = string(p.Status.Phase), p.Status.PodIP
		case *podForList:
			s["spec.nodeName"], s["spec.restartPolicy"] = p.Spec.NodeName, string(p.Spec.RestartPolicy)
			s["status.phase"], s["status.podIP"] = string(p.Status.Phase), p.Status.PodIP
		}
		return s
	}
	// kubectl's columns for pods (pkg/printers/internalversion/printers.go).
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Ready", Type: "string", Description: "The aggregate readiness state of this pod for accepting traffic."},
		{Name: "Status", Type: "string", Description: "The aggregate status of the containers in this pod."},
		{Name: "Restarts", Type: "string", Description: "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
		{Name: "IP", Type: "string", Priority: 1, Description: corev1.PodStatus{}.SwaggerDoc()["podIP"]},
		{Name: "Node", Type: "string", Priority: 1, Description: corev1.PodSpec{}.SwaggerDoc()["nodeName"]},
		{Name: "Nominated Node", Type: "string", Priority: 1, Description: corev1.PodStatus{}.SwaggerDoc()["nominatedNodeName"]},
		{Name: "Readiness Gates", Type: "string", Priority: 1, Description: corev1.PodSpec{}.SwaggerDoc()["readinessGates"]},
	}
	k.cells = func(o store.Object) []any {
		if l, ok := o.(*podForList); ok {
			p := l.pod()
			return podCells(&p)
		}
		return podCells(o.(*corev1.Pod))
	}
	k.decodeList = decodePodForList
	k.cache = &listCache{m: map[string]cachedObject{}}
	return k
}

// podForList is what a list reads of a stored pod: its metadata and
// status, and of its spec what the field selectors and kubectl's columns
// read (podCells, k.fields). Decoding this rather than a whole Pod skips
// most of the spec, and it is what a list's cache keeps of each pod (a
// third of a decoded Pod's memory).
type podForList struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		NodeName       string                    `json:"nodeName"`
		RestartPolicy  corev1.RestartPolicy      `json:"restartPolicy"`
		ReadinessGates []corev1.PodReadinessGate `json:"readinessGates"`
		Containers     []struct {
			Name string `json:"name"`
		} `json:"containers"`
		InitContainers []struct {
			Name          string                         `json:"name"`
			RestartPolicy *corev1.ContainerRestartPolicy `json:"restartPolicy"`
		} `json:"initContainers"`
	} `json:"spec"`
	Status corev1.PodStatus `json:"status"`
}

func decodePodForList(data []byte) (store.Object, error) {
	l := &podForList{}
	if err := json.Unmarshal(data, l); err != nil {
		return nil, err
	}
	return l, nil
}

// noContainers backs the Spec.Containers of the Pods that pod() makes,
// which podCells only counts: never written.
var noContainers [8]corev1.Container

// pod is the Pod podCells reads: l's metadata and status, and its spec's
// containers by count (app containers) or by name and restart policy
// (init containers, sidecars among them).
func (l *podForList) pod() corev1.Pod {
	p := corev1.Pod{TypeMeta: l.TypeMeta, ObjectMeta: l.ObjectMeta, Status: l.Status}
	p.Spec.NodeName, p.Spec.RestartPolicy, p.Spec.ReadinessGates = l.Spec.NodeName, l.Spec.RestartPolicy, l.Spec.ReadinessGates
	if n := len(l.Spec.Containers); n <= len(noContainers) {
		p.Spec.Containers = noContainers[:n:n]
	} else {
		p.Spec.Containers = make([]corev1.Container, n)
	}
	if len(l.Spec.InitContainers) > 0 {
		p.Spec.InitContainers = make([]corev1.Container, len(l.Spec.InitContainers))
		for i, c := range l.Spec.InitContainers {
			p.Spec.InitContainers[i].Name, p.Spec.InitContainers[i].RestartPolicy = c.Name, c.RestartPolicy
		}
	}
	return p
}

func (l *podForList) DeepCopyObject() runtime.Object {
	c := *l
	l.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	l.Status.DeepCopyInto(&c.Status)
	c.Spec.ReadinessGates = append([]corev1.PodReadinessGate(nil), l.Spec.ReadinessGates...)
	c.Spec.Containers = append(c.Spec.Containers[:0:0], l.Spec.Containers...)
	c.Spec.InitContainers = append(c.Spec.InitContainers[:0:0], l.Spec.InitContainers...)
	for i, ic := range c.Spec.InitContainers {
		if ic.RestartPolicy != nil {
			c.Spec.InitContainers[i].RestartPolicy = ptr(*ic.RestartPolicy)
		}
	}
	return &c
}

func none(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// defaultPod sets what the apiserver's v1 defaulting sets on a pod
// (k8s.io/kubernetes pkg/apis/core/v1/defaults.go: SetDefaults_Pod,
// SetDefaults_PodSpec, SetDefaults_Container, SetDefaults_Volume,
// SetDefaults_Probe, SetDefaults_HTTPGetAction, and the generated
// zz_generated.defaults.go that applies them). There is no public
// defaulter for core types outside k8s.io/kubernetes, so this is the list
// by hand; it covers what `kubectl get -o yaml` shows for the pods berth
// runs.
func defaultPod(p *corev1.Pod) {
	s := &p.Spec
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = ptr(int64(corev1.DefaultTerminationGracePeriodSeconds))
	}
	if s.SchedulerName == "" {
		s.SchedulerName = corev1.DefaultSchedulerName
	}
	if s.EnableServiceLinks == nil {
		s.EnableServiceLinks = ptr(corev1.DefaultEnableServiceLinks)
	}
	for i := range s.Volumes {
		defaultVolume(&s.Volumes[i])
	}
	for i := range s.InitContainers {
		defaultContainer(&s.InitContainers[i], s.HostNetwork)
	}
	for i := range s.Containers {
		defaultContainer(&s.Containers[i], s.HostNetwork)
	}
}

func ptr[T any](v T) *T { return &v }

func defaultContainer(c *corev1.Container, hostNetwork bool) {
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	if c.ImagePullPolicy == "" {
		// Always for ":latest" or no tag (and no digest), as the kubelet
		// would otherwise never see a new "latest".
		if imageTag(c.Image) == "latest" {
			c.ImagePullPolicy = corev1.PullAlways
		} else {
			c.ImagePullPolicy = corev1.PullIfNotPresent
		}
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
		if hostNetwork && c.Ports[i].HostPort == 0 {
			c.Ports[i].HostPort = c.Ports[i].ContainerPort
		}
	}
	for i := range c.Env {
		if vf := c.Env[i].ValueFrom; vf != nil && vf.FieldRef != nil && vf.FieldRef.APIVersion == "" {
			vf.FieldRef.APIVersion = "v1"
		}
	}
	for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if pr == nil {
			continue
		}
		if pr.TimeoutSeconds == 0 {
			pr.TimeoutSeconds = 1
		}
		if pr.PeriodSeconds == 0 {
			pr.PeriodSeconds = 10
		}
		if pr.SuccessThreshold == 0 {
			pr.SuccessThreshold = 1
		}
		if pr.FailureThreshold == 0 {
			pr.FailureThreshold = 3
		}
		defaultHTTPGet(pr.HTTPGet)
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h != nil {
				defaultHTTPGet(h.HTTPGet)
			}
		}
	}
	// SetDefaults_Pod: a limit without a request requests the limit.
	for name, q := range c.Resources.Limits {
		if _, ok := c.Resources.Requests[name]; !ok {
			if c.Resources.Requests == nil {
				c.Resources.Requests = corev1.ResourceList{}
			}
			c.Resources.Requests[name] = q.DeepCopy()
		}
	}
}

func defaultHTTPGet(h *corev1.HTTPGetAction) {
	if h == nil {
		return
	}
	if h.Path == "" {
		h.Path = "/"
	}
	if h.Scheme == "" {
		h.Scheme = corev1.URISchemeHTTP
	}
}

// imageTag is the tag of an image reference as the apiserver's defaulting
// reads it (parsers.ParseImageName): "latest" when neither tag nor digest
// is given, "" for a digest without a tag.
func imageTag(image string) string {
	name, digest, hasDigest := strings.Cut(image, "@")
	_ = digest
	last := name[strings.LastIndexByte(name, '/')+1:]
	if i := strings.LastIndexByte(last, ':'); i >= 0 {
		return last[i+1:]
	}
	if hasDigest {
		return ""
	}
	return "latest"
}

func defaultVolume(v *corev1.Volume) {
	src := &v.VolumeSource
	mode := ptr(corev1.SecretVolumeSourceDefaultMode) // 0644, the same for every kind
	switch {
	case src.Secret != nil:
		if src.Secret.DefaultMode == nil {
			src.Secret.DefaultMode = mode
		}
	case src.ConfigMap != nil:
		if src.ConfigMap.DefaultMode == nil {
			src.ConfigMap.DefaultMode = mode
		}
	case src.DownwardAPI != nil:
		if src.DownwardAPI.DefaultMode == nil {
			src.DownwardAPI.DefaultMode = mode
		}
	case src.Projected != nil:
		if src.Projected.DefaultMode == nil {
			src.Projected.DefaultMode = mode
		}
	case src.HostPath != nil:
		if src.HostPath.Type == nil {
			src.HostPath.Type = ptr(corev1.HostPathUnset)
		}
	case apiequality.Semantic.DeepEqual(*src, corev1.VolumeSource{}):
		// SetDefaults_Volume: a volume without a source is an emptyDir.
		src.EmptyDir = &corev1.EmptyDirVolumeSource{}
	}
}

// The NoExecute taints the node lifecycle controller sets, which the
// DefaultTolerationSeconds admission plugin tolerates for 300 s.
var defaultTolerations = []corev1.Toleration{
	{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
	{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
}

// admitPod is what the apiserver's admission plugins berth mirrors do to
// a pod on create (old nil) and update: DefaultTolerationSeconds
// (plugin/pkg/admission/defaulttolerationseconds) adds the not-ready and
// unreachable tolerations; Priority (plugin/pkg/admission/priority) sets
// priority 0 and preemptionPolicy PreemptLowerPriority without a
// PriorityClass (none exist on berth) and keeps both on update. The
// ServiceAccount plugin is not mirrored: berth has no service accounts.
func admitPod(p *corev1.Pod, old *corev1.Pod) {
	for _, d := range defaultTolerations {
		tolerated := false
		for _, t := range p.Spec.Tolerations {
			if (t.Key == d.Key || t.Key == "") && (t.Effect == corev1.TaintEffectNoExecute || t.Effect == "") {
				tolerated = true
			}
		}
		if !tolerated {
			p.Spec.Tolerations = append(p.Spec.Tolerations, *d.DeepCopy())
		}
	}
	if old != nil {
		if p.Spec.Priority == nil {
			p.Spec.Priority = old.Spec.Priority
		}
		if p.Spec.PreemptionPolicy == nil {
			p.Spec.PreemptionPolicy = old.Spec.PreemptionPolicy
		}
		return
	}
	if p.Spec.PriorityClassName == "" && p.Spec.Priority == nil {
		p.Spec.Priority = ptr(int32(0))
	}
	if p.Spec.PreemptionPolicy == nil {
		p.Spec.PreemptionPolicy = ptr(corev1.PreemptLowerPriority)
	}
}

// updatablePodSpecFields is the apiserver's list in its refusal of a pod
// update (pkg/apis/core/validation, ValidatePodUpdate).
var updatablePodSpecFields = []string{
	"`spec.containers[*].image`",
	"`spec.initContainers[*].image`",
	"`spec.activeDeadlineSeconds`",
	"`spec.tolerations` (only additions to existing tolerations)",
	"`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
}

// validatePodUpdate is the apiserver's ValidatePodUpdate for the spec: a
// pod's spec is immutable but for the images, a shorter
// activeDeadlineSeconds, added tolerations (or shorter tolerationSeconds),
// a negative terminationGracePeriodSeconds set to 1, and removed
// schedulingGates; anything else is Forbidden with a diff of the change.
func validatePodUpdate(p, old *corev1.Pod) field.ErrorList {
	specPath := field.NewPath("spec")
	var errs field.ErrorList
	if len(p.Spec.Containers) != len(old.Spec.Containers) {
		return append(errs, field.Forbidden(specPath.Child("containers"), "pod updates may not add or remove containers"))
	}
	if len(p.Spec.InitContainers) != len(old.Spec.InitContainers) {
		return append(errs, field.Forbidden(specPath.Child("initContainers"), "pod updates may not add or remove containers"))
	}
	if n := p.Spec.ActiveDeadlineSeconds; n != nil {
		if *n < 0 || *n > math.MaxInt32 {
			return append(errs, field.Invalid(specPath.Child("activeDeadlineSeconds"), *n, validation.InclusiveRangeError(0, math.MaxInt32)))
		}
		if o := old.Spec.ActiveDeadlineSeconds; o != nil && *o < *n {
			return append(errs, field.Invalid(specPath.Child("activeDeadlineSeconds"), *n, "must be less than or equal to previous value"))
		}
	} else if old.Spec.ActiveDeadlineSeconds != nil {
		errs = append(errs, field.Invalid(specPath.Child("activeDeadlineSeconds"), p.Spec.ActiveDeadlineSeconds, "must not update from a positive integer to nil value"))
	}
	errs = append(errs, onlyAddedTolerations(p.Spec.Tolerations, old.Spec.Tolerations, specPath.Child("tolerations"))...)
	errs = append(errs, onlyDeletedSchedulingGates(p.Spec.SchedulingGates, old.Spec.SchedulingGates, specPath.Child("schedulingGates"))...)

	munged := p.Spec.DeepCopy()
	for i := range munged.Containers {
		munged.Containers[i].Image = old.Spec.Containers[i].Image
	}
	for i := range munged.InitContainers {
		munged.InitContainers[i].Image = old.Spec.InitContainers[i].Image
	}
	munged.ActiveDeadlineSeconds = old.Spec.ActiveDeadlineSeconds
	munged.Tolerations = old.Spec.Tolerations
	munged.SchedulingGates = old.Spec.SchedulingGates
	munged.EphemeralContainers = old.Spec.EphemeralContainers // their own subresource
	if o, n := old.Spec.TerminationGracePeriodSeconds, munged.TerminationGracePeriodSeconds; o != nil && *o < 0 && n != nil && *n == 1 {
		munged.TerminationGracePeriodSeconds = o
	}
	if !apiequality.Semantic.DeepEqual(*munged, old.Spec) {
		errs = append(errs, field.Forbidden(specPath, fmt.Sprintf("pod updates may not change fields other than %s\n%v",
			strings.Join(updatablePodSpecFields, ","), diff.Diff(old.Spec, *munged))))
	}
	return errs
}

// onlyAddedTolerations is validateOnlyAddedTolerations: every existing
// toleration stays, but for its tolerationSeconds.
func onlyAddedTolerations(tols, old []corev1.Toleration, path *field.Path) field.ErrorList {
	for _, o := range old {
		found := false
		for _, t := range tols {
			c := o.DeepCopy()
			c.TolerationSeconds = t.TolerationSeconds
			if apiequality.Semantic.DeepEqual(*c, t) {
				found = true
				break
			}
		}
		if !found {
			return field.ErrorList{field.Forbidden(path, "existing toleration can not be modified except its tolerationSeconds")}
		}
	}
	return nil
}

// onlyDeletedSchedulingGates is validateOnlyDeletedSchedulingGates.
func onlyDeletedSchedulingGates(gates, old []corev1.PodSchedulingGate, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	had := map[string]bool{}
	for _, g := range old {
		had[g.Name] = true
	}
	for i, g := range gates {
		if !had[g.Name] {
			errs = append(errs, field.Forbidden(path.Index(i).Child("name"), fmt.Sprintf("only deletion is allowed, but found new scheduling gate '%s'", g.Name)))
		}
	}
	return errs
}

// podGracePeriod is podStrategy.CheckGracefulDelete
// (pkg/registry/core/pod/strategy.go): the requested grace period, else the
// pod's terminationGracePeriodSeconds; 0 (at once) for a pod no node runs
// (unscheduled) or that has finished (Succeeded, Failed); a negative one
// is 1.
func podGracePeriod(o store.Object, requested *int64) int64 {
	p := o.(*corev1.Pod)
	var period int64
	if requested != nil {
		period = *requested
	} else if p.Spec.TerminationGracePeriodSeconds != nil {
		period = *p.Spec.TerminationGracePeriodSeconds
	}
	if p.Spec.NodeName == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		period = 0
	}
	if period < 0 {
		period = 1
	}
	return period
}

// validateInitContainers is the part of the apiserver's
// validateInitContainers (pkg/apis/core/validation) berth relies on to run
// them: names unique across init and app containers, restartPolicy only
// Always (a sidecar), and no probes or lifecycle hooks on an init
// container that must run to completion.
func validateInitContainers(spec *corev1.PodSpec) field.ErrorList {
	var errs field.ErrorList
	names := map[string]bool{}
	for _, c := range spec.Containers {
		names[c.Name] = true
	}
	for i, c := range spec.InitContainers {
		p := field.NewPath("spec", "initContainers").Index(i)
		if names[c.Name] {
			errs = append(errs, field.Duplicate(p.Child("name"), c.Name))
		}
		names[c.Name] = true
		if c.RestartPolicy != nil {
			if *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				errs = append(errs, field.NotSupported(p.Child("restartPolicy"), *c.RestartPolicy, []string{string(corev1.ContainerRestartPolicyAlways)}))
			}
			continue
		}
		const why = "may not be set for init containers without restartPolicy=Always"
		if c.Lifecycle != nil {
			errs = append(errs, field.Forbidden(p.Child("lifecycle"), why))
		}
		if c.LivenessProbe != nil {
			errs = append(errs, field.Forbidden(p.Child("livenessProbe"), why))
		}
		if c.ReadinessProbe != nil {
			errs = append(errs, field.Forbidden(p.Child("readinessProbe"), why))
		}
		if c.StartupProbe != nil {
			errs = append(errs, field.Forbidden(p.Child("startupProbe"), why))
		}
	}
	return errs
}
