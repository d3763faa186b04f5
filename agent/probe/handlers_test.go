package probe

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeOnce runs one probe of kind against the real target through the
// Manager's whole path (request building, handler, thresholds, Events) and
// returns the Events it recorded.
func probeOnce(t *testing.T, c corev1.Container, podIP string, kind Kind) (*logicRig, []string) {
	t.Helper()
	r := newLogicRig(t)
	pod := testPod(c)
	r.m.Add(pod, podIP, c.Name, r.now)
	r.worker(t, pod, c.Name, kind).doProbe()
	return r, r.events.messages()
}

func hostPort(t *testing.T, rawURL string) (string, int32) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return host, int32(n)
}

func httpProbe(path string, port intstr.IntOrString, headers ...corev1.HTTPHeader) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: port, HTTPHeaders: headers}}}
}

func TestHTTPRequestAsTheKubeletSendsIt(t *testing.T) {
	var mu sync.Mutex
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r
		mu.Unlock()
	}))
	defer srv.Close()
	ip, port := hostPort(t, srv.URL)
	c := corev1.Container{Name: "c", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: port}},
		ReadinessProbe: httpProbe("/healthz?deep=1", intstr.FromString("web"),
			corev1.HTTPHeader{Name: "x-custom", Value: "a"}, corev1.HTTPHeader{Name: "X-Custom", Value: "b"},
			corev1.HTTPHeader{Name: "Host", Value: "example.test"})}
	r, events := probeOnce(t, c, ip, Readiness)
	if len(events) != 0 {
		t.Fatalf("events %q", events)
	}
	if !r.m.Ready("uid-1", "c") {
		t.Error("not ready after a 200")
	}
	mu.Lock()
	defer mu.Unlock()
	if got == nil {
		t.Fatal("no request")
	}
	if got.Method != http.MethodGet || got.URL.Path != "/healthz" || got.URL.RawQuery != "deep=1" {
		t.Errorf("request %s %s", got.Method, got.URL)
	}
	if ua := got.Header.Get("User-Agent"); ua != "kube-probe/1.37" {
		t.Errorf("User-Agent %q", ua)
	}
	if a := got.Header.Get("Accept"); a != "*/*" {
		t.Errorf("Accept %q", a)
	}
	if v := got.Header.Values("X-Custom"); len(v) != 2 || v[0] != "a" || v[1] != "b" {
		t.Errorf("X-Custom %q", v)
	}
	if got.Host != "example.test" {
		t.Errorf("Host %q", got.Host)
	}
	if ae := got.Header.Get("Accept-Encoding"); ae != "" {
		t.Errorf("Accept-Encoding %q: compression is off, as the kubelet's", ae)
	}
	if !got.Close {
		t.Error("the request keeps the connection alive; the kubelet's probes do not")
	}
}

func TestHTTPHeaderOverrides(t *testing.T) {
	var mu sync.Mutex
	var hdr http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hdr = r.Header.Clone()
		mu.Unlock()
	}))
	defer srv.Close()
	ip, port := hostPort(t, srv.URL)
	for _, tc := range []struct {
		name    string
		headers []corev1.HTTPHeader
		accept  []string
		ua      string
	}{
		{"empty Accept removes it", []corev1.HTTPHeader{{Name: "Accept", Value: ""}}, nil, "kube-probe/1.37"},
		{"Accept kept", []corev1.HTTPHeader{{Name: "Accept", Value: "application/json"}}, []string{"application/json"}, "kube-probe/1.37"},
		{"User-Agent kept", []corev1.HTTPHeader{{Name: "User-Agent", Value: "mine/1"}}, []string{"*/*"}, "mine/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := corev1.Container{Name: "c", ReadinessProbe: httpProbe("/", intstr.FromInt32(port), tc.headers...)}
			if _, events := probeOnce(t, c, ip, Readiness); len(events) != 0 {
				t.Fatalf("events %q", events)
			}
			mu.Lock()
			defer mu.Unlock()
			if a := hdr.Values("Accept"); strings.Join(a, ",") != strings.Join(tc.accept, ",") {
				t.Errorf("Accept %q, want %q", a, tc.accept)
			}
			if ua := hdr.Get("User-Agent"); ua != tc.ua {
				t.Errorf("User-Agent %q, want %q", ua, tc.ua)
			}
		})
	}
}

func TestHTTPStatusCodes(t *testing.T) {
	big := strings.Repeat("b", 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
		io.WriteString(w, big) // a body past 10 KiB is cut off, not an error
	}))
	defer srv.Close()
	ip, port := hostPort(t, srv.URL)
	for code, want := range map[int]string{
		200: "",
		204: "",
		399: "ProbeWarning: Liveness probe warning: Probe terminated redirects, Response body: " + big[:maxOutput],
		400: "Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 400",
		500: "Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 500",
		503: "Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 503",
	} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			p := httpProbe("/"+strconv.Itoa(code), intstr.FromInt32(port))
			p.FailureThreshold = 1
			r, events := probeOnce(t, corev1.Container{Name: "c", LivenessProbe: p}, ip, Liveness)
			if strings.Join(events, "|") != want {
				t.Errorf("events %.200q, want %.200q", events, want)
			}
			if killed := len(r.kills.all()) == 1; killed != (code >= 400) {
				t.Errorf("killed %v after %d", killed, code)
			}
		})
	}
}

