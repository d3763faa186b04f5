package filter

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Load installs f on the calling thread only (no SECCOMP_FILTER_FLAG_TSYNC).
// The caller must have locked its goroutine to the OS thread and either hold
// CAP_SYS_ADMIN or have set no_new_privs on this thread
// (Documentation/userspace-api/seccomp_filter.rst); it is meant to be
// followed by execve(2) from the same thread, which keeps this thread's
// filter and discards the others.
func (f *Filter) Load() error {
	if f == nil || len(f.Insns) == 0 {
		return fmt.Errorf("seccomp: load: empty program")
	}
	prog := unix.SockFprog{Len: uint16(len(f.Insns)), Filter: &f.Insns[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(f.Flags), uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(f)
	if errno != 0 {
		return fmt.Errorf("seccomp: load filter (%d instructions): %w", len(f.Insns), errno)
	}
	return nil
}
