package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/proxy"
	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/test/testenv"
)

// BenchmarkServiceRules measures issue 12's rule programming: 100
// Services of 10 endpoints each written into a fresh nftables table
// (the first sync), then the time of one change (an endpoint of one
// Service replaced, one transaction), p50 and p99 over 50 changes. It runs
// the real nft in a network namespace of its own (the thread's, which the
// nft processes inherit), so the host's rules are never touched.
func BenchmarkServiceRules(b *testing.B) {
	testenv.RequireRoot(b)
	runtime.LockOSThread() // the thread stays in the private netns, then is discarded
	orig, err := netns.Get()
	if err != nil {
		b.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // and entered
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			b.Error(err)
		}
	}()

	st, err := store.Open(filepath.Join(b.TempDir(), "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const services, perService = 100, 10
	for i := 0; i < services; i++ {
		name := fmt.Sprintf("svc%03d", i)
		svc := &corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: fmt.Sprintf("10.86.1.%d", i+1),
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: int32(30000 + i)}}}}
		if err := st.Create("services", svc); err != nil {
			b.Fatal(err)
		}
		if err := st.Create("endpointslices", benchSlice(name, i, 0)); err != nil {
			b.Fatal(err)
		}
	}
	p, err := proxy.New(proxy.Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	if err := p.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	first := time.Since(start)
	var changes []time.Duration
	for round := 1; round <= 50; round++ {
		i := round % services
		name := fmt.Sprintf("svc%03d", i)
		if _, err := st.Modify("endpointslices", "bench", name, &discoveryv1.EndpointSlice{}, func(cur store.Object) (store.Decision, error) {
			es := cur.(*discoveryv1.EndpointSlice)
			es.Endpoints = benchSlice(name, i, round).Endpoints
			return store.Decision{}, nil
		}); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := p.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		changes = append(changes, time.Since(start))
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i] < changes[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(first), "first-sync-ms")
	b.ReportMetric(ms(changes[len(changes)/2]), "change-p50-ms")
	b.ReportMetric(ms(changes[len(changes)*99/100]), "change-p99-ms")
	b.Logf("%d Services × %d endpoints: first sync %v; one change p50 %v p99 %v (goal ≤ 50 ms)", services, perService, first,
		changes[len(changes)/2], changes[len(changes)*99/100])
}

// benchSlice is Service i's slice of 10 ready endpoints; round shifts one
// address (a pod replaced).
func benchSlice(name string, i, round int) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4}
	pname, num, proto := "http", int32(8080), corev1.ProtocolTCP
	es.Ports = []discoveryv1.EndpointPort{{Name: &pname, Port: &num, Protocol: &proto}}
	ready := true
	for j := 0; j < 10; j++ {
		host := j + 1
		if j == 0 {
			host = 100 + round%100
		}
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.85.%d.%d", i, host)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return es
}
