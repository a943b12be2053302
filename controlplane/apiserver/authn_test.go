package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

const testIssuer = "https://kubernetes.default.svc.cluster.local"

// idEnv is a served apiserver that authenticates as a real instance
// does: client certificates verified in the handler (the listener only
// asks for them) and service-account tokens.
type idEnv struct {
	*env
	tokens *TokenIssuer
}

func startIdentityServer(t *testing.T) *idEnv {
	t.Helper()
	ca := newCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := NewTokenIssuer(testIssuer, nil, key)
	if err != nil {
		t.Fatal(err)
	}
	etcd := etcdtest.Start(t)
	srv, err := New(Options{Store: storage.New(etcd), ServiceCIDR: "10.96.0.0/16", BookmarkInterval: 200 * time.Millisecond,
		Identity: Identity{ClientCAs: pool, ServiceAccount: tokens}})
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- srv.Serve(ctx, l, &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
			ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12})
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
	return &idEnv{env: e, tokens: tokens}
}

func (e *idEnv) tokenClient(t *testing.T, token string) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: e.host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem}})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// result holds a client call's answer until the test checks it:
// must(call(...)).get(t).
type result[T any] struct {
	obj T
	err error
}

func must[T any](obj T, err error) result[T] { return result[T]{obj, err} }

func (r result[T]) get(t *testing.T) T {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.obj
}

// A token from TokenRequest authenticates as its service account, is
// authorized by RBAC, and stops working when the pod it is bound to goes.
func TestServiceAccountTokenLifecycle(t *testing.T) {
	e := startIdentityServer(t)
	ctx := context.Background()
	sas := e.admin.CoreV1().ServiceAccounts("default")
	must(sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{})).get(t)
	must(e.admin.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "app-view"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "app", Namespace: "default"}},
	}, metav1.CreateOptions{})).get(t)
	pod := must(e.admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{ServiceAccountName: "app", NodeName: "w1", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})).get(t)

	tr := must(sas.CreateToken(ctx, "app", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "p", UID: pod.UID},
	}}, metav1.CreateOptions{})).get(t)
	if got := *tr.Spec.ExpirationSeconds; got != 3600 {
		t.Errorf("default expiration %d, want 3600", got)
	}
	if d := time.Until(tr.Status.ExpirationTimestamp.Time); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("expires in %s, want an hour", d)
	}
	// The claims are upstream's.
	parsed, err := jwt.ParseSigned(tr.Status.Token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}
	k8s, _ := claims["kubernetes.io"].(map[string]any)
	podClaim, _ := k8s["pod"].(map[string]any)
	nodeClaim, _ := k8s["node"].(map[string]any)
	if claims["iss"] != testIssuer || claims["sub"] != "system:serviceaccount:default:app" || k8s["namespace"] != "default" ||
		podClaim["uid"] != string(pod.UID) || nodeClaim["name"] != "w1" || parsed.Headers[0].KeyID == "" {
		t.Errorf("claims %v, kid %q", claims, parsed.Headers[0].KeyID)
	}

	app := e.tokenClient(t, tr.Status.Token)
	// RBAC answers from an index fed by a watch, as upstream's: the new
	// RoleBinding counts once the index has it.
	eventually(t, propagation, "list pods with the token", func() error {
		_, err := app.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		return err
	})
	if _, err := app.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list secrets with a view token: %v", err)
	}
	who := must(app.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})).get(t)
	ui := who.Status.UserInfo
	if ui.Username != "system:serviceaccount:default:app" || strings.Join(ui.Groups, ",") != "system:serviceaccounts,system:serviceaccounts:default,system:authenticated" {
		t.Errorf("whoami: %+v", ui)
	}

	// TokenReview says the same.
	rev := must(e.admin.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tr.Status.Token}}, metav1.CreateOptions{})).get(t)
	if !rev.Status.Authenticated || rev.Status.User.Username != ui.Username || rev.Status.User.Extra["authentication.kubernetes.io/pod-name"][0] != "p" ||
		strings.Join(rev.Status.Audiences, ",") != testIssuer {
		t.Errorf("token review: %+v", rev.Status)
	}
	rev = must(e.admin.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tr.Status.Token, Audiences: []string{"vault"}}}, metav1.CreateOptions{})).get(t)
	if rev.Status.Authenticated {
		t.Errorf("token review for another audience: %+v", rev.Status)
	}

	// The pod goes: so does the token.
	if err := e.admin.CoreV1().Pods("default").Delete(ctx, "p", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CoreV1().Pods("default").Get(ctx, "p", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("pod still there: %v", err)
	}
	syncCache(t, e.srv)
	if _, err := app.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("a token for a deleted pod: %v", err)
	}
	rev = must(e.admin.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tr.Status.Token}}, metav1.CreateOptions{})).get(t)
	if rev.Status.Authenticated {
		t.Errorf("token review of a deleted pod's token: %+v", rev.Status)
	}
}

