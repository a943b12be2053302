package roleconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// sample is a role config in miniature.
type sample struct {
	Kind string   `yaml:"kind"`
	Name string   `yaml:"name"`
	Port int      `yaml:"port"`
	File string   `yaml:"file,omitempty"`
	List []string `yaml:"list"`
}

func newSample() *sample { return &sample{Kind: "Sample", Port: 80, List: []string{"default"}} }

func (s *sample) FilePaths() []*string { return []*string{&s.File} }

func (s *sample) Validate() field.ErrorList {
	errs := ValidateTypeMeta(APIVersion, s.Kind, "Sample")
	if s.Name == "" {
		errs = append(errs, field.Required(field.NewPath("name"), ""))
	}
	if s.Port <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("port"), s.Port, "must be positive"))
	}
	return errs
}

func TestDecode(t *testing.T) {
	s := sample{Port: 80}
	if err := Decode([]byte("name: a\n"), &s); err != nil || s.Name != "a" || s.Port != 80 {
		t.Fatalf("decode over defaults: %+v %v", s, err)
	}
	for doc, want := range map[string]string{
		"":                        "empty",
		"nmae: a\n":               "field nmae not found",
		"name: a\n---\nname: b\n": "more than one YAML document",
		"port: [\n":               "decoding",
	} {
		if err := Decode([]byte(doc), &sample{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", doc, err, want)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      sample
	}{
		{"defaults stay", "name: a\n", sample{Kind: "Sample", Name: "a", Port: 80, List: []string{"default"}}},
		{"a list replaces the default", "name: a\nlist: [x, y]\n", sample{Kind: "Sample", Name: "a", Port: 80, List: []string{"x", "y"}}},
		{"relative path", "name: a\nfile: pki/ca.crt\n", sample{Kind: "Sample", Name: "a", Port: 80, File: "/base/pki/ca.crt", List: []string{"default"}}},
		{"absolute path", "name: a\nfile: /etc/ca.crt\n", sample{Kind: "Sample", Name: "a", Port: 80, File: "/etc/ca.crt", List: []string{"default"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse("sample", []byte(tc.doc), "/base", newSample)
			if err != nil {
				t.Fatal(err)
			}
			if !equalSample(*got, tc.want) {
				t.Errorf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
}

func equalSample(a, b sample) bool {
	return a.Kind == b.Kind && a.Name == b.Name && a.Port == b.Port && a.File == b.File && strings.Join(a.List, ",") == strings.Join(b.List, ",")
}

func TestParseListsEveryProblem(t *testing.T) {
	_, err := Parse("sample", []byte("kind: Other\nport: 0\n"), "/", newSample)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("not an *Error: %v", err)
	}
	if got := strings.Join(e.Fields(), " "); got != "kind name port" {
		t.Errorf("fields %q, want kind name port", got)
	}
	want := "invalid sample config (3 problems):\n" +
		`  - kind: Unsupported value: "Other": supported values: "Sample"` + "\n" +
		"  - name: Required value\n" +
		"  - port: Invalid value: 0: must be positive"
	if err.Error() != want {
		t.Errorf("error:\n%s\nwant:\n%s", err, want)
	}
	var fe *field.Error
	if !errors.As(err, &fe) || fe.Field != "kind" {
		t.Errorf("errors.As finds the first *field.Error: %v", fe)
	}
	if err := Validate("sample", &sample{Kind: "Sample", Name: "a", Port: 1}); err != nil {
		t.Errorf("valid: %v", err)
	}
	if err := Validate("sample", &sample{Kind: "Sample", Port: 1}); err == nil || err.Error() != "invalid sample config (1 problem):\n  - name: Required value" {
		t.Errorf("one problem: %v", err)
	}
}

func TestResolvePaths(t *testing.T) {
	a, b, c := "rel/x", "/abs/y", ""
	ResolvePaths("/base", &a, &b, &c)
	if a != filepath.Join("/base", "rel/x") || b != "/abs/y" || c != "" {
		t.Fatalf("paths: %q %q %q", a, b, c)
	}
}

func TestCheckListenAddress(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:0": "", ":10257": "", "localhost:1": "", "[::1]:80": "",
		"127.0.0.1":    "not host:port",
		"m1.lab:10257": "needs an IP address",
		"0.0.0.0:x":    "not a number",
		":65536":       "not a number",
	} {
		err := CheckListenAddress(addr)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", addr, err, want)
		}
	}
}

func TestLeaderElectionValidate(t *testing.T) {
	p := field.NewPath("leaderElection")
	ok := DefaultLeaderElection("kforge-x")
	if errs := ok.Validate(p); len(errs) > 0 {
		t.Fatalf("defaults: %v", errs)
	}
	bad := ok
	bad.LeaseName, bad.RenewDeadline = "", 2*time.Second // not > 1.2 × 2s
	errs := bad.Validate(p)
	if len(errs) != 2 || errs[0].Field != "leaderElection.leaseName" || errs[1].Field != "leaderElection.renewDeadline" {
		t.Fatalf("want leaseName and renewDeadline problems, got %v", errs)
	}
	off := bad
	off.Enabled = false
	if errs := off.Validate(p); len(errs) > 0 {
		t.Fatalf("disabled leader election is not checked: %v", errs)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(path, []byte("name: a\nfile: ca.crt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Load("lb", path, newSample)
	if err != nil || s.Name != "a" || s.File != filepath.Join(dir, "ca.crt") {
		t.Fatalf("Load: %+v %v", s, err)
	}
	if _, err := Load("lb", filepath.Join(dir, "missing.yaml"), newSample); err == nil || !strings.HasPrefix(err.Error(), "lb config: ") {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("nmae: a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("lb", path, newSample); err == nil || !strings.HasPrefix(err.Error(), "lb config "+path+": ") {
		t.Fatalf("bad file: %v", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	in := &sample{Kind: "Sample", Name: "a", Port: 8080, File: "/etc/x", List: []string{"p", "q"}}
	data, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Parse("sample", data, "/elsewhere", newSample)
	if err != nil {
		t.Fatalf("%v in:\n%s", err, data)
	}
	if !equalSample(*in, *out) {
		t.Errorf("round trip changed %+v into %+v:\n%s", *in, *out, data)
	}
}
