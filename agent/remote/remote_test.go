package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"
)

// decoded is a WriteRequest read back with protowire: each series as
// "name{labels} value @ts".
func decode(t *testing.T, body []byte) []string {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	fields := func(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64)) {
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				t.Fatal("bad tag")
			}
			b = b[n:]
			switch typ {
			case protowire.BytesType:
				v, n := protowire.ConsumeBytes(b)
				fn(num, typ, v, 0)
				b = b[n:]
			case protowire.VarintType:
				x, n := protowire.ConsumeVarint(b)
				fn(num, typ, nil, x)
				b = b[n:]
			case protowire.Fixed64Type:
				x, n := protowire.ConsumeFixed64(b)
				fn(num, typ, nil, x)
				b = b[n:]
			default:
				t.Fatalf("type %v", typ)
			}
		}
	}
	var out []string
	fields(raw, func(_ protowire.Number, _ protowire.Type, ts []byte, _ uint64) {
		var labels []string
		var sample string
		fields(ts, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) {
			var a, b string
			var val float64
			var at int64
			fields(v, func(n protowire.Number, typ protowire.Type, s []byte, x uint64) {
				switch {
				case num == 1 && n == 1:
					a = string(s)
				case num == 1 && n == 2:
					b = string(s)
				case num == 2 && n == 1:
					val = math.Float64frombits(x)
				case num == 2 && n == 2:
					at = int64(x)
				}
			})
			if num == 1 {
				labels = append(labels, a+"="+b)
			} else {
				sample = fmt.Sprintf("%g @%d", val, at)
			}
		})
		out = append(out, strings.Join(labels, ",")+" "+sample)
	})
	return out
}

func testRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobs_total", Help: "h"}, []string{"node"})
	c.WithLabelValues("own").Add(3)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lat_seconds", Help: "h", Buckets: []float64{0.5}})
	h.Observe(0.1)
	h.Observe(2)
	reg.MustRegister(c, h)
	return reg
}

