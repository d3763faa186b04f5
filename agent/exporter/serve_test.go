package exporter

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The TCP listener serves /metrics only, and only with the token.
func TestListener(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := Listener(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("series")) }), tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, auth string
		code       int
	}{
		{"/metrics", "", 401},
		{"/metrics", "Bearer wrong", 401},
		{"/metrics", "s3cret", 401},
		{"/metrics", "Bearer s3cret", 200},
		{"/api/v1/pods", "Bearer s3cret", 404},
	} {
		req := httptest.NewRequest("GET", tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code || tc.code == 200 && rec.Body.String() != "series" {
			t.Errorf("%s %q: %d %q, want %d", tc.path, tc.auth, rec.Code, rec.Body.String(), tc.code)
		}
	}
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := Listener(http.NotFoundHandler(), empty); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty token file: %v", err)
	}
	if _, err := TLSConfig(filepath.Join(dir, "none.pem"), filepath.Join(dir, "none.key"), ""); err == nil {
		t.Error("TLS without its files")
	}
}
