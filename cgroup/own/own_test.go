package own

import (
	"os"
	"path/filepath"
	"testing"
)

func TestGroups(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cgroup")
	os.WriteFile(f, []byte("12:pids:/a\n4:memory:/process_api/x\n3:cpu,cpuacct:/b\n1:name=systemd:/s\n0::/u/v\n"), 0o644)
	v1, unified, err := Groups(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"pids": "/a", "memory": "/process_api/x", "cpu": "/b", "cpuacct": "/b", "name=systemd": "/s"}
	for k, v := range want {
		if v1[k] != v {
			t.Errorf("v1[%q] = %q, want %q", k, v1[k], v)
		}
	}
	if len(v1) != len(want) || unified != "/u/v" {
		t.Errorf("Groups = %v, %q", v1, unified)
	}
	if _, _, err := Groups(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file: want an error")
	}
}

func TestCounter(t *testing.T) {
	f := filepath.Join(t.TempDir(), "memory.oom_control")
	os.WriteFile(f, []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), 0o644)
	if n, err := counter(f, "oom_kill"); err != nil || n != 3 {
		t.Errorf("counter = %d, %v; want 3", n, err)
	}
	if _, err := counter(f, "missing"); err == nil {
		t.Error("missing key: want an error")
	}
}

func TestUnified(t *testing.T) {
	// Cross-check with the file system: a unified host has cgroup.controllers
	// at the top of Root, a v1 or hybrid host has a tmpfs there.
	_, err := os.Stat(filepath.Join(Root, "cgroup.controllers"))
	if got, want := Unified(), err == nil; got != want {
		t.Errorf("Unified() = %v, but %s/cgroup.controllers present = %v", got, Root, want)
	}
}
