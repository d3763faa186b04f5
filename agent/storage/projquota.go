package storage

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Project quotas hold a provisioned volume to its capacity on disk, where
// the volumes' filesystem enforces them (ProjectQuota): each volume's
// directory gets a project ID of its own with PROJINHERIT, so that all
// it will hold is charged to that project, and the project a block hard
// limit of the volume's capacity. A write past it fails with EDQUOT
// ("Disk quota exceeded") and statfs(2) in the volume (df) reports the
// capacity, as the kernel does for a PROJINHERIT directory. It is what
// XFS's and ext4's project quotas are for, and how the kubelet's fsquota
// holds emptyDirs (LocalStorageCapacityIsolationFSQuotaMonitoring).
//
// A process with CAP_SYS_RESOURCE is not held (the kernel's quota code
// ignores hard limits for it): containers do not have it unless their
// securityContext adds it.
//
// x/sys/unix has neither struct fsxattr nor quotactl_fd's structures, so
// the kernel's ABI (linux/fs.h, linux/quota.h) is spelled out here.

const (
	// FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR: _IOR and _IOW('X', 31 and
	// 32, struct fsxattr), 28 bytes.
	fsIocGetXattr = 0x801c581f
	fsIocSetXattr = 0x401c5820
	// FS_XFLAG_PROJINHERIT: what is made in the directory gets its
	// project ID.
	fsXflagProjInherit = 0x200

	// QCMD(Q_GETQUOTA or Q_SETQUOTA, PRJQUOTA).
	qGetProjectQuota = 0x800007<<8 | 2
	qSetProjectQuota = 0x800008<<8 | 2
	// QIF_BLIMITS: Q_SETQUOTA sets the block limits only.
	qifBLimits = 1
	// QIF_DQBLKSIZE: the limits are in 1 KiB blocks.
	quotaBlock = 1024

	// firstProjectID is where berth numbers its projects, as the kubelet's
	// fsquota does (pkg/volume/util/fsquota: 1048577), above the IDs an
	// administrator gives in /etc/projid.
	firstProjectID = 1048577
)

// fsxattr is struct fsxattr.
type fsxattr struct {
	Xflags, Extsize, Nextents, Projid, Cowextsize uint32
	Pad                                           [8]byte
}

// dqblk is struct if_dqblk (72 bytes: the u32 at the end is padded).
type dqblk struct {
	BHardLimit, BSoftLimit, CurSpace, IHardLimit, ISoftLimit, CurInodes, BTime, ITime uint64
	Valid                                                                             uint32
	_                                                                                 uint32
}

func getXattr(f *os.File) (fsxattr, error) {
	var x fsxattr
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocGetXattr, uintptr(unsafe.Pointer(&x))); e != 0 {
		return x, fmt.Errorf("FS_IOC_FSGETXATTR %s: %w", f.Name(), e)
	}
	return x, nil
}

func setXattr(f *os.File, x fsxattr) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocSetXattr, uintptr(unsafe.Pointer(&x))); e != 0 {
		return fmt.Errorf("FS_IOC_FSSETXATTR %s: %w", f.Name(), e)
	}
	return nil
}

// quotactl is quotactl_fd(2) (Linux 5.14): by a file of the filesystem,
// not its block device, which a mount of a loop file or a device mapper
// volume would make berth look for.
func quotactl(f *os.File, cmd uintptr, id uint32, q *dqblk) error {
	if _, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, f.Fd(), cmd, uintptr(id), uintptr(unsafe.Pointer(q)), 0, 0); e != 0 {
		if e == unix.ENOSYS {
			return fmt.Errorf("quotactl_fd on %s: %w (project quotas need Linux 5.14 or later)", f.Name(), e)
		}
		return fmt.Errorf("quotactl_fd on %s: %w", f.Name(), e)
	}
	return nil
}

// ProjectID is the project ID of dir (0: none).
func ProjectID(dir string) (uint32, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	x, err := getXattr(f)
	return x.Projid, err
}

// ProjectLimit is the block hard limit, in bytes, of dir's filesystem's
// project id, and the bytes charged to it.
func ProjectLimit(dir string, id uint32) (limit, used uint64, err error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var q dqblk
	if err := quotactl(f, qGetProjectQuota, id, &q); err != nil {
		return 0, 0, err
	}
	return q.BHardLimit * quotaBlock, q.CurSpace, nil
}

// limitDir holds dir to size bytes: its project ID if it has one (a
// resize, or a provisioning a crash cut short), else the first free one
// from firstProjectID (free: not in used, not in /etc/projid or
// /etc/projects, and neither limited nor charged on the filesystem);
// PROJINHERIT; then the limit, rounded up to whole quota blocks.
func limitDir(dir string, size int64, used map[uint32]bool) (uint32, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	x, err := getXattr(f)
	if err != nil {
		return 0, err
	}
	if x.Projid == 0 {
		for id := uint32(firstProjectID); ; id++ {
			if id == 0 {
				return 0, fmt.Errorf("no free project ID on the filesystem of %s", dir)
			}
			if used[id] {
				continue
			}
			var q dqblk
			if err := quotactl(f, qGetProjectQuota, id, &q); err != nil && !errors.Is(err, unix.ESRCH) {
				return 0, err
			}
			if q.BHardLimit == 0 && q.BSoftLimit == 0 && q.CurSpace == 0 && q.CurInodes == 0 {
				x.Projid = id
				break
			}
		}
	}
	x.Xflags |= fsXflagProjInherit
	if err := setXattr(f, x); err != nil {
		return 0, err
	}
	blocks := uint64((size + quotaBlock - 1) / quotaBlock)
	q := dqblk{BHardLimit: blocks, BSoftLimit: blocks, Valid: qifBLimits}
	if err := quotactl(f, qSetProjectQuota, x.Projid, &q); err != nil {
		return 0, err
	}
	return x.Projid, nil
}

// unlimit clears the limits of project id on the filesystem holding dir,
// once its volume's directory is gone: the ID is free again.
func unlimit(dir string, id uint32) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return quotactl(f, qSetProjectQuota, id, &dqblk{Valid: qifBLimits})
}

// projectIDsInUse are the IDs of the volume directories in dir and those
// an administrator has named in /etc/projid (name:id) and /etc/projects
// (id:path), which xfs_quota and the kubelet honour too.
func projectIDsInUse(dir string) (map[uint32]bool, error) {
	used := map[uint32]bool{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		id, err := ProjectID(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		used[id] = true
	}
	for file, field := range map[string]int{"/etc/projid": 1, "/etc/projects": 0} {
		if err := idsIn(file, field, used); err != nil {
			return nil, err
		}
	}
	return used, nil
}

// idsIn adds the IDs in field (0 or 1) of file's colon-separated lines.
func idsIn(file string, field int, used map[uint32]bool) error {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) <= field {
			continue
		}
		if id, err := strconv.ParseUint(parts[field], 10, 32); err == nil {
			used[uint32(id)] = true
		}
	}
	return sc.Err()
}
