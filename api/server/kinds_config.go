package server

import (
	"encoding/json"
	"reflect"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/agent/store"
)

// ConfigMaps and Secrets are stored only: mounting them comes with volumes.
// Validation is the apiserver's (pkg/apis/core/validation: ValidateConfigMap,
// ValidateSecret and their Update forms), in its words.

func configMapKind() *kind {
	k := &kind{version: "v1", resource: "configmaps", singular: "configmap", kind: "ConfigMap", namespaced: true,
		shortNames: []string{"cm"}}
	k.new = func() store.Object { return &corev1.ConfigMap{} }
	k.prepare = func(o store.Object) {
		o.(*corev1.ConfigMap).TypeMeta = metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"}
	}
	k.validate = func(o store.Object) error { return fieldErrs(validateConfigMap(o.(*corev1.ConfigMap))) }
	k.validateUpdate = func(o, old store.Object) error {
		return fieldErrs(validateConfigMapUpdate(o.(*corev1.ConfigMap), old.(*corev1.ConfigMap)))
	}
	k.fields = func(o store.Object) fields.Set { return metaFields(o, true) }
	// kubectl's columns for configmaps (pkg/printers/internalversion).
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Data", Type: "string", Description: corev1.ConfigMap{}.SwaggerDoc()["data"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
	}
	k.cells = func(o store.Object) []any {
		c := o.(*corev1.ConfigMap)
		return []any{c.Name, int64(len(c.Data) + len(c.BinaryData)), age(c.CreationTimestamp)}
	}
	return k
}

func secretKind() *kind {
	k := &kind{version: "v1", resource: "secrets", singular: "secret", kind: "Secret", namespaced: true}
	k.new = func() store.Object { return &corev1.Secret{} }
	k.prepare = func(o store.Object) {
		o.(*corev1.Secret).TypeMeta = metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"}
		defaultSecret(o.(*corev1.Secret))
	}
	// A Secret has no status to keep: what an update needs is the
	// defaulting and conversion a create gets.
	k.prepareUpdate = func(o, _ store.Object) { defaultSecret(o.(*corev1.Secret)) }
	k.validate = func(o store.Object) error { return fieldErrs(validateSecret(o.(*corev1.Secret))) }
	k.validateUpdate = func(o, old store.Object) error {
		return fieldErrs(validateSecretUpdate(o.(*corev1.Secret), old.(*corev1.Secret)))
	}
	k.fields = func(o store.Object) fields.Set {
		s := metaFields(o, true)
		s["type"] = string(o.(*corev1.Secret).Type)
		return s
	}
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Type", Type: "string", Description: corev1.Secret{}.SwaggerDoc()["type"]},
		{Name: "Data", Type: "string", Description: corev1.Secret{}.SwaggerDoc()["data"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
	}
	k.cells = func(o store.Object) []any {
		s := o.(*corev1.Secret)
		return []any{s.Name, string(s.Type), int64(len(s.Data)), age(s.CreationTimestamp)}
	}
	return k
}

// defaultSecret is the apiserver's defaulting (SetDefaults_Secret: type
// Opaque) and conversion of a written Secret: stringData is write-only,
// merged into data and never stored or returned.
func defaultSecret(s *corev1.Secret) {
	if s.Type == "" {
		s.Type = corev1.SecretTypeOpaque
	}
	for key, v := range s.StringData {
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		s.Data[key] = []byte(v)
	}
	s.StringData = nil
}

// fieldErrs is nil for no errors, else the class api/server answers with
// 422 Invalid.
func fieldErrs(errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return pods.FieldErrors(errs)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func validateConfigMap(c *corev1.ConfigMap) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&c.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	total := 0
	for _, key := range sortedKeys(c.Data) {
		for _, msg := range validation.IsConfigMapKey(key) {
			errs = append(errs, field.Invalid(field.NewPath("data").Key(key), key, msg))
		}
		if _, dup := c.BinaryData[key]; dup {
			errs = append(errs, field.Invalid(field.NewPath("data").Key(key), key, "duplicate of key present in binaryData"))
		}
		total += len(c.Data[key])
	}
	for _, key := range sortedKeys(c.BinaryData) {
		for _, msg := range validation.IsConfigMapKey(key) {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(key), key, msg))
		}
		total += len(c.BinaryData[key])
	}
	if total > corev1.MaxSecretSize {
		errs = append(errs, field.TooLong(field.NewPath(""), "", corev1.MaxSecretSize))
	}
	return errs
}