// The body is a WriteRequest Prometheus reads: names in __name__, labels
// sorted, external labels added but never over a series' own, histograms
// as _bucket/_sum/_count.
func TestEncode(t *testing.T) {
	mfs, err := testRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := decode(t, encode(flatten(mfs, map[string]string{"node": "n1", "site": "fra"}, time.UnixMilli(42))))
	want := []string{
		"__name__=jobs_total,node=own,site=fra 3 @42",
		"__name__=lat_seconds_bucket,le=0.5,node=n1,site=fra 1 @42",
		"__name__=lat_seconds_bucket,le=+Inf,node=n1,site=fra 2 @42",
		"__name__=lat_seconds_sum,node=n1,site=fra 2.1 @42",
		"__name__=lat_seconds_count,node=n1,site=fra 2 @42",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The queue keeps batches in order across a restart, removes a crash's
// half-written file, and past its bound drops the oldest but the one in
// flight.
func TestQueue(t *testing.T) {
	dir := t.TempDir()
	q, err := openQueue(dir, 250)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if d, err := q.push([]byte(strings.Repeat("x", 100)), 10+i); err != nil || d != 0 {
			t.Fatalf("push %d: %d %v", i, d, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "0000000000000009-1.rw.tmp"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	q, err = openQueue(dir, 250) // a restart
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "0000000000000009-1.rw.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the half-written batch is still there: %v", err)
	}
	f, _, ok, err := q.oldest() // in flight
	if !ok || err != nil || f.samples != 10 {
		t.Fatalf("oldest: %+v %v %v", f, ok, err)
	}
	// 300 bytes > 250: the oldest not in flight (11 samples) goes.
	if d, err := q.push([]byte(strings.Repeat("y", 100)), 12); err != nil || d != 11 {
		t.Fatalf("push over the bound: dropped %d, %v; want 11", d, err)
	}
	q.done(f)
	f, data, ok, _ := q.oldest()
	if !ok || f.samples != 12 || data[0] != 'y' || f.seq != 3 {
		t.Errorf("next: %+v %q", f, data[:1])
	}
	if n, size := q.stats(); n != 1 || size != 100 {
		t.Errorf("stats: %d batches, %d bytes", n, size)
	}
}

// receiver is a remote write endpoint that fails while down, refuses
// with 400 while bad, and records what it accepts.
type receiver struct {
	mu        sync.Mutex
	down, bad bool
	got       [][]byte
	auth      []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	switch {
	case r.down:
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	case r.bad:
		http.Error(w, "out of order sample", http.StatusBadRequest)
	case req.Header.Get("Content-Encoding") != "snappy" || req.Header.Get("X-Prometheus-Remote-Write-Version") != "0.1.0":
		http.Error(w, "headers", http.StatusUnsupportedMediaType)
	default:
		b, _ := io.ReadAll(req.Body)
		r.got = append(r.got, b)
		w.WriteHeader(http.StatusNoContent)
	}
}

func (r *receiver) set(f func()) { r.mu.Lock(); f(); r.mu.Unlock() }

// An outage loses nothing: batches wait on disk and arrive in order when
// the receiver is back; a 400 drops its batch and counts it.
func TestSendAcrossOutage(t *testing.T) {
	rcv := &receiver{down: true}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Gatherer: testRegistry(), Endpoints: []Endpoint{{URL: srv.URL, MaxBytes: 1 << 20, BearerTokenFile: token}},
		Dir: t.TempDir(), Interval: time.Hour, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel()
	defer cancel()
	go w.eps[0].send(ctx, 50*time.Millisecond)
	for i := range 3 {
		w.Collect1(time.UnixMilli(int64(1000 * (i + 1))))
	}
	time.Sleep(200 * time.Millisecond)
	if n, _ := w.eps[0].q.stats(); n != 3 {
		t.Fatalf("while down: %d batches queued, want 3", n)
	}
	rcv.set(func() { rcv.down = false })
	waitFor(t, func() bool { n, _ := w.eps[0].q.stats(); return n == 0 })
	rcv.set(func() {
		if len(rcv.got) != 3 {
			t.Fatalf("received %d batches", len(rcv.got))
		}
		for i, body := range rcv.got {
			if b := decode(t, body); !strings.HasSuffix(b[0], fmt.Sprintf("@%d", 1000*(i+1))) {
				t.Errorf("batch %d out of order: %s", i, b[0])
			}
		}
		if rcv.auth[len(rcv.auth)-1] != "Bearer tok" {
			t.Errorf("authorization %q", rcv.auth[len(rcv.auth)-1])
		}
	})
	if w.eps[0].retries.Load() == 0 || w.eps[0].sent.Load() != 15 {
		t.Errorf("retries %d, sent %d (want > 0, 15)", w.eps[0].retries.Load(), w.eps[0].sent.Load())
	}
	rcv.set(func() { rcv.bad = true })
	w.Collect1(time.UnixMilli(5000))
	waitFor(t, func() bool { return w.eps[0].droppedBad.Load() == 5 })
	if n, _ := w.eps[0].q.stats(); n != 0 {
		t.Errorf("the refused batch is still queued")
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("never happened")
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// A batch the disk cannot take is counted, and the queue goes on. (The
// queue's directory replaced by a file stands for a full disk: every
// write fails, for root too.)
func TestDiskFull(t *testing.T) {
	w, err := New(Config{Gatherer: testRegistry(), Endpoints: []Endpoint{{URL: "http://127.0.0.1:1/w", MaxBytes: 1 << 20}}, Dir: t.TempDir(), Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	qdir := w.eps[0].q.dir
	if err := os.Remove(qdir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(qdir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w.Collect1(time.Now())
	if got := w.eps[0].droppedDisk.Load(); got != 5 {
		t.Errorf("dropped %d, want the batch's 5 samples", got)
	}
	if n, _ := w.eps[0].q.stats(); n != 0 {
		t.Errorf("%d batches queued after a failed write", n)
	}
	// The disk has room again: the next batch is queued.
	if err := os.Remove(qdir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(qdir, 0o700); err != nil {
		t.Fatal(err)
	}
	w.Collect1(time.Now())
	if n, _ := w.eps[0].q.stats(); n != 1 {
		t.Errorf("%d batches queued once the disk has room, want 1", n)
	}
}

// An endpoint's TLS files are read when the writer is made: a CA file
// without a certificate, or a missing client key, stops it there.
func TestEndpointTLSFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, e := range []Endpoint{
		{URL: "https://r/w", CAFile: empty},
		{URL: "https://r/w", CAFile: filepath.Join(dir, "none.pem")},
		{URL: "https://r/w", CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "k.pem")},
	} {
		if _, err := New(Config{Gatherer: testRegistry(), Endpoints: []Endpoint{e}, Dir: dir, Interval: time.Hour}); err == nil || !strings.Contains(err.Error(), "remote write https://r/w") {
			t.Errorf("%+v: %v", e, err)
		}
	}
	if _, err := New(Config{Gatherer: testRegistry(), Endpoints: []Endpoint{{URL: "https://r/w"}}, Dir: dir, Interval: time.Hour}); err != nil {
		t.Errorf("no TLS files: %v", err)
	}
}