func TestHTTPS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			w.WriteHeader(500)
		}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the plain-HTTP probe below is expected
	srv.StartTLS()
	defer srv.Close()
	ip, port := hostPort(t, srv.URL)
	p := httpProbe("/", intstr.FromInt32(port))
	p.HTTPGet.Scheme = corev1.URISchemeHTTPS
	r, events := probeOnce(t, corev1.Container{Name: "c", ReadinessProbe: p}, ip, Readiness)
	if len(events) != 0 || !r.m.Ready("uid-1", "c") {
		t.Errorf("events %q over HTTPS with a certificate nobody verifies", events)
	}
	// Plain HTTP to the TLS port fails as the kubelet's does.
	p.HTTPGet.Scheme = corev1.URISchemeHTTP
	_, events = probeOnce(t, corev1.Container{Name: "c", ReadinessProbe: p}, ip, Readiness)
	if len(events) != 1 || events[0] != "Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 400" {
		t.Errorf("events %q", events)
	}
}

func TestHTTPRedirects(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500) // never reached: the kubelet does not follow a redirect elsewhere
	}))
	defer other.Close()
	_, otherPort := hostPort(t, other.URL)
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/final", http.StatusFound)
		case "/final":
			io.WriteString(w, "ok")
		case "/elsewhere":
			w.Header().Set("Location", "http://localhost:"+strconv.Itoa(int(otherPort))+"/")
			w.WriteHeader(http.StatusFound)
			io.WriteString(w, "moved")
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	}))
	defer srv.Close()
	ip, port := hostPort(t, srv.URL)

	probe := func(path string) (*logicRig, []string) {
		return probeOnce(t, corev1.Container{Name: "c", ReadinessProbe: httpProbe(path, intstr.FromInt32(port))}, ip, Readiness)
	}
	if r, events := probe("/same"); len(events) != 0 || !r.m.Ready("uid-1", "c") {
		t.Errorf("same-host redirect: events %q", events)
	}
	mu.Lock()
	if hits["/final"] != 1 {
		t.Errorf("the same-host redirect was not followed: %v", hits)
	}
	mu.Unlock()

	r, events := probe("/elsewhere")
	if want := "ProbeWarning: Readiness probe warning: Probe terminated redirects, Response body: moved"; len(events) != 1 || events[0] != want {
		t.Errorf("redirect elsewhere: events %q, want %q", events, want)
	}
	if !r.m.Ready("uid-1", "c") {
		t.Error("a redirect elsewhere is a success (with a warning) for the kubelet")
	}

	r, events = probe("/loop")
	// Go names the last Location, as in the kubelet's message.
	want := `Unhealthy: Readiness probe failed: Get "/loop": stopped after 10 redirects`
	if len(events) != 1 || events[0] != want {
		t.Errorf("redirect loop: events %q, want %q", events, want)
	}
	if r.m.Ready("uid-1", "c") {
		t.Error("ready after a redirect loop")
	}
}

func TestHTTPTimeoutRefusedAndBadPort(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ip, port := hostPort(t, srv.URL)
	_, events := probeOnce(t, corev1.Container{Name: "c", ReadinessProbe: httpProbe("/slow", intstr.FromInt32(port))}, ip, Readiness)
	want := `Unhealthy: Readiness probe failed: Get "` + srv.URL + `/slow": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`
	if len(events) != 1 || events[0] != want {
		t.Errorf("timeout: events %q, want %q", events, want)
	}

	closed := httptest.NewServer(http.NotFoundHandler())
	_, cport := hostPort(t, closed.URL)
	closed.Close()
	_, events = probeOnce(t, corev1.Container{Name: "c", ReadinessProbe: httpProbe("/", intstr.FromInt32(cport))}, ip, Readiness)
	if len(events) != 1 || !strings.HasPrefix(events[0], `Unhealthy: Readiness probe failed: Get "http://`) ||
		!strings.HasSuffix(events[0], "connect: connection refused") {
		t.Errorf("refused: events %q", events)
	}

	_, events = probeOnce(t, corev1.Container{Name: "c", ReadinessProbe: httpProbe("/", intstr.FromString("metrics"))}, ip, Readiness)
	want = `Unhealthy: Readiness probe errored and resulted in unknown state: strconv.Atoi: parsing "metrics": invalid syntax`
	if len(events) != 1 || events[0] != want {
		t.Errorf("bad port: events %q, want %q", events, want)
	}
}

