package roleconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// APIVersion is the apiVersion of every role config document.
const APIVersion = "kforge.dev/v1alpha1"

// Config is what Parse needs of a role's config type (a pointer to it).
// The type carries yaml tags so that yaml.Marshal of a value Parse
// accepted reads back, through Parse, as the same value.
type Config interface {
	// FilePaths points at every field that holds a file or folder path;
	// Parse makes the relative ones absolute against the folder of the
	// config file.
	FilePaths() []*string
	// Validate returns every problem of the whole config, each under its
	// field path. It has no side effects: it opens no file.
	Validate() field.ErrorList
}

// Parse decodes data, exactly one YAML document in which an unknown field
// is an error, over the defaults newConfig returns (a list in the
// document replaces the default list), makes relative file paths absolute
// against baseDir and validates the result: every problem comes back at
// once in an *Error for component.
func Parse[C Config](component string, data []byte, baseDir string, newConfig func() C) (C, error) {
	c := newConfig()
	if err := Decode(data, c); err != nil {
		var zero C
		return zero, err
	}
	ResolvePaths(baseDir, c.FilePaths()...)
	if err := Validate(component, c); err != nil {
		var zero C
		return zero, err
	}
	return c, nil
}

// Load reads the config file at path and parses it (see Parse) with its
// absolute folder as the base of relative paths; errors name the
// component and the file.
func Load[C Config](component, path string, newConfig func() C) (C, error) {
	var zero C
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("%s config: %w", component, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return zero, fmt.Errorf("%s config: resolving %s: %w", component, path, err)
	}
	c, err := Parse(component, data, filepath.Dir(abs), newConfig)
	if err != nil {
		return zero, fmt.Errorf("%s config %s: %w", component, path, err)
	}
	return c, nil
}

// Marshal is the YAML document of c that Parse reads back as c (given
// absolute file paths): what an installer writes after building the
// config as a typed struct. It does not validate c.
func Marshal(c Config) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encoding: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding: %w", err)
	}
	return b.Bytes(), nil
}

// Validate is nil when c is valid, else an *Error for component listing
// every problem: what a role's constructor checks before any side effect.
func Validate(component string, c Config) error {
	if errs := c.Validate(); len(errs) > 0 {
		return &Error{Component: component, Errs: errs}
	}
	return nil
}

// Decode decodes exactly one YAML document into into, which holds the
// defaults; an unknown field is an error.
func Decode(data []byte, into any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("the file is empty")
		}
		return fmt.Errorf("decoding: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return errors.New("the file holds more than one YAML document")
	}
	return nil
}

// ResolvePaths makes each non-empty relative path absolute under baseDir.
func ResolvePaths(baseDir string, paths ...*string) {
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(baseDir, *p)
		}
	}
}

// ValidateTypeMeta checks a document's apiVersion and kind.
func ValidateTypeMeta(apiVersion, kind, wantKind string) field.ErrorList {
	var errs field.ErrorList
	if apiVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), apiVersion, []string{APIVersion}))
	}
	if kind != wantKind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), kind, []string{wantKind}))
	}
	return errs
}

// Error lists every problem found in a role's config, each with its
// field.
type Error struct {
	Component string // "etcd", "apiserver", "lb", ...
	Errs      field.ErrorList
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid %s config (%d problem", e.Component, len(e.Errs))
	if len(e.Errs) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, fe := range e.Errs {
		b.WriteString("\n  - ")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Unwrap returns the problems, so errors.As finds a *field.Error.
func (e *Error) Unwrap() []error {
	out := make([]error, len(e.Errs))
	for i, fe := range e.Errs {
		out[i] = fe
	}
	return out
}

// Fields lists the field paths with problems, in order (tests and
// callers that react to one field).
func (e *Error) Fields() []string {
	out := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		out[i] = fe.Field
	}
	return out
}

// CheckListenAddress accepts what a role binds: IP:port, localhost:port
// or :port (every address), where port 0 asks for a free port.
func CheckListenAddress(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("not host:port: %v", err)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return errors.New("a listen address needs an IP address (or localhost)")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}
