// Package remote pushes the node's series upward with Prometheus' remote
// write protocol (1.0: protobuf and snappy, what Prometheus, Mimir, Thanos
// and VictoriaMetrics receive): every interval it gathers what /metrics
// serves, adds the external labels (the node's name, and the operator's),
// and queues the batch on disk, one queue per endpoint; a sender per
// endpoint delivers the batches in order, retrying with back-off while
// the receiver is unreachable or answers 5xx or 429. Within the queue's
// bound a receiver's outage loses nothing; past it the oldest batches go,
// and are counted (berth_remote_write_dropped_samples_total).
package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Endpoint is one receiver.
type Endpoint struct {
	// URL is the receiver's write URL
	// (http://prometheus:9090/api/v1/write).
	URL string
	// CAFile verifies the receiver's certificate (empty: the system's
	// roots); CertFile and KeyFile are a client certificate.
	CAFile, CertFile, KeyFile string
	// Client sends (nil: one with the TLS above; tests give their own).
	Client *http.Client
	// BearerTokenFile holds a token sent as Authorization: Bearer (read
	// for each batch, so a rotated token is picked up).
	BearerTokenFile string
	// MaxBytes bounds the endpoint's queue on disk.
	MaxBytes int64
	// Labels are added to every series sent there, over the common
	// external labels.
	Labels map[string]string
}

// Config configures a Writer.
type Config struct {
	Gatherer  prometheus.Gatherer
	Endpoints []Endpoint
	// ExternalLabels are added to every series (a series' own label of
	// the same name wins).
	ExternalLabels map[string]string
	// Dir holds the queues, one directory per endpoint (by its URL's
	// hash).
	Dir      string
	Interval time.Duration
	// MaxBackoff caps the wait between attempts (default 30 s).
	MaxBackoff time.Duration
	Log        hclog.Logger
}

// Writer gathers, queues and sends.
type Writer struct {
	cfg Config
	eps []*endpoint
}

type endpoint struct {
	Endpoint
	label  string // the URL without its password: the series' url label
	q      *queue
	labels map[string]string
	log    hclog.Logger

	sent, retries, lastOK                atomic.Int64
	droppedFull, droppedBad, droppedDisk atomic.Int64
}

// New opens the endpoints' queues.
func New(cfg Config) (*Writer, error) {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	w := &Writer{cfg: cfg}
	for _, e := range cfg.Endpoints {
		h := sha256.Sum256([]byte(e.URL))
		q, err := openQueue(filepath.Join(cfg.Dir, hex.EncodeToString(h[:8])), e.MaxBytes)
		if err != nil {
			return nil, err
		}
		if e.Client == nil {
			tlsCfg, err := clientTLS(e)
			if err != nil {
				return nil, fmt.Errorf("remote write %s: %w", e.URL, err)
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = tlsCfg
			e.Client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
		}
		labels := map[string]string{}
		for k, v := range cfg.ExternalLabels {
			labels[k] = v
		}
		for k, v := range e.Labels {
			labels[k] = v
		}
		u, err := url.Parse(e.URL)
		if err != nil {
			return nil, fmt.Errorf("remote write: %w", err)
		}
		w.eps = append(w.eps, &endpoint{Endpoint: e, label: u.Redacted(), q: q, labels: labels, log: cfg.Log.With("url", u.Redacted())})
	}
	return w, nil
}

// Run gathers every interval and sends until ctx ends; what is queued
// stays on disk for the next start.
func (w *Writer) Run(ctx context.Context) error {
	for _, e := range w.eps {
		go e.send(ctx, w.cfg.MaxBackoff)
	}
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		w.Collect1(time.Now())
	}
}

// Collect1 gathers once and queues the batch for every endpoint.
func (w *Writer) Collect1(now time.Time) {
	mfs, err := w.cfg.Gatherer.Gather()
	if err != nil {
		// What could be gathered is still sent.
		w.cfg.Log.Debug("gather", "error", err)
	}
	for _, e := range w.eps {
		ss := flatten(mfs, e.labels, now)
		dropped, err := e.q.push(encode(ss), len(ss))
		if err != nil {
			// A full or failing disk: this batch is lost, and counted.
			e.droppedDisk.Add(int64(len(ss)))
			e.log.Error("remote write: queue", "error", err)
		}
		if dropped > 0 {
			e.droppedFull.Add(int64(dropped))
			e.log.Warn("remote write: queue full, oldest samples dropped", "samples", dropped)
		}
	}
}

