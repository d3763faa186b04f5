package storage

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ProjectQuota reports whether the filesystem holding dir could enforce a
// volume's capacity: ext4 or xfs mounted with project quotas enforced
// (prjquota; xfs also pquota), the kernel feature that the kubelet's
// LocalStorageCapacityIsolationFSQuotaMonitoring and directory-backed
// provisioners rely on. If not, why: a volume's capacity is then what
// ResourceQuota counts (requests.storage) and nothing more.
//
// berth does not set project quotas yet even where they are on: no
// machine it is tested on can mount one (their kernels lack CONFIG_QUOTA,
// so ext4 refuses the quota feature, and xfs has no quota without
// CONFIG_XFS_QUOTA); docs/berthd.md says so.
func ProjectQuota(dir string) (bool, string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err.Error()
	}
	defer f.Close()
	p, err := filepath.EvalSymlinks(dir)
	if err != nil {
		p = filepath.Clean(dir)
	}
	return projectQuota(f, p)
}

// projectQuota is ProjectQuota over a mountinfo table (proc(5)): the
// mount whose point is the longest prefix of dir decides.
func projectQuota(mountinfo io.Reader, dir string) (bool, string) {
	var point, fstype, source, opts string
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+3 >= len(fields) {
			continue
		}
		mp := unescape(fields[4])
		if !(dir == mp || mp == "/" || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) || len(mp) < len(point) {
			continue
		}
		// A later mount on the same point covers an earlier one.
		point, fstype, source, opts = mp, fields[sep+1], fields[sep+2], fields[sep+3]
	}
	if point == "" {
		return false, "no mount holds " + dir
	}
	on := map[string]bool{}
	for _, o := range strings.Split(opts, ",") {
		on[o] = true
	}
	where := fmt.Sprintf("%s (%s on %s, options %s)", point, fstype, source, opts)
	switch fstype {
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

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
