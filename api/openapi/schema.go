package openapi

import (
	"reflect"
	"sort"
	"strings"
)

// schema is one OpenAPI v3 schema object, as JSON.
type schema = map[string]any

// generator builds component schemas by reflection over the Go API types,
// the way k8s.io/kube-openapi's generator does from their source: JSON
// names from json tags, descriptions from SwaggerDoc(), patch strategy and
// merge key from the struct tags, the types' own OpenAPI hooks (Quantity,
// IntOrString, Time, MicroTime, Duration).
type generator struct {
	schemas map[string]schema
	// gvks are the x-kubernetes-group-version-kind of top-level kinds.
	gvks map[reflect.Type][]map[string]string
}

func newGenerator() *generator {
	return &generator{schemas: map[string]schema{}, gvks: map[reflect.Type][]map[string]string{}}
}

// Hooks the API types implement (apimachinery's OpenAPI conventions).
type (
	modelNamer  interface{ OpenAPIModelName() string }
	typeNamer   interface{ OpenAPISchemaType() []string }
	formatNamer interface{ OpenAPISchemaFormat() string }
	oneOfNamer  interface{ OpenAPIV3OneOfTypes() []string }
	swaggerDoc  interface{ SwaggerDoc() map[string]string }
)

// modelName is the component name of a named type: its OpenAPIModelName,
// else the apiserver's rule (k8s.io/api/core/v1.Pod → io.k8s.api.core.v1.Pod).
func modelName(t reflect.Type) string {
	if n, ok := reflect.Zero(t).Interface().(modelNamer); ok {
		return n.OpenAPIModelName()
	}
	parts := strings.Split(t.PkgPath(), "/")
	if len(parts) > 0 {
		domain := strings.Split(parts[0], ".")
		for i, j := 0, len(domain)-1; i < j; i, j = i+1, j-1 {
			domain[i], domain[j] = domain[j], domain[i]
		}
		parts[0] = strings.Join(domain, ".")
	}
	return strings.Join(append(parts, t.Name()), ".")
}

func docOf(t reflect.Type) map[string]string {
	if d, ok := reflect.Zero(t).Interface().(swaggerDoc); ok {
		return d.SwaggerDoc()
	}
	return nil
}

// ref returns the schema for a value of type t in a property: primitives
// inline, named structs and the special types as a reference to their
// component.
func (g *generator) ref(t reflect.Type) schema {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if special(t) || (t.Kind() == reflect.Struct && t.Name() != "") {
		name := g.define(t)
		return schema{"$ref": "#/components/schemas/" + name}
	}
	switch t.Kind() {
	case reflect.Bool:
		return schema{"type": "boolean"}
	case reflect.Int32, reflect.Uint32, reflect.Int16, reflect.Uint16, reflect.Int8, reflect.Uint8:
		return schema{"type": "integer", "format": "int32"}
	case reflect.Int, reflect.Int64, reflect.Uint64, reflect.Uint:
		return schema{"type": "integer", "format": "int64"}
	case reflect.Float32, reflect.Float64:
		return schema{"type": "number", "format": "double"}
	case reflect.String:
		return schema{"type": "string"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return schema{"type": "string", "format": "byte"}
		}
		return schema{"type": "array", "items": withDefault(g.ref(t.Elem()), t.Elem())}
	case reflect.Map:
		return schema{"type": "object", "additionalProperties": withDefault(g.ref(t.Elem()), t.Elem())}
	case reflect.Interface:
		return schema{"type": "object"}
	case reflect.Struct:
		return g.structSchema(t)
	}
	return schema{}
}

// special types describe themselves (OpenAPISchemaType).
func special(t reflect.Type) bool {
	_, ok := reflect.Zero(t).Interface().(typeNamer)
	return ok
}

// withDefault wraps a reference as the apiserver does for non-pointer
// values: allOf plus the zero default, so clients see it is not null.
func withDefault(s schema, t reflect.Type) schema {
	ref, ok := s["$ref"]
	if !ok {
		if len(s) == 1 && s["type"] == "string" {
			s["default"] = ""
		}
		return s
	}
	if t.Kind() == reflect.Pointer {
		return s
	}
	out := schema{"allOf": []any{schema{"$ref": ref}}}
	if t.Kind() == reflect.Struct && !special(t) {
		out["default"] = map[string]any{}
	}
	return out
}

