package roleconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads a role's config file and parses it with parse, which
// resolves relative paths against the file's (absolute) folder; errors
// name the component and the file.
func Load[T any](component, path string, parse func(data []byte, baseDir string) (T, error)) (T, error) {
	var zero T
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("%s config: %w", component, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return zero, fmt.Errorf("%s config: resolving %s: %w", component, path, err)
	}
	c, err := parse(data, filepath.Dir(abs))
	if err != nil {
		return zero, fmt.Errorf("%s config %s: %w", component, path, err)
	}
	return c, nil
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

// Error lists every problem found in a role's config.
type Error struct {
	Component string   // "etcd", "apiserver", "lb"
	Problems  []string // "field: message"
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid %s config (%d problem", e.Component, len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	return b.String()
}

// Problems collects validation problems for one component.
type Problems struct {
	component string
	list      []string
}

// NewProblems starts an empty list for a component.
func NewProblems(component string) *Problems { return &Problems{component: component} }

// Add records a problem with a field.
func (p *Problems) Add(field, format string, args ...any) {
	p.list = append(p.list, field+": "+fmt.Sprintf(format, args...))
}

// Err is nil without problems, else an *Error listing them all.
func (p *Problems) Err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &Error{Component: p.component, Problems: p.list}
}