func TestHTTPHostFieldAndPodIPChange(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	ip, port := hostPort(t, srv.URL)
	p := httpProbe("/", intstr.FromInt32(port))
	p.HTTPGet.Host = ip
	// The pod IP is not where the server is; httpGet.host is.
	if r, events := probeOnce(t, corev1.Container{Name: "c", ReadinessProbe: p}, "192.0.2.1", Readiness); len(events) != 0 || !r.m.Ready("uid-1", "c") {
		t.Errorf("httpGet.host: events %q", events)
	}

	// A pod IP that changes is used from then on (the request is rebuilt).
	r := newLogicRig(t)
	pod := testPod(corev1.Container{Name: "c", ReadinessProbe: httpProbe("/", intstr.FromInt32(port))})
	r.m.Add(pod, "192.0.2.1", "c", r.now) // TEST-NET-1: nothing answers
	w := r.worker(t, pod, "c", Readiness)
	w.doProbe()
	if r.m.Ready("uid-1", "c") {
		t.Fatal("ready with a pod IP nothing answers on")
	}
	r.m.Add(pod, ip, "c", r.now)
	w.doProbe()
	if !r.m.Ready("uid-1", "c") {
		t.Errorf("not ready once the pod IP is known: %q", r.events.messages())
	}
}

func TestTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ip, port := hostPort(t, "tcp://"+l.Addr().String())
	tcp := func(host string, port intstr.IntOrString) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Host: host, Port: port}}}
	}
	c := corev1.Container{Name: "c", Ports: []corev1.ContainerPort{{Name: "db", ContainerPort: port}}, ReadinessProbe: tcp("", intstr.FromString("db"))}
	if r, events := probeOnce(t, c, ip, Readiness); len(events) != 0 || !r.m.Ready("uid-1", "c") {
		t.Errorf("open port: events %q", events)
	}
	c.ReadinessProbe = tcp(ip, intstr.FromInt32(port))
	if r, events := probeOnce(t, c, "192.0.2.1", Readiness); len(events) != 0 || !r.m.Ready("uid-1", "c") {
		t.Errorf("tcpSocket.host: events %q", events)
	}
	l.Close()
	c.ReadinessProbe = tcp("", intstr.FromInt32(port))
	_, events := probeOnce(t, c, ip, Readiness)
	want := "Unhealthy: Readiness probe failed: dial tcp " + l.Addr().String() + ": connect: connection refused"
	if len(events) != 1 || events[0] != want {
		t.Errorf("closed port: events %q, want %q", events, want)
	}
}

func TestGRPC(t *testing.T) {
	t.Parallel()
	serve := func(withHealth bool) (string, int32, func()) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		if withHealth {
			hs := health.NewServer()
			hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
			healthpb.RegisterHealthServer(s, hs)
		}
		go s.Serve(l)
		ip, port := hostPort(t, "tcp://"+l.Addr().String())
		return ip, port, s.Stop
	}
	ip, port, stop := serve(true)
	defer stop()
	grpcProbe := func(port int32, service string) *corev1.Probe {
		p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: port}}}
		if service != "" {
			p.GRPC.Service = &service
		}
		p.FailureThreshold = 1
		return p
	}
	for _, tc := range []struct {
		service string
		want    string
	}{
		{"", ""},
		{"down", `Unhealthy: Liveness probe failed: service unhealthy (responded with "NOT_SERVING")`},
		{"nope", `Unhealthy: Liveness probe failed: error: health rpc probe failed: rpc error: code = NotFound desc = unknown service`},
	} {
		r, events := probeOnce(t, corev1.Container{Name: "c", LivenessProbe: grpcProbe(port, tc.service)}, ip, Liveness)
		if strings.Join(events, "|") != tc.want {
			t.Errorf("service %q: events %q, want %q", tc.service, events, tc.want)
		}
		if killed := len(r.kills.all()) == 1; killed != (tc.want != "") {
			t.Errorf("service %q: killed %v", tc.service, killed)
		}
	}

	ip2, port2, stop2 := serve(false)
	defer stop2()
	_, events := probeOnce(t, corev1.Container{Name: "c", LivenessProbe: grpcProbe(port2, "")}, ip2, Liveness)
	want := "Unhealthy: Liveness probe failed: error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health"
	if len(events) != 1 || events[0] != want {
		t.Errorf("no health service: events %q, want %q", events, want)
	}

	stop()
	_, events = probeOnce(t, corev1.Container{Name: "c", LivenessProbe: grpcProbe(port, "")}, ip, Liveness)
	want = "Unhealthy: Liveness probe failed: timeout: failed to connect service \"" + net.JoinHostPort(ip, strconv.Itoa(int(port))) + "\" within 1s: context deadline exceeded"
	if len(events) != 1 || events[0] != want {
		t.Errorf("stopped server: events %q, want %q", events, want)
	}
}
