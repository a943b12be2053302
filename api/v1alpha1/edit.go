package v1alpha1

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The edits below change a cluster.yaml as text: yaml.v3's node tree
// finds where the spec.hosts entries are, and the edit inserts or deletes
// only the lines of one entry, so comments, blank lines, order and quoting
// everywhere else stay byte for byte. Each edit then decodes the result and
// checks that it says exactly what was meant (the same document with one
// host more or less); a layout it cannot edit that way is an error that
// asks for the change by hand, never a rewritten file.

// AddHostEntry returns data with host h appended to spec.hosts, written in
// the style of the entry before it (flow `- {name: …}` or block), then
// decoded and validated like Load: a name or address already in use is a
// *ValidationError naming the entry that holds it. h.SSH, when set, is
// written as the entry's ssh override.
func AddHostEntry(data []byte, h Host) ([]byte, error) {
	before, err := decodeRaw(data)
	if err != nil {
		return nil, err
	}
	if err := checkNewHost(data, before, h); err != nil {
		return nil, err
	}
	seq, err := hostsSequence(data)
	if err != nil {
		return nil, err
	}
	lines := splitLines(data)
	last := seq.Content[len(seq.Content)-1]
	_, end, dash, err := itemExtent(lines, seq, len(seq.Content)-1)
	if err != nil {
		return nil, err
	}
	text, err := renderHost(h, last.Style&yaml.FlowStyle != 0, dash, last.Column-1)
	if err != nil {
		return nil, err
	}
	out := joinLines(lines[:end], []string{text}, lines[end:])
	after, err := decodeRaw(out)
	if err != nil {
		return nil, fmt.Errorf("adding host %s: the edited file does not decode: %w", h.Name, err)
	}
	want := *before
	want.Spec.Hosts = append(append([]Host(nil), before.Spec.Hosts...), h)
	if !reflect.DeepEqual(&want, after) {
		return nil, fmt.Errorf("adding host %s: this layout of spec.hosts cannot be edited in place; add the entry by hand and run the command again", h.Name)
	}
	// The whole spec as Load checks it (paths are not read here).
	if _, err := Parse(out, "/"); err != nil {
		return nil, err
	}
	return out, nil
}

