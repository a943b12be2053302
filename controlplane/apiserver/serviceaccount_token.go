package apiserver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// Service-account token lifetimes, as upstream's TokenRequest: the
// default when expirationSeconds is unset and the shortest allowed.
const (
	DefaultTokenExpiration = time.Hour
	MinTokenExpiration     = 10 * time.Minute
)

// Service-account user names and groups.
const (
	serviceAccountPrefix  = "system:serviceaccount:"
	serviceAccountsGroup  = "system:serviceaccounts"
	serviceAccountsPrefix = "system:serviceaccounts:"
)

// TokenIssuer signs service-account tokens (ES256 JWTs) with the
// service-account key and verifies them against its public keys.
type TokenIssuer struct {
	issuer    string
	audiences []string // the API's audiences: tokens must name one
	signer    jose.Signer
	keys      map[string]*ecdsa.PublicKey // by kid
	jwks      jose.JSONWebKeySet
}

// NewTokenIssuer builds an issuer that signs with key and accepts tokens
// signed by key or any of extra (older keys still trusted). audiences
// empty means [issuer].
func NewTokenIssuer(issuer string, audiences []string, key *ecdsa.PrivateKey, extra ...*ecdsa.PublicKey) (*TokenIssuer, error) {
	if issuer == "" {
		return nil, errors.New("service-account tokens: no issuer")
	}
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("service-account tokens: the signing key must be ECDSA P-256 (ES256)")
	}
	if len(audiences) == 0 {
		audiences = []string{issuer}
	}
	t := &TokenIssuer{issuer: issuer, audiences: slices.Clone(audiences), keys: map[string]*ecdsa.PublicKey{}}
	for _, pub := range append([]*ecdsa.PublicKey{&key.PublicKey}, extra...) {
		kid, err := keyID(pub)
		if err != nil {
			return nil, err
		}
		if _, dup := t.keys[kid]; dup {
			continue
		}
		t.keys[kid] = pub
		t.jwks.Keys = append(t.jwks.Keys, jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
	kid, _ := keyID(&key.PublicKey)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), kid))
	if err != nil {
		return nil, fmt.Errorf("service-account tokens: %w", err)
	}
	t.signer = signer
	return t, nil
}

// LoadTokenIssuer reads the PEM key pair the PKI issues (sa.key,
// sa.pub) and builds a TokenIssuer; the public key file must belong to
// the private key.
func LoadTokenIssuer(issuer string, audiences []string, keyFile, pubFile string) (*TokenIssuer, error) {
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, fmt.Errorf("service-account key %s: no PEM block", keyFile)
	}
	var key *ecdsa.PrivateKey
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		key = k
	} else if k8, err8 := x509.ParsePKCS8PrivateKey(b.Bytes); err8 == nil {
		ek, ok := k8.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("service-account key %s: not an ECDSA key", keyFile)
		}
		key = ek
	} else {
		return nil, fmt.Errorf("service-account key %s: %w", keyFile, err)
	}
	pubPEM, err := os.ReadFile(pubFile)
	if err != nil {
		return nil, fmt.Errorf("service-account public key: %w", err)
	}
	pb, _ := pem.Decode(pubPEM)
	if pb == nil {
		return nil, fmt.Errorf("service-account public key %s: no PEM block", pubFile)
	}
	pub, err := x509.ParsePKIXPublicKey(pb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("service-account public key %s: %w", pubFile, err)
	}
	epub, ok := pub.(*ecdsa.PublicKey)
	if !ok || !epub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("service-account public key %s does not belong to %s", pubFile, keyFile)
	}
	return NewTokenIssuer(issuer, audiences, key)
}

