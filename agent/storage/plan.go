package storage

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// state is one consistent look at what the controller decides on.
type state struct {
	classes map[string]*storagev1.StorageClass
	claims  []*corev1.PersistentVolumeClaim
	volumes []*corev1.PersistentVolume
	pods    []*corev1.Pod
}

// op is what an action does.
type op int

const (
	// opDefaultClass gives a claim without a class the default one (the PV
	// controller's retroactive default, RetroactiveDefaultStorageClass,
	// GA in 1.28, for claims created before a default class existed).
	opDefaultClass op = iota
	// opProvision makes a directory and a volume for the claim, then binds
	// them.
	opProvision
	// opBind binds claim and volume to each other: the volume's claimRef
	// and phase Bound, the claim's volumeName, annotations and status (also
	// what brings a bound claim's status up to date).
	opBind
	// opClaimLost marks a claim whose volume is gone or taken Lost.
	opClaimLost
	// opReleaseClaim removes kubernetes.io/pvc-protection from a claim
	// being deleted that no pod uses.
	opReleaseClaim
	// opVolumePhase sets a volume's phase.
	opVolumePhase
	// opDeleteVolume reclaims a Released volume with policy Delete that
	// berth provisioned: its directory, then the object.
	opDeleteVolume
	// opReleaseVolume removes kubernetes.io/pv-protection from a volume
	// being deleted that is not Bound (removing the directory of one berth
	// provisioned with policy Delete first).
	opReleaseVolume
	// opEvent records an Event on the claim.
	opEvent
	// opExpand grows a provisioned volume to its bound claim's larger
	// request: its capacity (and project quota), then the claim's status.
	opExpand
)

func (o op) String() string {
	return [...]string{"defaultClass", "provision", "bind", "claimLost", "releaseClaim",
		"volumePhase", "deleteVolume", "releaseVolume", "event", "expand"}[o]
}

// action is one step of a pass.
type action struct {
	op     op
	claim  *corev1.PersistentVolumeClaim
	volume *corev1.PersistentVolume
	class  *storagev1.StorageClass
	phase  corev1.PersistentVolumePhase
	// Event: type, reason and message; for opClaimLost the claim's event.
	eventType, reason, message string
}

func (a action) String() string {
	s := a.op.String()
	if a.claim != nil {
		s += " claim " + a.claim.Namespace + "/" + a.claim.Name
	}
	if a.volume != nil {
		s += " volume " + a.volume.Name
	}
	if a.phase != "" {
		s += " " + string(a.phase)
	}
	if a.reason != "" {
		s += " " + a.reason + ": " + a.message
	}
	return s
}

// VolumeName is the name the provisioner gives a claim's volume, as
// external provisioners do ("pvc-" + the claim's uid).
func VolumeName(c *corev1.PersistentVolumeClaim) string { return "pvc-" + string(c.UID) }

