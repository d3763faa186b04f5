package endpoints

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/agent/store"
)

// fakeAPI stands in for api/server's in-process calls over a real store.
type fakeAPI struct {
	st *store.Store
	n  int
}

func storeName(resource string) store.Resource {
	return store.Resource(resource[strings.LastIndex(resource, "/")+1:])
}

func (a *fakeAPI) Create(resource string, obj store.Object) error {
	if obj.GetName() == "" {
		a.n++
		obj.SetName(fmt.Sprintf("%s%05d", obj.GetGenerateName(), a.n))
	}
	return a.st.Create(storeName(resource), obj)
}

func (a *fakeAPI) Delete(resource, ns, name string, uid types.UID) error {
	_, err := a.st.Delete(storeName(resource), ns, name, uid, "")
	return err
}

func setup(t *testing.T) (*Controller, *store.Store) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(Config{Store: st, API: &fakeAPI{st: st}, Now: func() time.Time { return time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC) }}), st
}

func service(name string, sel map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{"team": "a"}},
		Spec:       corev1.ServiceSpec{Selector: sel, Ports: ports, ClusterIP: "10.86.0.10", Type: corev1.ServiceTypeClusterIP}}
}

type podOpt func(*corev1.Pod)

func pod(name, ip string, ready bool, httpPort int32, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node1", RestartPolicy: corev1.RestartPolicyAlways, Containers: []corev1.Container{{Name: "c", Image: "i",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: httpPort, Protocol: corev1.ProtocolTCP}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	for _, o := range opts {
		o(p)
	}
	return p
}

func mustCreate(t *testing.T, st *store.Store, res store.Resource, objs ...store.Object) {
	t.Helper()
	for _, o := range objs {
		if err := st.Create(res, o); err != nil {
			t.Fatal(err)
		}
	}
}

