package network

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The kubelet's headers (pkg/kubelet/kubelet_pods.go): tools and people
// recognise a managed file by them.
const (
	managedHostsHeader                = "# Kubernetes-managed hosts file.\n"
	managedHostsHeaderWithHostNetwork = "# Kubernetes-managed hosts file (host network).\n"
)

// HostsFile is the pod's /etc/hosts as the kubelet writes it
// (ensureHostsFile): for a pod with its own network, localhost, the IPv6
// names and one line per pod address naming the pod (its FQDN first when
// it has a subdomain); for a host-network pod, the node's file
// (nodeHosts). Both end with the pod's hostAliases.
func HostsFile(pod *corev1.Pod, podIPs []string, hostname, fqdn, nodeHosts string) ([]byte, error) {
	var b bytes.Buffer
	if pod.Spec.HostNetwork {
		content, err := os.ReadFile(nodeHosts)
		if err != nil {
			return nil, fmt.Errorf("node hosts file: %w", err)
		}
		b.WriteString(managedHostsHeaderWithHostNetwork)
		b.Write(content)
	} else {
		b.WriteString(managedHostsHeader)
		b.WriteString("127.0.0.1\tlocalhost\n")
		b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
		b.WriteString("fe00::0\tip6-localnet\n")
		b.WriteString("fe00::0\tip6-mcastprefix\n")
		b.WriteString("fe00::1\tip6-allnodes\n")
		b.WriteString("fe00::2\tip6-allrouters\n")
		for _, ip := range podIPs {
			if fqdn != "" {
				fmt.Fprintf(&b, "%s\t%s\t%s\n", ip, fqdn, hostname)
			} else {
				fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
			}
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.Bytes(), nil
}
