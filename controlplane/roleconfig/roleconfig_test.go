package roleconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name string `yaml:"name"`
	Port int    `yaml:"port"`
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

func TestProblemsAndPaths(t *testing.T) {
	p := NewProblems("lb")
	if p.Err() != nil {
		t.Fatal("no problems should be nil")
	}
	p.Add("listenAddress", "is required")
	p.Add("backends", "%d is too few", 0)
	var e *Error
	if err := p.Err(); !errors.As(err, &e) || len(e.Problems) != 2 ||
		err.Error() != "invalid lb config (2 problems):\n  - listenAddress: is required\n  - backends: 0 is too few" {
		t.Fatalf("error: %v", err)
	}
	a, b, c := "rel/x", "/abs/y", ""
	ResolvePaths("/base", &a, &b, &c)
	if a != filepath.Join("/base", "rel/x") || b != "/abs/y" || c != "" {
		t.Fatalf("paths: %q %q %q", a, b, c)
	}
}

func TestLeaderElectionValidate(t *testing.T) {
	ok := DefaultLeaderElection("kforge-x")
	p := NewProblems("x")
	ok.Validate(p)
	if p.Err() != nil {
		t.Fatalf("defaults: %v", p.Err())
	}
	bad := ok
	bad.LeaseName, bad.RenewDeadline = "", 2*time.Second // not > 1.2 × 2s
	p = NewProblems("x")
	bad.Validate(p)
	err := p.Err()
	if err == nil || !strings.Contains(err.Error(), "leaderElection.leaseName") || !strings.Contains(err.Error(), "leaderElection.renewDeadline") {
		t.Fatalf("want leaseName and renewDeadline problems, got %v", err)
	}
	off := bad
	off.Enabled = false
	p = NewProblems("x")
	off.Validate(p)
	if p.Err() != nil {
		t.Fatalf("disabled leader election is not checked: %v", p.Err())
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(path, []byte("name: a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(data []byte, baseDir string) (*sample, error) {
		s := &sample{}
		if err := Decode(data, s); err != nil {
			return nil, err
		}
		s.Name += "@" + baseDir
		return s, nil
	}
	s, err := Load("lb", path, parse)
	if err != nil || s.Name != "a@"+dir {
		t.Fatalf("Load: %+v %v", s, err)
	}
	if _, err := Load("lb", filepath.Join(dir, "missing.yaml"), parse); err == nil || !strings.HasPrefix(err.Error(), "lb config: ") {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("nmae: a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("lb", path, parse); err == nil || !strings.HasPrefix(err.Error(), "lb config "+path+": ") {
		t.Fatalf("bad file: %v", err)
	}
}
