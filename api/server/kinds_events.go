package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// Events exist once, as on a cluster: core/v1 and events.k8s.io/v1 are two
// views of the same objects, stored in their core/v1 form (the apiserver
// keeps one storage for both and converts). The events.k8s.io/v1 view
// converts on the way out (eventV1 decodes either form; eventsV1List
// converts stored items).

// eventColumns are kubectl's columns for events (printers.go); the
// apiserver prints events of both groups with them, wide columns included.
var eventColumns = []metav1.TableColumnDefinition{
	{Name: "Last Seen", Type: "string", Description: corev1.Event{}.SwaggerDoc()["lastTimestamp"]},
	{Name: "Type", Type: "string", Description: corev1.Event{}.SwaggerDoc()["type"]},
	{Name: "Reason", Type: "string", Description: corev1.Event{}.SwaggerDoc()["reason"]},
	{Name: "Object", Type: "string", Description: corev1.Event{}.SwaggerDoc()["involvedObject"]},
	{Name: "Subobject", Type: "string", Priority: 1, Description: corev1.Event{}.InvolvedObject.SwaggerDoc()["fieldPath"]},
	{Name: "Source", Type: "string", Priority: 1, Description: corev1.Event{}.SwaggerDoc()["source"]},
	{Name: "Message", Type: "string", Description: corev1.Event{}.SwaggerDoc()["message"]},
	{Name: "First Seen", Type: "string", Priority: 1, Description: corev1.Event{}.SwaggerDoc()["firstTimestamp"]},
	{Name: "Count", Type: "string", Priority: 1, Description: corev1.Event{}.SwaggerDoc()["count"]},
	{Name: "Name", Type: "string", Priority: 1, Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
}

func eventKind() *kind {
	k := &kind{version: "v1", resource: "events", singular: "event", kind: "Event", namespaced: true,
		shortNames: []string{"ev"}}
	k.new = func() store.Object { return &corev1.Event{} }
	k.prepare = func(o store.Object) {
		o.(*corev1.Event).TypeMeta = metav1.TypeMeta{Kind: "Event", APIVersion: "v1"}
	}
	k.validate = func(o store.Object) error { return fieldErrs(validateEvent(o.(*corev1.Event), false)) }
	k.fields = func(o store.Object) fields.Set { return eventFields(o.(*corev1.Event)) }
	k.columns = eventColumns
	k.cells = func(o store.Object) []any { return eventCells(o.(*corev1.Event)) }
	return k
}

// eventsV1Kind is events.k8s.io/v1, stored in the core form (toStored,
// fromStored) with every verb core/v1 Events have.
func eventsV1Kind() *kind {
	k := &kind{group: "events.k8s.io", version: "v1", resource: "events", singular: "event", kind: "Event", namespaced: true,
		shortNames: []string{"ev"}}
	k.new = func() store.Object { return &eventV1{} }
	k.newList = eventsV1List
	k.prepare = func(o store.Object) {
		o.(*eventV1).TypeMeta = metav1.TypeMeta{Kind: "Event", APIVersion: "events.k8s.io/v1"}
	}
	k.validate = func(o store.Object) error {
		e := eventToCore(&o.(*eventV1).Event)
		return fieldErrs(validateEvent(e, true))
	}
	k.toStored = func(o store.Object) store.Object { return eventToCore(&o.(*eventV1).Event) }
	k.fromStored = func(stored, o store.Object) { o.(*eventV1).Event = *eventFromCore(stored.(*corev1.Event)) }
	k.fields = func(o store.Object) fields.Set { return eventFields(eventToCore(&o.(*eventV1).Event)) }
	k.columns = eventColumns
	k.cells = func(o store.Object) []any { return eventCells(eventToCore(&o.(*eventV1).Event)) }
	return k
}

// eventFields are the apiserver's field selectors for events
// (pkg/registry/core/event/strategy.go ToSelectableFields).
func eventFields(e *corev1.Event) fields.Set {
	s := metaFields(e, true)
	source := e.Source.Component
	if source == "" {
		source = e.ReportingController
	}
	s["involvedObject.kind"] = e.InvolvedObject.Kind
	s["involvedObject.namespace"] = e.InvolvedObject.Namespace
	s["involvedObject.name"] = e.InvolvedObject.Name
	s["involvedObject.uid"] = string(e.InvolvedObject.UID)
	s["involvedObject.apiVersion"] = e.InvolvedObject.APIVersion
	s["involvedObject.resourceVersion"] = e.InvolvedObject.ResourceVersion
	s["involvedObject.fieldPath"] = e.InvolvedObject.FieldPath
	s["reason"] = e.Reason
	s["reportingComponent"] = e.ReportingController
	s["source"] = source
	s["type"] = e.Type
	return s
}

// eventCells is kubectl's printEvent with the wide columns (the apiserver
// always prints wide; kubectl hides priority-1 columns).
func eventCells(e *corev1.Event) []any {
	first := microAge(e.EventTime)
	if !e.FirstTimestamp.IsZero() {
		first = age(e.FirstTimestamp)
	}
	last := first
	if !e.LastTimestamp.IsZero() {
		last = age(e.LastTimestamp)
	}
	count := e.Count
	if e.Series != nil {
		last = microAge(e.Series.LastObservedTime)
		count = e.Series.Count
	} else if count == 0 {
		// Singleton events of the new API carry no count.
		count = 1
	}
	target := strings.ToLower(e.InvolvedObject.Kind)
	if e.InvolvedObject.Name != "" {
		target += "/" + e.InvolvedObject.Name
	}
	return []any{last, e.Type, e.Reason, target, e.InvolvedObject.FieldPath,
		eventSource(firstNonEmpty(e.Source.Component, e.ReportingController), firstNonEmpty(e.Source.Host, e.ReportingInstance)),
		strings.TrimSpace(e.Message), first, int64(count), e.Name}
}

func microAge(t metav1.MicroTime) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func eventSource(component, instance string) string {
	if instance == "" {
		return component
	}
	return component + ", " + instance
}

// The apiserver's limits on events (pkg/apis/core/validation/events.go).
const (
	eventReportingInstanceLimit = 128
	eventActionLimit            = 128
	eventReasonLimit            = 128
	eventNoteLimit              = 1024
)

// validateEvent is the apiserver's ValidateEventCreate: core/v1 events get
// the legacy checks only (old clients write loose events), events.k8s.io/v1
// ones the strict checks too. Both pass the generic name checks that every
// create gets (a path segment), which also keeps the store's keys sound.
func validateEvent(e *corev1.Event, strict bool) field.ErrorList {
	var errs field.ErrorList
	reportingController := "reportingComponent"
	if strict {
		reportingController = "reportingController"
	}
	doesNotMatch := func() {
		errs = append(errs, field.Invalid(field.NewPath("involvedObject", "namespace"), e.InvolvedObject.Namespace, "does not match event.namespace"))
	}
	if e.EventTime.IsZero() {
		switch {
		case e.InvolvedObject.Namespace == "":
			if e.Namespace != metav1.NamespaceNone && e.Namespace != metav1.NamespaceDefault {
				doesNotMatch()
			}
		case e.Namespace != e.InvolvedObject.Namespace:
			doesNotMatch()
		}
	} else {
		if e.InvolvedObject.Namespace == "" && e.Namespace != metav1.NamespaceDefault && e.Namespace != metav1.NamespaceSystem {
			doesNotMatch()
		}
		if e.ReportingController == "" {
			errs = append(errs, field.Required(field.NewPath(reportingController), ""))
		}
		for _, msg := range validation.IsQualifiedName(e.ReportingController) {
			errs = append(errs, field.Invalid(field.NewPath(reportingController), e.ReportingController, msg))
		}
		if e.ReportingInstance == "" {
			errs = append(errs, field.Required(field.NewPath("reportingInstance"), ""))
		}
		if len(e.ReportingInstance) > eventReportingInstanceLimit {
			errs = append(errs, field.Invalid(field.NewPath("reportingInstance"), "", fmt.Sprintf("can have at most %v characters", eventReportingInstanceLimit)))
		}
		if e.Action == "" {
			errs = append(errs, field.Required(field.NewPath("action"), ""))
		}
		if len(e.Action) > eventActionLimit {
			errs = append(errs, field.Invalid(field.NewPath("action"), "", fmt.Sprintf("can have at most %v characters", eventActionLimit)))
		}
		if e.Reason == "" {
			errs = append(errs, field.Required(field.NewPath("reason"), ""))
		}
		if len(e.Reason) > eventReasonLimit {
			errs = append(errs, field.Invalid(field.NewPath("reason"), "", fmt.Sprintf("can have at most %v characters", eventReasonLimit)))
		}
		if len(e.Message) > eventNoteLimit {
			errs = append(errs, field.Invalid(field.NewPath("message"), "", fmt.Sprintf("can have at most %v characters", eventNoteLimit)))
		}
	}
	for _, msg := range validation.IsDNS1123Subdomain(e.Namespace) {
		errs = append(errs, field.Invalid(field.NewPath("namespace"), e.Namespace, msg))
	}
	if strict {
		if e.EventTime.IsZero() {
			errs = append(errs, field.Required(field.NewPath("eventTime"), ""))
		}
		if e.Type != corev1.EventTypeNormal && e.Type != corev1.EventTypeWarning {
			errs = append(errs, field.Invalid(field.NewPath("type"), "", fmt.Sprintf("has invalid value: %v", e.Type)))
		}
		if !e.FirstTimestamp.IsZero() {
			errs = append(errs, field.Invalid(field.NewPath("firstTimestamp"), "", "needs to be unset"))
		}
		if !e.LastTimestamp.IsZero() {
			errs = append(errs, field.Invalid(field.NewPath("lastTimestamp"), "", "needs to be unset"))
		}
		if e.Count != 0 {
			errs = append(errs, field.Invalid(field.NewPath("count"), "", "needs to be unset"))
		}
		if e.Source.Component != "" || e.Source.Host != "" {
			errs = append(errs, field.Invalid(field.NewPath("source"), "", "needs to be unset"))
		}
	}
	// The generic check after the kind's own (registry/rest.BeforeCreate).
	if len(errs) == 0 {
		for _, msg := range path.ValidatePathSegmentName(e.Name, false) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), e.Name, msg))
		}
	}
	return errs
}

