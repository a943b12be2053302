package pki

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"kforge.dev/kforge/controlplane/apiserver/encryption"
)

// EncryptionConfigFile is the EncryptionConfiguration that encrypts
// Secrets at rest, under the PKI directory. Every master's apiserver needs
// the same file (its encryption.providerConfigFile); like the CA keys it
// is mode 0600.
const EncryptionConfigFile = "ca/encryption.yaml"

// EncryptionKey makes sure dir (the PKI directory) holds
// EncryptionConfigFile and returns its path. The first call writes a new
// random 32-byte secretbox key for Secrets, with identity after it so
// Secrets written before encryption was enabled stay readable; later calls
// keep the file as it is (an operator's key rotation included) after
// checking that it parses and that no one else can read it.
//
// secretbox rather than aesgcm: its 24-byte random nonces cannot repeat in
// practice however many writes a key sees, where aesgcm's 12-byte ones
// call for rotating the key every 200,000 writes.
func EncryptionKey(dir string) (string, error) {
	path := filepath.Join(dir, filepath.FromSlash(EncryptionConfigFile))
	if data, err := os.ReadFile(path); err == nil {
		if err := checkSecretMode(path); err != nil {
			return "", err
		}
		if _, err := encryption.Parse(data); err != nil {
			return "", &FileError{Path: path, Err: err}
		}
		return path, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", &FileError{Path: path, Err: err}
	}

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", fmt.Errorf("pki: encryption key: %w", err)
	}
	doc := encryption.Config{
		APIVersion: encryption.APIVersion,
		Kind:       encryption.Kind,
		Resources: []encryption.ResourceConfig{{
			Resources: []string{"secrets"},
			Providers: []encryption.Provider{
				{Secretbox: &encryption.KeyList{Keys: []encryption.Key{{
					Name:   "key-" + time.Now().UTC().Format("20060102"),
					Secret: base64.StdEncoding.EncodeToString(secret),
				}}}},
				{Identity: &struct{}{}},
			},
		}},
	}
	body, err := yaml.Marshal(&doc)
	if err != nil {
		return "", fmt.Errorf("pki: encryption config: %w", err)
	}
	data := append([]byte("# Encryption at rest for the apiservers (written once by kforge; rotate keys by hand:\n"+
		"# put a new key first, keep the old ones until every Secret was rewritten).\n"), body...)
	if err := ensureDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	// Written aside and linked into place: link fails when the file
	// appeared meanwhile, so a key is never replaced by another.
	f, err := os.CreateTemp(filepath.Dir(path), ".encryption.yaml.tmp-*")
	if err != nil {
		return "", &FileError{Path: path, Err: err}
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(secretMode); err == nil {
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", &FileError{Path: path, Err: err}
		}
	} else {
		f.Close()
		return "", &FileError{Path: path, Err: err}
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return EncryptionKey(dir) // another call wrote it first: keep that one
		}
		return "", &FileError{Path: path, Err: err}
	}
	return path, nil
}
