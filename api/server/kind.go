package server

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/berth-dev/berth/agent/store"
)

// kind is what the generic handlers need to know of one resource.
type kind struct {
	group, version           string // "" and "v1" for the core group
	resource, singular, kind string
	namespaced               bool
	shortNames, categories   []string
	subresources             []string
	new                      func() store.Object
	// newList, when set, builds the list of stored items for a kind served
	// in another form than stored (events.k8s.io); nil: a "<Kind>List" of
	// the stored JSON as it is (writeRawList).
	newList func(items [][]byte, rv string) any
	// decodeList decodes a stored object for a list: what selectors and
	// the Table's cells read, at least (default: the whole object).
	decodeList func(data []byte) (store.Object, error)
	// cache, when set, keeps decodeList's objects across lists
	// (listCache): for the kinds listed often and as Tables.
	cache   *listCache
	prepare func(obj store.Object) // defaults on create
	// beforeCreate, when set, is the strategy's PrepareForCreate: it runs
	// after mutating admission (rest.BeforeCreate), before validation.
	beforeCreate func(obj store.Object)
	validate     func(obj store.Object) error
	// prepareUpdate and prepareStatus are the kind's strategy for an
	// update of the object and of its status subresource
	// (PrepareForUpdate): what the client may not change there is copied
	// from old. nil: the object's "status" is kept on update and only
	// "status" changes through the subresource (genericPrepareUpdate).
	prepareUpdate, prepareStatus func(obj, old store.Object)
	// validateUpdate refuses what may not change (immutable fields), after
	// validate has passed on the new object; nil: anything may.
	validateUpdate func(obj, old store.Object) error
	// gracePeriod is the kind's graceful deletion (CheckGracefulDelete):
	// the grace period a delete with the requested one (nil: none given)
	// gives obj; 0 deletes at once. nil: the kind is deleted at once.
	gracePeriod func(obj store.Object, requested *int64) int64
	// returnDeletedObject: a delete answers with the object, not a Status
	// (the apiserver's ReturnDeletedObject, set for pods).
	returnDeletedObject bool
	// toStored and fromStored convert a kind served in another form than
	// it is stored (events.k8s.io/v1 Events, stored as core/v1 ones, as
	// the apiserver keeps one storage for both): what a write stores, and
	// the served object refreshed from what was stored (uid,
	// resourceVersion, ...). nil: stored as served.
	toStored   func(obj store.Object) store.Object
	fromStored func(stored, obj store.Object)
	// ownsDependents: its objects own others here (owner references the
	// controllers set), so a delete's Orphan and Foreground propagation
	// leave it to the garbage collector (delete.go).
	ownsDependents bool
	// annotationsBumpGeneration: a change of the annotations is a new
	// generation as a change of the spec is (Deployments).
	annotationsBumpGeneration bool
	fields                    func(obj store.Object) fields.Set // for field selectors
	columns                   []metav1.TableColumnDefinition
	cells                     func(obj store.Object) []any
}

func schemaGR(group, resource string) schema.GroupResource {
	return schema.GroupResource{Group: group, Resource: resource}
}

// apiVersion is the kind's group/version as objects carry it.
func (k *kind) apiVersion() string {
	return schema.GroupVersion{Group: k.group, Version: k.version}.String()
}

func (k *kind) gr() schema.GroupResource { return schemaGR(k.group, k.resource) }
func (k *kind) gk() schema.GroupKind     { return schema.GroupKind{Group: k.group, Kind: k.kind} }

func (k *kind) hasSubresource(s string) bool {
	for _, x := range k.subresources {
		if x == s {
			return true
		}
	}
	return false
}

// metaFields are the field selectors every kind supports.
func metaFields(o store.Object, namespaced bool) fields.Set {
	s := fields.Set{"metadata.name": o.GetName()}
	if namespaced {
		s["metadata.namespace"] = o.GetNamespace()
	}
	return s
}

// age prints a timestamp as kubectl does (HumanDuration).
func age(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}
