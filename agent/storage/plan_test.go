package storage

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent/volumes"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func claim(name string, mut ...func(*corev1.PersistentVolumeClaim)) *corev1.PersistentVolumeClaim {
	class := DefaultClassName
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Finalizers: []string{PVCProtectionFinalizer}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			StorageClassName: &class,
		},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
	}
	for _, m := range mut {
		m(c)
	}
	return c
}

// bound is c bound to its provisioned volume, both sides complete.
func bound(c *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
	v := volumeFor(c, corev1.PersistentVolumeReclaimDelete, corev1.VolumeBound)
	c.Spec.VolumeName = v.Name
	c.Annotations = map[string]string{AnnBindCompleted: "yes"}
	c.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound, AccessModes: v.Spec.AccessModes, Capacity: v.Spec.Capacity}
	return c, v
}

func volumeFor(c *corev1.PersistentVolumeClaim, reclaim corev1.PersistentVolumeReclaimPolicy, phase corev1.PersistentVolumePhase) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: VolumeName(c), UID: types.UID("pv-" + c.Name), Finalizers: []string{PVProtectionFinalizer},
			Annotations: map[string]string{AnnDynamicallyProvisioned: Provisioner}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/berth/volumes/" + VolumeName(c)}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: c.Namespace, Name: c.Name, UID: c.UID},
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              DefaultClassName,
		},
		Status: corev1.PersistentVolumeStatus{Phase: phase},
	}
}

func pod(claimName string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p-" + claimName},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claimName}}}}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

// grown is bound claim c of class, asking for size.
func grown(c *corev1.PersistentVolumeClaim, size, class string) *corev1.PersistentVolumeClaim {
	c = c.DeepCopy()
	c.Spec.StorageClassName = &class
	c.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}
	return c
}

// static is a volume an administrator made: Available, no claim.
func static(name, size, class string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("pv-" + name)},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/" + name}},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeAvailable},
	}
}

func classes(cs ...*storagev1.StorageClass) map[string]*storagev1.StorageClass {
	m := map[string]*storagev1.StorageClass{}
	for _, c := range cs {
		m[c.Name] = c
	}
	return m
}

func deleting[T interface{ SetDeletionTimestamp(*metav1.Time) }](o T) T {
	now := metav1.Now()
	o.SetDeletionTimestamp(&now)
	return o
}