func TestBadTokensAre401(t *testing.T) {
	e := startIdentityServer(t)
	ctx := context.Background()
	sa := must(e.admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{})).get(t)
	// A good unbound token works, as a control.
	good, _, err := e.tokens.sign(time.Now(), time.Hour, []string{testIssuer}, sa, k8sClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.tokenClient(t, good).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a good token is authenticated (then refused by RBAC): %v", err)
	}
	expired, _, _ := e.tokens.sign(time.Now().Add(-2*time.Hour), time.Hour, []string{testIssuer}, sa, k8sClaims{})
	otherAud, _, _ := e.tokens.sign(time.Now(), time.Hour, []string{"vault"}, sa, k8sClaims{})
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	stranger, _ := NewTokenIssuer(testIssuer, nil, otherKey)
	forged, _, _ := stranger.sign(time.Now(), time.Hour, []string{testIssuer}, sa, k8sClaims{})
	gone := sa.DeepCopy()
	gone.UID = "0000"
	replaced, _, _ := e.tokens.sign(time.Now(), time.Hour, []string{testIssuer}, gone, k8sClaims{})
	for name, tok := range map[string]string{"expired": expired, "another audience": otherAud, "another key": forged,
		"a replaced account": replaced, "garbage": "not.a.jwt"} {
		_, err := e.tokenClient(t, tok).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		var st apierrors.APIStatus
		if !apierrors.IsUnauthorized(err) || !errorsAs(err, &st) || st.Status().Code != http.StatusUnauthorized {
			t.Errorf("%s token: %v", name, err)
		}
	}
	// TokenRequest's own rules.
	sas := e.admin.CoreV1().ServiceAccounts("default")
	short := int64(60)
	if _, err := sas.CreateToken(ctx, "app", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &short}}, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("a 60s token: %v", err)
	}
	if _, err := sas.CreateToken(ctx, "nobody", &authenticationv1.TokenRequest{}, metav1.CreateOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a token for a missing account: %v", err)
	}
	must(e.admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other"},
		Spec: corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})).get(t)
	if _, err := sas.CreateToken(ctx, "app", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "other", UID: "wrong"}}}, metav1.CreateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("a binding with a stale UID: %v", err)
	}
}

func errorsAs(err error, st *apierrors.APIStatus) bool {
	s, ok := err.(apierrors.APIStatus)
	*st = s
	return ok
}

