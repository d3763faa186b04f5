package proxy

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/berth-dev/berth/agent/store"
)

func ptr[T any](v T) *T { return &v }

func svc(name, ip string, typ corev1.ServiceType, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: ip, Type: typ, Ports: ports}}
}

func slice(svcName, name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: ports, Endpoints: eps}
}

func ep(ip string, ready, serving, terminating bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}}
}

func port(name string, n int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(n), Protocol: ptr(corev1.ProtocolTCP)}
}

// Which endpoints a service port forwards to: the ready ones; the
// terminating ones still serving when none is ready; none otherwise. The
// slice's port is found by the Service port's name; headless and
// ExternalName Services forward nothing.
func TestServicePorts(t *testing.T) {
	s := svc("web", "10.86.0.10", corev1.ServiceTypeNodePort,
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP, NodePort: 30080},
		corev1.ServicePort{Name: "admin", Port: 81, Protocol: corev1.ProtocolTCP})
	ps := servicePorts(s, []*discoveryv1.EndpointSlice{
		slice("web", "a", []discoveryv1.EndpointPort{port("http", 8080), port("admin", 9000)},
			ep("10.85.0.3", true, true, false), ep("10.85.0.2", false, true, true), ep("10.85.0.4", false, false, false)),
	})
	if len(ps) != 2 {
		t.Fatalf("%d ports", len(ps))
	}
	for _, sp := range ps {
		switch sp.portName {
		case "http":
			if len(sp.endpoints) != 1 || sp.endpoints[0] != (endpoint{"10.85.0.3", 8080}) || sp.nodePort != 30080 || sp.clusterIP != "10.86.0.10" {
				t.Errorf("http: %+v", sp)
			}
		case "admin":
			if len(sp.endpoints) != 1 || sp.endpoints[0].port != 9000 {
				t.Errorf("admin: %+v", sp)
			}
		}
	}
	// Only terminating ones left: they keep serving.
	ps = servicePorts(s, []*discoveryv1.EndpointSlice{slice("web", "a", []discoveryv1.EndpointPort{port("http", 8080)},
		ep("10.85.0.2", false, true, true), ep("10.85.0.5", false, false, true))})
	if len(ps) != 2 || len(ps[0].endpoints) != 1 || ps[0].endpoints[0].ip != "10.85.0.2" || len(ps[1].endpoints) != 0 {
		t.Errorf("terminating fallback: %+v %+v", ps[0], ps[1])
	}
	if ps := servicePorts(svc("hl", "None", corev1.ServiceTypeClusterIP, corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP}), nil); len(ps) != 0 {
		t.Errorf("headless: %+v", ps)
	}
	if ps := servicePorts(svc("ext", "", corev1.ServiceTypeExternalName), nil); len(ps) != 0 {
		t.Errorf("ExternalName: %+v", ps)
	}
}

// The table from the store: the service's cluster IP and node port to its
// chain, a chain per endpoint, a no-endpoint Service in the reject maps;
// a Service deleted takes its chains with it on the next sync.
func TestSyncTable(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fake := knftables.NewFake(knftables.IPv4Family, Table)
	p, err := New(Config{Store: st, NFT: fake})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	web := svc("web", "10.86.0.10", corev1.ServiceTypeNodePort, corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30080})
	web.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	must(st.Create(services, web))
	must(st.Create(services, svc("empty", "10.86.0.11", corev1.ServiceTypeClusterIP, corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP})))
	must(st.Create(endpointSlices, slice("web", "web-1", []discoveryv1.EndpointPort{port("http", 8080)}, ep("10.85.0.2", true, true, false), ep("10.85.0.3", true, true, false))))
	must(p.Sync(context.Background()))
	dump := fake.Dump()
	for _, want := range []string{
		"add element ip berth service-ips { 10.86.0.10 . tcp . 80 : goto svc-",
		"add element ip berth service-nodeports { tcp . 30080 : goto svc-",
		"add element ip berth no-endpoint-services { 10.86.0.11 . tcp . 80 : goto reject-chain }",
		"numgen random mod 2 vmap { 0 : goto ep-",
		"dnat to 10.85.0.2:8080",
		"dnat to 10.85.0.3:8080",
		"update @affinity-",
		"timeout 10800s",
		"ip saddr != 127.0.0.0/8 fib saddr type local fib daddr type != local return", // the node's own connections to cluster IPs keep their address
		"masquerade fully-random",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q:\n%s", want, dump)
		}
	}
	// One endpoint replaced: one transaction that rewrites the service's
	// chain and adds and deletes the endpoints' (not the whole table).
	if _, err := st.Modify(endpointSlices, "ns", "web-1", &discoveryv1.EndpointSlice{}, func(cur store.Object) (store.Decision, error) {
		cur.(*discoveryv1.EndpointSlice).Endpoints[1] = ep("10.85.0.4", true, true, false)
		return store.Decision{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	must(p.Sync(context.Background()))
	dump = fake.Dump()
	if !strings.Contains(dump, "dnat to 10.85.0.4:8080") || strings.Contains(dump, "10.85.0.3") || !strings.Contains(dump, "dnat to 10.85.0.2:8080") {
		t.Errorf("after an endpoint changed:\n%s", dump)
	}
	if n := fake.LastTransaction.NumOperations(); n > 20 {
		t.Errorf("a change of one endpoint took %d operations:\n%s", n, fake.LastTransaction)
	}

	// web deleted: its chains and affinity sets go.
	if _, err := st.Delete(services, "ns", "web", "", ""); err != nil {
		t.Fatal(err)
	}
	must(p.Sync(context.Background()))
	dump = fake.Dump()
	if strings.Contains(dump, "ns/web/") || !strings.Contains(dump, "10.86.0.11 . tcp . 80") {
		t.Errorf("after web's deletion:\n%s", dump)
	}
}

// No Service, no table: berthd writes nothing to a host that runs none.
func TestNothingWithoutServices(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fake := knftables.NewFake(knftables.IPv4Family, Table)
	routes := &fakeRoutes{}
	p, err := New(Config{Store: st, NFT: fake, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fake.Table != nil || routes.ensured {
		t.Errorf("table %v, route %v without a Service", fake.Table, routes.ensured)
	}
	if err := st.Create(services, svc("web", "10.86.0.10", corev1.ServiceTypeClusterIP, corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP})); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fake.Table == nil || !routes.ensured {
		t.Errorf("no table or route with a Service")
	}
	if err := p.Cleanup(context.Background()); err != nil || fake.Table != nil || routes.ensured {
		t.Errorf("after Cleanup: %v, table %v, route %v", err, fake.Table, routes.ensured)
	}
}

type fakeRoutes struct{ ensured bool }

func (f *fakeRoutes) Ensure(netip.Prefix) error { f.ensured = true; return nil }
func (f *fakeRoutes) Remove(netip.Prefix) error { f.ensured = false; return nil }
