package unitgen

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Linux real-time signal range as user space sees it: glibc reserves the
// kernel's first two real-time signals, so SIGRTMIN is 34 (Docker's
// signal.SignalMap uses the same numbers); SIGRTMAX is 64 (_NSIG-1).
const (
	sigRTMin = 34
	sigRTMax = 64
)

// parseSignal reads a stop signal the way Docker's signal.ParseSignal does:
// a number ("15"), or a name with or without the SIG prefix in any case
// ("SIGTERM", "term"), including "RTMIN+n" and "RTMAX-n".
func parseSignal(s string) (int32, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > sigRTMax {
			return 0, fmt.Errorf("signal %d out of range 1..%d", n, sigRTMax)
		}
		return int32(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	rt := func(base int, off string, sign int) (int32, error) {
		n := base
		if off != "" {
			k, err := strconv.Atoi(off)
			if err != nil || k < 0 {
				return 0, fmt.Errorf("unknown signal %q", s)
			}
			n += sign * k
		}
		if n < sigRTMin || n > sigRTMax {
			return 0, fmt.Errorf("signal %q out of range SIGRTMIN..SIGRTMAX", s)
		}
		return int32(n), nil
	}
	switch {
	case name == "RTMIN":
		return sigRTMin, nil
	case name == "RTMAX":
		return sigRTMax, nil
	case strings.HasPrefix(name, "RTMIN+"):
		return rt(sigRTMin, name[len("RTMIN+"):], 1)
	case strings.HasPrefix(name, "RTMAX-"):
		return rt(sigRTMax, name[len("RTMAX-"):], -1)
	}
	if n := unix.SignalNum("SIG" + name); n != 0 {
		return int32(n), nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}
