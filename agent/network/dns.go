package network

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DNS is the node's DNS settings for pods: the kubelet's --cluster-dns,
// --cluster-domain and --resolv-conf.
type DNS struct {
	// ClusterDNS are the cluster DNS servers pods with dnsPolicy
	// ClusterFirst use (network.clusterDNS, served by agent/dns). Empty:
	// such pods fall back to Default with the kubelet's MissingClusterDNS
	// warning.
	ClusterDNS []string
	// ClusterDomain is the cluster's DNS domain ("cluster.local").
	ClusterDomain string
	// ResolvConf is the node's resolver configuration pods with dnsPolicy
	// Default start from; "" gives them the kubelet's "no DNS" (nameserver
	// 127.0.0.1, search ".").
	ResolvConf string
}

// Warning is an event the kubelet records while forming a pod's DNS
// configuration; Node marks the one recorded against the Node.
type Warning struct {
	Node            bool
	Reason, Message string
}

// The apiserver's limits (pkg/apis/core/validation, with ExpandedDNSConfig,
// GA since 1.28) that the kubelet also applies to what it composes.
const (
	maxNameservers     = 3
	maxSearchPaths     = 32
	maxSearchListChars = 2048
	maxResolvConfBytes = 10 << 20
)

// systemdResolvedStub is the address of systemd-resolved's stub resolver.
// It listens on the node's loopback, which a pod's network namespace does
// not share; resolved lists the real upstream servers in resolvedUpstream
// (kubeadm makes the same substitution for the kubelet's --resolv-conf).
const (
	systemdResolvedStub = "127.0.0.53"
	resolvedUpstream    = "/run/systemd/resolve/resolv.conf"
)

// HostResolvConf picks the node's resolver configuration for pods: path,
// unless its only nameserver is systemd-resolved's stub and resolved's list
// of upstream servers exists.
func HostResolvConf(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return path
	}
	ns, _, _ := parseResolvConf(b)
	if len(ns) == 1 && ns[0] == systemdResolvedStub {
		if _, err := os.Stat(resolvedUpstream); err == nil {
			return resolvedUpstream
		}
	}
	return path
}

// PodResolvConf is the pod's /etc/resolv.conf as the kubelet composes it
// (pkg/kubelet/network/dns GetPodDNS) and containerd writes it (search,
// nameservers, options), with the warnings the kubelet records.
func (d DNS) PodResolvConf(pod *corev1.Pod) ([]byte, []Warning, error) {
	var servers, searches, options []string
	if d.ResolvConf != "" {
		b, err := os.ReadFile(d.ResolvConf)
		if err != nil {
			return nil, nil, fmt.Errorf("node resolver configuration: %w", err)
		}
		if len(b) > maxResolvConfBytes {
			return nil, nil, fmt.Errorf("node resolver configuration %s: larger than %d bytes", d.ResolvConf, maxResolvConfBytes)
		}
		servers, searches, options = parseResolvConf(b)
	}
	var warns []Warning
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = corev1.DNSDefault // the kubelet's fallback for host-network pods
	}
	switch policy {
	case corev1.DNSNone:
		servers, searches, options = nil, nil, nil
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		if len(d.ClusterDNS) > 0 {
			servers = append([]string(nil), d.ClusterDNS...)
			if d.ClusterDomain != "" {
				searches = omitDuplicates(append([]string{
					pod.Namespace + ".svc." + d.ClusterDomain, "svc." + d.ClusterDomain, d.ClusterDomain,
				}, searches...))
			}
			options = []string{"ndots:5"}
			break
		}
		msg := fmt.Sprintf("kubelet does not have ClusterDNS IP configured and cannot create Pod using %q policy. Falling back to %q policy.", corev1.DNSClusterFirst, corev1.DNSDefault)
		warns = append(warns,
			Warning{Node: true, Reason: "MissingClusterDNS", Message: msg},
			Warning{Reason: "MissingClusterDNS", Message: fmt.Sprintf("pod: %q. %s", fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID), msg)})
		fallthrough
	case corev1.DNSDefault:
		if d.ResolvConf == "" {
			servers, searches = []string{"127.0.0.1"}, []string{"."}
		}
	default:
		return nil, nil, fmt.Errorf("invalid DNSPolicy=%v", policy)
	}
	if c := pod.Spec.DNSConfig; c != nil {
		servers = omitDuplicates(append(servers, c.Nameservers...))
		searches = omitDuplicates(append(searches, c.Searches...))
		options = mergeOptions(options, c.Options)
	}
	if len(servers) > maxNameservers {
		servers = servers[:maxNameservers]
		warns = append(warns, Warning{Reason: "DNSConfigForming", Message: "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: " + strings.Join(servers, " ")})
	}
	var exceeded bool
	searches, exceeded = fitSearches(searches)
	if exceeded {
		warns = append(warns, Warning{Reason: "DNSConfigForming", Message: "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: " + strings.Join(searches, " ")})
	}
	var b bytes.Buffer
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return b.Bytes(), warns, nil
}

// parseResolvConf reads nameservers (they accumulate), the search list
// and options (the last line of each wins), as the kubelet does; a search
// domain's trailing dot is dropped so that one domain counts once.
func parseResolvConf(b []byte) (servers, searches, options []string) {
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) >= 2 {
				servers = append(servers, f[1])
			}
		case "search":
			searches = []string{}
			for _, s := range f[1:] {
				searches = append(searches, strings.TrimSuffix(s, "."))
			}
		case "options":
			options = f[1:]
		}
	}
	return servers, searches, options
}

func omitDuplicates(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			out = append(out, s)
			seen[s] = true
		}
	}
	return out
}

// mergeOptions overrides existing options by name with the pod's. The
// kubelet goes through a map (random order); berth keeps the existing
// order and appends new names, so that a pod's file is stable.
func mergeOptions(existing []string, pod []corev1.PodDNSConfigOption) []string {
	out := append([]string(nil), existing...)
	index := map[string]int{}
	for i, o := range out {
		name, _, _ := strings.Cut(o, ":")
		index[name] = i
	}
	for _, o := range pod {
		s := o.Name
		if o.Value != nil && *o.Value != "" {
			s += ":" + *o.Value
		}
		if i, ok := index[o.Name]; ok {
			out[i] = s
			continue
		}
		index[o.Name] = len(out)
		out = append(out, s)
	}
	return out
}

// fitSearches cuts the search list to the limits, as the kubelet does: at
// most 32 domains, none longer than a DNS subdomain, at most 2048
// characters, cutting from the end.
func fitSearches(s []string) ([]string, bool) {
	exceeded := false
	if len(s) > maxSearchPaths {
		s, exceeded = s[:maxSearchPaths], true
	}
	kept := s[:0:0]
	for _, d := range s {
		if len(d) > validation.DNS1123SubdomainMaxLength {
			exceeded = true
			continue
		}
		kept = append(kept, d)
	}
	s = kept
	if l := len(strings.Join(s, " ")); l > maxSearchListChars {
		cut, cutLen := 0, 0
		for i := len(s) - 1; i >= 0; i-- {
			cutLen += len(s[i]) + 1
			cut++
			if l-cutLen <= maxSearchListChars {
				break
			}
		}
		s, exceeded = s[:len(s)-cut], true
	}
	return s, exceeded
}
