package encryption

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/secretbox"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// encryptedPrefix starts every value a provider other than identity
// wrote.
const encryptedPrefix = "k8s:enc:"

// keyTransformer seals and opens values with one key.
type keyTransformer interface {
	seal(key string, data []byte) ([]byte, error)
	open(key string, data []byte) ([]byte, error)
}

// prefixed is one key of one provider and the prefix its values carry;
// identity's prefix is empty.
type prefixed struct {
	prefix []byte
	t      keyTransformer // nil: identity
}

// Transformer is the storage.Transformer of one resource entry: the first
// key of the first provider writes, every key of every provider reads.
type Transformer struct {
	keys []prefixed
}

var _ storage.Transformer = (*Transformer)(nil)

// NewTransformer builds the transformer of a validated entry's providers.
func NewTransformer(providers []Provider) (*Transformer, error) {
	t := &Transformer{}
	for i, p := range providers {
		switch {
		case p.Identity != nil:
			t.keys = append(t.keys, prefixed{})
		case p.AESGCM != nil:
			for _, k := range p.AESGCM.Keys {
				raw, err := decodeKey(k.Secret, []int{16, 24, 32})
				if err != nil {
					return nil, fmt.Errorf("providers[%d]: aesgcm key %q: %w", i, k.Name, err)
				}
				block, err := aes.NewCipher(raw)
				if err != nil {
					return nil, fmt.Errorf("providers[%d]: aesgcm key %q: %w", i, k.Name, err)
				}
				aead, err := cipher.NewGCM(block)
				if err != nil {
					return nil, fmt.Errorf("providers[%d]: aesgcm key %q: %w", i, k.Name, err)
				}
				t.keys = append(t.keys, prefixed{prefix: []byte(encryptedPrefix + "aesgcm:v1:" + k.Name + ":"), t: gcmKey{aead}})
			}
		case p.Secretbox != nil:
			for _, k := range p.Secretbox.Keys {
				raw, err := decodeKey(k.Secret, []int{32})
				if err != nil {
					return nil, fmt.Errorf("providers[%d]: secretbox key %q: %w", i, k.Name, err)
				}
				var key [32]byte
				copy(key[:], raw)
				t.keys = append(t.keys, prefixed{prefix: []byte(encryptedPrefix + "secretbox:v1:" + k.Name + ":"), t: boxKey{key}})
			}
		default:
			return nil, fmt.Errorf("providers[%d]: no supported provider", i)
		}
	}
	if len(t.keys) == 0 {
		return nil, errors.New("no providers")
	}
	return t, nil
}

// TransformToStorage encrypts with the first key (identity: as is).
func (t *Transformer) TransformToStorage(key string, data []byte) ([]byte, error) {
	w := t.keys[0]
	if w.t == nil {
		return data, nil
	}
	sealed, err := w.t.seal(key, data)
	if err != nil {
		return nil, err
	}
	return append(append(make([]byte, 0, len(w.prefix)+len(sealed)), w.prefix...), sealed...), nil
}

// TransformFromStorage decrypts with the key the value's prefix names;
// a value without the encrypted prefix is plaintext, readable only while
// identity is a provider. Anything but the writing key reads as stale.
func (t *Transformer) TransformFromStorage(key string, data []byte) ([]byte, bool, error) {
	encrypted := bytes.HasPrefix(data, []byte(encryptedPrefix))
	for i, k := range t.keys {
		if k.t == nil {
			if encrypted {
				continue // identity never reads encrypted data
			}
			return data, i != 0, nil
		}
		if !bytes.HasPrefix(data, k.prefix) {
			continue
		}
		out, err := k.t.open(key, data[len(k.prefix):])
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", bytes.TrimSuffix(k.prefix, []byte(":")), err)
		}
		return out, i != 0, nil
	}
	if encrypted {
		return nil, false, errors.New("no configured key matches the value's prefix")
	}
	return nil, false, errors.New("the value is not encrypted and identity is not a provider")
}

// gcmKey is AES-GCM with a random 12-byte nonce before the ciphertext and
// the etcd key as additional data, so a value copied under another key
// does not open.
type gcmKey struct{ aead cipher.AEAD }

func (g gcmKey) seal(key string, data []byte) ([]byte, error) {
	nonce := make([]byte, g.aead.NonceSize(), g.aead.NonceSize()+len(data)+g.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return g.aead.Seal(nonce, nonce, data, []byte(key)), nil
}

func (g gcmKey) open(key string, data []byte) ([]byte, error) {
	n := g.aead.NonceSize()
	if len(data) < n {
		return nil, errors.New("the value is shorter than a nonce")
	}
	return g.aead.Open(nil, data[:n], data[n:], []byte(key))
}

// boxKey is NaCl secretbox (XSalsa20-Poly1305) with a random 24-byte
// nonce before the sealed box.
type boxKey struct{ key [32]byte }

func (b boxKey) seal(_ string, data []byte) ([]byte, error) {
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	return secretbox.Seal(nonce[:], data, &nonce, &b.key), nil
}

func (b boxKey) open(_ string, data []byte) ([]byte, error) {
	if len(data) < 24 {
		return nil, errors.New("the value is shorter than a nonce")
	}
	var nonce [24]byte
	copy(nonce[:], data[:24])
	out, ok := secretbox.Open(nil, data[24:], &nonce, &b.key)
	if !ok {
		return nil, errors.New("the value does not open with its key")
	}
	return out, nil
}
