package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/kubectl/pkg/util/fieldpath"
	kresource "k8s.io/kubectl/pkg/util/resource"
)

// Source gives the ConfigMaps and Secrets volumes project. Declared here, by
// its user; berthd implements it over the store. A missing object is an
// error of errdefs' not-found class.
type Source interface {
	ConfigMap(ns, name string) (*corev1.ConfigMap, error)
	Secret(ns, name string) (*corev1.Secret, error)
}

// ResourceResolver returns a container's resources as the downward API
// reports them: the kubelet fills a limit the container leaves unset with the
// node's allocatable (MergeContainerResourceLimits). NodeResources builds one.
type ResourceResolver func(containerName string) (corev1.ResourceRequirements, error)

// NodeResources is the kubelet's resolver: the named container of pod (app,
// init or ephemeral), limits it leaves unset for cpu, memory and
// ephemeral-storage taken from allocatable.
func NodeResources(pod *corev1.Pod, allocatable corev1.ResourceList) ResourceResolver {
	return func(name string) (corev1.ResourceRequirements, error) {
		var c *corev1.Container
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == name {
				c = &pod.Spec.Containers[i]
			}
		}
		for i := range pod.Spec.InitContainers {
			if pod.Spec.InitContainers[i].Name == name {
				c = &pod.Spec.InitContainers[i]
			}
		}
		if c == nil {
			return corev1.ResourceRequirements{}, fmt.Errorf("container %s not found", name)
		}
		r := *c.Resources.DeepCopy()
		if r.Limits == nil {
			r.Limits = corev1.ResourceList{}
		}
		for _, n := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
			if _, ok := r.Limits[n]; !ok {
				if q, ok := allocatable[n]; ok {
					r.Limits[n] = q.DeepCopy()
				}
			}
		}
		return r, nil
	}
}

// notFoundError is the kubelet's text for a missing object (its managers'
// NewNotFound over the singular resource: `configmap "x" not found`), still
// of errdefs' not-found class through the source's error.
type notFoundError struct {
	resource, name string
	err            error
}

func (e *notFoundError) Error() string { return fmt.Sprintf("%s %q not found", e.resource, e.name) }
func (e *notFoundError) Unwrap() error { return e.err }

func defaultMode(m *int32) os.FileMode {
	if m == nil {
		return 0o644 // the API default (SecretVolumeSourceDefaultMode, ...)
	}
	return os.FileMode(*m) & 0o777
}

// getConfigMap fetches a ConfigMap; a missing one that is optional is empty.
func getConfigMap(src Source, ns, name string, optional bool) (*corev1.ConfigMap, error) {
	cm, err := src.ConfigMap(ns, name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			if optional {
				return &corev1.ConfigMap{}, nil
			}
			return nil, &notFoundError{"configmap", name, err}
		}
		return nil, fmt.Errorf("configmap %q: %w", name, err)
	}
	return cm, nil
}

func getSecret(src Source, ns, name string, optional bool) (*corev1.Secret, error) {
	s, err := src.Secret(ns, name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			if optional {
				return &corev1.Secret{}, nil
			}
			return nil, &notFoundError{"secret", name, err}
		}
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return s, nil
}

// keyPayload is configmap.MakePayload and secret.MakePayload: without items,
// every key is a file of defaultMode; with items, each named key goes to its
// path, a missing key being an error unless the source is optional.
func keyPayload(kind string, data map[string][]byte, items []corev1.KeyToPath, mode *int32, optional bool) (map[string]file, error) {
	dm := defaultMode(mode)
	out := map[string]file{}
	if len(items) == 0 {
		for k, v := range data {
			// Keys become file names: the apiserver's rule for keys
			// (IsConfigMapKey: [-._a-zA-Z0-9]+, not "." or ".."),
			// checked again because the name reaches the filesystem.
			if errs := validation.IsConfigMapKey(k); len(errs) > 0 {
				return nil, fmt.Errorf("%s key %q: %s: %w", kind, k, strings.Join(errs, "; "), errdefs.ErrInvalidArgument)
			}
			out[k] = file{data: v, mode: dm}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			// The kubelet's two texts (configmap.MakePayload,
			// secret.MakePayload).
			what := "configmap references non-existent config key"
			if kind == "secret" {
				what = "references non-existent secret key"
			}
			return nil, fmt.Errorf("%s: %s: %w", what, it.Key, errdefs.ErrNotFound)
		}
		if err := validatePath(it.Path); err != nil {
			return nil, fmt.Errorf("%s key %q: %w: %w", kind, it.Key, err, errdefs.ErrInvalidArgument)
		}
		m := dm
		if it.Mode != nil {
			m = os.FileMode(*it.Mode) & 0o777
		}
		out[filepath.Clean(it.Path)] = file{data: v, mode: m}
	}
	return out, nil
}

func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	d := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		d[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		d[k] = v
	}
	return d
}