// eventV1 is an events.k8s.io/v1 Event that decodes from either stored
// form: the core/v1 one is converted.
type eventV1 struct{ eventsv1.Event }

func (e *eventV1) UnmarshalJSON(b []byte) error {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(b, &tm); err != nil {
		return err
	}
	if storedCore(tm) {
		var c corev1.Event
		if err := json.Unmarshal(b, &c); err != nil {
			return err
		}
		e.Event = *eventFromCore(&c)
		return nil
	}
	// The plain struct's decoding (a defined type drops the method).
	type plain eventsv1.Event
	return json.Unmarshal(b, (*plain)(&e.Event))
}

// storedCore tells the core/v1 form of an Event (what the store holds)
// from the events.k8s.io/v1 one and from other objects (a Table, a Status).
func storedCore(tm metav1.TypeMeta) bool {
	return (tm.Kind == "Event" || tm.Kind == "") && !strings.HasPrefix(tm.APIVersion, "events.k8s.io/")
}

// eventsV1List is the EventList of events.k8s.io/v1 around stored items,
// each converted from its stored core/v1 form.
func eventsV1List(items [][]byte, rv string) any {
	out := make([]*eventV1, 0, len(items))
	for _, b := range items {
		e := &eventV1{}
		if err := json.Unmarshal(b, e); err != nil {
			// Stored objects were encoded by this server; one that does not
			// decode is left out rather than failing the whole list.
			continue
		}
		out = append(out, e)
	}
	return struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata"`
		Items           []*eventV1 `json:"items"`
	}{metav1.TypeMeta{Kind: "EventList", APIVersion: "events.k8s.io/v1"}, metav1.ListMeta{ResourceVersion: rv}, out}
}