// define adds t's component (once) and returns its name.
func (g *generator) define(t reflect.Type) string {
	name := modelName(t)
	if _, ok := g.schemas[name]; ok {
		return name
	}
	g.schemas[name] = schema{} // a placeholder stops recursion
	var s schema
	zero := reflect.Zero(t).Interface()
	switch {
	case special(t):
		s = schema{}
		if o, ok := zero.(oneOfNamer); ok {
			var one []any
			for _, typ := range o.OpenAPIV3OneOfTypes() {
				one = append(one, schema{"type": typ})
			}
			s["oneOf"] = one
		} else {
			s["type"] = zero.(typeNamer).OpenAPISchemaType()[0]
		}
		if f, ok := zero.(formatNamer); ok && f.OpenAPISchemaFormat() != "" {
			s["format"] = f.OpenAPISchemaFormat()
		}
		if d := docOf(t)[""]; d != "" {
			s["description"] = d
		} else if d := specialDocs[name]; d != "" {
			s["description"] = d
		}
	case name == "io.k8s.apimachinery.pkg.runtime.RawExtension" || name == "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1":
		// Arbitrary JSON objects on the wire, whatever their Go shape.
		s = schema{"type": "object", "description": docOf(t)[""]}
	default:
		s = g.structSchema(t)
	}
	if gvks := g.gvks[t]; len(gvks) > 0 {
		list := make([]any, len(gvks))
		for i, gvk := range gvks {
			list[i] = gvk
		}
		s["x-kubernetes-group-version-kind"] = list
	}
	g.schemas[name] = s
	return name
}

var specialDocs = map[string]string{
	"io.k8s.apimachinery.pkg.api.resource.Quantity":   "Quantity is a fixed-point representation of a number. It provides convenient marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() accessors.",
	"io.k8s.apimachinery.pkg.util.intstr.IntOrString": "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.  This allows you to have, for example, a JSON field that can accept a name or number.",
	"io.k8s.apimachinery.pkg.apis.meta.v1.Time":       "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.  Wrappers are provided for many of the factory methods that the time package offers.",
	"io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime":  "MicroTime is version of Time with microsecond level precision.",
	"io.k8s.apimachinery.pkg.apis.meta.v1.Duration":   "Duration is a wrapper around time.Duration which supports correct marshaling to YAML and JSON.",
}

// optionalWithoutOmitempty are the fields of the served types marked
// +optional in their source whose json tag has no omitempty (read from
// k8s.io/api v0.37.2's core/v1, events/v1 and apimachinery's meta/v1): the
// generator makes a field optional for either, reflection sees only the tag.
var optionalWithoutOmitempty = map[string]bool{
	"io.k8s.api.core.v1.TypedObjectReference.apiGroup":                   true,
	"io.k8s.api.core.v1.AzureFilePersistentVolumeSource.secretNamespace": true,
	"io.k8s.api.core.v1.ProjectedVolumeSource.sources":                   true,
	"io.k8s.api.core.v1.GRPCAction.service":                              true,
	"io.k8s.api.core.v1.NodeRuntimeHandler.name":                         true,
	"io.k8s.api.core.v1.ContainerImage.names":                            true,
	"io.k8s.api.core.v1.TypedLocalObjectReference.apiGroup":              true,
	"io.k8s.api.core.v1.Event.reportingComponent":                        true,
	"io.k8s.api.core.v1.Event.reportingInstance":                         true,
	"io.k8s.api.events.v1.Event.metadata":                                true,
}

// structSchema is an object with t's JSON fields; embedded structs (inline)
// contribute their fields. Fields without omitempty are required, the
// closest a reflection can come to the +optional markers of the source,
// with the exceptions above.
func (g *generator) structSchema(t reflect.Type) schema {
	owner := ""
	if t.Name() != "" {
		owner = modelName(t)
	}
	props := map[string]any{}
	var required []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		doc := docOf(t)
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" || (!f.IsExported() && !f.Anonymous) {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			ft := f.Type
			if f.Anonymous && (name == "" || strings.Contains(","+opts+",", ",inline,")) {
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					walk(ft)
					continue
				}
			}
			if name == "" {
				name = f.Name
			}
			p := withDefault(g.ref(ft), ft)
			if _, isRef := p["$ref"]; isRef && doc[name] != "" {
				p = schema{"allOf": []any{p}}
			}
			if d := doc[name]; d != "" {
				p["description"] = d
			}
			if v := f.Tag.Get("patchStrategy"); v != "" {
				p["x-kubernetes-patch-strategy"] = v
			}
			if v := f.Tag.Get("patchMergeKey"); v != "" {
				p["x-kubernetes-patch-merge-key"] = v
			}
			props[name] = p
			if !strings.Contains(","+opts+",", ",omitempty,") && !strings.Contains(","+opts+",", ",omitzero,") && !optionalWithoutOmitempty[owner+"."+name] {
				required = append(required, name)
			}
		}
	}
	walk(t)
	s := schema{"type": "object", "properties": props}
	if d := docOf(t)[""]; d != "" {
		s["description"] = d
	}
	if len(required) > 0 {
		sort.Strings(required)
		s["required"] = required
	}
	return s
}
