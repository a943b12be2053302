package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sync"
	"time"

	"github.com/cloudflare/cfssl/config"
	"github.com/cloudflare/cfssl/csr"
	"github.com/cloudflare/cfssl/initca"
	cflog "github.com/cloudflare/cfssl/log"
	"github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"
)

var quietOnce sync.Once

// quietCFSSL silences cfssl's package-global logger, which prints every
// step at Info level to stderr and would bury our own progress lines.
// cfssl returns the errors that matter.
func quietCFSSL() {
	quietOnce.Do(func() { cflog.Level = cflog.LevelFatal })
}

// keyRequest is ECDSA P-256 for every key kforge makes.
func keyRequest() *csr.KeyRequest { return &csr.KeyRequest{A: "ecdsa", S: 256} }

// pair is a PEM certificate and key as written to disk, with the parsed
// forms.
type pair struct {
	certPEM, keyPEM []byte
	cert            *x509.Certificate
	key             crypto.Signer
}

// newCA makes a self-signed CA with initca. Its path length is 0: it signs
// leaves only.
func newCA(spec *Cert) (*pair, error) { return newCAWithBackdate(spec, 0) }

// newCAWithBackdate starts the CA's validity backdate before now (cfssl's
// default when 0); tests use it to make an expired CA.
func newCAWithBackdate(spec *Cert, backdate time.Duration) (*pair, error) {
	quietCFSSL()
	req := &csr.CertificateRequest{
		CN:         spec.CommonName,
		Names:      subjectNames(spec.Organization),
		KeyRequest: keyRequest(),
		CA:         &csr.CAConfig{Expiry: spec.Validity.String(), PathLenZero: true},
	}
	if backdate > 0 {
		req.CA.Backdate = backdate.String()
	}
	certPEM, _, keyPEM, err := initca.New(req)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", spec.Name, err)
	}
	return parsePair(certPEM, keyPEM)
}

// issue signs a new leaf for spec with ca, using cfssl's local signer with
// a profile that carries exactly spec's extended key usages.
func issue(spec *Cert, ca *pair) (*pair, error) {
	quietCFSSL()
	req := &csr.CertificateRequest{
		CN:         spec.CommonName,
		Names:      subjectNames(spec.Organization),
		KeyRequest: keyRequest(),
	}
	hosts := append(append([]string{}, spec.DNSNames...), spec.IPAddresses...)
	req.Hosts = hosts
	csrPEM, keyPEM, err := csr.ParseRequest(req)
	if err != nil {
		return nil, fmt.Errorf("%s: key and CSR: %w", spec.ID(), err)
	}
	usages := []string{"digital signature"}
	usages = append(usages, spec.Usages()...)
	policy := &config.Signing{
		Profiles: map[string]*config.SigningProfile{},
		Default: &config.SigningProfile{
			Usage:        usages,
			Expiry:       spec.Validity,
			ExpiryString: spec.Validity.String(),
			// Copy only the subject, the key and the SANs from the CSR:
			// never a CA flag or another extension.
			CSRWhitelist: &config.CSRWhitelist{
				Subject: true, PublicKeyAlgorithm: true, PublicKey: true,
				SignatureAlgorithm: true, DNSNames: true, IPAddresses: true,
			},
		},
	}
	s, err := local.NewSigner(ca.key, ca.cert, signer.DefaultSigAlgo(ca.key), policy)
	if err != nil {
		return nil, fmt.Errorf("%s: signer for %s: %w", spec.ID(), spec.CA, err)
	}
	// A non-nil, possibly empty Hosts replaces whatever SANs the CSR has:
	// a client certificate gets none.
	certPEM, err := s.Sign(signer.SignRequest{Hosts: append([]string{}, hosts...), Request: string(csrPEM)})
	if err != nil {
		return nil, fmt.Errorf("%s: signing with %s: %w", spec.ID(), spec.CA, err)
	}
	return parsePair(certPEM, keyPEM)
}

func subjectNames(orgs []string) []csr.Name {
	var out []csr.Name
	for _, o := range orgs {
		out = append(out, csr.Name{O: o})
	}
	return out
}

// newServiceAccountKey makes the service-account signing key pair:
// PEM "EC PRIVATE KEY" and PKIX "PUBLIC KEY".
func newServiceAccountKey() (keyPEM, pubPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("service-account key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, fmt.Errorf("service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("service-account key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}
