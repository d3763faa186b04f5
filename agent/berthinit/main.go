package berthinit

import (
	bndl "github.com/berth-dev/berth/agent/bundle"

	"errors"
	"fmt"
	"os"
	"time"
)

const usage = "usage: berth-init start [--verify-image]|poststop|verify <bundle>"

// VerifyImageFlag makes start judge the image by the trust policy first.
const VerifyImageFlag = "--verify-image"

// Main runs berth-init with args (os.Args[1:]) and returns its exit code.
//
//	start [--verify-image] <bundle>
//	                   ExecStart of the container's Type=forking unit; with
//	                   the flag, the trust policy's judgement of the image
//	                   comes before anything of the image is touched, on
//	                   every (re)start
//	poststop <bundle>  ExecStopPost of the unit; always exits 0
//	verify <bundle>    the trust policy's judgement alone (exit 0: may start)
//	stage2 <bundle>    internal: re-executed by start in the new namespaces
func Main(args []string) int {
	if len(args) > 0 && args[0] == "exec" {
		return execMain(args[1:])
	}
	if len(args) > 0 && args[0] == "pause" {
		return pauseMain(args[1:])
	}
	verifyFirst := false
	if len(args) == 3 && args[0] == "start" && args[1] == VerifyImageFlag {
		verifyFirst, args = true, []string{"start", args[2]}
	}
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	cmd, bundle := args[0], args[1]
	switch cmd {
	case "start":
		if err := bndl.AwaitRelease(bundle); err != nil {
			fmt.Fprintf(os.Stderr, "berth-init start %s: %v\n", bundle, err)
			return 1
		}
		// A restart after a failure first waits out the kubelet's
		// crash-loop back-off (backoff.go).
		if err := RestartBackoff(bundle, time.Now, time.Sleep); err != nil {
			fmt.Fprintf(os.Stderr, "berth-init start %s: restart back-off: %v\n", bundle, err)
		}
		// The judgement in this process, not as a separate ExecStartPre:
		// that saved a fork, an exec and a round of systemd's job engine
		// per start (about 3 ms of 20, make bench). Start runs it while
		// stage-2 starts up.
		var verify func(string) error
		if verifyFirst {
			verify = verifyImage
		}
		// Goes to the journal; a non-zero exit fails the start job.
		if err := Start(bundle, verify); err != nil {
			fmt.Fprintf(os.Stderr, "berth-init start %s: %v\n", bundle, err)
			return 1
		}
		return 0
	case "stage2":
		sync := os.NewFile(syncFd, "sync")
		err := runStage2(bundle, sync)
		var ee *execError
		if errors.As(err, &ee) {
			fmt.Fprintf(os.Stderr, "berth-init: %v\n", ee)
			return ee.code
		}
		if _, werr := fmt.Fprintf(sync, "stage2: %v", err); werr != nil {
			fmt.Fprintf(os.Stderr, "berth-init stage2 %s: %v\n", bundle, err)
		}
		return 1
	case "verify":
		return verifyMain(bundle)
	case "poststop":
		// Always 0: a failing ExecStopPost would only add noise to the
		// unit's result; the agent notices a missing exit.json.
		if err := PostStop(bundle, os.Getenv, OwnOOMKills, time.Now()); err != nil {
			fmt.Fprintf(os.Stderr, "berth-init poststop %s: %v\n", bundle, err)
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, usage)
	return 2
}

// runStage2 turns a panic into an error, so stage-1 hears about it through
// the sync pipe.
func runStage2(bundle string, sync *os.File) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return Stage2(bundle, sync)
}
