package worker

import (
	"context"
	"encoding/json"
	"maps"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/agent/volumes"
)

// Store resources of the objects volumes project.
const (
	configMaps store.Resource = "configmaps"
	secrets    store.Resource = "secrets"
)

// VolumeSource reads the ConfigMaps and Secrets pods' volumes project from
// the store (volumes.Source).
type VolumeSource struct{ Store Store }

var _ volumes.Source = VolumeSource{}

// ConfigMap implements volumes.Source.
func (s VolumeSource) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	var cm corev1.ConfigMap
	if err := s.Store.Get(configMaps, ns, name, &cm); err != nil {
		return nil, err
	}
	return &cm, nil
}

// Secret implements volumes.Source.
func (s VolumeSource) Secret(ns, name string) (*corev1.Secret, error) {
	var sec corev1.Secret
	if err := s.Store.Get(secrets, ns, name, &sec); err != nil {
		return nil, err
	}
	return &sec, nil
}

// VolumeUpdater brings a running pod's projected volumes up to date
// (*pods.Runtime).
type VolumeUpdater interface {
	UpdateVolumes(ctx context.Context, pod *corev1.Pod) error
}

// VolumeSyncer makes ConfigMap and Secret changes reach running pods, as
// the kubelet's periodic remount does: it follows the store's changes of
// both and updates the volumes of every pod in the namespace that projects
// the object. Pod metadata (downwardAPI labels and annotations) follows
// the pods' own changes. A resync every Resync catches anything a lost
// watch missed.
type VolumeSyncer struct {
	Store   Store
	Updater VolumeUpdater
	Resync  time.Duration // default one minute (the kubelet's sync period)
	Log     hclog.Logger
}

// Run follows the store until ctx ends.
func (v *VolumeSyncer) Run(ctx context.Context) error {
	if v.Log == nil {
		v.Log = hclog.NewNullLogger()
	}
	if v.Resync <= 0 {
		v.Resync = time.Minute
	}
	for ctx.Err() == nil {
		v.follow(ctx)
	}
	return nil
}

// follow watches configmaps, secrets and pods until a watch ends or a
// resync is due; every pod that projects anything is brought up to date
// first.
func (v *VolumeSyncer) follow(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, v.Resync)
	defer cancel()
	var chans []<-chan store.Event
	for _, res := range []store.Resource{configMaps, secrets, Resource} {
		w, err := v.Store.Watch(ctx, res, "", 0)
		if err != nil {
			v.Log.Warn("watch for volume updates", "resource", res, "error", err)
			<-ctx.Done()
			return
		}
		defer w.Stop()
		chans = append(chans, w.Events())
	}
	v.sync(ctx, "", func(*corev1.Pod) bool { return true })
	for {
		var ev store.Event
		var ok bool
		select {
		case <-ctx.Done():
			return
		case ev, ok = <-chans[0]:
		case ev, ok = <-chans[1]:
		case ev, ok = <-chans[2]:
		}
		if !ok {
			return
		}
		switch ev.Resource {
		case configMaps, secrets:
			v.sync(ctx, ev.Namespace, func(p *corev1.Pod) bool { return projects(p, ev.Resource, ev.Name) })
		case Resource:
			// The pod's own change (its labels or annotations, for a
			// downwardAPI volume), from the event: no list per status
			// write.
			var p corev1.Pod
			if ev.Type == store.Modified && metaChanged(ev) && json.Unmarshal(ev.Object, &p) == nil && updatable(&p) {
				v.update(ctx, &p)
			}
		}
	}
}

// sync updates the projected volumes of the stored pods of namespace ns
// ("" all) that match accepts.
func (v *VolumeSyncer) sync(ctx context.Context, ns string, match func(*corev1.Pod) bool) {
	var todo []*corev1.Pod
	_, err := v.Store.List(Resource, ns, func(data []byte) error {
		var p corev1.Pod
		if err := json.Unmarshal(data, &p); err != nil {
			return nil // a pod the worker reports on its own
		}
		if updatable(&p) && match(&p) {
			todo = append(todo, &p)
		}
		return nil
	})
	if err != nil {
		v.Log.Warn("list pods for volume updates", "error", err)
		return
	}
	for _, p := range todo {
		v.update(ctx, p)
	}
}

func (v *VolumeSyncer) update(ctx context.Context, p *corev1.Pod) {
	if err := v.Updater.UpdateVolumes(ctx, p); err != nil && ctx.Err() == nil {
		v.Log.Warn("update volumes", "pod", p.Namespace+"/"+p.Name, "error", err)
	}
}

// updatable: a running pod, not being deleted, with a volume that follows
// objects or its own metadata.
func updatable(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && hasProjected(p)
}

// metaChanged tells whether a pod update changed its metadata's labels or
// annotations (status writes, the most frequent updates, do not).
func metaChanged(ev store.Event) bool {
	if ev.Prev == nil {
		return true
	}
	var a, b struct {
		Metadata struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if json.Unmarshal(ev.Prev, &a) != nil || json.Unmarshal(ev.Object, &b) != nil {
		return true
	}
	return !maps.Equal(a.Metadata.Labels, b.Metadata.Labels) || !maps.Equal(a.Metadata.Annotations, b.Metadata.Annotations)
}

// hasProjected tells whether the pod has a volume whose content follows
// objects or its own metadata.
func hasProjected(p *corev1.Pod) bool {
	for _, vol := range p.Spec.Volumes {
		if vol.ConfigMap != nil || vol.Secret != nil || vol.DownwardAPI != nil || vol.Projected != nil {
			return true
		}
	}
	return false
}

// projects tells whether the pod's volumes take the ConfigMap or Secret
// name.
func projects(p *corev1.Pod, res store.Resource, name string) bool {
	for _, vol := range p.Spec.Volumes {
		switch {
		case res == configMaps && vol.ConfigMap != nil && vol.ConfigMap.Name == name,
			res == secrets && vol.Secret != nil && vol.Secret.SecretName == name:
			return true
		case vol.Projected != nil:
			for _, s := range vol.Projected.Sources {
				if (res == configMaps && s.ConfigMap != nil && s.ConfigMap.Name == name) ||
					(res == secrets && s.Secret != nil && s.Secret.Name == name) {
					return true
				}
			}
		}
	}
	return false
}
