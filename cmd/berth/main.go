// Command berth is kubectl, embedded as k3s embeds it, talking to berthd's
// Unix socket (api/client decides where requests go and carries the
// streaming verbs), plus berth's own verbs where kubectl has none.
//
// The kubectl version it reports is stamped at link time (see the Makefile's
// build line): -X k8s.io/component-base/version.gitVersion and friends.
package main

import (
	goflag "flag"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/logs/klogflags"
	"k8s.io/klog/v2"
	kubectl "k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
	"k8s.io/kubectl/pkg/util/templates"

	"github.com/berth-dev/berth/api/client"
)

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	// kubectl's own defaults (cmd.defaultConfigFlags), so that flags and
	// discovery behave as the stock binary's.
	kube := genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().
		WithDiscoveryBurst(300).WithDiscoveryQPS(50.0).WithWarningPrinter(streams)
	// Before kubectl wraps WrapConfigFn with its header round tripper, so
	// that both apply.
	flags := client.NewFlags(kube)

	// No PluginHandler: a kubectl-* plugin on PATH would run against the
	// user's kubeconfig, not this node, under berth's name.
	root := kubectl.NewDefaultKubectlCommandWithArgs(kubectl.KubectlOptions{
		Arguments: os.Args, ConfigFlags: kube, IOStreams: streams,
	})
	root.Use = "berth"
	root.Short = "berth controls a berth node: kubectl over berthd's socket"
	root.Long = templates.LongDesc(`
      berth controls a berth node. It is kubectl (every verb, flag and output
      format) talking to berthd's socket (--socket, $BERTH_SOCKET, default
      /run/berth/berth.sock) without a kubeconfig; with --kubeconfig or
      --server it is plain kubectl.`)
	flags.AddFlags(root.PersistentFlags())

	pre := root.PersistentPreRunE
	root.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		if err := flags.Resolve(c.Flags(), isUnder(c, "config")); err != nil {
			return err
		}
		return pre(c, args)
	}

	// Plugins are off (above), so kubectl's plugin listing has nothing to
	// offer.
	if c, _, err := root.Find([]string{"plugin"}); err == nil && c != root {
		root.RemoveCommand(c)
	}

	// berth's own verbs, where kubectl has none.
	own := []*cobra.Command{newImageCmd(flags, streams), newPlanCmd(flags, kube, streams), newKubeconfigCmd(flags, streams)}
	root.AddCommand(own...)
	groupHelp(root, own)
	root.AddCommand(manCmd(root, "1"))

	// kubectl's commands end on an error with util.CheckErr, which exits:
	// clean up first (the streaming proxy, a temporary cache), then exit as
	// kubectl does.
	util.BehaviorOnFatal(func(msg string, code int) {
		flags.Close()
		klog.Flush()
		if msg != "" && !strings.HasSuffix(msg, "\n") {
			msg += "\n"
		}
		fmt.Fprint(os.Stderr, msg)
		os.Exit(code)
	})
	err := run(root)
	flags.Close()
	if err != nil {
		util.CheckErr(err)
	}
}

// manCmd writes the man pages of root and every command under it into a
// directory: the packages ship them (hack/package.sh). Hidden, so neither
// help nor completion offers it; the pages' date is SOURCE_DATE_EPOCH's
// (cobra's doc reads it), so a build is reproducible.
func manCmd(root *cobra.Command, section string) *cobra.Command {
	return &cobra.Command{Use: "__man DIR", Hidden: true, Args: cobra.ExactArgs(1), RunE: func(_ *cobra.Command, args []string) error {
		return doc.GenManTree(root, &doc.GenManHeader{Section: section, Source: "berth"}, args[0])
	}}
}

// run is what kubectl's main gets from k8s.io/component-base/cli
// (RunNoErrOutput), without the logging-configuration and metrics packages
// that come with it (prometheus, not in go.mod): klog's -v and --vmodule,
// kubectl's flag-name normalisation, errors returned for util.CheckErr to
// print in kubectl's words.
func run(root *cobra.Command) error {
	defer klog.Flush()
	root.SetGlobalNormalizationFunc(cliflag.WordSepNormalizeFunc)
	root.SilenceErrors = true
	var gofs goflag.FlagSet
	klogflags.Init(&gofs)
	root.PersistentFlags().AddGoFlagSet(&gofs)
	return root.Execute()
}

// isUnder reports whether c is the root's subcommand name or below it.
func isUnder(c *cobra.Command, name string) bool {
	for ; c != nil && c.HasParent(); c = c.Parent() {
		if c.Parent().Parent() == nil {
			return c.Name() == name
		}
	}
	return false
}
