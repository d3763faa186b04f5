package pki

import (
	"fmt"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/berth-dev/berth/api/authz"
)

// ContextName names the cluster, context and (prefixing the user) the
// user entry of the kubeconfigs berthd hands out, so that one merged into
// ~/.kube/config next to real clusters is recognisable.
const ContextName = "berth"

// Kubeconfig is a complete kubeconfig for server (https://ADDRESS) with a
// freshly issued client certificate for user in the given role.
func (ca *CA) Kubeconfig(server, user string, writer bool) ([]byte, error) {
	group := authz.ReadersGroup
	if writer {
		group = authz.WritersGroup
	}
	certPEM, keyPEM, err := ca.IssueClient(user, []string{group}, ClientValidity)
	if err != nil {
		return nil, err
	}
	userName := ContextName + "-" + user
	cfg := clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{
			ContextName: {Server: server, CertificateAuthorityData: ca.CertPEM()},
		},
		AuthInfos: map[string]*clientcmdapi.AuthInfo{
			userName: {ClientCertificateData: certPEM, ClientKeyData: keyPEM},
		},
		Contexts: map[string]*clientcmdapi.Context{
			ContextName: {Cluster: ContextName, AuthInfo: userName, Namespace: metav1.NamespaceDefault},
		},
		CurrentContext: ContextName,
	}
	return clientcmd.Write(cfg)
}

// KubeconfigHandler serves GET /berth/v1/kubeconfig on the socket, behind
// api/authz: the caller's kubeconfig for the HTTPS listener at address
// (writer if the caller may write, else reader). ca nil means the listener
// is off: 404 with a Status saying how to turn it on.
func KubeconfigHandler(ca *CA, address string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			authz.WriteStatus(w, metav1.Status{
				Status: metav1.StatusFailure, Code: http.StatusMethodNotAllowed, Reason: metav1.StatusReasonMethodNotAllowed,
				Message: fmt.Sprintf("%s is not supported on %s", r.Method, authz.KubeconfigPath),
			})
			return
		}
		id, ok := authz.IdentityFrom(r.Context())
		if !ok || id.Via != authz.ViaSocket {
			// Certificates are had from the socket, where the kernel
			// vouches for the caller; a certificate holder asking for
			// another one over HTTPS gains nothing and is told so.
			authz.WriteStatus(w, metav1.Status{
				Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
				Message: "kubeconfigs are handed out on berthd's Unix socket only (berth kubeconfig)",
			})
			return
		}
		if ca == nil {
			authz.WriteStatus(w, metav1.Status{
				Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
				Message: "the loopback HTTPS listener is off (https.enabled in /etc/berth/berthd.yaml)",
			})
			return
		}
		data, err := ca.Kubeconfig("https://"+address, id.Name, id.Writer)
		if err != nil {
			authz.WriteStatus(w, metav1.Status{
				Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Reason: metav1.StatusReasonInternalError,
				Message: err.Error(),
			})
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(data)
	})
}
