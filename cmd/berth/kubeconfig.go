package main

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"

	"github.com/berth-dev/berth/api/client"
)

func newKubeconfigCmd(flags *client.Flags, streams genericiooptions.IOStreams) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "kubeconfig [-o FILE]",
		Short: "Write a kubeconfig for stock kubectl, k9s and Ansible",
		Long: templates.LongDesc(`
			Write a kubeconfig for berthd's loopback HTTPS listener with a client
			certificate of your own, for tools that cannot use the socket: the
			stock kubectl, k9s, Ansible's kubernetes.core. berthd must have the
			listener turned on (berthd.yaml). The file is written with mode 0600,
			atomically; it holds a private key, so it goes to standard output only
			when asked for with -o -.`),
		Example: templates.Examples(`
			berth kubeconfig
			KUBECONFIG=~/.kube/berth.yaml kubectl get pods
			berth kubeconfig -o /etc/ansible/berth.kubeconfig`),
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !flags.SocketMode() {
				return fmt.Errorf("berth kubeconfig asks berthd on its socket: not with --kubeconfig or --server: %w", errdefs.ErrInvalidArgument)
			}
			data, err := client.FetchKubeconfig(c.Context(), client.NewHTTPClient(flags.Socket))
			if err != nil {
				return err
			}
			if out == "-" {
				_, err := streams.Out.Write(data)
				return err
			}
			path := out
			if path == "" {
				if path, err = client.DefaultKubeconfigFile(); err != nil {
					return err
				}
			}
			if err := client.WriteFileAtomic(path, data); err != nil {
				return err
			}
			fmt.Fprintf(streams.Out, "kubeconfig written to %s\n", path)
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "the file to write (default ~/.kube/berth.yaml); - for standard output")
	return c
}
