package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"kforge.dev/kforge/internal/atomicfile"
)

// File modes kforge writes.
const (
	dirMode    fs.FileMode = 0o700
	secretMode fs.FileMode = 0o600
	publicMode fs.FileMode = 0o644
)

// ErrNoPKI means the PKI directory, or a file a command needs from it,
// does not exist yet: `kforge pki init` makes it.
var ErrNoPKI = errors.New("no PKI")

// FileError is a problem with one file of the PKI directory.
type FileError struct {
	Path string // local path
	Err  error
}

func (e *FileError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

func fileErr(path string, format string, args ...any) error {
	return &FileError{Path: path, Err: fmt.Errorf(format, args...)}
}

// readOptional reads a file; a missing file is (nil, nil).
func readOptional(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	return data, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// parseCertPEM parses a file that must hold exactly one certificate.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM data: not a certificate")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("PEM block is %q, want CERTIFICATE", block.Type)
	}
	if b, _ := pem.Decode(rest); b != nil {
		return nil, errors.New("more than one PEM block: want exactly one certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return c, nil
}

// parseKeyPEM parses a private key: SEC 1 EC, PKCS #8 or PKCS #1.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM data: not a private key")
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q, want a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
	return s, nil
}

func parsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("no PUBLIC KEY PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	return k, nil
}

type equaler interface{ Equal(crypto.PublicKey) bool }

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

func isP256(pub crypto.PublicKey) bool {
	k, ok := pub.(*ecdsa.PublicKey)
	return ok && k.Curve == elliptic.P256()
}

// parsePair parses a certificate and its key and checks they belong together.
func parsePair(certPEM, keyPEM []byte) (*pair, error) {
	c, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	k, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(c.PublicKey, k.Public()) {
		return nil, errors.New("the key does not match the certificate")
	}
	return &pair{certPEM: certPEM, keyPEM: keyPEM, cert: c, key: k}, nil
}

// loadPair reads a certificate and its key. Both missing is (nil, nil):
// not issued yet. One without the other, unparsable PEM, or a key that
// does not belong to the certificate is an error naming the file.
func loadPair(certPath, keyPath string) (*pair, error) {
	certPEM, err := readOptional(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readOptional(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case certPEM == nil && keyPEM == nil:
		return nil, nil
	case keyPEM == nil:
		return nil, fileErr(certPath, "the certificate exists but its key %s does not; restore the key, or remove both files to issue a new pair", keyPath)
	case certPEM == nil:
		return nil, fileErr(keyPath, "the key exists but its certificate %s does not; restore the certificate, or remove both files to issue a new pair", certPath)
	}
	c, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, &FileError{Path: certPath, Err: err}
	}
	k, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, &FileError{Path: keyPath, Err: err}
	}
	if !publicKeysEqual(c.PublicKey, k.Public()) {
		return nil, fileErr(keyPath, "the key does not match its certificate %s", certPath)
	}
	if err := checkSecretMode(keyPath); err != nil {
		return nil, err
	}
	return &pair{certPEM: certPEM, keyPEM: keyPEM, cert: c, key: k}, nil
}

// checkSecretMode refuses a key that others could have read: it may have
// leaked, and quietly tightening the mode would hide that.
func checkSecretMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return &FileError{Path: path, Err: err}
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fileErr(path, "mode is %04o: a private key must be 0600 (check it has not leaked, then chmod 600 it)", fi.Mode().Perm())
	}
	return nil
}

// writeFile makes path's folder (mode 0700) and replaces the file
// atomically, so a reader never sees half a key.
func writeFile(path string, data []byte, mode fs.FileMode) error {
	if err := ensureDir(filepath.Dir(path)); err != nil {
		return err
	}
	return atomicfile.Write(path, data, mode)
}

// ensureDir makes a folder (and its parents) mode 0700.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return &FileError{Path: dir, Err: err}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return &FileError{Path: dir, Err: err}
	}
	if fi.Mode().Perm() != dirMode {
		if err := os.Chmod(dir, dirMode); err != nil {
			return &FileError{Path: dir, Err: err}
		}
	}
	return nil
}
