// Package bundle is the contract between berthd and berth-init: the files of
// a container's bundle directory, what each holds, who writes it and who
// reads it. Both binaries import this package and nothing else of each other,
// so a file name or a record's shape is defined once.
//
// A bundle is <state-dir>/containers/<namespace>_<pod>_<container>/:
//
//	config.json      ConfigFile: the OCI runtime spec (berthd writes, berth-init reads at every start)
//	seccomp.bpf      SeccompFile: the compiled seccomp filter (berthd writes, berth-init loads)
//	image.json       SourceFile: which image the container runs and from where (berthd writes, berth-verify reads)
//	trust.json       RecordFile: the last trust judgement and the fingerprints of what it read
//	                 (berthd and berth-verify write, berth-init reads before every start)
//	release          ReleaseFile: a FIFO through which berthd releases a first start (both ends in release.go)
//	pid              PIDFile: the workload's PID (berth-init writes, systemd reads as PIDFile=)
//	oom_kills.start  OOMBaseFile: the unit cgroup's OOM-kill counter at start (berth-init)
//	exit.json        ExitFile: how the workload ended (berth-init poststop writes, berthd reads)
//	hooks.json       HooksFile: the lifecycle hooks' handlers (berthd writes, berth-hook reads)
//	hook-failure.<kind>.json  a failed postStart/preStop hook (berth-hook writes, berthd takes)
//	upper/ work/ rootfs/  the overlay's upper and work directories and its mount point
//
// The package is small and links nothing heavy: berth-init imports it and
// must stay quick to exec (the dependency test pins what it links).
package bundle

// Files and directories in a bundle.
const (
	ConfigFile  = "config.json"
	SeccompFile = "seccomp.bpf"
	SourceFile  = "image.json"
	RecordFile  = "trust.json"
	ReleaseFile = "release"
	PIDFile     = "pid"
	// OOMBaseFile holds the unit cgroup's OOM-kill counter when the
	// container started: systemd keeps a unit's cgroup across Restart=
	// (auto-restart counts as activating, so unit_prune_cgroup does not run),
	// and the counter would otherwise blame every later exit on an old OOM.
	OOMBaseFile = "oom_kills.start"
	ExitFile    = "exit.json"
	// TerminationLogFile is bound at the container's
	// terminationMessagePath; poststop moves what the workload wrote into
	// the exit record and empties it for the next run.
	TerminationLogFile = "termination-log"

	UpperDir  = "upper"
	WorkDir   = "work"
	RootfsDir = "rootfs"
)