func slicesOf(t *testing.T, st *store.Store, svc string) []*discoveryv1.EndpointSlice {
	t.Helper()
	var out []*discoveryv1.EndpointSlice
	if _, err := st.List(endpointSlices, "ns", func(b []byte) error {
		var es discoveryv1.EndpointSlice
		if err := json.Unmarshal(b, &es); err != nil {
			return err
		}
		if es.Labels[discoveryv1.LabelServiceName] == svc {
			out = append(out, &es)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// describe prints a slice's ports and endpoints compactly.
func describe(es *discoveryv1.EndpointSlice) string {
	var ports, eps []string
	for _, p := range es.Ports {
		ports = append(ports, fmt.Sprintf("%s=%d/%s", *p.Name, *p.Port, *p.Protocol))
	}
	for _, e := range es.Endpoints {
		eps = append(eps, fmt.Sprintf("%s(%s ready=%v serving=%v terminating=%v node=%s)", e.Addresses[0], e.TargetRef.Name,
			*e.Conditions.Ready, *e.Conditions.Serving, *e.Conditions.Terminating, *e.NodeName))
	}
	return strings.Join(ports, ",") + " " + strings.Join(eps, ",")
}

// The pods a Service selects, as EndpointSlices (grouped by the ports
// their named targetPort resolves to; ready, serving and terminating as
// upstream sets them) and as Endpoints (ready and not-ready addresses,
// the terminating pod left out); pods without an address, finished for
// good or not selected are in neither.
func TestSlicesAndEndpoints(t *testing.T) {
	c, st := setup(t)
	svc := service("web", map[string]string{"app": "web"},
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
		corev1.ServicePort{Name: "metrics", Port: 9000, TargetPort: intstr.FromInt32(9000), Protocol: corev1.ProtocolTCP})
	mustCreate(t, st, services, svc)
	now := metav1.Now()
	mustCreate(t, st, pods,
		pod("a", "10.85.0.2", true, 8080),
		pod("b", "10.85.0.3", false, 8081),
		pod("c", "", true, 8080),
		pod("d", "10.85.0.5", false, 8080, func(p *corev1.Pod) {
			p.Spec.RestartPolicy, p.Status.Phase = corev1.RestartPolicyNever, corev1.PodSucceeded
		}),
		pod("e", "10.85.0.6", true, 8080, func(p *corev1.Pod) { p.DeletionTimestamp = &now; p.Finalizers = []string{"x"} }),
		pod("f", "10.85.0.7", true, 8080, func(p *corev1.Pod) { p.Labels = map[string]string{"app": "other"} }),
	)
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := slicesOf(t, st, "web")
	if len(got) != 2 {
		t.Fatalf("%d slices", len(got))
	}
	var descs []string
	for _, es := range got {
		descs = append(descs, describe(es))
		if es.AddressType != discoveryv1.AddressTypeIPv4 || es.Labels[discoveryv1.LabelManagedBy] != ManagedBy || es.Labels["team"] != "a" ||
			!strings.HasPrefix(es.Name, "web-") || metav1.GetControllerOf(es) == nil || metav1.GetControllerOf(es).Name != "web" {
			t.Errorf("slice meta: %+v", es.ObjectMeta)
		}
	}
	want := map[string]bool{
		"http=8080/TCP,metrics=9000/TCP 10.85.0.2(a ready=true serving=true terminating=false node=node1),10.85.0.6(e ready=false serving=true terminating=true node=node1)": true,
		"http=8081/TCP,metrics=9000/TCP 10.85.0.3(b ready=false serving=false terminating=false node=node1)":                                                                 true,
	}
	for _, d := range descs {
		if !want[d] {
			t.Errorf("slice %s", d)
		}
	}

	var ep corev1.Endpoints
	if err := st.Get(endpoints, "ns", "web", &ep); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ep.Subsets)
	wantSubsets := `[{"addresses":[{"ip":"10.85.0.2","nodeName":"node1","targetRef":{"kind":"Pod","namespace":"ns","name":"a"}}],"ports":[{"name":"http","port":8080,"protocol":"TCP"},{"name":"metrics","port":9000,"protocol":"TCP"}]},` +
		`{"notReadyAddresses":[{"ip":"10.85.0.3","nodeName":"node1","targetRef":{"kind":"Pod","namespace":"ns","name":"b"}}],"ports":[{"name":"http","port":8081,"protocol":"TCP"},{"name":"metrics","port":9000,"protocol":"TCP"}]}]`
	if s := strings.ReplaceAll(string(b), `,"uid":""`, ""); !jsonEqualIgnoringUID(s, wantSubsets) {
		t.Errorf("subsets\n%s\nwant\n%s", s, wantSubsets)
	}
	if ep.Labels["team"] != "a" || ep.Annotations[corev1.EndpointsLastChangeTriggerTime] == "" {
		t.Errorf("endpoints meta: %+v", ep.ObjectMeta)
	}

	// Nothing changed: nothing written.
	rv := ep.ResourceVersion
	sliceRV := got[0].ResourceVersion
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.Get(endpoints, "ns", "web", &ep); err != nil || ep.ResourceVersion != rv {
		t.Errorf("endpoints rewritten: %v %s -> %s", err, rv, ep.ResourceVersion)
	}
	for _, es := range slicesOf(t, st, "web") {
		if es.Name == got[0].Name && es.ResourceVersion != sliceRV {
			t.Errorf("slice rewritten")
		}
	}

	// b becomes ready and takes a's port: one slice, one subset.
	if _, err := st.Modify(pods, "ns", "b", &corev1.Pod{}, func(cur store.Object) (store.Decision, error) {
		p := cur.(*corev1.Pod)
		p.Status.Conditions[0].Status = corev1.ConditionTrue
		p.Spec.Containers[0].Ports[0].ContainerPort = 8080
		return store.Decision{Replace: p}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := slicesOf(t, st, "web"); len(got) != 1 || !strings.Contains(describe(got[0]), "10.85.0.3(b ready=true") {
		t.Errorf("after b changed: %d slices %v", len(got), got)
	}
	if err := st.Get(endpoints, "ns", "web", &ep); err != nil || len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != 2 {
		t.Errorf("endpoints after b changed: %v %+v", err, ep.Subsets)
	}

	// A Service that selects nothing: one empty slice, empty Endpoints.
	mustCreate(t, st, services, service("none", map[string]string{"app": "none"}, corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}))
	// A Service without a selector: its Endpoints are the client's.
	mustCreate(t, st, services, service("manual", nil, corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}))
	mustCreate(t, st, endpoints, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "manual"},
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "192.0.2.1"}}, Ports: []corev1.EndpointPort{{Port: 80}}}}})
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := slicesOf(t, st, "none"); len(got) != 1 || len(got[0].Endpoints) != 0 || len(got[0].Ports) != 0 {
		t.Errorf("placeholder slice: %+v", got)
	}
	if got := slicesOf(t, st, "manual"); len(got) != 0 {
		t.Errorf("slices of a selectorless service: %d", len(got))
	}
	var manual corev1.Endpoints
	if err := st.Get(endpoints, "ns", "manual", &manual); err != nil || len(manual.Subsets) != 1 || manual.Subsets[0].Addresses[0].IP != "192.0.2.1" {
		t.Errorf("the client's endpoints: %v %+v", err, manual.Subsets)
	}

	// The Service deleted: its slices and Endpoints go; the client's stay.
	if _, err := st.Delete(services, "ns", "web", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Delete(services, "ns", "manual", "", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := slicesOf(t, st, "web"); len(got) != 0 {
		t.Errorf("slices left: %d", len(got))
	}
	if err := st.Get(endpoints, "ns", "web", &ep); err == nil {
		t.Errorf("endpoints left")
	}
	if err := st.Get(endpoints, "ns", "manual", &manual); err != nil {
		t.Errorf("the client's endpoints deleted: %v", err)
	}
}

// jsonEqualIgnoringUID compares two JSON documents after dropping the
// store's generated uids.
func jsonEqualIgnoringUID(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	strip(x)
	strip(y)
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

func strip(v any) {
	switch t := v.(type) {
	case map[string]any:
		delete(t, "uid")
		for _, x := range t {
			strip(x)
		}
	case []any:
		for _, x := range t {
			strip(x)
		}
	}
}

// More than 100 endpoints of one port set fill a second slice.
func TestSliceSplit(t *testing.T) {
	c, st := setup(t)
	mustCreate(t, st, services, service("big", map[string]string{"app": "web"}, corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}))
	for i := 0; i < 150; i++ {
		mustCreate(t, st, pods, pod(fmt.Sprintf("p%03d", i), fmt.Sprintf("10.85.1.%d", i), true, 80))
	}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := slicesOf(t, st, "big")
	n := 0
	for _, es := range got {
		n += len(es.Endpoints)
	}
	if len(got) != 2 || n != 150 {
		t.Errorf("%d slices, %d endpoints", len(got), n)
	}
}
