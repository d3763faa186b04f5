// Command berth-init is the stage-1 of a berth container: systemd runs
// `berth-init start [--verify-image] <bundle>` as the ExecStart of the
// container's Type=forking unit (with the flag, the image is judged by the
// trust policy first) and `berth-init poststop <bundle>` as its ExecStopPost.
// Build it static, with CGO_ENABLED=0: it runs in fresh mount namespaces
// and must not depend on the host's libc, and without cgo Go's
// credential calls stay plain syscalls.
package main

import (
	"os"

	"github.com/berth-dev/berth/agent/berthinit"
)

func main() { os.Exit(berthinit.Main(os.Args[1:])) }
