package server

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent/admission"
	"github.com/berth-dev/berth/agent/store"
)

// BenchmarkPodCreateAdmission is issue 11's admission latency: a pod
// create through the handler (decode, defaults, LimitRanger, validation,
// ResourceQuota, the store, the quotas' status) in a namespace holding
// 1,000 pods, 10 quotas and 5 LimitRanges, against the same create in a
// namespace with none. It reports p50 and p99 per create:
//
//	go test -run '^$' -bench PodCreateAdmission -benchtime 2000x ./api/server
func BenchmarkPodCreateAdmission(b *testing.B) {
	for _, tc := range []struct {
		name                 string
		pods, quotas, ranges int
	}{
		{"none", 0, 0, 0},
		{"1000pods-10quotas-5limitranges", 1000, 10, 5},
	} {
		b.Run(tc.name, func(b *testing.B) {
			st, err := store.Open(filepath.Join(b.TempDir(), "state.db"), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			srv, err := New(st, Options{NodeName: "node-1", Admission: admission.New(st, admission.Options{})})
			if err != nil {
				b.Fatal(err)
			}
			post := func(path, body string) {
				req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader([]byte(body)))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				srv.ServeHTTP(rec, req)
				if rec.Code != http.StatusCreated {
					b.Fatalf("POST %s: %d %s", path, rec.Code, rec.Body)
				}
			}
			post("/api/v1/namespaces", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}`)
			for i := range tc.ranges {
				post("/api/v1/namespaces/bench/limitranges", fmt.Sprintf(`{"apiVersion":"v1","kind":"LimitRange","metadata":{"name":"lr%d"},`+
					`"spec":{"limits":[{"type":"Container","default":{"cpu":"100m","memory":"64Mi"},"defaultRequest":{"cpu":"50m","memory":"32Mi"},"max":{"cpu":"%d"}},`+
					`{"type":"Pod","max":{"memory":"%dGi"}}]}}`, i, 4+i, 8+i))
			}
			for i := range tc.quotas {
				post("/api/v1/namespaces/bench/resourcequotas", fmt.Sprintf(`{"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"q%d"},`+
					`"spec":{"hard":{"pods":"100000","requests.cpu":"%d","requests.memory":"1Ti","limits.cpu":"10000","limits.memory":"2Ti","count/configmaps":"100","secrets":"100"}}}`, i, 5000+i))
			}
			pod := func(i int) string {
				return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p%05d","namespace":"bench","labels":{"app":"bench"}},`+
					`"spec":{"containers":[{"name":"c","image":"localhost:5000/busybox:1","command":["sleep","100000"],`+
					`"resources":{"requests":{"cpu":"50m","memory":"32Mi"},"limits":{"cpu":"100m","memory":"64Mi"}}}]}}`, i)
			}
			for i := range tc.pods {
				post("/api/v1/namespaces/bench/pods", pod(i))
			}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				post("/api/v1/namespaces/bench/pods", pod(tc.pods+i))
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
