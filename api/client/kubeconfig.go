package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/agent/bundle"
	"github.com/containerd/errdefs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeconfigPath is berthd's endpoint on the socket that answers with a
// complete kubeconfig (YAML) for its loopback HTTPS listener and a client
// certificate for the caller, or a metav1.Status: 404 when the listener is
// off, 403 when the caller may not have one.
const KubeconfigPath = "/berth/v1/kubeconfig"

// maxKubeconfig bounds the answer: a kubeconfig with a CA, a certificate and
// a key is a few KiB.
const maxKubeconfig = 1 << 20

// FetchKubeconfig asks berthd (through c, a client of NewHTTPClient) for a
// kubeconfig and checks that it is one before returning it. berthd's refusal
// comes back with its message, in the class of its HTTP status.
func FetchKubeconfig(ctx context.Context, c *http.Client) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, Host+KubeconfigPath, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/yaml, application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", errdefs.ErrUnavailable.WithMessage(err.Error()))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKubeconfig+1))
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", errdefs.ErrUnavailable.WithMessage(err.Error()))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp.StatusCode, body)
	}
	if len(body) > maxKubeconfig {
		return nil, fmt.Errorf("kubeconfig from berthd larger than %d bytes: %w", maxKubeconfig, errdefs.ErrInvalidArgument)
	}
	cfg, err := clientcmd.Load(body)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig from berthd: %w", errdefs.ErrInvalidArgument.WithMessage(err.Error()))
	}
	if len(cfg.Clusters) == 0 || cfg.CurrentContext == "" {
		return nil, fmt.Errorf("kubeconfig from berthd names no cluster or no current context: %w", errdefs.ErrInvalidArgument)
	}
	return body, nil
}

// statusError is berthd's answer as an error: the Status's message when it
// sent one, in the errdefs class of the HTTP status.
func statusError(code int, body []byte) error {
	msg := http.StatusText(code)
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		msg = st.Message
	}
	switch code {
	case http.StatusNotFound:
		return errdefs.ErrNotFound.WithMessage(msg)
	case http.StatusForbidden:
		return errdefs.ErrPermissionDenied.WithMessage(msg)
	case http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated.WithMessage(msg)
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return errdefs.ErrInvalidArgument.WithMessage(msg)
	default:
		return errdefs.ErrUnavailable.WithMessage(msg)
	}
}

// WriteFileAtomic writes data to path with mode 0600 from its first byte:
// into a temporary file in the same directory (created 0600, so a secret
// is never readable by others, whatever the umask), synced, then renamed
// over path, so a reader sees the old file or the new one and never part of
// either. The directory is created 0700 if missing.
func WriteFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return bundle.WriteFileAtomic(path, data, 0o600)
}

// DefaultKubeconfigFile is where `berth kubeconfig` writes by default:
// ~/.kube/berth.yaml, beside (never over) the user's own kubeconfig.
func DefaultKubeconfigFile() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".kube", "berth.yaml"), nil
}
