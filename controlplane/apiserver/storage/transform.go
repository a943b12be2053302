package storage

import (
	"errors"
	"fmt"
	"strings"
)

// Transformer turns the bytes an object is stored as into the bytes
// written to etcd, and back: encryption at rest. Implementations are safe
// for concurrent use.
type Transformer interface {
	// TransformToStorage returns what is written to etcd for data under
	// key.
	TransformToStorage(key string, data []byte) ([]byte, error)
	// TransformFromStorage returns the stored bytes for what etcd holds
	// under key. stale reports a value not in the form TransformToStorage
	// writes now (another key or provider, or plaintext): writing it
	// again, even unchanged, is worthwhile.
	TransformFromStorage(key string, data []byte) (out []byte, stale bool, err error)
}

// ErrTransform wraps a failure to read a value through its Transformer
// (a missing key, tampered bytes): the object cannot be decoded.
var ErrTransform = errors.New("unable to transform the stored value")

// Option configures a Store.
type Option func(*Store)

// WithTransformer makes t apply to every key under prefix (which should
// end in "/"). With several prefixes the longest matching one applies.
func WithTransformer(prefix string, t Transformer) Option {
	return func(s *Store) { s.transforms = append(s.transforms, prefixTransformer{prefix, t}) }
}

type prefixTransformer struct {
	prefix string
	t      Transformer
}

// transformerFor returns the Transformer for key, nil for plain keys.
func (s *Store) transformerFor(key string) Transformer {
	var best *prefixTransformer
	for i := range s.transforms {
		p := &s.transforms[i]
		if strings.HasPrefix(key, p.prefix) && (best == nil || len(p.prefix) > len(best.prefix)) {
			best = p
		}
	}
	if best == nil {
		return nil
	}
	return best.t
}

// toStorage is what is written to etcd for value under key.
func (s *Store) toStorage(key string, value []byte) (string, error) {
	t := s.transformerFor(key)
	if t == nil {
		return string(value), nil
	}
	out, err := t.TransformToStorage(key, value)
	if err != nil {
		return "", fmt.Errorf("storing %s: %w", key, err)
	}
	return string(out), nil
}

// fromStorage turns what etcd holds into the stored value in place.
func (s *Store) fromStorage(kv *KV) error {
	t := s.transformerFor(kv.Key)
	if t == nil || len(kv.Value) == 0 {
		return nil
	}
	out, stale, err := t.TransformFromStorage(kv.Key, kv.Value)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrTransform, kv.Key, err)
	}
	kv.Value, kv.Stale = out, stale
	return nil
}
