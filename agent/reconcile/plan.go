package reconcile

import (
	"fmt"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-dev/berth/agent/pods"
	"github.com/berth-dev/berth/unitgen"
)

// PodRef names a pod incarnation: the uid tells a pod from a later one of
// the same name.
type PodRef struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid,omitempty"`
}

func (p PodRef) String() string {
	s := fmt.Sprintf("%q", p.Namespace+"/"+p.Name)
	if p.UID != "" {
		s += " (uid " + string(p.UID) + ")"
	}
	return s
}

// Adopted is a stored pod whose containers run (or ran) here and are left
// to the pod worker untouched.
type Adopted struct {
	PodRef
	Key string `json:"key"`
	// Warning, when set, is something the worker will find amiss (its
	// namespaces are no longer pinned while a container runs).
	Warning string `json:"warning,omitempty"`
}

// Kept is a pod directory left alone although it could not be adopted: it
// may belong to a stored pod, and reconcile never touches what might.
type Kept struct {
	Key string  `json:"key"`
	Pod *PodRef `json:"pod,omitempty"` // the stored pod of that key
	Why string  `json:"why"`
	// spared: an orphan left running because the state file is new.
	spared bool
	// shared: a run directory of another state directory's pod.
	shared bool
}

// Removal is one orphan: a pod's leftovers (its directories, units,
// bundles, the mounts in them), or units and bundles no pod directory
// accounts for.
type Removal struct {
	Key     string   `json:"key"`           // pod key, or "" with Units/Bundles of a shortened key no record names
	Pod     *PodRef  `json:"pod,omitempty"` // from the record, when there is one
	Why     string   `json:"why"`
	Units   []string `json:"units,omitempty"`
	Bundles []string `json:"bundles,omitempty"` // container keys
	Mounts  []string `json:"mounts,omitempty"`  // removed with the directories they are in
	Dirs    bool     `json:"dirs,omitempty"`    // the pod's run and state directories
	Error   string   `json:"error,omitempty"`   // what stopped it; the rest is retried at the next start
}

// Foreign is a container unit of another state directory (another berthd
// on this host, `berthd --state-dir DIR pod run`): berth's unit names are
// shared by every berth on the host, its units are not. It is left alone,
// whatever it runs and whatever its name says.
type Foreign struct {
	Unit     string `json:"unit"`
	StateDir string `json:"stateDir,omitempty"` // "" when the unit names none (not made by berth)
}

// Plan is what reconcile decided: nothing in it is done yet.
type Plan struct {
	Adopt   []Adopted
	Keep    []Kept
	Remove  []*Removal
	Foreign []Foreign
}

// Why an orphan is one: the messages of its event.
const (
	whyNotStored  = "it is not in the store"
	whyNoRecord   = "it has no pod record: a start cut short before writing one, or what a removal left"
	whyUnreadable = "its pod record is unreadable and no stored pod has its key"
	whyNoPod      = "no pod record accounts for it, so it is no stored pod's container"
)