// eventFromCore is the apiserver's conversion of an Event to
// events.k8s.io/v1 (pkg/apis/events/v1/conversion.go).
func eventFromCore(c *corev1.Event) *eventsv1.Event {
	e := &eventsv1.Event{
		TypeMeta:                 metav1.TypeMeta{Kind: "Event", APIVersion: "events.k8s.io/v1"},
		ObjectMeta:               c.ObjectMeta,
		EventTime:                c.EventTime,
		ReportingController:      c.ReportingController,
		ReportingInstance:        c.ReportingInstance,
		Action:                   c.Action,
		Reason:                   c.Reason,
		Regarding:                c.InvolvedObject,
		Related:                  c.Related,
		Note:                     c.Message,
		Type:                     c.Type,
		DeprecatedSource:         c.Source,
		DeprecatedFirstTimestamp: c.FirstTimestamp,
		DeprecatedLastTimestamp:  c.LastTimestamp,
		DeprecatedCount:          c.Count,
	}
	if c.Series != nil {
		e.Series = &eventsv1.EventSeries{Count: c.Series.Count, LastObservedTime: c.Series.LastObservedTime}
	}
	return e
}

// eventToCore is the reverse conversion.
func eventToCore(e *eventsv1.Event) *corev1.Event {
	c := &corev1.Event{
		TypeMeta:            metav1.TypeMeta{Kind: "Event", APIVersion: "v1"},
		ObjectMeta:          e.ObjectMeta,
		InvolvedObject:      e.Regarding,
		Reason:              e.Reason,
		Message:             e.Note,
		Source:              e.DeprecatedSource,
		FirstTimestamp:      e.DeprecatedFirstTimestamp,
		LastTimestamp:       e.DeprecatedLastTimestamp,
		Count:               e.DeprecatedCount,
		Type:                e.Type,
		EventTime:           e.EventTime,
		Related:             e.Related,
		ReportingController: e.ReportingController,
		ReportingInstance:   e.ReportingInstance,
		Action:              e.Action,
	}
	if e.Series != nil {
		c.Series = &corev1.EventSeries{Count: e.Series.Count, LastObservedTime: e.Series.LastObservedTime}
	}
	return c
}

