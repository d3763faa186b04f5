// Package berthinit is berth-init: the short-lived stage-1 that systemd runs
// as a Type=forking service's ExecStart, the stage-2 that becomes PID 1 of
// the container's PID namespace and execs the workload, and the
// ExecStopPost hook that records how the workload ended.
//
// The idea is rkt's stage-1 (github.com/rkt/rkt Documentation/devel/
// stage1-implementors-guide.md) with systemd as the supervisor: systemd 252
// (Debian 12's) has no setting that gives a unit its own PID namespace
// (PrivatePIDs= is later), so stage-1 clones stage-2 with
// CLONE_NEWPID|CLONE_NEWNS, writes its PID to the unit's PIDFile= and
// exits. systemd then supervises the workload directly as MainPID, and
// nothing of berth stays in the unit's cgroup: under systemd 252 the
// unit's cgroup.procs lists only the workload, and ExecStopPost= gets its
// exit status and signal (TestUnderSystemd checks both on a real systemd).
package berthinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// LoadSpec reads <bundle>/config.json.
func LoadSpec(bundle string) (*specs.Spec, error) {
	// Decoded into a spec of the fields stage-2 acts on: the first decode
	// of a whole specs.Spec in a fresh process builds encoding/json's
	// caches for all its types and took 0.75 ms of each start (make
	// bench), this 0.3 ms. A field berth-init does not implement is not
	// read here, so the agent must not write one:
	// TestLoadSpecKeepsWhatUnitgenWrites feeds unitgen's output through
	// this and fails on any field that does not come through.
	var raw struct {
		Process *struct {
			Args            []string                 `json:"args"`
			Env             []string                 `json:"env"`
			Cwd             string                   `json:"cwd"`
			User            specs.User               `json:"user"`
			Capabilities    *specs.LinuxCapabilities `json:"capabilities"`
			Rlimits         []specs.POSIXRlimit      `json:"rlimits"`
			NoNewPrivileges bool                     `json:"noNewPrivileges"`
			OOMScoreAdj     *int                     `json:"oomScoreAdj"`
		} `json:"process"`
		Root        *specs.Root       `json:"root"`
		Hostname    string            `json:"hostname"`
		Domainname  string            `json:"domainname"`
		Mounts      []specs.Mount     `json:"mounts"`
		Annotations map[string]string `json:"annotations"`
		Linux       *struct {
			Namespaces        []specs.LinuxNamespace `json:"namespaces"`
			Devices           []specs.LinuxDevice    `json:"devices"`
			MaskedPaths       []string               `json:"maskedPaths"`
			ReadonlyPaths     []string               `json:"readonlyPaths"`
			RootfsPropagation string                 `json:"rootfsPropagation"`
			// Only whether it is there: LoadSeccomp refuses a profile.
			Seccomp json.RawMessage `json:"seccomp"`
		} `json:"linux"`
	}
	if err := readConfig(bundle, &raw); err != nil {
		return nil, err
	}
	s := specs.Spec{Root: raw.Root, Hostname: raw.Hostname, Domainname: raw.Domainname, Mounts: raw.Mounts, Annotations: raw.Annotations}
	if p := raw.Process; p != nil {
		s.Process = &specs.Process{Args: p.Args, Env: p.Env, Cwd: p.Cwd, User: p.User, Capabilities: p.Capabilities,
			Rlimits: p.Rlimits, NoNewPrivileges: p.NoNewPrivileges, OOMScoreAdj: p.OOMScoreAdj}
	}
	if l := raw.Linux; l != nil {
		s.Linux = &specs.Linux{Namespaces: l.Namespaces, Devices: l.Devices, MaskedPaths: l.MaskedPaths,
			ReadonlyPaths: l.ReadonlyPaths, RootfsPropagation: l.RootfsPropagation}
		if len(l.Seccomp) > 0 && string(l.Seccomp) != "null" {
			s.Linux.Seccomp = &specs.LinuxSeccomp{}
		}
	}
	if s.Process == nil || len(s.Process.Args) == 0 {
		return nil, errors.New("spec: process.args is empty")
	}
	if s.Root == nil || s.Root.Path == "" {
		return nil, errors.New("spec: root.path is empty")
	}
	if s.Linux == nil {
		return nil, errors.New("spec: linux section missing")
	}
	return &s, nil
}

// readConfig decodes <bundle>/config.json into v.
func readConfig(bundle string, v any) error {
	p := filepath.Join(bundle, bndl.ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s: %w", p, err)
	}
	return nil
}

// loadStartSpec reads what stage-1 needs of <bundle>/config.json (the
// namespaces, the root and the mounts it makes), leaving the rest to
// stage-2's LoadSpec: decoding the whole spec twice cost 0.65 ms more per
// start.
func loadStartSpec(bundle string) (*specs.Spec, error) {
	var s struct {
		Root   *specs.Root   `json:"root"`
		Mounts []specs.Mount `json:"mounts"`
		Linux  *struct {
			Namespaces        []specs.LinuxNamespace `json:"namespaces"`
			Devices           []specs.LinuxDevice    `json:"devices"`
			RootfsPropagation string                 `json:"rootfsPropagation"`
		} `json:"linux"`
	}
	if err := readConfig(bundle, &s); err != nil {
		return nil, err
	}
	if s.Linux == nil {
		return nil, errors.New("spec: linux section missing")
	}
	if s.Root == nil || s.Root.Path == "" {
		return nil, errors.New("spec: root.path is empty")
	}
	return &specs.Spec{Root: s.Root, Mounts: s.Mounts, Linux: &specs.Linux{Namespaces: s.Linux.Namespaces,
		Devices: s.Linux.Devices, RootfsPropagation: s.Linux.RootfsPropagation}}, nil
}