// decide sorts what the host holds into adopted, kept and orphaned. stored
// are the store's pods. It is the whole of reconcile's judgement, and the
// rule is that nothing that may be a stored pod's running container is an
// orphan:
//   - a pod directory whose record names a stored pod with the same uid,
//     and whose every container was released to berth-init, is adopted;
//   - so is one whose namespaces are no longer pinned while a container of
//     it still runs (the worker is told);
//   - a directory whose record is unreadable but whose key is a stored
//     pod's is kept, with that pod's containers;
//   - everything else is an orphan: records of no stored pod, of another
//     uid (the pod was deleted and created again), starts that never
//     completed, directories without a record, and every unit and bundle
//     that no adopted or kept pod accounts for. A container runs only
//     while its pod's record exists (RunPod writes it first, RemovePod
//     removes it last), so a unit without a record is no stored pod's.
//
// Only this state directory's units are judged (pods.Host.Units); those of
// another (pods.Host.Foreign) are listed in the plan, never among the
// orphans, and never count as a running container of a pod here.
func decide(stored []*corev1.Pod, h *pods.Host) *Plan {
	p := &Plan{}
	// Pod keys whose containers another state directory's units run: a
	// run directory of such a key without a state directory here is that
	// berth's, when two berths share a run directory.
	foreignPod := map[string]string{}
	for _, u := range h.Foreign {
		p.Foreign = append(p.Foreign, Foreign{Unit: u.Name, StateDir: u.StateDir})
		if k, ok := pods.ContainerKeyPodKey(u.Key); ok && u.StateDir != "" {
			foreignPod[k] = u.StateDir
		}
	}
	byKey := map[string]*corev1.Pod{}
	for _, sp := range stored {
		if pods.ValidateName(sp.Namespace, sp.Name) != nil {
			continue // no key, so nothing on the host can be its
		}
		byKey[unitgen.PodKey(sp.Namespace, sp.Name)] = sp
	}
	running := map[string]bool{} // container key → a unit of it runs
	for _, u := range h.Units {
		if u.Running() {
			running[u.Key] = true
		}
	}
	keepPod := map[string]bool{}
	keepCtr := map[string]bool{}
	ctrPod := map[string]string{} // container key → pod key, from the records
	groups := map[string]*Removal{}
	group := func(key string, pod *PodRef, why string) *Removal {
		if g := groups[key]; g != nil {
			return g
		}
		g := &Removal{Key: key, Pod: pod, Why: why}
		groups[key] = g
		p.Remove = append(p.Remove, g)
		return g
	}

	for i := range h.Pods {
		hp := &h.Pods[i]
		sp := byKey[hp.Key]
		var rec *PodRef
		if hp.RecordErr == nil {
			rec = &PodRef{Namespace: hp.Namespace, Name: hp.Name, UID: hp.UID}
			for _, ck := range hp.ContainerKeys() {
				ctrPod[ck] = hp.Key
			}
		}
		if dir := foreignPod[hp.Key]; dir != "" && !hp.State {
			// Only its run directory is here, and no start or removal of
			// this berth leaves that (the state directory comes first and
			// goes last): it is the other berth's.
			p.Keep = append(p.Keep, Kept{Key: hp.Key, shared: true,
				Why: "its run directory belongs to a pod of state directory " + dir + ", whose units are loaded: two berths share a run directory, which they should not"})
			keepPod[hp.Key] = true
			continue
		}
		why := ""
		switch {
		case hp.RecordErr != nil && !errdefs.IsNotFound(hp.RecordErr):
			if sp != nil {
				ref := &PodRef{Namespace: sp.Namespace, Name: sp.Name, UID: sp.UID}
				p.Keep = append(p.Keep, Kept{Key: hp.Key, Pod: ref, Why: "unreadable pod record: " + hp.RecordErr.Error()})
				keepPod[hp.Key] = true
				for _, c := range sp.Spec.Containers {
					keepCtr[unitgen.ContainerKey(sp.Namespace, sp.Name, c.Name)] = true
				}
				continue
			}
			why = whyUnreadable + " (" + hp.RecordErr.Error() + ")"
		case hp.RecordErr != nil:
			why = whyNoRecord
		case sp == nil:
			why = whyNotStored
		case sp.UID != hp.UID:
			why = fmt.Sprintf("the store's pod of that name has uid %s: it was deleted and created again", sp.UID)
		case !hp.Started():
			why = fmt.Sprintf("its start never completed (%d of %d containers released)", len(hp.Released), len(hp.Containers))
		case !hp.Pinned:
			var runs bool
			for _, ck := range hp.ContainerKeys() {
				runs = runs || running[ck]
			}
			if !runs {
				why = "its namespaces are gone (a reboot?) and none of its containers runs"
				break
			}
			p.Adopt = append(p.Adopt, Adopted{PodRef: *rec, Key: hp.Key, Warning: "its namespaces are no longer pinned; a container restart will fail"})
		default:
			p.Adopt = append(p.Adopt, Adopted{PodRef: *rec, Key: hp.Key})
		}
		if why == "" {
			keepPod[hp.Key] = true
			for _, ck := range hp.ContainerKeys() {
				keepCtr[ck] = true
			}
			continue
		}
		group(hp.Key, rec, why).Dirs = true
	}

	// The group of a container key: its record's pod, else the pod its
	// plain key names, else a group of its own.
	owner := func(ck string) (string, bool) {
		if k, ok := ctrPod[ck]; ok {
			return k, true
		}
		return pods.ContainerKeyPodKey(ck)
	}
	kept := func(ck string) bool {
		if keepCtr[ck] {
			return true
		}
		// A kept pod's unreadable record cannot list its containers:
		// whatever its plain keys name stays too.
		k, ok := owner(ck)
		return ok && keepPod[k]
	}
	strayGroup := func(ck string) *Removal {
		if k, ok := owner(ck); ok {
			return group(k, nil, whyNoPod)
		}
		return group("container:"+ck, nil, whyNoPod)
	}
	for _, u := range h.Units {
		if !kept(u.Key) {
			g := strayGroup(u.Key)
			g.Units = append(g.Units, u.Name)
		}
	}
	for _, ck := range h.Bundles {
		if !kept(ck) {
			g := strayGroup(ck)
			g.Bundles = append(g.Bundles, ck)
		}
	}
	for _, m := range h.Mounts {
		var g *Removal
		switch m.Kind {
		case "pod":
			g = groups[m.Key]
		case "container":
			if !kept(m.Key) {
				g = strayGroup(m.Key)
			}
		}
		if g != nil {
			g.Mounts = append(g.Mounts, m.Path)
		}
	}
	for _, g := range p.Remove {
		if strings.HasPrefix(g.Key, "container:") {
			g.Key = ""
		}
		sort.Strings(g.Units)
		sort.Strings(g.Bundles)
		sort.Strings(g.Mounts)
	}
	sort.SliceStable(p.Remove, func(i, j int) bool { return p.Remove[i].Key < p.Remove[j].Key })
	return p
}