// keyID names a public key as upstream does: the unpadded base64url of
// the SHA-256 of its PKIX DER encoding.
func keyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("service-account key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// Issuer is the "iss" of the tokens.
func (t *TokenIssuer) Issuer() string { return t.issuer }

// ref is a name and UID in the private claims.
type ref struct {
	Name string    `json:"name"`
	UID  types.UID `json:"uid"`
}

// privateClaims are upstream's "kubernetes.io" claims.
type privateClaims struct {
	Kubernetes k8sClaims `json:"kubernetes.io"`
}

type k8sClaims struct {
	Namespace      string `json:"namespace"`
	ServiceAccount ref    `json:"serviceaccount"`
	Pod            *ref   `json:"pod,omitempty"`
	Secret         *ref   `json:"secret,omitempty"`
	Node           *ref   `json:"node,omitempty"`
}

// sign makes a token for sa with the given bindings.
func (t *TokenIssuer) sign(now time.Time, lifetime time.Duration, audiences []string, sa *corev1.ServiceAccount, k k8sClaims) (string, time.Time, error) {
	exp := now.Add(lifetime)
	pub := jwt.Claims{
		Issuer:    t.issuer,
		Subject:   serviceAccountPrefix + sa.Namespace + ":" + sa.Name,
		Audience:  jwt.Audience(audiences),
		Expiry:    jwt.NewNumericDate(exp),
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ID:        string(uuid.NewUUID()),
	}
	k.Namespace = sa.Namespace
	k.ServiceAccount = ref{Name: sa.Name, UID: sa.UID}
	tok, err := jwt.Signed(t.signer).Claims(pub).Claims(privateClaims{Kubernetes: k}).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("signing a service-account token: %w", err)
	}
	return tok, exp, nil
}

// verify checks a token's signature, issuer, times and audience (one of
// want, or the API's audiences when want is empty) and returns its
// claims. It does not look at the objects the token is bound to.
func (t *TokenIssuer) verify(raw string, now time.Time, want []string) (*jwt.Claims, *k8sClaims, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, nil, err
	}
	if len(tok.Headers) != 1 {
		return nil, nil, errors.New("not one signature")
	}
	key, ok := t.keys[tok.Headers[0].KeyID]
	if !ok {
		return nil, nil, errors.New("unknown signing key")
	}
	var pub jwt.Claims
	var priv privateClaims
	if err := tok.Claims(key, &pub, &priv); err != nil {
		return nil, nil, err
	}
	if len(want) == 0 {
		want = t.audiences
	}
	// No leeway on expiry: a token past "exp" is refused, as the API
	// promises; a little on "nbf"/"iat" for clocks of other apiservers.
	if err := pub.ValidateWithLeeway(jwt.Expected{Issuer: t.issuer, AnyAudience: want, Time: now}, 0); err != nil {
		if !errors.Is(err, jwt.ErrNotValidYet) && !errors.Is(err, jwt.ErrIssuedInTheFuture) ||
			pub.ValidateWithLeeway(jwt.Expected{Issuer: t.issuer, AnyAudience: want, Time: now.Add(time.Minute)}, 0) != nil {
			return nil, nil, err
		}
	}
	if pub.Expiry == nil {
		return nil, nil, errors.New("no expiry")
	}
	k := priv.Kubernetes
	if pub.Subject != serviceAccountPrefix+k.Namespace+":"+k.ServiceAccount.Name || k.Namespace == "" || k.ServiceAccount.Name == "" {
		return nil, nil, errors.New("the subject does not match the service account claims")
	}
	return &pub, &k, nil
}

// authenticateToken verifies a bearer token and that what it is bound
// to still exists with the same UID: the service account, and the pod,
// secret or node named in it.
func (s *Server) authenticateToken(ctx context.Context, raw string) (user, error) {
	_, k, err := s.cfg.Identity.ServiceAccount.verify(raw, time.Now(), nil)
	if err != nil {
		return user{}, err
	}
	return s.tokenUser(ctx, k)
}