// rootPath is Root.Path, relative to the bundle unless absolute (OCI
// runtime-spec config.md "root").
func rootPath(bundle string, s *specs.Spec) string {
	if filepath.IsAbs(s.Root.Path) {
		return filepath.Clean(s.Root.Path)
	}
	return filepath.Join(bundle, s.Root.Path)
}

// overlay is berth's rootfs convention: Mounts[0] is the overlay for "/".
type overlay struct {
	mount       specs.Mount
	upper, work string
}

func rootOverlay(s *specs.Spec) (*overlay, error) {
	if len(s.Mounts) == 0 {
		return nil, errors.New("spec: mounts[0] must be the rootfs overlay, mounts is empty")
	}
	m := s.Mounts[0]
	if m.Destination != "/" || m.Type != "overlay" {
		return nil, fmt.Errorf("spec: mounts[0] must be the rootfs overlay on \"/\", got type %q on %q", m.Type, m.Destination)
	}
	o := &overlay{mount: m}
	for _, opt := range m.Options {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "upperdir":
			o.upper = v
		case "workdir":
			o.work = v
		}
	}
	for name, p := range map[string]string{"upperdir": o.upper, "workdir": o.work} {
		// These get emptied on every start: refuse anything that is not a
		// clean absolute path below the root directory.
		if p == "" || !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			return nil, fmt.Errorf("spec: rootfs overlay %s %q must be a clean absolute path", name, p)
		}
	}
	return o, nil
}

// freshen empties the overlay's upper and work directories: Kubernetes
// starts every container (and every restart of one) on a fresh copy of the
// image's filesystem.
func (o *overlay) freshen() error {
	for _, d := range []string{o.upper, o.work} {
		if emptyDir(d) {
			// A first start: berthd made them, nothing to remove. The mode
			// still matters: the upper dir's is the container's "/"
			// (berthd makes them 0700; a non-root workload needs 0755).
			if err := os.Chmod(d, 0o755); err != nil {
				return fmt.Errorf("overlay dir %s: %w", d, err)
			}
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("empty overlay dir %s: %w", d, err)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create overlay dir %s: %w", d, err)
		}
	}
	return nil
}

// emptyDir reports whether d is a directory (not a symlink to one) with no
// entries.
func emptyDir(d string) bool {
	f, err := os.OpenFile(d, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return errors.Is(err, io.EOF)
}

// nsJoin is a namespace to enter with setns(2) before cloning stage-2.
type nsJoin struct {
	typ  specs.LinuxNamespaceType
	path string
	flag int
}

// nsPlan is how stage-2 gets its namespaces.
type nsPlan struct {
	clone uintptr // CLONE_NEW* for clone(2)
	joins []nsJoin
}

var nsFlags = map[specs.LinuxNamespaceType]int{
	specs.PIDNamespace:     unix.CLONE_NEWPID,
	specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.MountNamespace:   unix.CLONE_NEWNS,
	specs.IPCNamespace:     unix.CLONE_NEWIPC,
	specs.UTSNamespace:     unix.CLONE_NEWUTS,
	specs.CgroupNamespace:  unix.CLONE_NEWCGROUP,
}

func planNamespaces(s *specs.Spec) (*nsPlan, error) {
	p := &nsPlan{}
	seen := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range s.Linux.Namespaces {
		if seen[ns.Type] {
			return nil, fmt.Errorf("spec: namespace %q listed twice", ns.Type)
		}
		seen[ns.Type] = true
		flag, ok := nsFlags[ns.Type]
		if !ok {
			// user: no id-mapped rootfs here; time: needs unshare before
			// the first fork of the namespace, not clone flags.
			return nil, fmt.Errorf("spec: namespace %q is not supported by berth-init", ns.Type)
		}
		if ns.Path == "" {
			p.clone |= uintptr(flag)
			continue
		}
		if ns.Type == specs.MountNamespace {
			// setns(CLONE_NEWNS) needs an unshared fs_struct, which a Go
			// process (threads share it) never has; stage-1 always builds
			// the mount namespace from scratch anyway.
			return nil, errors.New("spec: joining a mount namespace (linux.namespaces[mount].path) is not supported")
		}
		p.joins = append(p.joins, nsJoin{typ: ns.Type, path: ns.Path, flag: flag})
	}
	// Without both, the workload would share the host's process table or
	// mounts and "PID 1 of its own namespace" would not hold.
	if !seen[specs.PIDNamespace] || !seen[specs.MountNamespace] {
		return nil, errors.New("spec: linux.namespaces must include pid and mount")
	}
	return p, nil
}

// ownsNamespace reports whether stage-2 gets a new namespace of typ.
func ownsNamespace(s *specs.Spec, typ specs.LinuxNamespaceType) bool {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == typ {
			return ns.Path == ""
		}
	}
	return false
}