// eventsV1Writer converts the events of a watch on events.k8s.io/v1, which
// the generic watch writes as stored (core/v1), one JSON object a line.
type eventsV1Writer struct {
	http.ResponseWriter
	buf []byte
}

func (w *eventsV1Writer) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := w.buf[:i+1]
		if _, err := w.ResponseWriter.Write(convertWatchLine(line)); err != nil {
			return 0, err
		}
		w.buf = w.buf[i+1:]
	}
}

func (w *eventsV1Writer) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// convertWatchLine turns a watch event carrying a core/v1 Event into one
// carrying its events.k8s.io/v1 form; anything else (a Table, a Status)
// passes unchanged.
func convertWatchLine(line []byte) []byte {
	var ev struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	var tm metav1.TypeMeta
	if json.Unmarshal(line, &ev) != nil || ev.Type == "" || json.Unmarshal(ev.Object, &tm) != nil || !storedCore(tm) {
		return line
	}
	e := &eventV1{}
	if json.Unmarshal(ev.Object, e) != nil {
		return line
	}
	obj, err := json.Marshal(e)
	if err != nil {
		return line
	}
	out, err := json.Marshal(struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}{ev.Type, obj})
	if err != nil {
		return line
	}
	return append(out, '\n')
}

// DeepCopyObject keeps the wrapper's type (the embedded one would return
// a bare *eventsv1.Event, which the kind's functions do not take).
func (e *eventV1) DeepCopyObject() runtime.Object {
	return &eventV1{Event: *e.Event.DeepCopy()}
}