// tokenUser checks a verified token's bindings against storage and
// returns the service account's user. The objects are read from the
// object cache, which follows etcd's watch: a token is accepted on what
// the cache holds (so it may outlive its pod by the cache's lag, a few
// milliseconds; upstream caches the whole answer for seconds), and
// refused only on what a linearizable read finds.
func (s *Server) tokenUser(ctx context.Context, k *k8sClaims) (user, error) {
	check := func(kind, plural, ns string, r *ref) error {
		res := s.reg.Lookup("", "v1", plural)
		problem := func(kv storage.KV, err error) error {
			if err != nil {
				return fmt.Errorf("the %s %s the token is bound to: %w", kind, r.Name, err)
			}
			obj, err := decodeStored(res, kv)
			if err != nil {
				return err
			}
			m := obj.(metav1.Object)
			if m.GetUID() != r.UID {
				return fmt.Errorf("the %s %s the token is bound to was replaced (UID %s, token has %s)", kind, r.Name, m.GetUID(), r.UID)
			}
			if dt := m.GetDeletionTimestamp(); dt != nil && dt.Time.Before(time.Now()) {
				return fmt.Errorf("the %s %s the token is bound to is being deleted", kind, r.Name)
			}
			return nil
		}
		key := res.Key(ns, r.Name)
		if kv, ok := s.cache.Get(key); ok && problem(kv, nil) == nil {
			return nil
		}
		return problem(s.store.Get(ctx, key))
	}
	if err := check("service account", "serviceaccounts", k.Namespace, &k.ServiceAccount); err != nil {
		return user{}, err
	}
	extra := map[string][]string{}
	if k.Pod != nil {
		if err := check("pod", "pods", k.Namespace, k.Pod); err != nil {
			return user{}, err
		}
		extra["authentication.kubernetes.io/pod-name"] = []string{k.Pod.Name}
		extra["authentication.kubernetes.io/pod-uid"] = []string{string(k.Pod.UID)}
	}
	if k.Secret != nil {
		if err := check("secret", "secrets", k.Namespace, k.Secret); err != nil {
			return user{}, err
		}
	}
	if k.Node != nil {
		// A pod-bound token names its node for information; only a token
		// bound to the node itself depends on it.
		if k.Pod == nil {
			if err := check("node", "nodes", "", k.Node); err != nil {
				return user{}, err
			}
		}
		extra["authentication.kubernetes.io/node-name"] = []string{k.Node.Name}
		if k.Node.UID != "" {
			extra["authentication.kubernetes.io/node-uid"] = []string{string(k.Node.UID)}
		}
	}
	return user{
		Name:   serviceAccountPrefix + k.Namespace + ":" + k.ServiceAccount.Name,
		UID:    string(k.ServiceAccount.UID),
		Groups: []string{serviceAccountsGroup, serviceAccountsPrefix + k.Namespace, authenticatedGrp},
		Extra:  extra,
	}, nil
}