// send delivers the queue in order.
func (e *endpoint) send(ctx context.Context, maxBackoff time.Duration) {
	backoff := time.Second
	failing := false
	for ctx.Err() == nil {
		f, data, ok, err := e.q.oldest()
		if err != nil {
			e.droppedBad.Add(int64(f.samples))
			e.log.Error("remote write: unreadable batch dropped", "error", err)
			continue
		}
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-e.q.notify:
			}
			continue
		}
		retry, err := e.post(ctx, data)
		switch {
		case err == nil:
			e.q.done(f)
			e.sent.Add(int64(f.samples))
			e.lastOK.Store(time.Now().Unix())
			if failing {
				e.log.Info("remote write: receiver back")
			}
			backoff, failing = time.Second, false
		case !retry:
			// Prometheus' rule: a 4xx other than 429 will fail again.
			e.q.done(f)
			e.droppedBad.Add(int64(f.samples))
			e.log.Error("remote write: batch refused, dropped", "samples", f.samples, "error", err)
		default:
			e.q.release()
			e.retries.Add(1)
			if !failing {
				e.log.Warn("remote write: receiver unreachable, retrying with back-off", "error", err)
			}
			failing = true
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
		}
	}
}

// post sends one batch; retry says whether a failure may succeed later.
func (e *endpoint) post(ctx context.Context, data []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(data))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("User-Agent", "berth")
	if e.BearerTokenFile != "" {
		tok, err := os.ReadFile(e.BearerTokenFile)
		if err != nil {
			return true, fmt.Errorf("bearer token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := e.Client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch c := resp.StatusCode; {
	case c/100 == 2:
		return false, nil
	case c == http.StatusTooManyRequests || c/100 == 5:
		return true, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	default:
		return false, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
}

var (
	sentDesc    = prometheus.NewDesc("berth_remote_write_samples_total", "Samples the receiver accepted.", []string{"url"}, nil)
	droppedDesc = prometheus.NewDesc("berth_remote_write_dropped_samples_total", "Samples dropped: queue_full (the queue's bound was reached during an outage), refused (the receiver answered 4xx other than 429, or the batch was unreadable), queue_write_failed (the batch could not be written to disk: full, or failing).", []string{"url", "reason"}, nil)
	retriesDesc = prometheus.NewDesc("berth_remote_write_retries_total", "Failed attempts that were retried.", []string{"url"}, nil)
	bytesDesc   = prometheus.NewDesc("berth_remote_write_queue_bytes", "Bytes waiting on disk.", []string{"url"}, nil)
	batchesDesc = prometheus.NewDesc("berth_remote_write_queue_batches", "Batches waiting on disk.", []string{"url"}, nil)
	lastOKDesc  = prometheus.NewDesc("berth_remote_write_last_success_timestamp_seconds", "When a batch was last accepted.", []string{"url"}, nil)
)

// Describe and Collect make the Writer a prometheus.Collector of its own
// series.
func (w *Writer) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sentDesc, droppedDesc, retriesDesc, bytesDesc, batchesDesc, lastOKDesc} {
		ch <- d
	}
}

// Collect sends the endpoints' figures.
func (w *Writer) Collect(ch chan<- prometheus.Metric) {
	for _, e := range w.eps {
		batches, size := e.q.stats()
		ch <- prometheus.MustNewConstMetric(sentDesc, prometheus.CounterValue, float64(e.sent.Load()), e.label)
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(e.droppedFull.Load()), e.label, "queue_full")
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(e.droppedBad.Load()), e.label, "refused")
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(e.droppedDisk.Load()), e.label, "queue_write_failed")
		ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(e.retries.Load()), e.label)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.GaugeValue, float64(size), e.label)
		ch <- prometheus.MustNewConstMetric(batchesDesc, prometheus.GaugeValue, float64(batches), e.label)
		ch <- prometheus.MustNewConstMetric(lastOKDesc, prometheus.GaugeValue, float64(e.lastOK.Load()), e.label)
	}
}

// clientTLS is an endpoint's TLS: its CA, its client certificate.
func clientTLS(e Endpoint) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		pem, err := os.ReadFile(e.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", e.CAFile)
		}
		cfg.RootCAs = pool
	}
	if e.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
