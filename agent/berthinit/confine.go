package berthinit

import (
	"errors"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/agent/seccomp/filter"
)

// takeCredentials gives the calling thread the workload's process
// credentials, in runc's order (libcontainer/init_linux.go
// finalizeNamespace and standard_init_linux.go): umask, chdir while still
// root, bounding set, seccomp if it cannot wait for no_new_privs, user,
// capabilities, no_new_privs. What stays is resolving the program and
// loadLateSeccomp, as late as possible before execve. Stage-2 (the
// workload) and exec (a command in its container) share it, so that an
// exec is exactly as confined as the workload.
func takeCredentials(proc *specs.Process, caps capSets, scf *filter.Filter) error {
	umask := 0o022
	if proc.User.Umask != nil {
		umask = int(*proc.User.Umask)
	}
	unix.Umask(umask)
	cwd := proc.Cwd
	if cwd == "" {
		cwd = "/"
	}
	chdirLater := false
	if err := unix.Chdir(cwd); err != nil {
		if !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("chdir to process.cwd %q: %w", cwd, err)
		}
		chdirLater = true // may be readable only by the workload's user
	}
	if err := caps.dropBounding(); err != nil {
		return err
	}
	if scf != nil && !proc.NoNewPrivileges {
		// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which
		// the workload usually does not keep: load it now.
		if err := scf.Load(); err != nil {
			return err
		}
	}
	if err := switchUser(proc.User); err != nil {
		return err
	}
	if chdirLater {
		if err := unix.Chdir(cwd); err != nil {
			return fmt.Errorf("chdir to process.cwd %q as uid %d: %w", cwd, proc.User.UID, err)
		}
	}
	if err := caps.apply(); err != nil {
		return err
	}
	if proc.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	return nil
}

// loadLateSeccomp loads the filter takeCredentials left for last (with
// no_new_privs it needs no privilege, so it waits until just before
// execve and sees the fewest of berth-init's own syscalls).
func loadLateSeccomp(proc *specs.Process, scf *filter.Filter) error {
	if scf != nil && proc.NoNewPrivileges {
		return scf.Load()
	}
	return nil
}