// TestPlan holds the decisions of one pass: provisioning, binding,
// protection and reclaim, each with the boundary that flips it.
func TestPlan(t *testing.T) {
	local := NewDefaultClass()
	other := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "ebs"}, Provisioner: "ebs.csi.aws.com"}
	boundClaim, boundVol := bound(claim("a"))
	expandable := NewDefaultClass()
	expandable.Name, expandable.Annotations = "expandable", nil
	expandable.AllowVolumeExpansion = ptr(true)
	wffc := NewDefaultClass()
	wffc.Name, wffc.Annotations = "wffc", nil
	wffc.VolumeBindingMode = ptr(storagev1.VolumeBindingWaitForFirstConsumer)
	for _, tc := range []struct {
		name string
		st   state
		want []string
	}{
		{"pending claim of the local-path class is provisioned",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a")}},
			[]string{"provision claim ns/a"}},
		{"a volume made for it already (crash after create) is bound, not made again",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a")},
				volumes: []*corev1.PersistentVolume{volumeFor(claim("a"), corev1.PersistentVolumeReclaimDelete, corev1.VolumePending)}},
			[]string{"bind claim ns/a volume pvc-uid-a"}},
		{"unknown class: stays Pending with the PV controller's warning",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = ptr("x") })}},
			[]string{`event claim ns/a ProvisioningFailed: storageclass.storage.k8s.io "x" not found`}},
		{"another provisioner's class: waits for it",
			state{classes: classes(local, other), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = ptr("ebs") })}},
			[]string{"event claim ns/a ExternalProvisioning: Waiting for a volume to be created either by the external provisioner 'ebs.csi.aws.com'"}},
		{"no class and a default exists: given the default (retroactive)",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = nil })}},
			[]string{"defaultClass claim ns/a"}},
		{`class "" (explicitly none) and no volume of no class: the PV controller's FailedBinding`,
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = ptr("") })},
				volumes: []*corev1.PersistentVolume{static("local-1", "5Gi", DefaultClassName)}},
			[]string{"event claim ns/a FailedBinding: no persistent volumes available for this claim and no storage class is set"}},
		{`class "": the smallest Available volume of no class that fits is bound`,
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = ptr("") })},
				volumes: []*corev1.PersistentVolume{static("big", "5Gi", ""), static("small", "512Mi", ""), static("fits", "2Gi", ""), static("exact", "1Gi", ""),
					func() *corev1.PersistentVolume {
						v := static("released", "1Gi", "")
						v.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "ns", Name: "gone", UID: "uid-gone"}
						v.Status.Phase = corev1.VolumeReleased
						return v
					}()}},
			[]string{"bind claim ns/a volume exact"}},
		{"an Available volume of the claim's class is bound before provisioning",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a")},
				volumes: []*corev1.PersistentVolume{static("pre", "1Gi", DefaultClassName)}},
			[]string{"bind claim ns/a volume pre"}},
		{"a volume without an access mode the claim asks for is not bound: provisioned",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) {
				c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce, corev1.ReadOnlyMany}
			})}, volumes: []*corev1.PersistentVolume{static("pre", "1Gi", DefaultClassName)}},
			[]string{"provision claim ns/a"}},
		{"a selector picks volumes by label",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) {
				c.Spec.StorageClassName = ptr("")
				c.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"disk": "ssd"}}
			})}, volumes: []*corev1.PersistentVolume{static("hdd", "1Gi", ""), func() *corev1.PersistentVolume {
				v := static("ssd", "2Gi", "")
				v.Labels = map[string]string{"disk": "ssd"}
				return v
			}()}},
			[]string{"bind claim ns/a volume ssd"}},
		{"two claims, one volume: the first by name gets it, the other is provisioned",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("b"), claim("a")},
				volumes: []*corev1.PersistentVolume{static("pre", "1Gi", DefaultClassName)}},
			[]string{"bind claim ns/a volume pre", "provision claim ns/b"}},
		{"WaitForFirstConsumer without a pod: waits",
			state{classes: classes(wffc), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = ptr("wffc") })},
				pods: []*corev1.Pod{pod("b", corev1.PodRunning)}},
			[]string{"event claim ns/a WaitForFirstConsumer: waiting for first consumer to be created before binding"}},
		{"WaitForFirstConsumer with a pod: provisioned",
			state{classes: classes(wffc), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = ptr("wffc") })},
				pods: []*corev1.Pod{pod("a", corev1.PodPending)}},
			[]string{"provision claim ns/a"}},
		{"a selector cannot be provisioned",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) {
				c.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}
			})}},
			[]string{"event claim ns/a ProvisioningFailed: claim Selector is not supported"}},
		{"bound claim asking for more in a class that allows expansion: expanded",
			state{classes: classes(expandable), claims: []*corev1.PersistentVolumeClaim{grown(boundClaim, "2Gi", "expandable")}, volumes: []*corev1.PersistentVolume{boundVol}},
			[]string{"expand claim ns/a volume pvc-uid-a"}},
		{"bound claim asking for more in a class that does not allow it: left",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{grown(boundClaim, "2Gi", DefaultClassName)}, volumes: []*corev1.PersistentVolume{boundVol}},
			nil},
		{"bound claim asking for what its volume has: nothing to expand",
			state{classes: classes(expandable), claims: []*corev1.PersistentVolumeClaim{grown(boundClaim, "1Gi", "expandable")}, volumes: []*corev1.PersistentVolume{boundVol}},
			nil},
		{"an administrator's volume is never expanded",
			state{classes: classes(expandable), claims: []*corev1.PersistentVolumeClaim{grown(boundClaim, "2Gi", "expandable")}, volumes: []*corev1.PersistentVolume{func() *corev1.PersistentVolume {
				v := boundVol.DeepCopy()
				v.Annotations = nil
				return v
			}()}},
			nil},
		{"bound both ways: nothing to do",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{boundClaim}, volumes: []*corev1.PersistentVolume{boundVol}},
			nil},
		{"bound claim whose status lags: bind writes it",
			state{claims: []*corev1.PersistentVolumeClaim{func() *corev1.PersistentVolumeClaim {
				c := boundClaim.DeepCopy()
				c.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}
				return c
			}()}, volumes: []*corev1.PersistentVolume{boundVol}},
			[]string{"bind claim ns/a volume pvc-uid-a"}},
		{"claim bound, volume still Pending (crash between the writes): volume Bound",
			state{claims: []*corev1.PersistentVolumeClaim{boundClaim}, volumes: []*corev1.PersistentVolume{func() *corev1.PersistentVolume {
				v := boundVol.DeepCopy()
				v.Status.Phase = corev1.VolumePending
				return v
			}()}},
			[]string{"volumePhase volume pvc-uid-a Bound"}},
		{"bound claim whose volume is gone: Lost",
			state{claims: []*corev1.PersistentVolumeClaim{boundClaim}},
			[]string{"claimLost claim ns/a ClaimLost: Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"}},
		{"claim being deleted, used by a running pod: kept",
			state{claims: []*corev1.PersistentVolumeClaim{deleting(boundClaim.DeepCopy())}, volumes: []*corev1.PersistentVolume{boundVol},
				pods: []*corev1.Pod{pod("a", corev1.PodRunning)}},
			nil},
		{"claim being deleted, used by a pending pod: kept",
			state{claims: []*corev1.PersistentVolumeClaim{deleting(boundClaim.DeepCopy())}, volumes: []*corev1.PersistentVolume{boundVol},
				pods: []*corev1.Pod{pod("a", corev1.PodPending)}},
			nil},
		{"claim being deleted, its pod Succeeded: released",
			state{claims: []*corev1.PersistentVolumeClaim{deleting(boundClaim.DeepCopy())}, volumes: []*corev1.PersistentVolume{boundVol},
				pods: []*corev1.Pod{pod("a", corev1.PodSucceeded)}},
			[]string{"releaseClaim claim ns/a"}},
		{"claim being deleted, a pod uses another claim: released",
			state{claims: []*corev1.PersistentVolumeClaim{deleting(boundClaim.DeepCopy())}, volumes: []*corev1.PersistentVolume{boundVol},
				pods: []*corev1.Pod{pod("b", corev1.PodRunning)}},
			[]string{"releaseClaim claim ns/a"}},
		{"claim gone, reclaim Delete: Released and deleted",
			state{volumes: []*corev1.PersistentVolume{boundVol}},
			[]string{"volumePhase volume pvc-uid-a Released", "deleteVolume volume pvc-uid-a"}},
		{"claim gone, already Released, Delete: deleted (a restart resumes)",
			state{volumes: []*corev1.PersistentVolume{volumeFor(claim("a"), corev1.PersistentVolumeReclaimDelete, corev1.VolumeReleased)}},
			[]string{"deleteVolume volume pvc-uid-a"}},
		{"claim gone, reclaim Retain: Released, data kept",
			state{volumes: []*corev1.PersistentVolume{volumeFor(claim("a"), corev1.PersistentVolumeReclaimRetain, corev1.VolumeBound)}},
			[]string{"volumePhase volume pvc-uid-a Released"}},
		{"Released and Retain: left alone",
			state{volumes: []*corev1.PersistentVolume{volumeFor(claim("a"), corev1.PersistentVolumeReclaimRetain, corev1.VolumeReleased)}},
			nil},
		{"a new claim of the same name is another claim: the old volume is Released",
			state{classes: classes(local), claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) { c.UID = "uid-new" })},
				volumes: []*corev1.PersistentVolume{volumeFor(claim("a"), corev1.PersistentVolumeReclaimRetain, corev1.VolumeBound)}},
			[]string{"provision claim ns/a", "volumePhase volume pvc-uid-a Released"}},
		{"Delete policy on a volume berth did not provision: Released, never deleted",
			state{volumes: []*corev1.PersistentVolume{func() *corev1.PersistentVolume {
				v := volumeFor(claim("a"), corev1.PersistentVolumeReclaimDelete, corev1.VolumeBound)
				v.Annotations = nil
				return v
			}()}},
			[]string{"volumePhase volume pvc-uid-a Released"}},
		{"volume being deleted while Bound: kept (pv-protection)",
			state{claims: []*corev1.PersistentVolumeClaim{boundClaim}, volumes: []*corev1.PersistentVolume{deleting(boundVol.DeepCopy())}},
			nil},
		{"volume being deleted, Released: released",
			state{volumes: []*corev1.PersistentVolume{deleting(volumeFor(claim("a"), corev1.PersistentVolumeReclaimRetain, corev1.VolumeReleased))}},
			[]string{"releaseVolume volume pvc-uid-a"}},
		{"a volume without a claim is Available",
			state{volumes: []*corev1.PersistentVolume{func() *corev1.PersistentVolume {
				v := volumeFor(claim("a"), corev1.PersistentVolumeReclaimRetain, corev1.VolumePending)
				v.Spec.ClaimRef = nil
				return v
			}()}},
			[]string{"volumePhase volume pvc-uid-a Available"}},
		{"claim naming an Available volume that fits: bound",
			state{claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeName = "pvc-uid-a" })},
				volumes: []*corev1.PersistentVolume{func() *corev1.PersistentVolume {
					v := volumeFor(claim("a"), corev1.PersistentVolumeReclaimRetain, corev1.VolumeAvailable)
					v.Spec.ClaimRef = nil
					return v
				}()}},
			[]string{"bind claim ns/a volume pvc-uid-a"}},
		{"claim naming an Available volume that is too small: mismatch",
			state{claims: []*corev1.PersistentVolumeClaim{claim("a", func(c *corev1.PersistentVolumeClaim) {
				c.Spec.VolumeName = "pvc-uid-a"
				c.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("2Gi")
			})},
				volumes: []*corev1.PersistentVolume{func() *corev1.PersistentVolume {
					v := volumeFor(claim("a"), corev1.PersistentVolumeReclaimRetain, corev1.VolumeAvailable)
					v.Spec.ClaimRef = nil
					return v
				}()}},
			[]string{`event claim ns/a VolumeMismatch: Cannot bind to requested volume "pvc-uid-a": requested PV is too small`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := plan(&tc.st)
			if len(got) != len(tc.want) {
				t.Fatalf("plan = %v, want %v", got, tc.want)
			}
			for i := range got {
				if s := got[i].String(); !strings.HasPrefix(s, tc.want[i]) {
					t.Errorf("action %d = %q, want %q", i, s, tc.want[i])
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestDefaultClass: of several default classes the newest wins, then the
// first by name; the beta annotation counts; "false" does not.
func TestDefaultClass(t *testing.T) {
	at := func(name string, sec int64, ann string, val string) *storagev1.StorageClass {
		return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(sec, 0)),
			Annotations: map[string]string{ann: val}}}
	}
	for _, tc := range []struct {
		name string
		in   []*storagev1.StorageClass
		want string
	}{
		{"none", []*storagev1.StorageClass{at("a", 1, AnnIsDefaultClass, "false")}, ""},
		{"newest wins", []*storagev1.StorageClass{at("old", 1, AnnIsDefaultClass, "true"), at("new", 2, AnnIsDefaultClass, "true")}, "new"},
		{"same age: by name", []*storagev1.StorageClass{at("b", 1, AnnIsDefaultClass, "true"), at("a", 1, AnnIsDefaultClass, "true")}, "a"},
		{"beta annotation", []*storagev1.StorageClass{at("beta", 1, AnnBetaIsDefaultClass, "true")}, "beta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if c := DefaultClass(tc.in); c != nil {
				got = c.Name
			}
			if got != tc.want {
				t.Errorf("DefaultClass = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAccessModesString is the printers' order and short forms.
func TestAccessModesString(t *testing.T) {
	got := AccessModesString([]corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod, corev1.ReadWriteMany, corev1.ReadWriteOnce, corev1.ReadOnlyMany, corev1.ReadWriteOnce})
	if got != "RWO,ROX,RWX,RWOP" {
		t.Errorf("AccessModesString = %q", got)
	}
}

// TestProjectQuota reads a mount table: the mount holding the directory
// decides, by type and options.
func TestProjectQuota(t *testing.T) {
	table := `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 27 254:1 / /var/lib/berth rw,relatime - xfs /dev/vdb rw,attr2,inode64,prjquota
31 27 254:2 / /srv rw,relatime - ext4 /dev/vdc rw,prjquota
32 27 0:40 / /srv/tmp rw - tmpfs tmpfs rw
`
	for _, tc := range []struct {
		dir  string
		want bool
		why  string
	}{
		{"/var/lib/berth/volumes", true, ""},
		{"/var/lib/berthx/volumes", false, "mounted without project quotas"},
		{"/srv/v", true, ""},
		{"/srv/tmp/v", false, "project quotas need ext4 or xfs"},
	} {
		mounts, err := volumes.ParseMountTable(strings.NewReader(table))
		if err != nil {
			t.Fatal(err)
		}
		on, why := projectQuota(mounts, tc.dir)
		if on != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("%s: %v %q, want %v %q", tc.dir, on, why, tc.want, tc.why)
		}
	}
}