// plan decides one pass over st: what the PV controller's syncClaim and
// syncVolume, the provisioner and the protection controllers would do
// now. Each action is valid on its own; applying them brings the state
// nearer to settled, and the next pass sees the result.
func plan(st *state) []action {
	var out []action
	type key struct{ ns, name string }
	byName := map[string]*corev1.PersistentVolume{}
	byClaimUID := map[string]*corev1.PersistentVolume{}
	preBound := map[key]*corev1.PersistentVolume{} // claimRef by name only
	for _, v := range sorted(st.volumes) {
		byName[v.Name] = v
		switch r := v.Spec.ClaimRef; {
		case r == nil:
		case r.UID != "":
			byClaimUID[string(r.UID)] = v
		case preBound[key{r.Namespace, r.Name}] == nil:
			preBound[key{r.Namespace, r.Name}] = v
		}
	}
	claims := map[key]*corev1.PersistentVolumeClaim{}
	for _, c := range st.claims {
		claims[key{c.Namespace, c.Name}] = c
	}
	used := map[key]bool{}
	for _, p := range st.pods {
		if podTerminal(p) {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				used[key{p.Namespace, v.PersistentVolumeClaim.ClaimName}] = true
			}
		}
	}
	var classes []*storagev1.StorageClass
	for _, c := range st.classes {
		classes = append(classes, c)
	}
	def := DefaultClass(classes)
	// Volumes a claim's action binds in this pass: the volumes' pass
	// leaves their phase to it.
	binding := map[string]bool{}
	// Available volumes a claim takes in this pass: no other claim may.
	taken := map[string]bool{}

	for _, c := range sortedClaims(st.claims) {
		if c.DeletionTimestamp != nil {
			// pvcprotection: the finalizer goes once no pod uses the claim.
			if hasFinalizer(c, PVCProtectionFinalizer) && !used[key{c.Namespace, c.Name}] {
				out = append(out, action{op: opReleaseClaim, claim: c})
			}
			continue
		}
		if c.Spec.VolumeName == "" {
			v := byClaimUID[string(c.UID)]
			if v == nil {
				if pb := preBound[key{c.Namespace, c.Name}]; pb != nil && satisfies(pb, c) == "" {
					v = pb
				}
			}
			switch {
			case v != nil && v.DeletionTimestamp != nil:
				// Its volume is going: a new one once it is gone.
			case v != nil:
				// A volume made for it (a provisioning a crash cut short)
				// or pre-bound to it by name.
				out = append(out, action{op: opBind, claim: c, volume: v})
				binding[v.Name] = true
			default:
				class := st.classes[ClaimClass(c)]
				if class != nil && class.VolumeBindingMode != nil && *class.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer &&
					!used[key{c.Namespace, c.Name}] {
					// syncUnboundClaim with delayBinding: neither an
					// available volume nor provisioning until a pod uses
					// the claim (the scheduler's part on a cluster).
					out = append(out, action{op: opEvent, claim: c, eventType: corev1.EventTypeNormal, reason: "WaitForFirstConsumer",
						message: "waiting for first consumer to be created before binding"})
					continue
				}
				if v := bestMatch(c, st.volumes, taken); v != nil {
					// A volume an administrator made, before any
					// provisioning (findBestMatchForClaim).
					out = append(out, action{op: opBind, claim: c, volume: v})
					binding[v.Name], taken[v.Name] = true, true
					continue
				}
				out = append(out, planUnbound(c, st.classes, def)...)
			}
			continue
		}
		v := byName[c.Spec.VolumeName]
		var ref *corev1.ObjectReference
		if v != nil {
			ref = v.Spec.ClaimRef
		}
		switch {
		case v == nil:
			if c.Status.Phase != corev1.ClaimLost {
				out = append(out, action{op: opClaimLost, claim: c, eventType: corev1.EventTypeWarning, reason: "ClaimLost",
					message: "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"})
			}
		case ref == nil && v.DeletionTimestamp == nil:
			// Pre-bound by the user to an available volume (syncClaim's
			// "volume is not bound to any claim yet").
			if msg := satisfies(v, c); msg != "" {
				out = append(out, action{op: opEvent, claim: c, eventType: corev1.EventTypeWarning, reason: "VolumeMismatch",
					message: fmt.Sprintf("Cannot bind to requested volume %q: %s", v.Name, msg)})
				continue
			}
			out = append(out, action{op: opBind, claim: c, volume: v})
			binding[v.Name] = true
		case ref == nil || ref.UID != "" && ref.UID != c.UID || ref.UID == "" && (ref.Namespace != c.Namespace || ref.Name != c.Name):
			if c.Status.Phase != corev1.ClaimLost {
				out = append(out, action{op: opClaimLost, claim: c, eventType: corev1.EventTypeWarning, reason: "ClaimMisbound",
					message: "Two claims are bound to the same volume, this one is bound incorrectly"})
			}
		case ref.UID != "" && provisionedHere(v) && grows(c, v, st.classes):
			// The external resizer's part: a bound claim asks for more
			// than its volume has, in a class that allows it.
			out = append(out, action{op: opExpand, claim: c, volume: v})
			binding[v.Name] = true
		case ref.UID == "" || !claimStatusMatches(c, v):
			out = append(out, action{op: opBind, claim: c, volume: v})
			binding[v.Name] = true
		}
	}

	for _, v := range sorted(st.volumes) {
		if v.DeletionTimestamp != nil {
			// pvprotection: a volume that is not Bound may go.
			if hasFinalizer(v, PVProtectionFinalizer) && v.Status.Phase != corev1.VolumeBound {
				out = append(out, action{op: opReleaseVolume, volume: v})
			}
			continue
		}
		if binding[v.Name] {
			continue
		}
		r := v.Spec.ClaimRef
		if r == nil || r.UID == "" {
			// Available, or pre-bound by name to a claim not there yet.
			if v.Status.Phase != corev1.VolumeAvailable {
				out = append(out, action{op: opVolumePhase, volume: v, phase: corev1.VolumeAvailable})
			}
			continue
		}
		c := claims[key{r.Namespace, r.Name}]
		switch {
		case c == nil || c.UID != r.UID || c.Spec.VolumeName != "" && c.Spec.VolumeName != v.Name:
			// The claim is gone (or another claim of its name, or it is
			// bound elsewhere): Released, then reclaimed.
			if v.Status.Phase != corev1.VolumeReleased && v.Status.Phase != corev1.VolumeFailed {
				out = append(out, action{op: opVolumePhase, volume: v, phase: corev1.VolumeReleased})
			}
			if v.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete && provisionedHere(v) {
				out = append(out, action{op: opDeleteVolume, volume: v})
			}
		case c.Spec.VolumeName == v.Name:
			if v.Status.Phase != corev1.VolumeBound {
				out = append(out, action{op: opVolumePhase, volume: v, phase: corev1.VolumeBound})
			}
		}
		// The claim's volumeName still empty: the claim's pass binds it.
	}
	return out
}

