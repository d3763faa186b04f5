package main

import (
	"github.com/spf13/cobra"
	"k8s.io/kubectl/pkg/util/templates"
)

// kubectlGroups is how kubectl's top-level help groups its verbs
// (k8s.io/kubectl/pkg/cmd.NewKubectlCommand). kubectl keeps its groups to
// itself, so berth names them again to add its own group beside them; a verb
// a later kubectl adds and this table lacks shows under "Other Commands", not
// nowhere.
var kubectlGroups = []struct {
	message string
	names   []string
}{
	{"Basic Commands (Beginner):", []string{"create", "expose", "run", "set"}},
	{"Basic Commands (Intermediate):", []string{"explain", "get", "edit", "delete"}},
	{"Deploy Commands:", []string{"rollout", "scale", "autoscale"}},
	{"Cluster Management Commands:", []string{"certificate", "cluster-info", "top", "cordon", "uncordon", "drain", "taint"}},
	{"Troubleshooting and Debugging Commands:", []string{"describe", "logs", "attach", "exec", "port-forward", "proxy", "cp", "auth", "debug", "events"}},
	{"Advanced Commands:", []string{"diff", "apply", "patch", "replace", "wait", "kustomize"}},
	{"Settings Commands:", []string{"label", "annotate", "completion"}},
}

// groupHelp makes the top-level help list berth's verbs (and kubectl's
// version, which shows the server's too) first, then kubectl's groups.
func groupHelp(root *cobra.Command, own []*cobra.Command) {
	byName := map[string]*cobra.Command{}
	for _, c := range root.Commands() {
		byName[c.Name()] = c
	}
	berth := templates.CommandGroup{Message: "Berth Commands:", Commands: own}
	if v := byName["version"]; v != nil {
		berth.Commands = append(berth.Commands, v)
	}
	groups := templates.CommandGroups{berth}
	for _, g := range kubectlGroups {
		cg := templates.CommandGroup{Message: g.message}
		for _, n := range g.names {
			if c := byName[n]; c != nil {
				cg.Commands = append(cg.Commands, c)
			}
		}
		groups = append(groups, cg)
	}
	filters := []string{"options"}
	if a := byName["alpha"]; a != nil && !a.HasSubCommands() {
		filters = append(filters, "alpha")
	}
	templates.ActsAsRootCommand(root, filters, groups...)
}