// createToken serves POST serviceaccounts/NAME/token: a TokenRequest is
// answered with a token for the service account, bound to the object the
// request names (a Pod, Secret or Node of the same namespace).
func (s *Server) createToken(ctx context.Context, req *request, r *http.Request, body []byte) (runtime.Object, []string, error) {
	iss := s.cfg.Identity.ServiceAccount
	tr := &authenticationv1.TokenRequest{}
	warnings, err := decodeBody(r, body, authenticationv1.SchemeGroupVersion.WithKind("TokenRequest"), tr)
	if err != nil {
		return nil, warnings, err
	}
	gk := authenticationv1.SchemeGroupVersion.WithKind("TokenRequest").GroupKind()
	if iss == nil {
		return nil, warnings, apierrors.NewServiceUnavailable("service-account tokens are not configured on this apiserver (serviceAccount.keyFile)")
	}
	saObj, err := s.get(ctx, req.res, req.ns, req.name)
	if err != nil {
		return nil, warnings, err
	}
	sa := saObj.(*corev1.ServiceAccount)
	lifetime := DefaultTokenExpiration
	if tr.Spec.ExpirationSeconds != nil {
		lifetime = time.Duration(*tr.Spec.ExpirationSeconds) * time.Second
	}
	if lifetime < MinTokenExpiration {
		return nil, warnings, apierrors.NewInvalid(gk, req.name, field.ErrorList{field.Invalid(field.NewPath("spec", "expirationSeconds"),
			int64(lifetime/time.Second), "may not specify a duration less than 10 minutes")})
	}
	if lifetime > 1<<32*time.Second {
		return nil, warnings, apierrors.NewInvalid(gk, req.name, field.ErrorList{field.TooLong(field.NewPath("spec", "expirationSeconds"),
			int64(lifetime/time.Second), 1<<32)})
	}
	auds := tr.Spec.Audiences
	if len(auds) == 0 {
		auds = iss.audiences
	}
	var k k8sClaims
	if b := tr.Spec.BoundObjectRef; b != nil {
		if err := s.bindToken(ctx, req, sa, b, &k); err != nil {
			return nil, warnings, err
		}
	}
	if err := s.admitTokenRequest(req.user, tr.Spec.BoundObjectRef, &k); err != nil {
		return nil, warnings, err
	}
	now := time.Now()
	tok, exp, err := iss.sign(now, lifetime, auds, sa, k)
	if err != nil {
		return nil, warnings, apierrors.NewInternalError(err)
	}
	secs := int64(lifetime / time.Second)
	out := &authenticationv1.TokenRequest{
		TypeMeta:   metav1.TypeMeta{APIVersion: authenticationv1.SchemeGroupVersion.String(), Kind: "TokenRequest"},
		ObjectMeta: metav1.ObjectMeta{Name: sa.Name, Namespace: sa.Namespace, CreationTimestamp: metav1.NewTime(now)},
		Spec:       authenticationv1.TokenRequestSpec{Audiences: auds, ExpirationSeconds: &secs, BoundObjectRef: tr.Spec.BoundObjectRef},
		Status:     authenticationv1.TokenRequestStatus{Token: tok, ExpirationTimestamp: metav1.NewTime(exp)},
	}
	return out, warnings, nil
}

// bindToken checks the object a TokenRequest binds its token to and
// records it in the claims, as upstream: a Pod (which must run as this
// service account; its node is named too), a Secret or a Node.
func (s *Server) bindToken(ctx context.Context, req *request, sa *corev1.ServiceAccount, b *authenticationv1.BoundObjectReference, k *k8sClaims) error {
	gk := authenticationv1.SchemeGroupVersion.WithKind("TokenRequest").GroupKind()
	p := field.NewPath("spec", "boundObjectRef")
	if b.APIVersion != "" && b.APIVersion != "v1" {
		return apierrors.NewInvalid(gk, req.name, field.ErrorList{field.NotSupported(p.Child("apiVersion"), b.APIVersion, []string{"v1"})})
	}
	var plural, ns string
	switch b.Kind {
	case "Pod":
		plural, ns = "pods", req.ns
	case "Secret":
		plural, ns = "secrets", req.ns
	case "Node":
		plural = "nodes"
	default:
		return apierrors.NewInvalid(gk, req.name, field.ErrorList{field.NotSupported(p.Child("kind"), b.Kind, []string{"Pod", "Secret", "Node"})})
	}
	if b.Name == "" {
		return apierrors.NewInvalid(gk, req.name, field.ErrorList{field.Required(p.Child("name"), "")})
	}
	res := s.reg.Lookup("", "v1", plural)
	obj, err := s.get(ctx, res, ns, b.Name)
	if err != nil {
		return err
	}
	m := obj.(metav1.Object)
	if b.UID != "" && b.UID != m.GetUID() {
		return apierrors.NewConflict(groupResource(res), b.Name,
			fmt.Errorf("the UID in the bound object reference (%s) does not match the UID in record. The object might have been deleted and then recreated", b.UID))
	}
	r := &ref{Name: m.GetName(), UID: m.GetUID()}
	switch o := obj.(type) {
	case *corev1.Pod:
		if o.Spec.ServiceAccountName != sa.Name {
			return apierrors.NewBadRequest(fmt.Sprintf("cannot bind token for serviceaccount %q to pod running with different serviceaccount name", sa.Name))
		}
		k.Pod = r
		if o.Spec.NodeName != "" {
			k.Node = &ref{Name: o.Spec.NodeName}
			if n, err := s.get(ctx, s.reg.Lookup("", "v1", "nodes"), "", o.Spec.NodeName); err == nil {
				k.Node.UID = n.(*corev1.Node).UID
			}
		}
	case *corev1.Secret:
		k.Secret = r
	case *corev1.Node:
		k.Node = r
	}
	return nil
}

