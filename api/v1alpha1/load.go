package v1alpha1

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads, strictly decodes, defaults and validates a cluster.yaml.
// Relative paths in the spec are resolved against the file's folder.
// The returned error is a *ValidationError when the file decodes but
// describes an invalid cluster; it lists every problem at once.
func Load(path string) (*Cluster, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cluster file: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", path, err)
	}
	c, err := Parse(data, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Path = abs
	return c, nil
}

// Parse decodes a cluster.yaml held in memory; baseDir resolves relative
// paths. It defaults and validates like Load.
func Parse(data []byte, baseDir string) (*Cluster, error) {
	var c Cluster
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, fmt.Errorf("decoding: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("the file holds more than one YAML document; a cluster file has exactly one")
	}

	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	lines := map[string]int{}
	collectLines(&root, "", lines)

	c.SetDefaults()
	c.ResolvePaths(baseDir)
	c.lines = lines
	if err := c.validate(lines); err != nil {
		return nil, err
	}
	return &c, nil
}

// SetDefaults fills the fields a user may leave out.
func (c *Cluster) SetDefaults() {
	s := &c.Spec
	if s.SSH.User == "" {
		s.SSH.User = DefaultSSHUser
	}
	if s.SSH.Port == 0 {
		s.SSH.Port = DefaultSSHPort
	}
	if s.LoadBalancer.Address != "" && s.LoadBalancer.Port == 0 {
		s.LoadBalancer.Port = DefaultLBPort
	}
	if s.Network.ClusterDomain == "" {
		s.Network.ClusterDomain = DefaultClusterDomain
	}
	if s.PKI.Dir == "" {
		s.PKI.Dir = DefaultPKIDir
	}
	if s.PKI.CAValidity == "" {
		s.PKI.CAValidity = DefaultCAValidity
	}
	if s.PKI.CertValidity == "" {
		s.PKI.CertValidity = DefaultCertValidity
	}
}

// ResolvePaths makes every file path in the spec absolute, relative to
// baseDir, and expands a leading "~/".
func (c *Cluster) ResolvePaths(baseDir string) {
	s := &c.Spec
	resolve := func(p *string) {
		if *p == "" {
			return
		}
		if strings.HasPrefix(*p, "~/") {
			if home, err := os.UserHomeDir(); err == nil {
				*p = filepath.Join(home, (*p)[2:])
				return
			}
		}
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(baseDir, *p)
		}
		*p = filepath.Clean(*p)
	}
	resolve(&s.SSH.IdentityFile)
	resolve(&s.SSH.KnownHosts)
	resolve(&s.PKI.Dir)
	for i := range s.Hosts {
		if o := s.Hosts[i].SSH; o != nil {
			resolve(&o.IdentityFile)
			resolve(&o.KnownHosts)
		}
	}
}

// collectLines records the line of every mapping key and sequence item,
// keyed by a field path such as "spec.hosts[1].address".
func collectLines(n *yaml.Node, path string, out map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, ch := range n.Content {
			collectLines(ch, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out[p] = k.Line
			collectLines(v, p, out)
		}
	case yaml.SequenceNode:
		for i, ch := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			out[p] = ch.Line
			collectLines(ch, p, out)
		}
	}
}

// lineOf finds the line of a field path, or of its nearest parent that
// appears in the file (a defaulted field has no line of its own).
func lineOf(lines map[string]int, path string) int {
	for p := path; p != ""; {
		if l, ok := lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
