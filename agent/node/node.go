// Package node answers questions about this host that the agent's decisions
// depend on: its memory (for the kubelet's Burstable oom_score_adj) and its
// cgroup mode; and it describes the host as the API's Node object (Object:
// capacity, allocatable, conditions, addresses, nodeInfo), which a Keeper
// registers in the store and keeps current, as the kubelet's node status
// loop does.
package node

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/berth-dev/berth/cgroup"
)

// MeminfoPath is the kernel's memory report (proc(5)).
const MeminfoPath = "/proc/meminfo"

// Info returns the node facts the limit math needs. A node whose memory
// cannot be read is an error: Burstable containers' oom_score_adj is a
// fraction of it, and a guess would reorder the OOM killer's victims.
func Info(pidsLimit int64) (cgroup.NodeInfo, error) {
	mem, err := MemTotal(MeminfoPath)
	if err != nil {
		return cgroup.NodeInfo{}, err
	}
	return cgroup.NodeInfo{MemoryCapacity: mem, CgroupV2: cgroup.IsV2(), PidsLimit: pidsLimit}, nil
}

// MemTotal reads MemTotal (bytes) from a meminfo file.
func MemTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("node memory: %w", err)
	}
	defer f.Close()
	return parseMemTotal(path, f)
}

func parseMemTotal(path string, r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		var kb int64
		var unit string
		if n, err := fmt.Sscan(rest, &kb, &unit); n != 2 || err != nil || unit != "kB" || kb <= 0 {
			return 0, fmt.Errorf("node memory: %s: malformed MemTotal line %q", path, sc.Text())
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("node memory: read %s: %w", path, err)
	}
	return 0, fmt.Errorf("node memory: %s has no MemTotal line", path)
}
