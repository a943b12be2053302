package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	clientv3 "go.etcd.io/etcd/client/v3"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM cert and key for a leaf.
func (ca *testCA) issue(t *testing.T, cn string, orgs []string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

type env struct {
	etcd  *clientv3.Client
	srv   *Server
	host  string
	ca    *testCA
	admin *kubernetes.Clientset
	// stop ends Serve (a clean stop) and waits for it; the test's cleanup
	// calls it too.
	stop func()
}

func (e *env) clientFor(t *testing.T, cn string, orgs ...string) *kubernetes.Clientset {
	c, k := e.ca.issue(t, cn, orgs, false)
	cfg := &rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem, CertData: c, KeyData: k}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func startServer(t *testing.T) *env {
	t.Helper()
	return startServerOn(t, etcdtest.Start(t), nil)
}

// startServerOn bootstraps and serves a Server over etcd, with the
// options startServer uses changed by opt when given.
func startServerOn(t *testing.T, etcd *clientv3.Client, opt func(*Options)) *env {
	t.Helper()
	return startServerWithCA(t, etcd, newCA(t), opt)
}

// startServerWithCA is startServerOn with the CA that signs the serving
// and client certificates given.
func startServerWithCA(t *testing.T, etcd *clientv3.Client, ca *testCA, opt func(*Options)) *env {
	t.Helper()
	o := Options{Store: storage.New(etcd), ServiceCIDR: "10.96.0.0/16", BookmarkInterval: 200 * time.Millisecond}
	if opt != nil {
		opt(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Bootstrap(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	sc, sk := ca.issue(t, "kforge-apiserver", nil, true)
	pair, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- srv.Serve(ctx, l, &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
			ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12})
	}()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(stop)
	e := &env{etcd: etcd, srv: srv, host: "https://" + l.Addr().String(), ca: ca, stop: stop}
	e.admin = e.clientFor(t, "kubernetes-admin", "system:masters")
	return e
}

func cm(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}
}

func TestCRUDConflictsAndErrors(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")

	created, err := cms.Create(ctx, cm("a", map[string]string{"k": "1"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if created.UID == "" || created.ResourceVersion == "" || created.CreationTimestamp.IsZero() {
		t.Fatalf("server fields not set: %+v", created.ObjectMeta)
	}
	if _, err := cms.Create(ctx, cm("a", nil), metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("duplicate create: %v", err)
	}
	got, err := cms.Get(ctx, "a", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "1" || got.ResourceVersion != created.ResourceVersion {
		t.Fatalf("get: %+v %v", got, err)
	}
	got.Data["k"] = "2"
	updated, err := cms.Update(ctx, got, metav1.UpdateOptions{})
	if err != nil || updated.ResourceVersion == got.ResourceVersion {
		t.Fatalf("update: %v", err)
	}
	// A write from the stale copy is a conflict.
	got.Data["k"] = "3"
	if _, err := cms.Update(ctx, got, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := cms.Get(ctx, "missing", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := e.admin.CoreV1().ConfigMaps("nope").Create(ctx, cm("x", nil), metav1.CreateOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("create in missing namespace: %v", err)
	}
	gen, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "gen-"}}, metav1.CreateOptions{})
	if err != nil || len(gen.Name) != len("gen-")+5 {
		t.Fatalf("generateName: %v %v", gen, err)
	}
	if _, err := cms.Create(ctx, cm("Bad_Name", nil), metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("invalid name: %v", err)
	}
	if err := cms.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestAuthn401AndAuthz403(t *testing.T) {
	e := startServer(t)
	// No client certificate at all.
	anon, err := kubernetes.NewForConfig(&rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("anonymous list: %v", err)
	}
	// A certificate from another CA is not a user either.
	other := newCA(t)
	c, k := other.issue(t, "mallory", []string{"system:masters"}, false)
	forged, _ := kubernetes.NewForConfig(&rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem, CertData: c, KeyData: k}})
	if _, err := forged.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{}); err == nil || apierrors.IsForbidden(err) {
		t.Fatalf("foreign-CA client: %v", err)
	}
	bob := e.clientFor(t, "bob", "devs")
	_, err = bob.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("bob list pods: %v", err)
	}
	want := `pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default"`
	if err.Error() != want {
		t.Fatalf("message:\n got %q\nwant %q", err.Error(), want)
	}
}

func TestPaginatedList(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	for i := 0; i < 25; i++ {
		if _, err := e.admin.CoreV1().ConfigMaps("default").Create(ctx, cm(fmt.Sprintf("c%02d", i), nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	opts := metav1.ListOptions{Limit: 10}
	pages := 0
	for {
		l, err := e.admin.CoreV1().ConfigMaps("default").List(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, it := range l.Items {
			names = append(names, it.Name)
		}
		if l.Continue == "" {
			break
		}
		opts.Continue = l.Continue
	}
	if len(names) != 25 || pages != 3 || names[0] != "c00" || names[24] != "c24" {
		t.Fatalf("%d pages, names %v", pages, names)
	}
}

func TestInformerSyncsAndSeesEvents(t *testing.T) {
	e := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := e.admin.CoreV1().ConfigMaps("default").Create(ctx, cm("before", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f := informers.NewSharedInformerFactory(e.admin, 0)
	inf := f.Core().V1().ConfigMaps().Informer()
	added := make(chan string, 10)
	updated := make(chan string, 10)
	deleted := make(chan string, 10)
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { added <- o.(*corev1.ConfigMap).Name },
		UpdateFunc: func(_, o any) { updated <- o.(*corev1.ConfigMap).Name },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			deleted <- o.(*corev1.ConfigMap).Name
		},
	})
	f.Start(ctx.Done())
	defer func() { cancel(); f.Shutdown() }()
	syncCtx, syncCancel := context.WithTimeout(ctx, 20*time.Second)
	defer syncCancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	expect(t, added, "before")
	c, err := e.admin.CoreV1().ConfigMaps("default").Create(ctx, cm("after", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, added, "after")
	c.Data = map[string]string{"x": "y"}
	if _, err := e.admin.CoreV1().ConfigMaps("default").Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, updated, "after")
	if err := e.admin.CoreV1().ConfigMaps("default").Delete(ctx, "after", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, deleted, "after")
}

func expect(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-ch:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("no event for %q", want)
		}
	}
}

func TestWatchFromListRevisionReplaysNothingOlder(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	if _, err := cms.Create(ctx, cm("old", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	l, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := cms.Create(ctx, cm("new", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		if ev.Type != watch.Added || ev.Object.(*corev1.ConfigMap).Name != "new" {
			t.Fatalf("first event %s %v", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
}

func TestFieldSelectorWatchSeesBoundPod(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	pods := e.admin.CoreV1().Pods("default")
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", "w1").String()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}
	created, err := pods.Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if created.Spec.RestartPolicy != corev1.RestartPolicyAlways || created.Spec.DNSPolicy != corev1.DNSClusterFirst ||
		created.Spec.TerminationGracePeriodSeconds == nil || created.Status.Phase != corev1.PodPending {
		t.Fatalf("pod defaults missing: %+v", created.Spec)
	}
	if err := pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Target: corev1.ObjectReference{Kind: "Node", Name: "w1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		pod := ev.Object.(*corev1.Pod)
		if ev.Type != watch.Added || pod.Spec.NodeName != "w1" {
			t.Fatalf("event %s node %q", ev.Type, pod.Spec.NodeName)
		}
		scheduled := false
		for _, c := range pod.Status.Conditions {
			scheduled = scheduled || c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue
		}
		if !scheduled {
			t.Fatal("PodScheduled condition not set")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ADDED event for the bound pod")
	}
	err = pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Target: corev1.ObjectReference{Name: "w2"}}, metav1.CreateOptions{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("second bind: %v", err)
	}
}

func TestStatusAndGenerationRulesAndScale(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	deps := e.admin.AppsV1().Deployments("default")
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}},
		Status: appsv1.DeploymentStatus{Replicas: 99}}
	d, err := deps.Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Generation != 1 || d.Status.Replicas != 0 || *d.Spec.Replicas != 1 || d.Spec.Strategy.RollingUpdate == nil || *d.Spec.RevisionHistoryLimit != 10 {
		t.Fatalf("create: generation %d status %d replicas %v", d.Generation, d.Status.Replicas, d.Spec.Replicas)
	}
	// The main resource ignores status; a spec change bumps generation.
	d.Status.Replicas = 5
	d.Spec.Template.Spec.Containers[0].Image = "busybox:other"
	d, err = deps.Update(ctx, d, metav1.UpdateOptions{})
	if err != nil || d.Status.Replicas != 0 || d.Generation != 2 {
		t.Fatalf("update: %v status %d generation %d", err, d.Status.Replicas, d.Generation)
	}
	// /status changes status only, and not the generation.
	d.Status.Replicas = 3
	d.Spec.Template.Spec.Containers[0].Image = "ignored"
	d, err = deps.UpdateStatus(ctx, d, metav1.UpdateOptions{})
	if err != nil || d.Status.Replicas != 3 || d.Spec.Template.Spec.Containers[0].Image != "busybox:other" || d.Generation != 2 {
		t.Fatalf("status update: %v %+v", err, d.Status)
	}
	sc, err := deps.GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil || sc.Spec.Replicas != 1 || sc.Status.Selector != "app=web" {
		t.Fatalf("get scale: %+v %v", sc, err)
	}
	sc.Spec.Replicas = 4
	if _, err := deps.UpdateScale(ctx, "web", sc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d, _ = deps.Get(ctx, "web", metav1.GetOptions{})
	if *d.Spec.Replicas != 4 || d.Generation != 3 {
		t.Fatalf("after scale: replicas %d generation %d", *d.Spec.Replicas, d.Generation)
	}
}

func TestCompactedWatchIs410AndRelistRecovers(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	first, err := cms.Create(ctx, cm("a", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var last *corev1.ConfigMap
	for i := 0; i < 5; i++ {
		if last, err = cms.Create(ctx, cm(fmt.Sprintf("b%d", i), nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var rev int64
	fmt.Sscan(last.ResourceVersion, &rev)
	if _, err := e.etcd.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	_, err = cms.Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
	if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Fatalf("watch from compacted revision: %v", err)
	}
	l, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil || len(l.Items) != 6 {
		t.Fatalf("relist: %v", err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatalf("watch after relist: %v", err)
	}
	w.Stop()
}

func TestBadInputIs4xx(t *testing.T) {
	e := startServer(t)
	c, k := e.ca.issue(t, "admin", []string{"system:masters"}, false)
	pair, _ := tls.X509KeyPair(c, k)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool}}}
	cases := []struct {
		name, method, path, ct, body string
		code                         int
	}{
		{"malformed JSON", "POST", "/api/v1/namespaces/default/configmaps", "application/json", `{"kind":`, 400},
		{"kind mismatch", "POST", "/api/v1/namespaces/default/configmaps", "application/json", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}`, 400},
		{"namespace mismatch", "POST", "/api/v1/namespaces/default/configmaps", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"kube-system"}}`, 400},
		{"unknown field strict", "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"dta":{}}`, 400},
		{"malformed YAML", "POST", "/api/v1/namespaces/default/configmaps", "application/yaml", "kind: [", 400},
		{"too large", "POST", "/api/v1/namespaces/default/configmaps", "application/json", `{"data":{"a":"` + string(make([]byte, 4<<20)) + `"}}`, 413},
		{"unknown resource", "GET", "/api/v1/widgets", "", "", 404},
		{"unsupported media type", "POST", "/api/v1/namespaces/default/configmaps", "text/plain", "x", 415},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.host+tc.path, strings.NewReader(tc.body))
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
		})
	}
	// Unknown fields without Strict are a warning, not an error.
	req, _ := http.NewRequest("POST", e.host+"/api/v1/namespaces/default/configmaps", strings.NewReader(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"warned"},"dta":{}}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Warning") == "" {
		t.Fatalf("lenient unknown field: %d warning %q", resp.StatusCode, resp.Header.Get("Warning"))
	}
}
