package apiserver

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Identity configures who callers are: client certificates signed by
// ClientCAs, and service-account tokens (bearer JWTs) signed with
// ServiceAccountKey. The zero value trusts only certificates the TLS
// layer verified and knows no tokens.
type Identity struct {
	// ClientCAs verifies client certificates in the handler. The listener
	// then asks for a certificate without verifying it
	// (tls.RequestClientCert), so an expired certificate or one from
	// another CA is answered 401 with a Status, not a failed handshake.
	// Nil trusts the TLS layer's verification (r.TLS.VerifiedChains).
	ClientCAs *x509.CertPool
	// ClientCAPool, when set, replaces ClientCAs with the pool it returns
	// at each request: a CA bundle reloaded from its file
	// (certreload.CABundle.Pool). Chains verified against an earlier pool
	// are verified again.
	ClientCAPool func() *x509.CertPool
	// ServiceAccount signs and verifies service-account tokens; nil
	// serves no TokenRequest and authenticates no bearer token.
	ServiceAccount *TokenIssuer
}

// Users that are not certificates or tokens.
const (
	anonymousUser    = "system:anonymous"
	unauthenticated  = "system:unauthenticated"
	authenticatedGrp = "system:authenticated"
)

// publicPaths answer a caller without credentials, as upstream's
// system:public-info-viewer role: the health checks (served before any
// authentication) and /version, which runs as system:anonymous and is
// authorized by that role.
var publicPaths = map[string]bool{"version": true}

// errUnauthorized is the 401 every failed authentication gets: upstream
// says no more than that, whatever failed.
func errUnauthorized() error { return apierrors.NewUnauthorized("Unauthorized") }

// authenticate finds the caller: a client certificate the cluster CA
// signed (CN the user, O the groups), else a service-account bearer
// token. A request with no credentials is anonymous only for publicPaths;
// every other failure is a 401.
func (s *Server) authenticate(r *http.Request, path string) (user, error) {
	u, certErr := s.certUser(r)
	if certErr == nil {
		return u, nil
	}
	if tok, ok := bearerToken(r); ok {
		if s.cfg.Identity.ServiceAccount == nil {
			return user{}, errUnauthorized()
		}
		u, err := s.authenticateToken(r.Context(), tok)
		if err != nil {
			s.log.Debug("bearer token refused", "err", err)
			return user{}, errUnauthorized()
		}
		return u, nil
	}
	if certErr == errNoCredentials && publicPaths[path] {
		return user{Name: anonymousUser, Groups: []string{unauthenticated}}, nil
	}
	if certErr != errNoCredentials {
		s.log.Debug("client certificate refused", "err", certErr)
	}
	return user{}, errUnauthorized()
}

var errNoCredentials = errors.New("no credentials")

// clientCAs is the pool client certificates are verified against.
func (id Identity) clientCAs() *x509.CertPool {
	if id.ClientCAPool != nil {
		return id.ClientCAPool()
	}
	return id.ClientCAs
}

// bearerToken reads "Authorization: Bearer TOKEN".
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// certUser authenticates the client certificate: verified by the TLS
// layer, or here against Identity.ClientCAs.
func (s *Server) certUser(r *http.Request) (user, error) {
	if r.TLS == nil {
		return user{}, errNoCredentials
	}
	var leaf *x509.Certificate
	switch {
	case len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0:
		leaf = r.TLS.VerifiedChains[0][0]
	case len(r.TLS.PeerCertificates) == 0:
		return user{}, errNoCredentials
	case s.cfg.Identity.clientCAs() != nil:
		if err := s.certs.verify(s.cfg.Identity.clientCAs(), r.TLS.PeerCertificates, time.Now()); err != nil {
			return user{}, err
		}
		leaf = r.TLS.PeerCertificates[0]
	default:
		return user{}, errors.New("the client certificate was not verified")
	}
	if leaf.Subject.CommonName == "" {
		return user{}, errors.New("the client certificate has no common name")
	}
	groups := append(append([]string{}, leaf.Subject.Organization...), authenticatedGrp)
	return user{Name: leaf.Subject.CommonName, Groups: groups}, nil
}

// certVerifier remembers which certificate chains verified, so a client
// that sends many requests pays for one chain verification. Validity
// dates are checked on every request: an entry proves only the signatures.
type certVerifier struct {
	mu    sync.Mutex
	ok    map[[32]byte]bool
	roots *x509.CertPool // the pool the remembered chains verified against
}

// maxVerifiedChains bounds the remembered chains; the map starts over
// when it is full.
const maxVerifiedChains = 4096

func (v *certVerifier) verify(roots *x509.CertPool, chain []*x509.Certificate, now time.Time) error {
	leaf := chain[0]
	for _, c := range chain {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return errors.New("the client certificate chain has expired or is not yet valid")
		}
	}
	h := sha256.New()
	for _, c := range chain {
		h.Write(c.Raw)
	}
	var key [32]byte
	copy(key[:], h.Sum(nil))
	v.mu.Lock()
	if v.roots != roots { // a reloaded CA bundle: verify every chain again
		v.ok, v.roots = nil, roots
	}
	known := v.ok[key]
	v.mu.Unlock()
	if known {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return err
	}
	v.mu.Lock()
	if v.roots != roots {
		v.mu.Unlock()
		return nil // verified against a pool replaced meanwhile: not remembered
	}
	if v.ok == nil || len(v.ok) >= maxVerifiedChains {
		v.ok = map[[32]byte]bool{}
	}
	v.ok[key] = true
	v.mu.Unlock()
	return nil
}