// validateConfigMapUpdate is the apiserver's ValidateConfigMapUpdate: an
// immutable ConfigMap keeps its data and stays immutable.
func validateConfigMapUpdate(newC, oldC *corev1.ConfigMap) field.ErrorList {
	errs := validateConfigMap(newC)
	if oldC.Immutable != nil && *oldC.Immutable {
		if newC.Immutable == nil || !*newC.Immutable {
			errs = append(errs, field.Forbidden(field.NewPath("immutable"), "field is immutable when `immutable` is set"))
		}
		if !reflect.DeepEqual(newC.Data, oldC.Data) {
			errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
		}
		if !reflect.DeepEqual(newC.BinaryData, oldC.BinaryData) {
			errs = append(errs, field.Forbidden(field.NewPath("binaryData"), "field is immutable when `immutable` is set"))
		}
	}
	return errs
}

func validateSecret(s *corev1.Secret) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&s.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	data := field.NewPath("data")
	total := 0
	for _, key := range sortedKeys(s.Data) {
		for _, msg := range validation.IsConfigMapKey(key) {
			errs = append(errs, field.Invalid(data.Key(key), key, msg))
		}
		total += len(s.Data[key])
	}
	if total > corev1.MaxSecretSize {
		errs = append(errs, field.TooLong(data, "", corev1.MaxSecretSize))
	}
	need := func(key string) {
		if _, ok := s.Data[key]; !ok {
			errs = append(errs, field.Required(data.Key(key), ""))
		}
	}
	wellFormedJSON := func(key string) {
		b, ok := s.Data[key]
		if !ok {
			errs = append(errs, field.Required(data.Key(key), ""))
			return
		}
		if err := json.Unmarshal(b, &map[string]any{}); err != nil {
			errs = append(errs, field.Invalid(data.Key(key), "<secret contents redacted>", err.Error()))
		}
	}
	switch s.Type {
	case corev1.SecretTypeServiceAccountToken:
		if s.Annotations[corev1.ServiceAccountNameKey] == "" {
			errs = append(errs, field.Required(field.NewPath("metadata", "annotations").Key(corev1.ServiceAccountNameKey), ""))
		}
	case corev1.SecretTypeDockercfg:
		wellFormedJSON(corev1.DockerConfigKey)
	case corev1.SecretTypeDockerConfigJson:
		wellFormedJSON(corev1.DockerConfigJsonKey)
	case corev1.SecretTypeBasicAuth:
		_, user := s.Data[corev1.BasicAuthUsernameKey]
		_, pass := s.Data[corev1.BasicAuthPasswordKey]
		if !user && !pass {
			need(corev1.BasicAuthUsernameKey)
			need(corev1.BasicAuthPasswordKey)
		}
	case corev1.SecretTypeSSHAuth:
		if len(s.Data[corev1.SSHAuthPrivateKey]) == 0 {
			errs = append(errs, field.Required(data.Key(corev1.SSHAuthPrivateKey), ""))
		}
	case corev1.SecretTypeTLS:
		need(corev1.TLSCertKey)
		need(corev1.TLSPrivateKeyKey)
	}
	return errs
}

// validateSecretUpdate is the apiserver's ValidateSecretUpdate: the type
// never changes, and an immutable Secret keeps its data and stays
// immutable.
func validateSecretUpdate(newS, oldS *corev1.Secret) field.ErrorList {
	errs := validateSecret(newS)
	if newS.Type != oldS.Type {
		errs = append(errs, field.Invalid(field.NewPath("type"), newS.Type, "field is immutable"))
	}
	if oldS.Immutable != nil && *oldS.Immutable {
		if newS.Immutable == nil || !*newS.Immutable {
			errs = append(errs, field.Forbidden(field.NewPath("immutable"), "field is immutable when `immutable` is set"))
		}
		if !reflect.DeepEqual(newS.Data, oldS.Data) {
			errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
		}
	}
	return errs
}
