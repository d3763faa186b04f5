package server

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/berth-dev/berth/agent/admission"
	"github.com/berth-dev/berth/agent/store"
)

// ResourceQuotas and LimitRanges: stored as the apiserver stores them;
// what they do happens in admission (agent/admission), reached from every
// create (Server.prepareNew, Server.create).

func resourceQuotaKind() *kind {
	k := &kind{version: "v1", resource: "resourcequotas", singular: "resourcequota", kind: "ResourceQuota", namespaced: true,
		shortNames: []string{"quota"}, subresources: []string{"status"}}
	k.new = func() store.Object { return &corev1.ResourceQuota{} }
	k.prepare = func(o store.Object) {
		q := o.(*corev1.ResourceQuota)
		q.TypeMeta = metav1.TypeMeta{Kind: "ResourceQuota", APIVersion: "v1"}
		// resourcequota strategy PrepareForCreate: the status is the
		// server's (admission computes it).
		q.Status = corev1.ResourceQuotaStatus{}
	}
	k.validate = func(o store.Object) error {
		return fieldErrs(admission.ValidateResourceQuota(o.(*corev1.ResourceQuota)))
	}
	k.validateUpdate = func(o, _ store.Object) error {
		return fieldErrs(admission.ValidateResourceQuota(o.(*corev1.ResourceQuota)))
	}
	k.fields = func(o store.Object) fields.Set { return metaFields(o, true) }
	// The apiserver's columns (pkg/printers/internalversion, v1.32).
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
		{Name: "Request", Type: "string", Description: "Request represents a minimum amount of cpu/memory that a container may consume."},
		{Name: "Limit", Type: "string", Description: "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."},
	}
	k.cells = func(o store.Object) []any {
		q := o.(*corev1.ResourceQuota)
		request, limit := quotaColumns(q)
		return []any{q.Name, age(q.CreationTimestamp), request, limit}
	}
	return k
}

// quotaColumns are printResourceQuota's REQUEST and LIMIT cells: every
// status.hard name sorted, "name: used/hard", limits.* in LIMIT.
func quotaColumns(q *corev1.ResourceQuota) (request, limit string) {
	names := make([]string, 0, len(q.Status.Hard))
	for n := range q.Status.Hard {
		names = append(names, string(n))
	}
	sort.Strings(names)
	var req, lim bytes.Buffer
	for _, n := range names {
		w := &req
		if pieces := strings.Split(n, "."); len(pieces) > 1 && pieces[0] == "limits" {
			w = &lim
		}
		used := q.Status.Used[corev1.ResourceName(n)]
		hard := q.Status.Hard[corev1.ResourceName(n)]
		fmt.Fprintf(w, "%s: %s/%s, ", n, used.String(), hard.String())
	}
	return strings.TrimSuffix(req.String(), ", "), strings.TrimSuffix(lim.String(), ", ")
}

func limitRangeKind() *kind {
	k := &kind{version: "v1", resource: "limitranges", singular: "limitrange", kind: "LimitRange", namespaced: true,
		shortNames: []string{"limits"}}
	k.new = func() store.Object { return &corev1.LimitRange{} }
	k.prepare = func(o store.Object) {
		lr := o.(*corev1.LimitRange)
		lr.TypeMeta = metav1.TypeMeta{Kind: "LimitRange", APIVersion: "v1"}
		admission.DefaultLimitRange(lr)
	}
	// SetDefaults_LimitRangeItem runs on every decode upstream, so on an
	// update too.
	k.prepareUpdate = func(o, _ store.Object) { admission.DefaultLimitRange(o.(*corev1.LimitRange)) }
	k.validate = func(o store.Object) error { return fieldErrs(admission.ValidateLimitRange(o.(*corev1.LimitRange))) }
	k.validateUpdate = func(o, _ store.Object) error {
		return fieldErrs(admission.ValidateLimitRange(o.(*corev1.LimitRange)))
	}
	k.fields = func(o store.Object) fields.Set { return metaFields(o, true) }
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Created At", Type: "date", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
	}
	k.cells = func(o store.Object) []any {
		lr := o.(*corev1.LimitRange)
		return []any{lr.Name, lr.CreationTimestamp.UTC().Format("2006-01-02T15:04:05Z")}
	}
	return k
}
