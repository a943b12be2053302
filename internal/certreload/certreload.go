package certreload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often a Watcher polls by default.
const DefaultInterval = 2 * time.Second

// stamp identifies one version of a file: a rename or rewrite changes it.
type stamp struct {
	info os.FileInfo
}

func (s stamp) same(o stamp) bool {
	if s.info == nil || o.info == nil {
		return false
	}
	return os.SameFile(s.info, o.info) && s.info.Size() == o.info.Size() && s.info.ModTime().Equal(o.info.ModTime())
}

func stat(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{info: fi}, nil
}

// KeyPair is a certificate and key read from two files, reloaded by
// Reload. Safe for concurrent use; handshakes never block on a reload.
type KeyPair struct {
	certFile, keyFile string

	cur atomic.Pointer[tls.Certificate]

	mu       sync.Mutex // serialises Reload
	cst, kst stamp
}

// NewKeyPair loads the pair; the files must exist and match.
func NewKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile}
	if _, err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Name is the certificate file, which names the pair in logs.
func (k *KeyPair) Name() string { return k.certFile }

// Reload re-reads the files when either changed since the last load.
// changed is true when a new pair was taken. On error the current pair
// stays in use.
func (k *KeyPair) Reload() (changed bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cst, err := stat(k.certFile)
	if err != nil {
		return false, fmt.Errorf("certificate %s: %w", k.certFile, err)
	}
	kst, err := stat(k.keyFile)
	if err != nil {
		return false, fmt.Errorf("key %s: %w", k.keyFile, err)
	}
	if k.cur.Load() != nil && cst.same(k.cst) && kst.same(k.kst) {
		return false, nil
	}
	pair, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return false, fmt.Errorf("certificate %s and key %s: %w", k.certFile, k.keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return false, fmt.Errorf("certificate %s: %w", k.certFile, err)
		}
	}
	k.cur.Store(&pair)
	k.cst, k.kst = cst, kst
	return true, nil
}

// Leaf is the certificate in use.
func (k *KeyPair) Leaf() *x509.Certificate { return k.cur.Load().Leaf }

// GetCertificate is tls.Config.GetCertificate for a server.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

// GetClientCertificate is tls.Config.GetClientCertificate for a client:
// it always offers the pair, whatever CAs the server names.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

// CABundle is a pool of CA certificates read from one PEM file (one or
// more certificates), reloaded by Reload. Safe for concurrent use.
type CABundle struct {
	file string
	cur  atomic.Pointer[x509.CertPool]

	mu sync.Mutex
	st stamp
}

// NewCABundle loads the bundle; the file must hold at least one certificate.
func NewCABundle(file string) (*CABundle, error) {
	b := &CABundle{file: file}
	if _, err := b.Reload(); err != nil {
		return nil, err
	}
	return b, nil
}

// Name is the bundle's file.
func (b *CABundle) Name() string { return b.file }

// Pool is the pool in use. Callers must not change it.
func (b *CABundle) Pool() *x509.CertPool { return b.cur.Load() }

// Reload re-reads the file when it changed; on error the current pool
// stays in use.
func (b *CABundle) Reload() (changed bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := stat(b.file)
	if err != nil {
		return false, fmt.Errorf("CA bundle %s: %w", b.file, err)
	}
	if b.cur.Load() != nil && st.same(b.st) {
		return false, nil
	}
	data, err := os.ReadFile(b.file)
	if err != nil {
		return false, fmt.Errorf("CA bundle %s: %w", b.file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return false, fmt.Errorf("CA bundle %s holds no certificate", b.file)
	}
	b.cur.Store(pool)
	b.st = st
	return true, nil
}

// Reloader is what a Watcher polls: a KeyPair or a CABundle.
type Reloader interface {
	Name() string
	Reload() (changed bool, err error)
}

// Watcher polls reloaders until its context ends. Poll and Run are not
// for concurrent use: one goroutine polls.
type Watcher struct {
	// Items are polled in order.
	Items []Reloader
	// Interval between polls; DefaultInterval when zero.
	Interval time.Duration
	// Log gets one line per reload and per failure (not repeated while
	// the same failure persists); nil discards.
	Log *slog.Logger
	// OnReload, when set, is called after an item took new files.
	OnReload func(name string)

	failed map[string]string
}

// Poll reloads every item once and returns the failures joined.
func (w *Watcher) Poll() error {
	log := w.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if w.failed == nil {
		w.failed = map[string]string{}
	}
	var errs []error
	for _, it := range w.Items {
		changed, err := it.Reload()
		if err != nil {
			errs = append(errs, err)
			if w.failed[it.Name()] != err.Error() {
				log.Warn("reloading a certificate failed; the previous one stays in use", "file", it.Name(), "err", err)
				w.failed[it.Name()] = err.Error()
			}
			continue
		}
		delete(w.failed, it.Name())
		if changed {
			attrs := []any{"file", it.Name()}
			if kp, ok := it.(*KeyPair); ok {
				attrs = append(attrs, "serial", kp.Leaf().SerialNumber.String(), "notAfter", kp.Leaf().NotAfter.UTC().Format(time.RFC3339))
			}
			log.Info("certificate reloaded", attrs...)
			if w.OnReload != nil {
				w.OnReload(it.Name())
			}
		}
	}
	return errors.Join(errs...)
}

// Run polls every Interval until ctx ends. Call it in a goroutine that
// its owner waits for.
func (w *Watcher) Run(ctx context.Context) {
	iv := w.Interval
	if iv <= 0 {
		iv = DefaultInterval
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = w.Poll()
		}
	}
}

// ServerConfig returns a copy of base that serves kp's current
// certificate and, when clientCAs is not nil, verifies client
// certificates against its current pool: each handshake reads both.
func ServerConfig(base *tls.Config, kp *KeyPair, clientCAs *CABundle) *tls.Config {
	c := base.Clone()
	c.Certificates = nil
	c.GetCertificate = kp.GetCertificate
	if clientCAs != nil {
		c.ClientCAs = clientCAs.Pool()
		c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			per := c.Clone()
			per.GetConfigForClient = nil
			per.ClientCAs = clientCAs.Pool()
			return per, nil
		}
	}
	return c
}