// RemoveHostEntry returns data without the spec.hosts entry named name:
// its lines and the comment lines just above it go, nothing else. The
// result is decoded again and must equal the old document without that
// host; it is not validated (removing the load balancer host leaves a
// spec that names it, which Load reports).
func RemoveHostEntry(data []byte, name string) ([]byte, error) {
	before, err := decodeRaw(data)
	if err != nil {
		return nil, err
	}
	idx := -1
	for i, h := range before.Spec.Hosts {
		if h.Name == name {
			idx = i
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("no host named %q in spec.hosts", name)
	}
	if len(before.Spec.Hosts) == 1 {
		return nil, fmt.Errorf("host %q is the only host of spec.hosts", name)
	}
	seq, err := hostsSequence(data)
	if err != nil {
		return nil, err
	}
	lines := splitLines(data)
	start, end, _, err := itemExtent(lines, seq, idx)
	if err != nil {
		return nil, err
	}
	out := joinLines(lines[:start], lines[end:])
	after, err := decodeRaw(out)
	if err != nil {
		return nil, fmt.Errorf("removing host %s: the edited file does not decode: %w", name, err)
	}
	want := *before
	want.Spec.Hosts = append(append([]Host(nil), before.Spec.Hosts[:idx]...), before.Spec.Hosts[idx+1:]...)
	if !reflect.DeepEqual(&want, after) {
		return nil, fmt.Errorf("removing host %s: this layout of spec.hosts cannot be edited in place; remove the entry by hand and run the command again", name)
	}
	return out, nil
}

// decodeRaw strictly decodes a document without defaults or validation,
// so two versions can be compared field by field.
func decodeRaw(data []byte) (*Cluster, error) {
	var c Cluster
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	return &c, nil
}

// checkNewHost reports a name or address of h that an entry of c holds
// already, with that entry's line, as a *ValidationError on the new
// entry's fields.
func checkNewHost(data []byte, c *Cluster, h Host) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	lines := map[string]int{}
	collectLines(&root, "", lines)
	n := len(c.Spec.Hosts)
	f := fmt.Sprintf("spec.hosts[%d]", n)
	var errs field.ErrorList
	addr, addrErr := netip.ParseAddr(h.Address)
	for i, o := range c.Spec.Hosts {
		other := fmt.Sprintf("spec.hosts[%d]", i)
		if o.Name == h.Name {
			errs = append(errs, field.Invalid(field.NewPath(f+".name"), h.Name,
				fmt.Sprintf("host name %q is already in use by %s (line %d)", h.Name, other, lineOf(lines, other))))
		}
		if oa, err := netip.ParseAddr(o.Address); err == nil && addrErr == nil && oa == addr {
			errs = append(errs, field.Invalid(field.NewPath(f+".address"), h.Address,
				fmt.Sprintf("address %s is already in use by host %q, %s (line %d)", h.Address, o.Name, other, lineOf(lines, other))))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	// The new entry has no line of its own; the details name the other's.
	return &ValidationError{Errors: errs}
}

// hostsSequence finds spec.hosts as a block sequence with at least one
// entry, with the positions yaml.v3 recorded.
func hostsSequence(data []byte) (*yaml.Node, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		return nil, errors.New("the file is not one YAML document")
	}
	spec := mappingValue(root.Content[0], "spec")
	if spec == nil {
		return nil, errors.New("the file has no spec")
	}
	seq := mappingValue(spec, "hosts")
	if seq == nil || seq.Kind != yaml.SequenceNode || len(seq.Content) == 0 {
		return nil, errors.New("spec.hosts is not a list with entries; edit it by hand")
	}
	if seq.Style&yaml.FlowStyle != 0 {
		return nil, errors.New("spec.hosts is a flow list ([...]); edit it by hand or write it as a block list (- …)")
	}
	return seq, nil
}

func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// itemExtent finds the lines of entry i of a block sequence: start is the
// index (0-based) of its first line, counting the comment lines right above
// it, end the index just past its last line, not counting trailing blank
// or comment lines at or left of its dash; dash is the dash's column
// (0-based).
func itemExtent(lines []string, seq *yaml.Node, i int) (start, end, dash int, err error) {
	item := seq.Content[i]
	first := item.Line - 1
	if first < 0 || first >= len(lines) {
		return 0, 0, 0, errors.New("spec.hosts: entry position out of range")
	}
	text := lines[first]
	dash = len(text) - len(strings.TrimLeft(text, " "))
	if !strings.HasPrefix(text[dash:], "- ") && strings.TrimSpace(text[dash:]) != "-" {
		return 0, 0, 0, fmt.Errorf("spec.hosts[%d] (line %d) does not start its line with \"- \"; edit it by hand", i, item.Line)
	}
	start = first
	for start > 0 && isCommentAt(lines[start-1], dash) {
		start--
	}
	end = first + 1
	last := end
	for end < len(lines) {
		l := lines[end]
		t := strings.TrimLeft(l, " ")
		if t != "" && !strings.HasPrefix(t, "#") && len(l)-len(t) <= dash {
			break
		}
		end++
		if t != "" && (len(l)-len(t) > dash || !strings.HasPrefix(t, "#")) {
			last = end
		}
	}
	return start, last, dash, nil
}

// isCommentAt reports whether l is a comment line starting at column col.
func isCommentAt(l string, col int) bool {
	t := strings.TrimLeft(l, " ")
	return strings.HasPrefix(t, "#") && len(l)-len(t) == col
}

// renderHost writes one entry: flow on one line, or block with its keys at
// column keyCol.
func renderHost(h Host, flow bool, dash, keyCol int) (string, error) {
	n := &yaml.Node{}
	if err := n.Encode(h); err != nil {
		return "", err
	}
	if flow {
		setFlow(n)
		b, err := yaml.Marshal(n)
		if err != nil {
			return "", err
		}
		return strings.Repeat(" ", dash) + "- " + strings.TrimSpace(string(b)), nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	if keyCol <= dash {
		keyCol = dash + 2
	}
	var out []string
	for j, l := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		if j == 0 {
			out = append(out, strings.Repeat(" ", dash)+"-"+strings.Repeat(" ", keyCol-dash-1)+l)
		} else {
			out = append(out, strings.Repeat(" ", keyCol)+l)
		}
	}
	return strings.Join(out, "\n"), nil
}

func setFlow(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style |= yaml.FlowStyle
	}
	for _, c := range n.Content {
		setFlow(c)
	}
}

// splitLines splits data into lines without their "\n"; a final newline
// does not make an empty last line.
func splitLines(data []byte) []string {
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func joinLines(parts ...[]string) []byte {
	var all []string
	for _, p := range parts {
		all = append(all, p...)
	}
	return []byte(strings.Join(all, "\n") + "\n")
}
