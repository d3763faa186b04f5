package server

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
)

func hostPortPod(name, ports string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q},"spec":{"containers":[{"name":"c","image":"x","ports":[%s]}]}}`, name, ports)
}

// A host port is one pod's: the second create is refused with the
// holder's name, a pod naming a port twice gets the apiserver's Duplicate,
// other protocols and addresses do not clash, and of concurrent creates of
// one port exactly one wins.
func TestHostPortAdmission(t *testing.T) {
	_, _, ts := newHTTPServer(t)
	pods := ts.URL + "/api/v1/namespaces/default/pods"
	create := func(name, ports string) (int, string) {
		t.Helper()
		code, st := do(t, http.MethodPost, pods, "application/json", hostPortPod(name, ports))
		return code, st.Message
	}
	if code, msg := create("a", `{"containerPort":80,"hostPort":18080}`); code != http.StatusCreated {
		t.Fatalf("first: %d %s", code, msg)
	}
	code, msg := create("b", `{"containerPort":80,"hostPort":18080}`)
	if want := `Pod "b" is invalid: spec.containers[0].ports[0].hostPort: Invalid value: 18080: provided port is already allocated to pod default/a (18080/TCP)`; code != http.StatusUnprocessableEntity || msg != want {
		t.Errorf("taken port: %d %q\nwant %q", code, msg, want)
	}
	if code, msg := create("udp", `{"containerPort":80,"hostPort":18080,"protocol":"UDP"}`); code != http.StatusCreated {
		t.Errorf("the same port over UDP: %d %s", code, msg)
	}
	code, msg = create("twice", `{"containerPort":80,"hostPort":18081},{"containerPort":81,"hostPort":18081}`)
	if want := `Pod "twice" is invalid: spec.containers[0].ports[1].hostPort: Duplicate value: "TCP//18081"`; code != http.StatusUnprocessableEntity || msg != want {
		t.Errorf("a port twice in one pod: %d %q\nwant %q", code, msg, want)
	}
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := do(t, http.MethodPost, pods, "application/json", hostPortPod(fmt.Sprintf("race-%d", i), `{"containerPort":80,"hostPort":18090}`))
			codes <- c
		}()
	}
	wg.Wait()
	close(codes)
	won := 0
	for c := range codes {
		if c == http.StatusCreated {
			won++
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent creates took port 18090", won)
	}
}
