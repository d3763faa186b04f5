package storage

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/agent/volumes"
)

// ProjectQuota reports whether the filesystem holding dir could enforce a
// volume's capacity: ext4 or xfs mounted with project quotas enforced
// (prjquota; xfs also pquota), the kernel feature that the kubelet's
// LocalStorageCapacityIsolationFSQuotaMonitoring and directory-backed
// provisioners rely on. If not, why: a volume's capacity is then what
// ResourceQuota counts (requests.storage) and nothing more.
//
// Where they are on, the controller holds each volume it provisions to
// its capacity with one (projquota.go). A kernel without CONFIG_QUOTA
// (this project's CI host) refuses the mount option; Debian's has it.
func ProjectQuota(dir string) (bool, string) {
	table, err := volumes.MountTable()
	if err != nil {
		return false, err.Error()
	}
	p, err := filepath.EvalSymlinks(dir)
	if err != nil {
		p = filepath.Clean(dir)
	}
	return projectQuota(table, p)
}

// projectQuota is ProjectQuota over a mount table: the mount whose point is
// the longest prefix of dir decides.
func projectQuota(table []volumes.MountInfo, dir string) (bool, string) {
	var at volumes.MountInfo
	for _, m := range table {
		mp := m.Path
		if !(dir == mp || mp == "/" || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) || len(mp) < len(at.Path) {
			continue
		}
		// A later mount on the same point covers an earlier one.
		at = m
	}
	if at.Path == "" {
		return false, "no mount holds " + dir
	}
	on := map[string]bool{}
	for _, o := range strings.Split(at.SuperOptions, ",") {
		on[o] = true
	}
	where := fmt.Sprintf("%s (%s on %s, options %s)", at.Path, at.FSType, at.Source, at.SuperOptions)
	switch at.FSType {
	case "ext4":
		if on["prjquota"] {
			return true, ""
		}
	case "xfs":
		if on["prjquota"] || on["pquota"] {
			return true, ""
		}
	default:
		return false, fmt.Sprintf("%s: project quotas need ext4 or xfs", where)
	}
	return false, fmt.Sprintf("%s: mounted without project quotas (prjquota)", where)
}
