package encryption

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"k8s.io/apimachinery/pkg/util/validation/field"

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
	if errs := c.Validate(nil); len(errs) > 0 {
		return nil, &roleconfig.Error{Component: "encryption", Errs: errs}
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

// Validate returns every problem of the resource entries, with field
// paths under fldPath (nil for a file of its own, "encryption" in the
// apiserver config).
func (c *Config) Validate(fldPath *field.Path) field.ErrorList {
	return ValidateResources(fldPath, c.Resources)
}

// ValidateResources checks resource entries as upstream's validation does:
// resources named once, each provider exactly one kind, key names unique
// and short, key sizes right for the cipher. Fields are under
// fldPath.resources.
func ValidateResources(fldPath *field.Path, entries []ResourceConfig) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, e := range entries {
		f := fldPath.Child("resources").Index(i)
		if len(e.Resources) == 0 {
			errs = append(errs, field.Required(f.Child("resources"), "must name at least one resource"))
		}
		for j, r := range e.Resources {
			rf := f.Child("resources").Index(j)
			switch {
			case r == "" || r != strings.ToLower(r) || strings.Contains(r, "/"):
				errs = append(errs, field.Invalid(rf, r, `not a lower-case plural resource name ("secrets", "deployments.apps", "*.apps")`))
			case seen[r]:
				errs = append(errs, field.Duplicate(rf, r))
			}
			seen[r] = true
		}
		if len(e.Providers) == 0 {
			errs = append(errs, field.Required(f.Child("providers"), "must list at least one provider"))
		}
		names := map[string]bool{}
		for j, p := range e.Providers {
			pf := f.Child("providers").Index(j)
			n := 0
			for _, set := range []bool{p.AESGCM != nil, p.Secretbox != nil, p.Identity != nil, p.AESCBC != nil, p.KMS != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				errs = append(errs, field.Invalid(pf, field.OmitValueType{}, "must be exactly one of aesgcm, secretbox or identity"))
				continue
			}
			switch {
			case p.AESCBC != nil:
				errs = append(errs, field.Forbidden(pf.Child("aescbc"), "is not supported: use secretbox or aesgcm"))
			case p.KMS != nil:
				errs = append(errs, field.Forbidden(pf.Child("kms"), "is not supported: use secretbox or aesgcm"))
			case p.AESGCM != nil:
				errs = append(errs, validateKeys(pf.Child("aesgcm"), p.AESGCM, names, []int{16, 24, 32})...)
			case p.Secretbox != nil:
				errs = append(errs, validateKeys(pf.Child("secretbox"), p.Secretbox, names, []int{32})...)
			}
		}
	}
	return errs
}

// maxKeyName bounds a key name, which every value it encrypts carries.
const maxKeyName = 64

func validateKeys(f *field.Path, kl *KeyList, names map[string]bool, sizes []int) field.ErrorList {
	var errs field.ErrorList
	if len(kl.Keys) == 0 {
		errs = append(errs, field.Required(f.Child("keys"), "must list at least one key"))
	}
	for i, k := range kl.Keys {
		kf := f.Child("keys").Index(i)
		switch {
		case k.Name == "":
			errs = append(errs, field.Required(kf.Child("name"), ""))
		case len(k.Name) > maxKeyName || strings.Contains(k.Name, ":"):
			errs = append(errs, field.Invalid(kf.Child("name"), k.Name, fmt.Sprintf("must be at most %d characters and hold no colon", maxKeyName)))
		case names[k.Name]:
			errs = append(errs, field.Invalid(kf.Child("name"), k.Name, "is used by another key of these providers"))
		}
		names[k.Name] = true
		if _, err := decodeKey(k.Secret, sizes); err != nil {
			errs = append(errs, field.Invalid(kf.Child("secret"), field.OmitValueType{}, err.Error()))
		}
	}
	return errs
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
