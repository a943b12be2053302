package roleconfig

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Client rate limits for the control-plane roles: well above client-go's
// 5 QPS, which would throttle a controller manager catching up after a
// restart.
const (
	ClientQPS   = 50
	ClientBurst = 100
)

// LoadKubeconfig reads a role's kubeconfig file into a client config.
func LoadKubeconfig(path string) (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return rc, nil
}

// NewClient builds a role's clientset from rc (left unchanged): userAgent
// names the role in the apiserver's logs and metrics, and the rate limits
// are ClientQPS and ClientBurst unless rc sets its own.
func NewClient(rc *rest.Config, userAgent string) (*kubernetes.Clientset, error) {
	rc = rest.CopyConfig(rc)
	rc.UserAgent = userAgent
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = ClientQPS, ClientBurst
	}
	return kubernetes.NewForConfig(rc)
}
