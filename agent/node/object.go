package node

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ObjectOptions say what Object cannot learn from the host.
type ObjectOptions struct {
	// KubeletVersion is the API's GitVersion (kubectl get nodes' VERSION).
	KubeletVersion string
	// RuntimeVersion is berth's version: containerRuntimeVersion is
	// "berth://" + RuntimeVersion.
	RuntimeVersion string
	// StateDir is the directory whose filesystem is the node's
	// ephemeral-storage (the kubelet uses its root directory's);
	// default /var/lib/berth, else / when it does not exist.
	StateDir string
	// MaxPods is the pods capacity (default 110, the kubelet's).
	MaxPods int64
	// Root prefixes the host paths read (/etc, /proc, /sys), for tests;
	// default "".
	Root string
}

// Host files Object reads.
const (
	machineIDPath   = "/etc/machine-id"
	productUUIDPath = "/sys/class/dmi/id/product_uuid"
	bootIDPath      = "/proc/sys/kernel/random/boot_id"
	osReleasePath   = "/etc/os-release"
	routePath       = "/proc/net/route"
	cpuOnlinePath   = "/sys/devices/system/cpu/online"
)

// The kubelet's condition reasons and messages (pkg/kubelet/nodestatus),
// Ready's message naming berthd.
const (
	ReadyReason   = "KubeletReady"
	ReadyMessage  = "berthd is posting ready status"
	defaultPods   = 110
	hostnameLabel = "kubernetes.io/hostname"
)

// Object describes this host as a Node named name, as the kubelet
// registers it: capacity (cpu, memory, pods, ephemeral-storage), allocatable
// (equal to capacity: berth reserves nothing for the system yet, where a
// kubelet subtracts --system-reserved, --kube-reserved and the eviction
// threshold), the four conditions (Ready True; no memory, disk or PID
// pressure, as berth evicts nothing yet), addresses, nodeInfo and the
// well-known labels. Conditions carry now as heartbeat and transition time;
// a Keeper keeps transition times across updates.
func Object(name string, opts ObjectOptions) (*corev1.Node, error) {
	if opts.MaxPods == 0 {
		opts.MaxPods = defaultPods
	}
	if opts.StateDir == "" {
		opts.StateDir = "/var/lib/berth"
		if _, err := os.Stat(opts.Root + opts.StateDir); err != nil {
			opts.StateDir = "/"
		}
	}
	mem, err := MemTotal(opts.Root + MeminfoPath)
	if err != nil {
		return nil, err
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(opts.Root+opts.StateDir, &fs); err != nil {
		return nil, fmt.Errorf("node ephemeral storage: statfs %s: %w", opts.StateDir, err)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return nil, fmt.Errorf("node kernel version: %w", err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(cpuCount(opts.Root)), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(mem, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(opts.MaxPods, resource.DecimalSI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(int64(fs.Blocks)*fs.Bsize, resource.BinarySI),
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, LastHeartbeatTime: now, LastTransitionTime: now, Reason: reason, Message: msg}
	}
	addresses := []corev1.NodeAddress{}
	if ip := primaryIP(opts.Root); ip != "" {
		addresses = append(addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	addresses = append(addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	n := &corev1.Node{
		TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"beta.kubernetes.io/arch": runtime.GOARCH,
			"beta.kubernetes.io/os":   runtime.GOOS,
			"kubernetes.io/arch":      runtime.GOARCH,
			hostnameLabel:             name,
			"kubernetes.io/os":        runtime.GOOS,
		}},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity.DeepCopy(),
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
				cond(corev1.NodeReady, corev1.ConditionTrue, ReadyReason, ReadyMessage),
			},
			Addresses: addresses,
			NodeInfo: corev1.NodeSystemInfo{
				MachineID:               readTrimmed(opts.Root + machineIDPath),
				SystemUUID:              strings.ToLower(readTrimmed(opts.Root + productUUIDPath)),
				BootID:                  readTrimmed(opts.Root + bootIDPath),
				KernelVersion:           unix.ByteSliceToString(uts.Release[:]),
				OSImage:                 osImage(opts.Root + osReleasePath),
				ContainerRuntimeVersion: "berth://" + opts.RuntimeVersion,
				KubeletVersion:          opts.KubeletVersion,
				OperatingSystem:         runtime.GOOS,
				Architecture:            runtime.GOARCH,
			},
		},
	}
	return n, nil
}

// readTrimmed is a one-line host file, "" when it cannot be read (a
// container without DMI has no product_uuid; the kubelet leaves such
// fields empty too).
func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// osImage is PRETTY_NAME of os-release(5), as the kubelet reports it.
func osImage(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

// cpuCount counts the online CPUs (as cAdvisor's NumCores), not the ones
// berthd's own affinity allows.
func cpuCount(root string) int {
	s := readTrimmed(root + cpuOnlinePath)
	n := 0
	for _, r := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || b < a {
			return runtime.NumCPU()
		}
		n += b - a + 1
	}
	if n == 0 {
		return runtime.NumCPU()
	}
	return n
}

// primaryIP is the IPv4 address of the interface the default route leaves
// by (/proc/net/route), else the first global unicast address of any
// interface up that is not a bridge, else "".
func primaryIP(root string) string {
	if iface := defaultRouteInterface(root + routePath); iface != "" {
		if ifi, err := net.InterfaceByName(iface); err == nil {
			if ip := firstGlobal(ifi); ip != "" {
				return ip
			}
		}
	}
	ifis, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for i := range ifis {
		// Bridges are skipped: without a default route, the pod network's
		// bridge (berth0, its gateway 10.85.0.1) is no address of the node
		// for anyone outside it.
		if _, err := os.Stat(filepath.Join(root, "/sys/class/net", ifis[i].Name, "bridge")); err == nil {
			continue
		}
		if ifis[i].Flags&net.FlagUp != 0 && ifis[i].Flags&net.FlagLoopback == 0 {
			if ip := firstGlobal(&ifis[i]); ip != "" {
				return ip
			}
		}
	}
	return ""
}

func firstGlobal(ifi *net.Interface) string {
	addrs, err := ifi.Addrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
			return ipn.IP.String()
		}
	}
	return ""
}

// defaultRouteInterface is the interface of the first default route
// (destination 00000000) in a /proc/net/route table.
func defaultRouteInterface(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 8 && fields[1] == "00000000" && fields[7] == "00000000" {
			return fields[0]
		}
	}
	return ""
}
