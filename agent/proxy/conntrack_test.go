package proxy

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"

	"github.com/berth-dev/berth/agent/store"
)

// fakeConntrack is a table of UDP flows: DeleteUDP removes those the
// predicate matches, as the kernel's table would.
type fakeConntrack struct {
	flows  [][2]Tuple
	clears int
}

func (f *fakeConntrack) DeleteUDP(stale func(orig, reply Tuple) bool) (uint, error) {
	f.clears++
	n := len(f.flows)
	f.flows = slices.DeleteFunc(f.flows, func(fl [2]Tuple) bool { return stale(fl[0], fl[1]) })
	return uint(n - len(f.flows)), nil
}

// flow is a client's UDP flow to dst, answered by (translated to) reply.
func flow(client, dst, reply string) [2]Tuple {
	c, d, r := netip.MustParseAddrPort(client), netip.MustParseAddrPort(dst), netip.MustParseAddrPort(reply)
	return [2]Tuple{{Src: c, Dst: d}, {Src: r, Dst: c}}
}

func udpPort(name string, n int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(n), Protocol: ptr(corev1.ProtocolUDP)}
}

// UDP flows the rules no longer allow are cleared after a sync, as
// kube-proxy clears them: a removed endpoint's (to the cluster IP and to
// the node port), one that began while the Service had no endpoint
// (never translated), a deleted Service's; a remaining endpoint's, TCP
// Services', and the node's own untranslated flows to the range (the
// cluster DNS) stay. A sync that changes nothing of the UDP Services
// does not read the table again.
func TestClearStaleUDP(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ct := &fakeConntrack{}
	p, err := New(Config{Store: st, NFT: knftables.NewFake(knftables.IPv4Family, Table), Conntrack: ct, ServiceCIDR: netip.MustParsePrefix("10.86.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	sync := func() { t.Helper(); must(p.Sync(context.Background())) }
	dns := svc("dns", "10.86.0.53", corev1.ServiceTypeNodePort, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053})
	must(st.Create(services, dns))
	must(st.Create(services, svc("web", "10.86.0.80", corev1.ServiceTypeClusterIP, corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP})))
	must(st.Create(endpointSlices, slice("dns", "dns-1", []discoveryv1.EndpointPort{udpPort("dns", 5353)}, ep("10.85.0.2", true, true, false), ep("10.85.0.3", true, true, false))))
	sync()

	early := flow("10.85.0.9:40001", "10.86.0.53:53", "10.86.0.53:53") // before any endpoint: untranslated
	keepA := flow("10.85.0.9:40002", "10.86.0.53:53", "10.85.0.2:5353")
	toB := flow("10.85.0.9:40003", "10.86.0.53:53", "10.85.0.3:5353")
	nodeToB := flow("192.168.1.5:40004", "10.85.0.1:30053", "10.85.0.3:5353")
	clusterDNS := flow("10.85.0.9:40005", "10.86.0.10:53", "10.86.0.10:53")
	elsewhere := flow("10.85.0.9:40006", "192.0.2.1:53", "192.0.2.1:53")
	ct.flows = [][2]Tuple{early, keepA, toB, nodeToB, clusterDNS, elsewhere}

	// 10.85.0.3 leaves the Service.
	if _, err := st.Modify(endpointSlices, "ns", "dns-1", &discoveryv1.EndpointSlice{}, func(cur store.Object) (store.Decision, error) {
		es := cur.(*discoveryv1.EndpointSlice)
		es.Endpoints = es.Endpoints[:1]
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	sync()
	if want := [][2]Tuple{keepA, clusterDNS, elsewhere}; !slices.Equal(ct.flows, want) {
		t.Errorf("after 10.85.0.3 left:\n%v\nwant\n%v", ct.flows, want)
	}

	// Nothing of the UDP Services changes: the table is not read.
	clears := ct.clears
	must(st.Create(endpointSlices, slice("web", "web-1", []discoveryv1.EndpointPort{port("http", 8080)}, ep("10.85.0.7", true, true, false))))
	sync()
	if ct.clears != clears {
		t.Errorf("a TCP change read the conntrack table (%d reads, was %d)", ct.clears, clears)
	}

	// The Service deleted: its translated flows go, to the cluster IP
	// and to its former node port.
	ct.flows = append(ct.flows, flow("192.168.1.5:40007", "10.85.0.1:30053", "10.85.0.2:5353"))
	if _, err := st.Delete(services, "ns", "dns", "", ""); err != nil {
		t.Fatal(err)
	}
	sync()
	if want := [][2]Tuple{clusterDNS, elsewhere}; !slices.Equal(ct.flows, want) {
		t.Errorf("after the Service's deletion:\n%v\nwant\n%v", ct.flows, want)
	}
}

// Without UDP Services the conntrack table is read once (at start, for
// flows that outlived a berthd that was down), not at every resync.
func TestNoUDPNoConntrack(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ct := &fakeConntrack{}
	p, err := New(Config{Store: st, NFT: knftables.NewFake(knftables.IPv4Family, Table), Conntrack: ct, Resync: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Create(services, svc("web", "10.86.0.80", corev1.ServiceTypeClusterIP, corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := p.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if ct.clears != 1 {
		t.Errorf("%d reads of the conntrack table in 3 resyncs without a UDP Service, want 1", ct.clears)
	}
}