// planUnbound is syncUnboundClaim for a claim not being deleted and with
// no volume for it yet: a claim of the local-path class is provisioned.
func planUnbound(c *corev1.PersistentVolumeClaim, classes map[string]*storagev1.StorageClass, def *storagev1.StorageClass) []action {
	name := ClaimClass(c)
	if name == "" {
		_, beta := c.Annotations[corev1.BetaStorageClassAnnotation]
		if c.Spec.StorageClassName == nil && !beta && def != nil {
			return []action{{op: opDefaultClass, claim: c, class: def}}
		}
		// Waits for an administrator's volume of no class (the PV
		// controller's words).
		return []action{{op: opEvent, claim: c, eventType: corev1.EventTypeNormal, reason: "FailedBinding",
			message: "no persistent volumes available for this claim and no storage class is set"}}
	}
	sc := classes[name]
	fail := func(msg string) []action {
		return []action{{op: opEvent, claim: c, eventType: corev1.EventTypeWarning, reason: "ProvisioningFailed", message: msg}}
	}
	switch {
	case sc == nil:
		return fail(fmt.Sprintf("storageclass.storage.k8s.io %q not found", name))
	case sc.Provisioner != Provisioner:
		return []action{{op: opEvent, claim: c, eventType: corev1.EventTypeNormal, reason: "ExternalProvisioning",
			message: fmt.Sprintf("Waiting for a volume to be created either by the external provisioner '%s' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.", sc.Provisioner)}}
	case c.Spec.Selector != nil:
		return fail("claim Selector is not supported")
	case c.Spec.DataSource != nil || c.Spec.DataSourceRef != nil:
		return fail(fmt.Sprintf("%s does not support a dataSource", Provisioner))
	case c.Spec.VolumeMode != nil && *c.Spec.VolumeMode == corev1.PersistentVolumeBlock:
		return fail(fmt.Sprintf("%s provides only volumeMode Filesystem", Provisioner))
	}
	return []action{{op: opProvision, claim: c, class: sc}}
}

// bestMatch is the PV controller's findBestMatchForClaim for a claim
// without a volume (pv_controller.go, FindMatchingVolume in
// component-helpers/storage/volume): the smallest Available volume not
// bound to any claim, not being deleted and not taken in this pass, of the
// claim's class, volume mode and capacity, with every access mode the
// claim asks for and the labels its selector wants; volumes of equal size
// by name (upstream: its cache's order). nil if none.
func bestMatch(c *corev1.PersistentVolumeClaim, volumes []*corev1.PersistentVolume, taken map[string]bool) *corev1.PersistentVolume {
	var sel labels.Selector
	if c.Spec.Selector != nil {
		s, err := metav1.LabelSelectorAsSelector(c.Spec.Selector)
		if err != nil {
			return nil // upstream: "error creating internal label selector"
		}
		sel = s
	}
	var best *corev1.PersistentVolume
	for _, v := range sorted(volumes) {
		if v.DeletionTimestamp != nil || v.Spec.ClaimRef != nil || taken[v.Name] || v.Status.Phase != corev1.VolumeAvailable {
			continue
		}
		if sel != nil && !sel.Matches(labels.Set(v.Labels)) {
			continue
		}
		if satisfies(v, c) != "" {
			continue
		}
		if best == nil || best.Spec.Capacity.Storage().Cmp(*v.Spec.Capacity.Storage()) > 0 {
			best = v
		}
	}
	return best
}