// A client certificate that is expired or from another CA is a 401
// Status, not a failed handshake; so is no credential at all, except for
// the public paths.
func TestBadCertificatesAre401(t *testing.T) {
	e := startIdentityServer(t)
	ctx := context.Background()
	other := newCA(t)
	oc, ok := other.issue(t, "mallory", []string{"system:masters"}, false)
	expired := func() ([]byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "old", Organization: []string{"system:masters"}},
			NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, e.ca.cert, &key.PublicKey, e.ca.key)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	ec, ek := expired()
	for name, pair := range map[string][2][]byte{"another CA": {oc, ok}, "expired": {ec, ek}} {
		cs, err := kubernetes.NewForConfig(&rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem, CertData: pair[0], KeyData: pair[1]}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		var st apierrors.APIStatus
		if !apierrors.IsUnauthorized(err) || !errorsAs(err, &st) || st.Status().Code != http.StatusUnauthorized {
			t.Errorf("%s: %v", name, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(e.ca.cert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for path, want := range map[string]int{"/healthz": 200, "/livez": 200, "/readyz": 200, "/version": 200,
		"/api": 401, "/apis": 401, "/api/v1/namespaces": 401, "/openapi/v2": 401, "/metrics": 401, "/.well-known/openid-configuration": 401} {
		resp, err := hc.Get(e.host + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s without credentials: %d %s, want %d", path, resp.StatusCode, body, want)
		}
		if want == 401 && !strings.Contains(string(body), `"kind":"Status"`) {
			t.Errorf("%s: a 401 that is not a Status: %s", path, body)
		}
	}
	// The valid certificate still works.
	if _, err := e.admin.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Service accounts read the issuer's OIDC discovery documents, and the
// key set verifies the tokens.
func TestOIDCDiscovery(t *testing.T) {
	e := startIdentityServer(t)
	ctx := context.Background()
	must(e.admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{})).get(t)
	tr := must(e.admin.CoreV1().ServiceAccounts("default").CreateToken(ctx, "app", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})).get(t)
	app := e.tokenClient(t, tr.Status.Token)
	raw, err := app.CoreV1().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Issuer != testIssuer || doc.JWKSURI != testIssuer+"/openid/v1/jwks" || len(doc.Algs) != 1 || doc.Algs[0] != "ES256" {
		t.Fatalf("discovery %s: %v", raw, err)
	}
	raw, err = app.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("jwks %s: %v", raw, err)
	}
	tok, err := jwt.ParseSigned(tr.Status.Token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	var claims jwt.Claims
	if len(keys) != 1 || tok.Claims(keys[0].Key, &claims) != nil || claims.Issuer != testIssuer {
		t.Fatalf("the published key does not verify the token (%d keys for kid %q)", len(keys), tok.Headers[0].KeyID)
	}
}

// `kubectl auth can-i --as=system:serviceaccount:NS:NAME` runs with the
// account's groups, as upstream's impersonation gives them.
func TestImpersonatingAServiceAccount(t *testing.T) {
	e := startIdentityServer(t)
	ctx := context.Background()
	must(e.admin.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "all-sas-view"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:serviceaccounts:default"}},
	}, metav1.CreateOptions{})).get(t)
	c, k := e.ca.issue(t, "kubernetes-admin", []string{"system:masters"}, false)
	cfg := &rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem, CertData: c, KeyData: k},
		Impersonate: rest.ImpersonationConfig{UserName: "system:serviceaccount:default:app"}}
	as := must(kubernetes.NewForConfig(cfg)).get(t)
	who := must(as.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})).get(t)
	if got := strings.Join(who.Status.UserInfo.Groups, ","); got != "system:serviceaccounts,system:serviceaccounts:default,system:authenticated" {
		t.Errorf("groups %s", got)
	}
	eventually(t, propagation, "the account's group binding", func() error {
		_, err := as.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		return err
	})
	// Impersonating one needs the verb on serviceaccounts in its namespace.
	bc, bk := e.ca.issue(t, "bob", nil, false)
	bcfg := &rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem, CertData: bc, KeyData: bk},
		Impersonate: rest.ImpersonationConfig{UserName: "system:serviceaccount:default:app"}}
	asBob := must(kubernetes.NewForConfig(bcfg)).get(t)
	_, err := asBob.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `cannot impersonate resource "serviceaccounts" in API group "" in the namespace "default"`) {
		t.Errorf("bob impersonating an account: %v", err)
	}
}

// syncCache waits until the object cache has seen every write so far:
// a token is accepted on what the cache holds.
func syncCache(t *testing.T, s *Server) {
	t.Helper()
	ctx := context.Background()
	rev, err := s.store.Revision(ctx)
	if err != nil || !s.cache.WaitFor(ctx, rev, 10*time.Second) {
		t.Fatalf("the object cache did not catch up with revision %d: %v", rev, err)
	}
}
