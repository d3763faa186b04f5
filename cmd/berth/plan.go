package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"

	"github.com/berth-dev/berth/api/client"
)

func newPlanCmd(flags *client.Flags, kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	var files []string
	c := &cobra.Command{
		Use:   "plan -f FILENAME",
		Short: "Show the systemd units and OCI specs a manifest's pods would get",
		Long: templates.LongDesc(`
			Show, for every Pod in the files, the transient unit of each container
			as berthd would start it now (D-Bus property names and raw values, in
			unit-file form) and its OCI runtime spec. The pod is defaulted and
			validated as a create would be; nothing is stored or started. The
			images must be in the node's store (berth image pull): a unit depends
			on the image's config and its /etc/passwd and /etc/group.`),
		Example: templates.Examples(`
			berth plan -f pod.yaml
			cat pods.yaml | berth plan -f -`),
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("must specify -f: %w", errdefs.ErrInvalidArgument)
			}
			b, err := berthClient(flags, "plan")
			if err != nil {
				return err
			}
			ns := "default"
			if kube.Namespace != nil && *kube.Namespace != "" {
				ns = *kube.Namespace
			}
			first := true
			for _, name := range files {
				pods, err := readPods(name, streams.In)
				if err != nil {
					return err
				}
				for _, p := range pods {
					if p.GetNamespace() == "" {
						p.SetNamespace(ns)
					}
					body, err := json.Marshal(p.Object)
					if err != nil {
						return err
					}
					text, err := b.Plan(c.Context(), body)
					if err != nil {
						return err
					}
					if !first {
						fmt.Fprintln(streams.Out)
					}
					first = false
					fmt.Fprintf(streams.Out, "# pod %s/%s (%s)\n%s", p.GetNamespace(), p.GetName(), name, text)
				}
			}
			return nil
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "manifest file (YAML or JSON, several documents and v1 Lists too); - for standard input")
	return c
}

// readPods reads the Pods of a manifest. Namespaces, ConfigMaps and Secrets
// are skipped (they have no units); other kinds are refused by name: only
// pods have units of their own in this version.
func readPods(name string, stdin io.Reader) ([]*unstructured.Unstructured, error) {
	var r io.Reader = stdin
	if name != "-" {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var out []*unstructured.Unstructured
	for doc := 1; ; doc++ {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("error parsing %s: %w", name, errdefs.ErrInvalidArgument.WithMessage(err.Error()))
		}
		if obj == nil {
			continue // an empty document
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.IsList() {
			err := u.EachListItem(func(o runtime.Object) error {
				item, ok := o.(*unstructured.Unstructured)
				if !ok {
					return fmt.Errorf("%s: a list item is not an object", name)
				}
				return addPod(&out, item, name)
			})
			if err != nil {
				return nil, err
			}
			continue
		}
		if err := addPod(&out, u, name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// noUnits are the kinds a manifest holds beside its pods that have no units
// of their own: skipped, so that an application's manifest plans as it is.
var noUnits = map[string]bool{"Namespace": true, "ConfigMap": true, "Secret": true}

func addPod(out *[]*unstructured.Unstructured, u *unstructured.Unstructured, file string) error {
	if u.GetAPIVersion() == "v1" && noUnits[u.GetKind()] {
		return nil
	}
	if u.GetAPIVersion() != "v1" || u.GetKind() != "Pod" {
		return fmt.Errorf("%s: %s %q (%s): berth plan shows the units of Pods only: %w", file, u.GetKind(), u.GetName(), u.GetAPIVersion(), errdefs.ErrInvalidArgument)
	}
	*out = append(*out, u)
	return nil
}
