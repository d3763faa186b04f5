package network

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func writeResolv(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func pod(mut func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u1"}}
	if mut != nil {
		mut(p)
	}
	return p
}

// The kubelet's GetPodDNS for each policy, with containerd's file layout.
func TestPodResolvConf(t *testing.T) {
	host := writeResolv(t, "# comment\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch corp.example. lab.example\noptions rotate timeout:2\n")
	two := "2"
	cases := []struct {
		name  string
		dns   DNS
		pod   *corev1.Pod
		want  string
		warns []string // reasons
	}{
		{"Default copies the node's", DNS{ResolvConf: host}, pod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }),
			"search corp.example lab.example\nnameserver 192.0.2.1\nnameserver 192.0.2.2\noptions rotate timeout:2\n", nil},
		{"ClusterFirst with cluster DNS", DNS{ResolvConf: host, ClusterDNS: []string{"10.86.0.10"}, ClusterDomain: "cluster.local"}, pod(nil),
			"search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\nnameserver 10.86.0.10\noptions ndots:5\n", nil},
		{"ClusterFirst without cluster DNS falls back to Default", DNS{ResolvConf: host, ClusterDomain: "cluster.local"}, pod(nil),
			"search corp.example lab.example\nnameserver 192.0.2.1\nnameserver 192.0.2.2\noptions rotate timeout:2\n", []string{"MissingClusterDNS", "MissingClusterDNS"}},
		{"ClusterFirst on the host network is Default", DNS{ResolvConf: host, ClusterDNS: []string{"10.86.0.10"}, ClusterDomain: "cluster.local"},
			pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			"search corp.example lab.example\nnameserver 192.0.2.1\nnameserver 192.0.2.2\noptions rotate timeout:2\n", nil},
		{"ClusterFirstWithHostNet", DNS{ResolvConf: host, ClusterDNS: []string{"10.86.0.10"}, ClusterDomain: "cluster.local"},
			pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true; p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet }),
			"search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\nnameserver 10.86.0.10\noptions ndots:5\n", nil},
		{"None takes only dnsConfig", DNS{ResolvConf: host}, pod(func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSNone
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}, Searches: []string{"a.test"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "edns0"}}}
		}), "search a.test\nnameserver 1.1.1.1\noptions ndots:2 edns0\n", nil},
		{"dnsConfig merges, its options override", DNS{ResolvConf: host}, pod(func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSDefault
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.1", "192.0.2.3", "192.0.2.4"}, Searches: []string{"lab.example", "x.test"},
				Options: []corev1.PodDNSConfigOption{{Name: "timeout", Value: &two}, {Name: "ndots", Value: &two}}}
		}), "search corp.example lab.example x.test\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\noptions rotate timeout:2 ndots:2\n", []string{"DNSConfigForming"}},
		{"no node resolver: the kubelet's no-DNS", DNS{}, pod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }),
			"search .\nnameserver 127.0.0.1\n", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, warns, err := c.dns.PodResolvConf(c.pod)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
			var reasons []string
			for _, w := range warns {
				reasons = append(reasons, w.Reason)
			}
			if strings.Join(reasons, ",") != strings.Join(c.warns, ",") {
				t.Errorf("warnings %v, want %v", warns, c.warns)
			}
		})
	}
}

// The kubelet's warning texts, byte for byte.
func TestDNSWarningTexts(t *testing.T) {
	_, warns, err := DNS{ResolvConf: writeResolv(t, "nameserver 192.0.2.1\n")}.PodResolvConf(pod(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 2 || !warns[0].Node || warns[1].Node ||
		warns[1].Message != `pod: "web_shop(u1)". kubelet does not have ClusterDNS IP configured and cannot create Pod using "ClusterFirst" policy. Falling back to "Default" policy.` {
		t.Errorf("warnings %+v", warns)
	}
	long := make([]string, 40)
	for i := range long {
		long[i] = "d" + strings.Repeat("x", i) + ".test"
	}
	_, warns, _ = DNS{}.PodResolvConf(pod(func(p *corev1.Pod) {
		p.Spec.DNSPolicy = corev1.DNSNone
		p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: long}
	}))
	if len(warns) != 1 || !strings.HasPrefix(warns[0].Message, "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: d.test dx.test") {
		t.Errorf("search limit warning %+v", warns)
	}
	if n := strings.Count(warns[0].Message, ".test"); n != 32 {
		t.Errorf("%d search domains kept, want 32", n)
	}
}

// HostResolvConf swaps systemd-resolved's stub for its upstream list only
// when the stub is all the file names.
func TestHostResolvConf(t *testing.T) {
	if got := HostResolvConf(writeResolv(t, "nameserver 192.0.2.1\n")); !strings.HasSuffix(got, "resolv.conf") || strings.HasPrefix(got, "/run/systemd") {
		t.Errorf("a plain resolv.conf became %s", got)
	}
	stub := writeResolv(t, "nameserver 127.0.0.53\noptions edns0 trust-ad\n")
	got := HostResolvConf(stub)
	if _, err := os.Stat(resolvedUpstream); err == nil {
		if got != resolvedUpstream {
			t.Errorf("stub: %s, want %s", got, resolvedUpstream)
		}
	} else if got != stub {
		t.Errorf("stub without resolved's file: %s, want %s", got, stub)
	}
}

// /etc/hosts as the kubelet writes it, for a pod network and the host's.
func TestHostsFile(t *testing.T) {
	p := pod(func(p *corev1.Pod) {
		p.Spec.HostAliases = []corev1.HostAlias{{IP: "192.0.2.7", Hostnames: []string{"db", "db.internal"}}}
	})
	got, err := HostsFile(p, []string{"10.85.0.5"}, "web", "web.sub.shop.svc.cluster.local", "")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n" +
		"10.85.0.5\tweb.sub.shop.svc.cluster.local\tweb\n\n# Entries added by HostAliases.\n192.0.2.7\tdb\tdb.internal\n"
	if string(got) != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	node := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(node, []byte("127.0.0.1 localhost\n192.0.2.10 node1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Spec.HostNetwork = true
	got, err = HostsFile(p, nil, "node1", "", node)
	if err != nil {
		t.Fatal(err)
	}
	want = "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.0.2.10 node1\n\n# Entries added by HostAliases.\n192.0.2.7\tdb\tdb.internal\n"
	if string(got) != want {
		t.Errorf("host network: got\n%q\nwant\n%q", got, want)
	}
}
