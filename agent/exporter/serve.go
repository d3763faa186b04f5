package exporter

import (
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// Handler serves /metrics in Prometheus' text format: reg's series
// (berth's own, the Go runtime's, the process'), rendered at each scrape,
// then e's, from its cache. Text only, and never compressed: a node's few
// MB cost more to gzip than to send over the links a scrape uses, and
// every Prometheus reads the text format.
func Handler(reg prometheus.Gatherer, e *Exporter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mfs, err := reg.Gather()
		if err != nil {
			http.Error(w, "gather: "+err.Error(), http.StatusInternalServerError)
			return
		}
		text, err := e.Text()
		if err != nil {
			http.Error(w, "gather: "+err.Error(), http.StatusInternalServerError)
			return
		}
		var buf bytes.Buffer
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
				http.Error(w, "render: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()+len(text)))
		_, _ = w.Write(buf.Bytes())
		_, _ = w.Write(text)
	})
}

// Gatherer is everything /metrics serves, for remote write.
func Gatherer(reg prometheus.Gatherer, e *Exporter) prometheus.Gatherer {
	return prometheus.Gatherers{reg, e}
}

// Listener is the TCP listener's /metrics for a Prometheus elsewhere:
// nothing but that path, behind a bearer token when one is configured.
// The token is read once, at start; a new one takes a restart of berthd.
func Listener(h http.Handler, tokenFile string) (http.Handler, error) {
	var token []byte
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("metrics bearer token: %w", err)
		}
		if token = []byte(strings.TrimSpace(string(b))); len(token) == 0 {
			return nil, fmt.Errorf("metrics bearer token: %s is empty", tokenFile)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		if token != nil {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), token) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="berth metrics"`)
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	}), nil
}

// TLSConfig is the listener's TLS: its certificate, and client
// certificates required when clientCA is set.
func TLSConfig(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("metrics TLS: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("metrics client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("metrics client CA: no certificate in %s", clientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
