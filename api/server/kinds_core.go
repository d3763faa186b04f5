package server

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/store"
)

func namespaceKind() *kind {
	k := &kind{resource: "namespaces", singular: "namespace", kind: "Namespace", shortNames: []string{"ns"}}
	k.new = func() store.Object { return &corev1.Namespace{} }
	k.newList = listOf("NamespaceList")
	k.prepare = func(o store.Object) {
		n := o.(*corev1.Namespace)
		n.TypeMeta = metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		// What the apiserver's NamespaceDefaultLabelName admission sets.
		n.Labels["kubernetes.io/metadata.name"] = n.Name
		n.Status.Phase = corev1.NamespaceActive
		n.Spec.Finalizers = nil
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
	return k
}

func podKind() *kind {
	k := &kind{resource: "pods", singular: "pod", kind: "Pod", namespaced: true, shortNames: []string{"po"},
		categories: []string{"all"}, subresources: []string{"status"}}
	k.new = func() store.Object { return &corev1.Pod{} }
	k.newList = listOf("PodList")
	k.prepare = func(o store.Object) {
		p := o.(*corev1.Pod)
		p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		// What the kubelet reports before it has looked at a new pod.
		p.Status = corev1.PodStatus{Phase: corev1.PodPending}
	}
	k.validate = func(o store.Object) error {
		p := o.(*corev1.Pod)
		if err := pods.ValidateName(p.Namespace, p.Name); err != nil {
			return err
		}
		if len(p.Spec.Containers) == 0 {
			return pods.FieldErrors{field.Required(field.NewPath("spec", "containers"), "")}
		}
		return nil
	}
	k.fields = func(o store.Object) fields.Set {
		p := o.(*corev1.Pod)
		s := metaFields(o, true)
		s["spec.nodeName"] = p.Spec.NodeName
		s["spec.restartPolicy"] = string(p.Spec.RestartPolicy)
		s["status.phase"] = string(p.Status.Phase)
		s["status.podIP"] = p.Status.PodIP
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
		p := o.(*corev1.Pod)
		ready, restarts := 0, 0
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Ready {
				ready++
			}
			restarts += int(cs.RestartCount)
		}
		reason := string(p.Status.Phase)
		if p.Status.Reason != "" {
			reason = p.Status.Reason
		}
		if p.DeletionTimestamp != nil {
			reason = "Terminating"
		}
		return []any{p.Name, fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), reason, strconv.Itoa(restarts),
			age(p.CreationTimestamp), none(p.Status.PodIP), none(p.Spec.NodeName), none(p.Status.NominatedNodeName), none("")}
	}
	return k
}

func none(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
