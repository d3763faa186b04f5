package authz

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/api/server"
)

// A reader never reaches a Secret or a ConfigMap, whatever the path: the
// parser of api/authz and the router of api/server must agree on every
// spelling (doubled slashes, dot segments, escaped slashes, watch forms,
// subresource look-alikes), so the real server stands behind the
// Authorizer here.
func TestReaderPathsNeverReachSecrets(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	api, err := server.New(st, server.Options{NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{TypeMeta: metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "default"}, StringData: map[string]string{"k": "TOPSECRET"}, Data: map[string][]byte{"k": []byte("TOPSECRET")}}
	if err := st.Create("secrets", sec); err != nil {
		t.Fatal(err)
	}
	a := New(api, Options{Group: "", lookup: func(uint32) (string, []string, error) { return "alice", []string{"1000"}, nil }})
	paths := []string{
		"/api/v1/namespaces/default/secrets",
		"/api/v1/namespaces/default/secrets/s",
		"/api/v1/namespaces/default/secrets//",
		"/api/v1/namespaces/default/secrets/s/",
		"/api/v1//namespaces/default/secrets/s",
		"//api/v1/namespaces/default/secrets/s",
		"/api/v1/namespaces/default/pods/../secrets/s",
		"/api/v1/namespaces/default/pods%2F..%2Fsecrets/s",
		"/api/v1/namespaces/default/secrets%2Fs",
		"/api/v1/secrets",
		"/api/v1/secrets?watch=true",
		"/api/v1/watch/secrets",
		"/api/v1/namespaces/default/status/secrets",
		"/api/v1/namespaces/default/finalize",
		"/apis/v1/secrets",
		"/apis//v1/namespaces/default/secrets",
		"/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds",
		"/api/v1/namespaces/status/secrets/s",
		"/api/v1/namespaces/secrets/status",
		"/api/v1/namespaces/default/configmaps",
		"/api/v1/namespaces/default/pods/x/status/../../../secrets/s",
	}
	for _, p := range paths {
		req := httptest.NewRequest("GET", "http://x"+p, nil)
		if strings.Contains(p, "%2F") {
			req.URL.Path, req.URL.RawPath = strings.ReplaceAll(strings.SplitN(p, "?", 2)[0], "%2F", "/"), strings.SplitN(p, "?", 2)[0]
		}
		ctx := context.WithValue(req.Context(), peerKey{}, peer{uid: 1000, gid: 1000})
		ctx, cancel := context.WithCancel(ctx)
		cancel() // end watches at once
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req.WithContext(ctx))
		body := rec.Body.String()
		leak := strings.Contains(body, "VE9QU0VDUkVU") || strings.Contains(body, "TOPSECRET")
		if rec.Code < 400 && (strings.Contains(p, "secrets") || strings.Contains(p, "configmaps")) {
			t.Errorf("GET %s as a reader: %d %.200s", p, rec.Code, body)
		}
		if leak {
			t.Errorf("GET %s as a reader leaked the secret: %d", p, rec.Code)
		}
	}
}