// grows tells whether bound claim c asks for more than its volume v has
// and its class allows expansion (the admission plugin let the request
// grow only then; a class changed since is not trusted with it).
func grows(c *corev1.PersistentVolumeClaim, v *corev1.PersistentVolume, classes map[string]*storagev1.StorageClass) bool {
	want, have := requestOf(c), v.Spec.Capacity[corev1.ResourceStorage]
	if want.Cmp(have) <= 0 {
		return false
	}
	sc := classes[ClaimClass(c)]
	return sc != nil && sc.AllowVolumeExpansion != nil && *sc.AllowVolumeExpansion
}

// waitsForPods tells whether a pass depends on pods: a claim being
// deleted waits until no pod uses it, an unbound claim of a
// WaitForFirstConsumer class until one does.
func waitsForPods(st *state) bool {
	for _, c := range st.claims {
		if c.DeletionTimestamp != nil && hasFinalizer(c, PVCProtectionFinalizer) {
			return true
		}
		if class := st.classes[ClaimClass(c)]; c.DeletionTimestamp == nil && c.Spec.VolumeName == "" && class != nil &&
			class.VolumeBindingMode != nil && *class.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
			return true
		}
	}
	return false
}

// satisfies is checkVolumeSatisfyClaim in short: "" if v can serve c, else
// why not.
func satisfies(v *corev1.PersistentVolume, c *corev1.PersistentVolumeClaim) string {
	want := c.Spec.Resources.Requests[corev1.ResourceStorage]
	have := v.Spec.Capacity[corev1.ResourceStorage]
	if have.Cmp(want) < 0 {
		return "requested PV is too small"
	}
	if VolumeClass(v) != ClaimClass(c) {
		return "storageClassName does not match"
	}
	modes := map[corev1.PersistentVolumeAccessMode]bool{}
	for _, m := range v.Spec.AccessModes {
		modes[m] = true
	}
	for _, m := range c.Spec.AccessModes {
		if !modes[m] {
			return "incompatible accessMode"
		}
	}
	vm, cm := corev1.PersistentVolumeFilesystem, corev1.PersistentVolumeFilesystem
	if v.Spec.VolumeMode != nil {
		vm = *v.Spec.VolumeMode
	}
	if c.Spec.VolumeMode != nil {
		cm = *c.Spec.VolumeMode
	}
	if vm != cm {
		return "incompatible volumeMode"
	}
	return ""
}

// claimStatusMatches tells whether a bound claim's status is the one
// binding to v writes (phase Bound, v's capacity and access modes).
func claimStatusMatches(c *corev1.PersistentVolumeClaim, v *corev1.PersistentVolume) bool {
	if c.Status.Phase != corev1.ClaimBound || len(c.Status.AccessModes) != len(v.Spec.AccessModes) {
		return false
	}
	for i := range c.Status.AccessModes {
		if c.Status.AccessModes[i] != v.Spec.AccessModes[i] {
			return false
		}
	}
	have, want := c.Status.Capacity[corev1.ResourceStorage], v.Spec.Capacity[corev1.ResourceStorage]
	// A resize status left without a growth pending (grows, checked
	// first) is an expansion a crash cut short after the volume grew: the
	// bind finishes it.
	return have.Cmp(want) == 0 && c.Annotations[AnnBindCompleted] == "yes" && len(c.Status.AllocatedResourceStatuses) == 0
}

// provisionedHere tells whether berth's provisioner made v: only such
// volumes are ever deleted from disk.
func provisionedHere(v *corev1.PersistentVolume) bool {
	return v.Annotations[AnnDynamicallyProvisioned] == Provisioner && v.Spec.HostPath != nil
}

func sorted(vs []*corev1.PersistentVolume) []*corev1.PersistentVolume {
	out := append([]*corev1.PersistentVolume(nil), vs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sortedClaims(cs []*corev1.PersistentVolumeClaim) []*corev1.PersistentVolumeClaim {
	out := append([]*corev1.PersistentVolumeClaim(nil), cs...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// requestOf is the claim's storage request (zero when absent; validation
// refuses such a claim).
func requestOf(c *corev1.PersistentVolumeClaim) resource.Quantity {
	return c.Spec.Resources.Requests[corev1.ResourceStorage]
}
