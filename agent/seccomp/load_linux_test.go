package seccomp

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/test/testenv"
	"golang.org/x/sys/unix"
)

// The kernel tests re-exec the test binary: a filter cannot be removed, so
// it must not be loaded into the test process itself. BERTH_SECCOMP_CHILD
// selects what the child does.
const childEnv = "BERTH_SECCOMP_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(seccompChild(mode))
	}
	os.Exit(m.Run())
}

// probe is a syscall whose outcome tells whether the filter acted: as root
// without a filter each gives a result other than EPERM.
type probe struct {
	name string
	call func() error
}

var probes = []probe{
	{"mount", func() error { return unix.Mount("none", "/nonexistent-berth-seccomp", "tmpfs", 0, "") }},
	// unshare(CLONE_NEWUSER) in a multi-threaded process is EINVAL without a filter.
	{"unshare", func() error { return unix.Unshare(unix.CLONE_NEWUSER | unix.CLONE_NEWNS) }},
	{"keyctl", func() error {
		_, err := unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_SESSION_KEYRING, 0, 0, 0)
		return err
	}},
	{"init_module", func() error { return unix.InitModule(nil, "") }},
	{"finit_module", func() error { return unix.FinitModule(-1, "", 0) }},
	// A bad magic is EINVAL for a caller with CAP_SYS_BOOT, so this can
	// never reboot the machine, filter or not.
	{"reboot", func() error {
		_, _, e := unix.Syscall6(unix.SYS_REBOOT, 0, 0, 0, 0, 0, 0)
		if e != 0 {
			return e
		}
		return nil
	}},
	{"getpid", func() error {
		if unix.Getpid() <= 0 {
			return errors.New("bad pid")
		}
		return nil
	}},
	{"open+write", func() error {
		fd, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		_, err = unix.Write(fd, []byte("x"))
		return err
	}},
}

func seccompChild(mode string) int {
	runtime.LockOSThread() // never unlocked: filter and creds live on this thread
	prog, err := Compile(dockerDefault(childTB{}, dockerCaps))
	if err != nil {
		fmt.Println("compile:", err)
		return 2
	}
	switch mode {
	case "probe", "control":
		if mode == "probe" {
			if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				fmt.Println("nnp:", err)
				return 2
			}
			if err := Load(prog); err != nil {
				fmt.Println("load:", err)
				return 2
			}
		}
		for _, p := range probes {
			err := p.call()
			var errno unix.Errno
			name := "ok"
			if errors.As(err, &errno) {
				name = unix.ErrnoName(errno)
			} else if err != nil {
				name = err.Error()
			}
			fmt.Printf("%s=%s\n", p.name, name)
		}
		return 0
	case "exec-unprivileged":
		// Raw, per-thread credential changes: only this thread execs.
		for _, c := range [][4]uintptr{
			{unix.SYS_SETGROUPS, 0, 0, 0},
			{unix.SYS_SETRESGID, 65534, 65534, 65534},
			{unix.SYS_SETRESUID, 65534, 65534, 65534},
		} {
			if _, _, e := unix.RawSyscall(c[0], c[1], c[2], c[3]); e != 0 {
				fmt.Println("drop privileges:", e)
				return 2
			}
		}
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fmt.Println("nnp:", err)
			return 2
		}
		if err := Load(prog); err != nil {
			fmt.Println("load as nobody:", err)
			return 2
		}
		argv := strings.Fields(os.Getenv("BERTH_SECCOMP_EXEC"))
		err := syscall.Exec(argv[0], argv, []string{"PATH=/usr/bin:/bin"})
		fmt.Println("exec:", err)
		return 2
	}
	return 2
}

// childTB lets dockerDefault run outside a test.
type childTB struct{ testing.TB }

func (childTB) Helper() {}
func (childTB) Fatalf(f string, a ...any) {
	fmt.Printf(f+"\n", a...)
	os.Exit(2)
}

func runChild(t *testing.T, mode string, extraEnv ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(extraEnv, childEnv+"="+mode)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func parseProbes(t *testing.T, out string) map[string]string {
	t.Helper()
	res := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			res[k] = v
		}
	}
	return res
}

func TestKernelDockerDefault(t *testing.T) {
	testenv.RequireRoot(t)

	// Control: without the filter, no probe says EPERM (so EPERM below is
	// the filter's doing, not a missing privilege).
	out, err := runChild(t, "control")
	if err != nil {
		t.Fatalf("control child: %v\n%s", err, out)
	}
	control := parseProbes(t, out)
	for _, p := range probes {
		if got := control[p.name]; got == "" || got == "EPERM" {
			t.Errorf("control %s = %q; the probe does not discriminate", p.name, got)
		}
	}

	out, err = runChild(t, "probe")
	if err != nil {
		t.Fatalf("probe child: %v\n%s", err, out)
	}
	got := parseProbes(t, out)
	want := map[string]string{
		"mount": "EPERM", "unshare": "EPERM", "keyctl": "EPERM", "init_module": "EPERM",
		"finit_module": "EPERM", "reboot": "EPERM", "getpid": "ok", "open+write": "ok",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("under Docker's default filter %s = %q, want %q", k, got[k], w)
		}
	}
}

func TestKernelUnprivilegedExec(t *testing.T) {
	testenv.RequireRoot(t)
	for _, bin := range []string{"/bin/true", "/bin/cat"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
	}
	out, err := runChild(t, "exec-unprivileged", "BERTH_SECCOMP_EXEC=/bin/true")
	if err != nil {
		t.Fatalf("/bin/true as nobody under the filter: %v\n%s", err, out)
	}
	// The filter and no_new_privs survive execve, and we really run as nobody.
	out, err = runChild(t, "exec-unprivileged", "BERTH_SECCOMP_EXEC=/bin/cat /proc/self/status")
	if err != nil {
		t.Fatalf("cat as nobody under the filter: %v\n%s", err, out)
	}
	for _, line := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "Uid:\t65534\t65534\t65534\t65534"} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("/proc/self/status of the exec'd process lacks %q:\n%s", line, out)
		}
	}
}
