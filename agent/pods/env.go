package pods

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/kubectl/pkg/util/fieldpath"
	kresource "k8s.io/kubectl/pkg/util/resource"
)

// ConfigError is a container whose env cannot be resolved (a missing
// ConfigMap, Secret or key): the kubelet's CreateContainerConfigError.
// Its message is the kubelet's, e.g. `configmap "x" not found`.
type ConfigError struct {
	Container string
	Err       error
}

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// envInput is what resolving a container's environment needs beyond the
// pod: its addresses and the node's.
type envInput struct {
	podIPs []string
	hostIP string
}

// needsPodIP tells whether a container's env names the pod's addresses,
// which exist only once the pod is attached to its network.
func needsPodIP(pod *corev1.Pod) bool {
	for _, c := range AllContainers(pod) {
		for _, e := range c.Env {
			if f := e.ValueFrom; f != nil && f.FieldRef != nil && strings.HasPrefix(f.FieldRef.FieldPath, "status.podIP") {
				return true
			}
		}
	}
	return false
}

// resolveEnv returns c with its environment as the kubelet computes it
// (makeEnvironmentVariables): envFrom's ConfigMaps and Secrets first (with
// their prefix; keys that are no valid variable name skipped), then env,
// each valueFrom (fieldRef, resourceFieldRef, configMapKeyRef,
// secretKeyRef) replaced by its value. Resolved values are escaped ("$" as
// "$$") so that unitgen's $(VAR) expansion, which the kubelet applies to
// literal values only, leaves them as they are. A missing object or key
// that is not optional is the kubelet's error (CreateContainerConfigError).
func (r *Runtime) resolveEnv(pod *corev1.Pod, c *corev1.Container, in envInput) (*corev1.Container, error) {
	if len(c.EnvFrom) == 0 && !hasValueFrom(c.Env) {
		return c, nil
	}
	out := c.DeepCopy()
	out.EnvFrom, out.Env = nil, nil
	literal := func(name, value string) {
		out.Env = append(out.Env, corev1.EnvVar{Name: name, Value: strings.ReplaceAll(value, "$", "$$")})
	}
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := r.configMap(pod.Namespace, from.ConfigMapRef.Name)
			if err != nil {
				if errdefs.IsNotFound(err) && optional(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, err
			}
			data = cm.Data
		case from.SecretRef != nil:
			sec, err := r.secret(pod.Namespace, from.SecretRef.Name)
			if err != nil {
				if errdefs.IsNotFound(err) && optional(from.SecretRef.Optional) {
					continue
				}
				return nil, err
			}
			data = map[string]string{}
			for k, v := range sec.Data {
				data[k] = string(v)
			}
		}
		for _, k := range sortedKeys(data) {
			name := from.Prefix + k
			if len(validation.IsEnvVarName(name)) > 0 {
				continue // the kubelet skips it (and says so in an event)
			}
			literal(name, data[k])
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			out.Env = append(out.Env, e)
			continue
		}
		v, ok, err := r.envValue(pod, c, e.ValueFrom, in)
		if err != nil {
			return nil, err
		}
		if ok {
			literal(e.Name, v)
		}
	}
	return out, nil
}

func hasValueFrom(env []corev1.EnvVar) bool {
	for _, e := range env {
		if e.ValueFrom != nil {
			return true
		}
	}
	return false
}

func optional(o *bool) bool { return o != nil && *o }

// envValue is one valueFrom; ok is false for an optional reference that
// is missing (the variable is then not set).
func (r *Runtime) envValue(pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource, in envInput) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := podFieldValue(pod, from.FieldRef.FieldPath, in)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		ref := from.ResourceFieldRef.DeepCopy()
		if ref.ContainerName == "" {
			ref.ContainerName = c.Name
		}
		res, err := r.resources(pod)(ref.ContainerName)
		if err != nil {
			return "", false, err
		}
		v, err := kresource.ExtractContainerResourceValue(ref, &corev1.Container{Resources: res})
		return v, err == nil, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := r.configMap(pod.Namespace, ref.Name)
		if err != nil {
			if errdefs.IsNotFound(err) && optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, err
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %v in ConfigMap %v/%v: %w", ref.Key, pod.Namespace, ref.Name, errdefs.ErrNotFound)
		}
		return v, true, nil
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		sec, err := r.secret(pod.Namespace, ref.Name)
		if err != nil {
			if errdefs.IsNotFound(err) && optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, err
		}
		v, ok := sec.Data[ref.Key]
		if !ok {
			if optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %v in Secret %v/%v: %w", ref.Key, pod.Namespace, ref.Name, errdefs.ErrNotFound)
		}
		return string(v), true, nil
	}
	return "", false, fmt.Errorf("%w: env valueFrom names no source", errdefs.ErrInvalidArgument)
}

// podFieldValue is the kubelet's podFieldSelectorRuntimeValue: the status
// and spec fields only the kubelet knows, else the object's own fields.
func podFieldValue(pod *corev1.Pod, path string, in envInput) (string, error) {
	switch path {
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return in.hostIP, nil
	case "status.podIP":
		if len(in.podIPs) > 0 {
			return in.podIPs[0], nil
		}
		return "", nil
	case "status.podIPs":
		return strings.Join(in.podIPs, ","), nil
	}
	return fieldpath.ExtractFieldPathAsString(pod, path)
}

// configMap and secret read the objects env refers to; their absence is
// the kubelet's `configmap "x" not found`.
func (r *Runtime) configMap(ns, name string) (*corev1.ConfigMap, error) {
	if r.cfg.Objects == nil {
		return nil, errdefs.ErrNotFound.WithMessage(fmt.Sprintf("configmap %q not found", name))
	}
	cm, err := r.cfg.Objects.ConfigMap(ns, name)
	if errdefs.IsNotFound(err) {
		return nil, errdefs.ErrNotFound.WithMessage(fmt.Sprintf("configmap %q not found", name))
	}
	return cm, err
}

func (r *Runtime) secret(ns, name string) (*corev1.Secret, error) {
	if r.cfg.Objects == nil {
		return nil, errdefs.ErrNotFound.WithMessage(fmt.Sprintf("secret %q not found", name))
	}
	s, err := r.cfg.Objects.Secret(ns, name)
	if errdefs.IsNotFound(err) {
		return nil, errdefs.ErrNotFound.WithMessage(fmt.Sprintf("secret %q not found", name))
	}
	return s, err
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
