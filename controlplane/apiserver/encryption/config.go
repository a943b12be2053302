package encryption

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"kforge.dev/kforge/controlplane/roleconfig"
)

// APIVersion and Kind of an EncryptionConfiguration document, as upstream.
const (
	APIVersion = "apiserver.config.k8s.io/v1"
	Kind       = "EncryptionConfiguration"
)

// Config is an EncryptionConfiguration: which resources are encrypted at
// rest, and how.
type Config struct {
	APIVersion string `yaml:"apiVersion,omitempty" json:"apiVersion,omitempty"`
	Kind       string `yaml:"kind,omitempty" json:"kind,omitempty"`
	// Resources lists resource entries; a resource named by several
	// entries follows the first.
	Resources []ResourceConfig `yaml:"resources" json:"resources"`
}

// ResourceConfig is one entry: the resources it covers and their providers.
type ResourceConfig struct {
	// Resources are plural resource names, with their group when not the
	// core group ("secrets", "deployments.apps"), or wildcards ("*.apps",
	// "*.*").
	Resources []string `yaml:"resources" json:"resources"`
	// Providers in order: the first writes, all read.
	Providers []Provider `yaml:"providers" json:"providers"`
}

// Provider is exactly one of its fields.
type Provider struct {
	AESGCM    *KeyList  `yaml:"aesgcm,omitempty" json:"aesgcm,omitempty"`
	Secretbox *KeyList  `yaml:"secretbox,omitempty" json:"secretbox,omitempty"`
	Identity  *struct{} `yaml:"identity,omitempty" json:"identity,omitempty"`
	// AESCBC and KMS are recognised to be refused by name.
	AESCBC *KeyList `yaml:"aescbc,omitempty" json:"aescbc,omitempty"`
	KMS    any      `yaml:"kms,omitempty" json:"kms,omitempty"`
}

// KeyList is a provider's keys: the first encrypts, all decrypt.
type KeyList struct {
	Keys []Key `yaml:"keys" json:"keys"`
}

// Key is a named key; Secret is its bytes in standard base64.
type Key struct {
	Name   string `yaml:"name" json:"name"`
	Secret string `yaml:"secret" json:"secret"`
}

// Parse decodes an EncryptionConfiguration document strictly (an unknown
// field is an error) and validates it.
func Parse(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("encryption configuration: %w", err)
	}
	if c.APIVersion != APIVersion || c.Kind != Kind {
		return nil, fmt.Errorf("encryption configuration: want apiVersion %s and kind %s, not %q and %q", APIVersion, Kind, c.APIVersion, c.Kind)
	}
	probs := roleconfig.NewProblems("encryption")
	c.Validate("", probs)
	if err := probs.Err(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load reads and parses an EncryptionConfiguration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("encryption configuration: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Validate adds every problem of the resource entries to probs, with
// field paths under prefix ("encryption." in the apiserver config).
func (c *Config) Validate(prefix string, probs *roleconfig.Problems) {
	ValidateResources(prefix, c.Resources, probs)
}

// ValidateResources checks resource entries as upstream's validation does:
// resources named once, each provider exactly one kind, key names unique
// and short, key sizes right for the cipher.
func ValidateResources(prefix string, entries []ResourceConfig, probs *roleconfig.Problems) {
	add := probs.Add
	seen := map[string]bool{}
	for i, e := range entries {
		f := fmt.Sprintf("%sresources[%d]", prefix, i)
		if len(e.Resources) == 0 {
			add(f+".resources", "must name at least one resource")
		}
		for j, r := range e.Resources {
			rf := fmt.Sprintf("%s.resources[%d]", f, j)
			switch {
			case r == "" || r != strings.ToLower(r) || strings.Contains(r, "/"):
				add(rf, "%q is not a lower-case plural resource name (\"secrets\", \"deployments.apps\", \"*.apps\")", r)
			case seen[r]:
				add(rf, "%q is listed more than once", r)
			}
			seen[r] = true
		}
		if len(e.Providers) == 0 {
			add(f+".providers", "must list at least one provider")
		}
		names := map[string]bool{}
		for j, p := range e.Providers {
			pf := fmt.Sprintf("%s.providers[%d]", f, j)
			n := 0
			for _, set := range []bool{p.AESGCM != nil, p.Secretbox != nil, p.Identity != nil, p.AESCBC != nil, p.KMS != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				add(pf, "must be exactly one of aesgcm, secretbox or identity")
				continue
			}
			switch {
			case p.AESCBC != nil:
				add(pf+".aescbc", "is not supported: use secretbox or aesgcm")
			case p.KMS != nil:
				add(pf+".kms", "is not supported: use secretbox or aesgcm")
			case p.AESGCM != nil:
				validateKeys(pf+".aesgcm", p.AESGCM, names, []int{16, 24, 32}, probs)
			case p.Secretbox != nil:
				validateKeys(pf+".secretbox", p.Secretbox, names, []int{32}, probs)
			}
		}
	}
}

// maxKeyName bounds a key name, which every value it encrypts carries.
const maxKeyName = 64

func validateKeys(f string, kl *KeyList, names map[string]bool, sizes []int, probs *roleconfig.Problems) {
	if len(kl.Keys) == 0 {
		probs.Add(f+".keys", "must list at least one key")
	}
	for i, k := range kl.Keys {
		kf := fmt.Sprintf("%s.keys[%d]", f, i)
		switch {
		case k.Name == "":
			probs.Add(kf+".name", "is required")
		case len(k.Name) > maxKeyName || strings.Contains(k.Name, ":"):
			probs.Add(kf+".name", "%q must be at most %d characters and hold no colon", k.Name, maxKeyName)
		case names[k.Name]:
			probs.Add(kf+".name", "%q is used by another key of these providers", k.Name)
		}
		names[k.Name] = true
		if _, err := decodeKey(k.Secret, sizes); err != nil {
			probs.Add(kf+".secret", "%v", err)
		}
	}
}

func decodeKey(secret string, sizes []int) ([]byte, error) {
	if secret == "" {
		return nil, errors.New("is required (the key, base64)")
	}
	b, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		return nil, fmt.Errorf("is not base64: %v", err)
	}
	for _, n := range sizes {
		if len(b) == n {
			return b, nil
		}
	}
	return nil, fmt.Errorf("is %d bytes; want %s", len(b), sizeList(sizes))
}

func sizeList(sizes []int) string {
	var s []string
	for _, n := range sizes {
		s = append(s, fmt.Sprint(n))
	}
	return strings.Join(s, ", ") + " bytes"
}

// Covers reports whether a resource name in an entry ("secrets",
// "*.apps", "*.*") covers the resource plural of group.
func Covers(name, group, plural string) bool {
	want := plural
	if group != "" {
		want += "." + group
	}
	switch {
	case name == want:
		return true
	case name == "*.*":
		return true
	case strings.HasPrefix(name, "*."):
		g := strings.TrimPrefix(name, "*.")
		return g == group || (g == "" && group == "")
	}
	return false
}
