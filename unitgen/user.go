package unitgen

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/user"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// procUser is the resolved identity of the container's process.
type procUser struct {
	uid, gid   uint32
	additional []uint32 // primary gid first, then /etc/group memberships, fsGroup, supplementalGroups
	home       string   // from /etc/passwd, "/" when the user has no entry (runc's default)
}

// maxID is the largest uid/gid a container may use (moby/sys/user and the
// apiserver's IsValidUserID: 0..2^31-1).
const maxID = 1<<31 - 1

// resolveUser finds uid, gid and supplementary groups the way containerd's CRI
// plugin does for a Kubernetes container:
//   - runAsUser (container over pod) replaces the image's USER, group included;
//     runAsGroup replaces the group part;
//   - otherwise the image's USER: "uid", "name", "uid:gid" or "name:group",
//     resolved against the image's /etc/passwd and /etc/group with
//     github.com/moby/sys/user (the code runc uses); an unknown name is an
//     error, a numeric uid without an entry runs with gid 0;
//   - supplementary groups: the primary gid, the groups of /etc/group that list
//     the user as a member (oci.WithAdditionalGIDs; skipped for
//     supplementalGroupsPolicy: Strict), then fsGroup and supplementalGroups in
//     the kubelet's order (determineEffectiveSecurityContext).
func (g *gen) resolveUser() (procUser, error) {
	img := g.in.Image
	var userArg, groupArg string
	fromImage := g.sc.runAsUser == nil
	if fromImage {
		userArg, groupArg, _ = strings.Cut(img.Config.User, ":")
	} else {
		if u := *g.sc.runAsUser; u < 0 || u > maxID {
			return procUser{}, invalid(g.scPath("runAsUser"), "%d: must be between 0 and %d, inclusive", u, maxID)
		}
		userArg = strconv.FormatInt(*g.sc.runAsUser, 10)
	}
	if g.sc.runAsGroup != nil {
		if gid := *g.sc.runAsGroup; gid < 0 || gid > maxID {
			return procUser{}, invalid(g.scPath("runAsGroup"), "%d: must be between 0 and %d, inclusive", gid, maxID)
		}
		groupArg = strconv.FormatInt(*g.sc.runAsGroup, 10)
	}
	spec := userArg
	if groupArg != "" {
		spec += ":" + groupArg
	}

	eu, err := user.GetExecUser(spec, &user.ExecUser{Home: "/"}, reader(img.Passwd), reader(img.Group))
	if err != nil {
		if fromImage {
			return procUser{}, invalid(g.fp.Child("image"), "image user %q: %v", img.Config.User, err)
		}
		return procUser{}, invalid(g.scPath("runAsUser"), "user %q: %v", spec, err)
	}
	// GetExecUser has checked the range of numeric ids (ErrRange).
	pu := procUser{uid: uint32(eu.Uid), gid: uint32(eu.Gid), home: eu.Home}

	gids := []uint32{pu.gid}
	strict := false
	if ps := g.pod.Spec.SecurityContext; ps != nil && ps.SupplementalGroupsPolicy != nil {
		strict = *ps.SupplementalGroupsPolicy == corev1.SupplementalGroupsPolicyStrict
	}
	if !strict {
		member, err := memberships(img.Passwd, img.Group, eu.Uid)
		if err != nil {
			return procUser{}, invalid(g.fp.Child("image"), "image /etc/group: %v", err)
		}
		gids = append(gids, member...)
	}
	if ps := g.pod.Spec.SecurityContext; ps != nil {
		p := field.NewPath("spec", "securityContext")
		if ps.FSGroup != nil {
			if *ps.FSGroup < 0 || *ps.FSGroup > maxID {
				return procUser{}, invalid(p.Child("fsGroup"), "%d: must be between 0 and %d, inclusive", *ps.FSGroup, maxID)
			}
			gids = append(gids, uint32(*ps.FSGroup))
		}
		for i, sg := range ps.SupplementalGroups {
			if sg < 0 || sg > maxID {
				return procUser{}, invalid(p.Child("supplementalGroups").Index(i), "%d: must be between 0 and %d, inclusive", sg, maxID)
			}
			gids = append(gids, uint32(sg))
		}
	}
	for _, id := range gids {
		if !slices.Contains(pu.additional, id) {
			pu.additional = append(pu.additional, id)
		}
	}
	return pu, g.checkRunAsNonRoot(pu.uid)
}

// memberships are the gids of the groups in /etc/group listing the user with
// this uid as a member, except the group named like the user (containerd's
// "we only want supplemental groups").
func memberships(passwd, group []byte, uid int) ([]uint32, error) {
	if passwd == nil || group == nil {
		return nil, nil
	}
	users, err := user.ParsePasswdFilter(bytes.NewReader(passwd), func(u user.User) bool { return u.Uid == uid })
	if err != nil || len(users) == 0 {
		return nil, nil // no name, no memberships (a passwd error surfaced in GetExecUser already)
	}
	name := users[0].Name
	groups, err := user.ParseGroupFilter(bytes.NewReader(group), func(gr user.Group) bool {
		return gr.Name != name && slices.Contains(gr.List, name)
	})
	if err != nil {
		return nil, err
	}
	var out []uint32
	for _, gr := range groups {
		if gr.Gid >= 0 && gr.Gid <= maxID {
			out = append(out, uint32(gr.Gid))
		}
	}
	return out, nil
}

// reader keeps "no file" (nil) distinct from "empty file" for moby/sys/user.
func reader(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

// checkRunAsNonRoot is the kubelet's verifyRunAsNonRoot
// (pkg/kubelet/kuberuntime/security_context_others.go), with its messages.
// One difference: the kubelet refuses an image USER given by name because it
// cannot tell its uid; berth has resolved the name in the image's /etc/passwd
// and checks the uid.
func (g *gen) checkRunAsNonRoot(uid uint32) error {
	nr := g.sc.runAsNonRoot
	if nr == nil || !*nr {
		return nil
	}
	fp := g.sc.runAsNonRootPath
	if fp == nil {
		fp = g.scPath("runAsNonRoot")
	}
	pod := fmt.Sprintf("%s_%s(%s)", g.pod.Name, g.pod.Namespace, g.pod.UID) // the kubelet's format.Pod
	if g.sc.runAsUser != nil {
		if *g.sc.runAsUser == 0 {
			return invalid(fp, "container's runAsUser breaks non-root policy (pod: %q, container: %s)", pod, g.ctr.Name)
		}
		return nil
	}
	if uid == 0 {
		return invalid(fp, "container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod, g.ctr.Name)
	}
	return nil
}