func configMapPayload(src Source, ns string, s *corev1.ConfigMapVolumeSource, mode *int32) (map[string]file, error) {
	optional := s.Optional != nil && *s.Optional
	cm, err := getConfigMap(src, ns, s.Name, optional)
	if err != nil {
		return nil, err
	}
	return keyPayload("configmap", configMapData(cm), s.Items, mode, optional)
}

func secretPayload(src Source, ns, name string, items []corev1.KeyToPath, optional bool, mode *int32) (map[string]file, error) {
	sec, err := getSecret(src, ns, name, optional)
	if err != nil {
		return nil, err
	}
	return keyPayload("secret", sec.Data, items, mode, optional)
}

// downwardPayload is downwardapi.CollectData: fieldRef through the
// kubelet's own field extraction (metadata.name, namespace, uid, labels,
// annotations and their subscripts: the set the API allows in volumes),
// resourceFieldRef from the container's resolved resources, with its divisor.
func downwardPayload(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, mode *int32, res ResourceResolver) (map[string]file, error) {
	dm := defaultMode(mode)
	out := map[string]file{}
	var errs []error
	for _, it := range items {
		if err := validatePath(it.Path); err != nil {
			errs = append(errs, fmt.Errorf("downwardAPI item %q: %w: %w", it.Path, err, errdefs.ErrInvalidArgument))
			continue
		}
		f := file{mode: dm}
		if it.Mode != nil {
			f.mode = os.FileMode(*it.Mode) & 0o777
		}
		switch {
		case it.FieldRef != nil:
			v, err := fieldValue(pod, it.FieldRef.FieldPath)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			f.data = []byte(v)
		case it.ResourceFieldRef != nil:
			if res == nil {
				errs = append(errs, fmt.Errorf("resourceFieldRef %s: no resource resolver", it.ResourceFieldRef.Resource))
				continue
			}
			r, err := res(it.ResourceFieldRef.ContainerName)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			v, err := kresource.ExtractContainerResourceValue(it.ResourceFieldRef, &corev1.Container{Resources: r})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			f.data = []byte(v)
		}
		out[filepath.Clean(it.Path)] = f
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return out, nil
}

// fieldValue allows exactly the field paths the API allows in downwardAPI
// volumes (validDownwardAPIFieldPathExpressions); spec.nodeName, status.podIP
// and the like exist only for env.
func fieldValue(pod *corev1.Pod, fp string) (string, error) {
	p, _, sub := fieldpath.SplitMaybeSubscriptedPath(fp)
	switch p {
	case "metadata.annotations", "metadata.labels":
	case "metadata.name", "metadata.namespace", "metadata.uid":
		if sub {
			return "", fmt.Errorf("fieldPath %q does not support subscript", fp)
		}
	default:
		return "", fmt.Errorf("unsupported fieldPath: %v", fp)
	}
	return fieldpath.ExtractFieldPathAsString(pod, fp)
}

// projectedPayload is projected.collectData: every source merged into one
// payload under the volume's defaultMode; errors of all sources together.
// serviceAccountToken, clusterTrustBundle and podCertificate need a token
// issuer or signer berth does not have yet.
func projectedPayload(src Source, pod *corev1.Pod, s *corev1.ProjectedVolumeSource, res ResourceResolver) (map[string]file, error) {
	out := map[string]file{}
	var errs []error
	for i, ps := range s.Sources {
		var p map[string]file
		var err error
		switch {
		case ps.ConfigMap != nil:
			optional := ps.ConfigMap.Optional != nil && *ps.ConfigMap.Optional
			var cm *corev1.ConfigMap
			if cm, err = getConfigMap(src, pod.Namespace, ps.ConfigMap.Name, optional); err == nil {
				p, err = keyPayload("configmap", configMapData(cm), ps.ConfigMap.Items, s.DefaultMode, optional)
			}
		case ps.Secret != nil:
			optional := ps.Secret.Optional != nil && *ps.Secret.Optional
			p, err = secretPayload(src, pod.Namespace, ps.Secret.Name, ps.Secret.Items, optional, s.DefaultMode)
		case ps.DownwardAPI != nil:
			p, err = downwardPayload(pod, ps.DownwardAPI.Items, s.DefaultMode, res)
		case ps.ServiceAccountToken != nil:
			err = fmt.Errorf("projected source %d: serviceAccountToken is not supported by berth yet: %w", i, errdefs.ErrNotImplemented)
		case ps.ClusterTrustBundle != nil:
			err = fmt.Errorf("projected source %d: clusterTrustBundle is not supported by berth yet: %w", i, errdefs.ErrNotImplemented)
		case ps.PodCertificate != nil:
			err = fmt.Errorf("projected source %d: podCertificate is not supported by berth yet: %w", i, errdefs.ErrNotImplemented)
		default:
			err = fmt.Errorf("projected source %d: no source set: %w", i, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for k, v := range p {
			out[k] = v
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
