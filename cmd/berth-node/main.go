// Command berth-node boots a disposable systemd node (test/node), runs a
// command inside it with berth's binaries on PATH, and tears it down:
//
//	berth-node [--bin DIR] run -- CMD [ARG...]
//	berth-node [--bin DIR] shell
//
// It is how tests get a real systemd PID 1, and how people try berth without
// touching their host.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/test/node"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("berth-node", flag.ContinueOnError)
	bin := fs.String("bin", "", "host directory shown at "+node.BinMount+" inside the node (default: this binary's directory)")
	name := fs.String("name", "berth", "node name prefix (hostname)")
	packages := fs.Bool("packages", false, "a writable /usr and package databases, so dpkg, apt and rpm install into the node (to try berth's .deb)")
	var binds bindList
	fs.Var(&binds, "bind", "SRC[:DST] host path to show inside the node (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: berth-node [flags] run -- CMD [ARG...]\n       berth-node [flags] shell\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	args := fs.Args()
	if len(args) == 0 {
		fs.Usage()
		return 2
	}
	var cmdArgs []string
	switch args[0] {
	case "run":
		cmdArgs = args[1:]
		if len(cmdArgs) > 0 && cmdArgs[0] == "--" {
			cmdArgs = cmdArgs[1:]
		}
		if len(cmdArgs) == 0 {
			fs.Usage()
			return 2
		}
	case "shell":
		cmdArgs = []string{"/bin/bash", "-l"}
	default:
		fs.Usage()
		return 2
	}
	if *bin == "" {
		if self, err := os.Executable(); err == nil {
			*bin = filepath.Dir(self)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	n, err := node.Start(ctx, node.Options{Name: *name, BinDir: *bin, Binds: binds, Packages: *packages})
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-node:", err)
		return 1
	}
	defer func() {
		if err := n.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "berth-node: teardown:", err)
		}
	}()
	fmt.Fprintf(os.Stderr, "berth-node: node %s is up (systemd PID %d on the host)\n", n.Name, n.PID())
	cmd := n.Command(ctx, cmdArgs...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "berth-node:", err)
		return 1
	}
	return 0
}

type bindList []node.Bind

func (b *bindList) String() string { return fmt.Sprint(*b) }

func (b *bindList) Set(v string) error {
	src, dst, ok := strings.Cut(v, ":")
	if !ok {
		dst = src
	}
	if !filepath.IsAbs(src) || !filepath.IsAbs(dst) {
		return fmt.Errorf("--bind %s: paths must be absolute", v)
	}
	*b = append(*b, node.Bind{Source: src, Target: dst})
	return nil
}
