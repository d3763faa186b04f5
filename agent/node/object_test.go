package node

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

// This host, as the Node berthd registers.
func TestObjectThisHost(t *testing.T) {
	n, err := Object("node-a", ObjectOptions{KubeletVersion: "v1.32.0-berth.7", RuntimeVersion: "0.7"})
	if err != nil {
		t.Fatal(err)
	}
	c := n.Status.Capacity
	if c.Cpu().Value() < 1 || c.Memory().Value() <= 0 || c.Pods().Value() != 110 || c.StorageEphemeral().Value() <= 0 {
		t.Errorf("capacity %v", c)
	}
	if !equalResources(n.Status.Allocatable, c) {
		t.Errorf("allocatable %v != capacity %v", n.Status.Allocatable, c)
	}
	info := n.Status.NodeInfo
	if info.KubeletVersion != "v1.32.0-berth.7" || info.ContainerRuntimeVersion != "berth://0.7" || info.KernelVersion == "" ||
		info.OperatingSystem != runtime.GOOS || info.Architecture != runtime.GOARCH || info.BootID == "" {
		t.Errorf("nodeInfo %+v", info)
	}
	if want, _ := os.ReadFile("/etc/machine-id"); len(want) > 0 && info.MachineID == "" {
		t.Errorf("machineID empty")
	}
	var types []corev1.NodeConditionType
	for _, cond := range n.Status.Conditions {
		types = append(types, cond.Type)
		wantStatus := corev1.ConditionFalse
		if cond.Type == corev1.NodeReady {
			wantStatus = corev1.ConditionTrue
			if cond.Reason != "KubeletReady" || cond.Message != "berthd is posting ready status" {
				t.Errorf("ready %+v", cond)
			}
		}
		if cond.Status != wantStatus || cond.LastHeartbeatTime.IsZero() {
			t.Errorf("condition %+v", cond)
		}
	}
	if len(types) != 4 || types[3] != corev1.NodeReady {
		t.Errorf("conditions %v", types)
	}
	if n.Labels["kubernetes.io/hostname"] != "node-a" || n.Labels["kubernetes.io/os"] != runtime.GOOS || n.Labels["kubernetes.io/arch"] != runtime.GOARCH {
		t.Errorf("labels %v", n.Labels)
	}
	last := n.Status.Addresses[len(n.Status.Addresses)-1]
	if last.Type != corev1.NodeHostName || last.Address != "node-a" {
		t.Errorf("addresses %v", n.Status.Addresses)
	}
}

func equalResources(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v.Cmp(w) != 0 {
			return false
		}
	}
	return true
}

// Host files under Root: os-release, the route table, the CPU list.
func TestObjectHostFiles(t *testing.T) {
	root := t.TempDir()
	write := func(path, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(root+path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(root+path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(MeminfoPath, "MemTotal: 1024 kB\n")
	write(osReleasePath, "NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
	write(cpuOnlinePath, "0-3,6,8-9\n")
	write(machineIDPath, "abc\n")
	write(productUUIDPath, "0A1B\n")
	write(routePath, "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"+
		"eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"+
		"eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\n")
	n, err := Object("x", ObjectOptions{Root: root, StateDir: "/", MaxPods: 5})
	if err != nil {
		t.Fatal(err)
	}
	info := n.Status.NodeInfo
	if info.OSImage != "Debian GNU/Linux 12 (bookworm)" || info.MachineID != "abc" || info.SystemUUID != "0a1b" {
		t.Errorf("nodeInfo %+v", info)
	}
	if got := n.Status.Capacity.Cpu().Value(); got != 7 {
		t.Errorf("cpu %d, want 7", got)
	}
	if got := n.Status.Capacity.Memory().String(); got != "1Mi" {
		t.Errorf("memory %s", got)
	}
	if got := n.Status.Capacity.Pods().Value(); got != 5 {
		t.Errorf("pods %d", got)
	}
	if got := defaultRouteInterface(root + routePath); got != "eth0" {
		t.Errorf("default route via %q", got)
	}
	if _, err := Object("x", ObjectOptions{Root: t.TempDir()}); err == nil {
		t.Error("no meminfo: no error")
	}
}

// A Keeper registers the Node in a real store file, keeps what others
// changed (a label, a cordon) and refreshes the heartbeat, keeping the
// transition times of conditions that did not change.
func TestKeeper(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ready := corev1.ConditionTrue
	build := func() (*corev1.Node, error) {
		n, err := Object("node-a", ObjectOptions{KubeletVersion: "v1.32.0-berth.1"})
		if err != nil {
			return nil, err
		}
		for i := range n.Status.Conditions {
			c := &n.Status.Conditions[i]
			c.LastHeartbeatTime, c.LastTransitionTime = metav1.NewTime(clock), metav1.NewTime(clock)
			if c.Type == corev1.NodeReady {
				c.Status = ready
			}
		}
		return n, nil
	}
	k := NewKeeper(st, build, 0, nil)
	if err := k.Sync(); err != nil {
		t.Fatal(err)
	}
	var n corev1.Node
	if err := st.Get("nodes", "", "node-a", &n); err != nil {
		t.Fatal(err)
	}
	if n.UID == "" || !Heartbeat(&n).Time.Equal(clock) {
		t.Fatalf("registered %+v", n.ObjectMeta)
	}
	// kubectl label and cordon in between.
	n.Labels["node-role.kubernetes.io/edge"] = ""
	n.Spec.Unschedulable = true
	if err := st.Update("nodes", &n, true); err != nil {
		t.Fatal(err)
	}
	first := clock
	clock = clock.Add(time.Minute)
	if err := k.Sync(); err != nil {
		t.Fatal(err)
	}
	var m corev1.Node
	if err := st.Get("nodes", "", "node-a", &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Labels["node-role.kubernetes.io/edge"]; !ok || !m.Spec.Unschedulable || m.Labels["kubernetes.io/hostname"] != "node-a" {
		t.Errorf("lost others' changes: %v %v", m.Labels, m.Spec)
	}
	for _, c := range m.Status.Conditions {
		if !c.LastHeartbeatTime.Time.Equal(clock) || !c.LastTransitionTime.Time.Equal(first) {
			t.Errorf("condition %s: heartbeat %v transition %v", c.Type, c.LastHeartbeatTime, c.LastTransitionTime)
		}
	}
	// Not ready: Ready's transition time moves, the others' stay.
	ready = corev1.ConditionFalse
	clock = clock.Add(time.Minute)
	if err := k.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := st.Get("nodes", "", "node-a", &m); err != nil {
		t.Fatal(err)
	}
	for _, c := range m.Status.Conditions {
		want := first
		if c.Type == corev1.NodeReady {
			want = clock
		}
		if !c.LastTransitionTime.Time.Equal(want) {
			t.Errorf("condition %s transition %v, want %v", c.Type, c.LastTransitionTime, want)
		}
	}
}
