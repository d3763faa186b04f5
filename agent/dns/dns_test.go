package dns

import (
	"context"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// The records of Services as the DNS specification for Kubernetes
// defines them, NXDOMAIN and NODATA inside the zone, and names outside it
// forwarded to the node's resolver.
func TestAnswers(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mk := func(o store.Object, res store.Resource) {
		t.Helper()
		if err := st.Create(res, o); err != nil {
			t.Fatal(err)
		}
	}
	svc := func(name, ip string, typ corev1.ServiceType) *corev1.Service {
		return &corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: ip, Type: typ, Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	}
	mk(svc("web", "10.86.0.20", corev1.ServiceTypeClusterIP), "services")
	mk(svc("db", "None", corev1.ServiceTypeClusterIP), "services")
	ext := svc("ext", "", corev1.ServiceTypeExternalName)
	ext.Spec.ExternalName = "db.example.com"
	mk(ext, "services")
	yes, no := true, false
	host := "db-0"
	port, pname := int32(5432), "http"
	mk(&discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "db-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &pname, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.85.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}, Hostname: &host},
			{Addresses: []string{"10.85.0.8"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}},
			{Addresses: []string{"10.85.0.9"}, Conditions: discoveryv1.EndpointConditions{Ready: &no}},
		}}, "endpointslices")

	// A resolver outside: answers example.org.
	upAddr := freeAddr(t)
	up := &mdns.Server{Addr: upAddr, Net: "udp", Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.80")})
		_ = w.WriteMsg(m)
	})}
	go func() { _ = up.ListenAndServe() }()
	defer up.Shutdown()

	addr := freeAddr(t)
	srv := New(Config{Store: st, Addr: addr, Upstream: []string{upAddr}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Run(ctx) }()

	ask := func(name string, qtype uint16) *mdns.Msg {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion(name, qtype)
		var resp *mdns.Msg
		var err error
		for i := 0; i < 50; i++ {
			if resp, _, err = new(mdns.Client).Exchange(m, addr); err == nil {
				return resp
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s: %v", name, err)
		return nil
	}
	answers := func(m *mdns.Msg) string {
		var out []string
		for _, rr := range m.Answer {
			out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
		}
		sort.Strings(out)
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		want  string
	}{
		{"web.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, "10.86.0.20"},
		{"WEB.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, "10.86.0.20"},
		{"_http._tcp.web.shop.svc.cluster.local.", mdns.TypeSRV, mdns.RcodeSuccess, "0 100 80 web.shop.svc.cluster.local."},
		{"db.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, "10.85.0.7 10.85.0.8"},
		{"db-0.db.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, "10.85.0.7"},
		{"10-85-0-8.db.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, "10.85.0.8"},
		{"_http._tcp.db.shop.svc.cluster.local.", mdns.TypeSRV, mdns.RcodeSuccess, "0 50 5432 10-85-0-8.db.shop.svc.cluster.local. 0 50 5432 db-0.db.shop.svc.cluster.local."},
		{"ext.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, "db.example.com."},
		{"web.shop.svc.cluster.local.", mdns.TypeAAAA, mdns.RcodeSuccess, ""},
		{"shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess, ""},
		{"nope.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeNameError, ""},
		{"example.org.", mdns.TypeA, mdns.RcodeSuccess, "192.0.2.80"},
	} {
		m := ask(tc.name, tc.qtype)
		if m.Rcode != tc.rcode || answers(m) != tc.want {
			t.Errorf("%s %s: %s %q, want %s %q", tc.name, mdns.TypeToString[tc.qtype], mdns.RcodeToString[m.Rcode], answers(m), mdns.RcodeToString[tc.rcode], tc.want)
		}
		if strings.HasSuffix(tc.name, "cluster.local.") && !m.Authoritative {
			t.Errorf("%s: not authoritative", tc.name)
		}
	}
	// A new Service is answered after its watch event.
	mk(svc("late", "10.86.0.21", corev1.ServiceTypeClusterIP), "services")
	var got string
	for i := 0; i < 50 && got != "10.86.0.21"; i++ {
		time.Sleep(50 * time.Millisecond)
		got = answers(ask("late.shop.svc.cluster.local.", mdns.TypeA))
	}
	if got != "10.86.0.21" {
		t.Errorf("a new Service: %q", got)
	}
	if got := Upstream([]byte("nameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver 10.86.0.10\nsearch x\n"), "10.86.0.10"); strings.Join(got, ",") != "192.0.2.1:53" {
		t.Errorf("upstream %v", got)
	}
}
