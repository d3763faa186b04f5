package berthinit

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/cgroup/own"
	"golang.org/x/sys/unix"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// unknownExitCode is what containerd reports when it cannot tell a task's
// exit status (containerd's client UnknownExitStatus = 255).
const unknownExitCode = 255

// PostStop is `berth-init poststop <bundle>`, systemd's ExecStopPost=. env
// looks up what systemd passes to ExecStopPost (systemd.exec(5),
// "Environment variables set or propagated by the service manager":
// $SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS); oomKills reads the unit
// cgroup's OOM-kill counter, and it must be now: ExecStopPost= is the last
// process systemd runs in the unit's cgroup, and once it has exited and the
// unit is inactive systemd removes the cgroup, counter and all (a reader
// afterwards finds no file, and a restart gets a new cgroup counting from
// 0). A failing counter read is reported and
// treated as no OOM kill. Kills counted before this run started (the
// baseline Start left in bndl.OOMBaseFile) do not count; a counter below the
// baseline means a new cgroup and counts in full.
func PostStop(bundle string, env func(string) string, oomKills func() (uint64, error), now time.Time) error {
	kills, err := oomKills()
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth-init poststop %s: OOM-kill counter: %v\n", bundle, err)
		kills = 0
	}
	// Only kills since this run started count (see bndl.OOMBaseFile).
	if raw, err := os.ReadFile(filepath.Join(bundle, bndl.OOMBaseFile)); err == nil {
		if base, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64); err == nil {
			if kills >= base {
				kills -= base
			}
		}
	}
	st := DecideExit(env("SERVICE_RESULT"), env("EXIT_CODE"), env("EXIT_STATUS"), kills, now)
	st.Message = takeTerminationMessage(filepath.Join(bundle, bndl.TerminationLogFile))
	return bndl.WriteExit(bundle, st)
}

// takeTerminationMessage reads what the run wrote to its termination log
// (the kubelet reads at most 4096 bytes) and empties the file, so that the
// next run of the unit (a restart, same bundle) starts without it, as the
// kubelet gives each container instance a new file. The file is berth's
// (in the bundle, which the container cannot reach); O_NOFOLLOW all the same.
func takeTerminationMessage(path string) string {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, bndl.MaxTerminationMessage)
	n, _ := io.ReadFull(f, buf)
	if err := f.Truncate(0); err != nil {
		fmt.Fprintf(os.Stderr, "berth-init poststop: empty %s: %v\n", path, err)
	}
	return string(buf[:n])
}

// DecideExit turns systemd's view of the main process into a bndl.ExitStatus.
// code is $EXIT_CODE: "exited", "killed" or "dumped" (empty if the main
// process never ran); status is $EXIT_STATUS: the exit status, or the
// signal's name ("KILL", as systemd's signal_to_string prints it).
// ExitCode follows the shell/containerd convention: 128+signal when killed,
// so SIGKILL is 137. An OOM kill (counter > 0, or systemd's own Result
// "oom-kill" on cgroup v2) wins over everything else as the reason.
func DecideExit(result, code, status string, oomKills uint64, now time.Time) bndl.ExitStatus {
	st := bndl.ExitStatus{Result: result, FinishedAt: now.UTC()}
	switch code {
	case "exited":
		n, err := strconv.Atoi(status)
		if err != nil || n < 0 || n > 255 {
			st.ExitCode = unknownExitCode
		} else {
			st.ExitCode = n
		}
	case "killed", "dumped":
		if sig := signalNumber(status); sig > 0 {
			st.Signal = sig
			st.ExitCode = 128 + sig
		} else {
			st.ExitCode = unknownExitCode
		}
	default:
		st.ExitCode = unknownExitCode
	}
	st.OOMKilled = oomKills > 0 || result == "oom-kill"
	switch {
	case st.OOMKilled:
		st.Reason = bndl.ReasonOOMKilled
	case st.ExitCode == 0:
		st.Reason = bndl.ReasonCompleted
	default:
		st.Reason = bndl.ReasonError
	}
	return st
}

// signalNumber parses "KILL", "SIGKILL", "9" or "RTMIN+3".
func signalNumber(s string) int {
	s = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG")
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	// systemd prints real-time signals relative to glibc's SIGRTMIN, 34
	// (the kernel's 32 plus two reserved by NPTL).
	if rest, ok := strings.CutPrefix(s, "RTMIN+"); ok {
		if n, err := strconv.Atoi(rest); err == nil {
			return 34 + n
		}
	}
	if s == "RTMIN" {
		return 34
	}
	return int(unix.SignalNum("SIG" + s))
}

// OwnOOMKills reads the OOM-kill counter of the calling process's own
// memory cgroup — for ExecStopPost, the unit's cgroup: memory.oom_control
// "oom_kill" on v1, memory.events "oom_kill" on v2 (package cgroup/own, kept
// dependency-free so berth-init stays quick to exec).
func OwnOOMKills() (uint64, error) { return own.OOMKills() }