// tokenReviewResources answer TokenReview: is this bearer token valid,
// and whose is it.
func tokenReviewResources() []*Resource {
	return []*Resource{{Group: "authentication.k8s.io", Version: "v1", Kind: "TokenReview", Plural: "tokenreviews",
		New: newOf[authenticationv1.TokenReview](), NewList: newOf[authenticationv1.TokenReview](),
		Review: (*Server).reviewToken}}
}

// reviewToken answers a TokenReview: authenticated with the user when
// the token verifies for one of the audiences asked (the API's when none)
// and its bindings still exist; otherwise not authenticated, with the
// reason kept vague as upstream's.
func (s *Server) reviewToken(ctx context.Context, _ user, obj runtime.Object) (runtime.Object, error) {
	rev := obj.(*authenticationv1.TokenReview)
	if rev.Spec.Token == "" {
		return nil, apierrors.NewInvalid(authenticationv1.SchemeGroupVersion.WithKind("TokenReview").GroupKind(), "",
			field.ErrorList{field.Required(field.NewPath("spec", "token"), "")})
	}
	iss := s.cfg.Identity.ServiceAccount
	rev.Status = authenticationv1.TokenReviewStatus{}
	if iss == nil {
		rev.Status.Error = "service-account tokens are not configured"
		return rev, nil
	}
	want := rev.Spec.Audiences
	pub, k, err := iss.verify(rev.Spec.Token, time.Now(), want)
	var u user
	if err == nil {
		u, err = s.tokenUser(ctx, k)
	}
	if err != nil {
		s.log.Debug("token review refused", "err", err)
		rev.Status.Error = "[invalid bearer token, token lookup failed]"
		return rev, nil
	}
	rev.Status.Authenticated = true
	rev.Status.User = authenticationv1.UserInfo{Username: u.Name, UID: u.UID, Groups: u.Groups}
	if len(u.Extra) > 0 {
		rev.Status.User.Extra = map[string]authenticationv1.ExtraValue{}
		for k, v := range u.Extra {
			rev.Status.User.Extra[k] = v
		}
	}
	if len(want) == 0 {
		want = iss.audiences
	}
	for _, a := range pub.Audience {
		if slices.Contains(want, a) {
			rev.Status.Audiences = append(rev.Status.Audiences, a)
		}
	}
	return rev, nil
}

// tokenRequestGVK is the kind of serviceaccounts/token.
var tokenRequestGVK = authenticationv1.SchemeGroupVersion.WithKind("TokenRequest")

// serveOIDC answers OIDC discovery for the service-account issuer, as
// upstream: /.well-known/openid-configuration and the key set at
// /openid/v1/jwks, so a relying party outside the cluster can verify
// service-account tokens. Authorization (the
// system:service-account-issuer-discovery role) happened before.
func (s *Server) serveOIDC(w http.ResponseWriter, path string) bool {
	iss := s.cfg.Identity.ServiceAccount
	if iss == nil {
		return false
	}
	switch path {
	case ".well-known/openid-configuration":
		w.Header().Set("Cache-Control", "public, max-age=3600")
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer":                                iss.issuer,
			"jwks_uri":                              strings.TrimSuffix(iss.issuer, "/") + "/openid/v1/jwks",
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{string(jose.ES256)},
		})
	case "openid/v1/jwks":
		data, err := json.Marshal(iss.jwks)
		if err != nil {
			writeError(w, apierrors.NewInternalError(err))
			return true
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		_, _ = w.Write(data)
	default:
		return false
	}
	return true
}
