package lab

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestKnownHostsStrict(t *testing.T) {
	hosts, err := Plan(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]ssh.PublicKey{}
	for _, h := range hosts {
		k, err := newKeyPair("test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ssh.ParsePrivateKey(k.private); err != nil {
			t.Fatalf("private key does not parse: %v", err)
		}
		keys[h.Name] = k.public
	}
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, knownHostsFile(hosts, keys), 0o644); err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(p)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newKeyPair("other")
	for _, h := range hosts {
		addr := &net.TCPAddr{IP: net.IP(h.Address.AsSlice()), Port: 22}
		hostport := net.JoinHostPort(h.Address.String(), "22")
		if err := cb(hostport, addr, keys[h.Name]); err != nil {
			t.Errorf("%s: real key refused: %v", h.Name, err)
		}
		var ke *knownhosts.KeyError
		if err := cb(hostport, addr, other.public); !errors.As(err, &ke) || len(ke.Want) == 0 {
			t.Errorf("%s: wrong key not refused as a mismatch: %v", h.Name, err)
		}
	}
	stranger := &net.TCPAddr{IP: net.ParseIP("198.18.0.99"), Port: 22}
	if err := cb("198.18.0.99:22", stranger, other.public); err == nil {
		t.Error("unknown host accepted")
	}
}

func TestRandomPassword(t *testing.T) {
	a, err := randomPassword(20)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := randomPassword(20)
	if len(a) != 20 || a == b {
		t.Errorf("passwords %q %q", a, b)
	}
}
