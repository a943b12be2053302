package local

import (
	"context"
	"crypto/tls"
	"net/url"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"kforge.dev/kforge/pki"
)

// A running control plane takes reissued certificates without a restart:
// the apiserver serves its new certificate, and clients with the old and
// the new admin certificate both keep working.
func TestRunningControlPlaneReloadsReissuedCertificates(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	r := up(t, dir)
	u, err := url.Parse(r.config.Host)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	inv, err := pki.NewInventory(PKISpec(dir, port), "")
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		c, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) // only the serial is read
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()

	rotated, err := pki.Reissue(ctx, inv, pki.ReissueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := ""
	for _, c := range rotated {
		if c.ID == HostName+"/apiserver" {
			if c.OldSerial != before {
				t.Fatalf("the apiserver served %s, the PKI had %s", before, c.OldSerial)
			}
			want = c.NewSerial
		}
	}
	if want == "" {
		t.Fatal("the apiserver certificate was not reissued")
	}
	// The apiserver polls its files every 2s: a minute without the new
	// serial means it does not reload.
	for start := time.Now(); served() != want; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("the apiserver still serves %s, not the reissued %s", served(), want)
		}
	}

	// The old client still works; so does one with the new admin
	// certificate, reading and writing.
	old, err := kubernetes.NewForConfig(r.config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("the old admin certificate: %v", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", inv.Path("kubeconfigs/admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-rotation"}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("a write with the new admin certificate: %v", err)
	}
}
