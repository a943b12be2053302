package ssh

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeys checks host keys strictly against one known_hosts file. An
// unknown key is refused unless AcceptNew is set, in which case it is
// appended to the file (pinned); a changed key is always refused. One
// HostKeys may be shared by many concurrent dials.
type HostKeys struct {
	// File is the known_hosts file; it must exist unless AcceptNew is set.
	File string
	// AcceptNew pins keys of hosts the file does not know yet.
	AcceptNew bool

	mu sync.Mutex
}

// UnknownHostKeyError is an unknown host key refused because AcceptNew is off.
type UnknownHostKeyError struct {
	Host        string // address as dialed, host:port
	Fingerprint string // SHA256:...
	Type        string
	File        string
}

func (e *UnknownHostKeyError) Error() string {
	return fmt.Sprintf("unknown host key for %s (%s %s): it is not in %s; verify it and run again with --accept-new-host-keys to pin it",
		e.Host, e.Type, e.Fingerprint, e.File)
}

// ChangedHostKeyError is a host key that differs from the pinned one.
type ChangedHostKeyError struct {
	Host string // address as dialed, host:port
	// Known are the pinned keys, "TYPE SHA256:... (FILE:LINE)".
	Known []string
	// Presented is the key the host offered, "TYPE SHA256:...".
	Presented string
	File      string
}

func (e *ChangedHostKeyError) Error() string {
	return fmt.Sprintf("HOST KEY CHANGED for %s, refusing to connect (someone may be intercepting the connection, or the host was reinstalled): "+
		"the host presented %s but %s pins %s. If the change is expected, re-pin it: ssh-keygen -R %s -f %s and run again with --accept-new-host-keys",
		e.Host, e.Presented, e.File, strings.Join(e.Known, ", "), ShellQuote(knownhosts.Normalize(e.Host)), ShellQuote(e.File))
}

// IsHostKeyError reports whether err is an unknown or changed host key.
func IsHostKeyError(err error) bool {
	var u *UnknownHostKeyError
	var c *ChangedHostKeyError
	return errors.As(err, &u) || errors.As(err, &c)
}

func (k *HostKeys) load() (gossh.HostKeyCallback, error) {
	if _, err := os.Stat(k.File); errors.Is(err, os.ErrNotExist) && k.AcceptNew {
		if err := os.WriteFile(k.File, nil, 0o600); err != nil {
			return nil, fmt.Errorf("creating known_hosts: %w", err)
		}
	}
	cb, err := knownhosts.New(k.File)
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	return cb, nil
}

// algorithms returns the host key algorithms to negotiate for addr: those
// of the keys pinned for it, so a host with several keys is checked
// against the one we know rather than being reported as changed. Nil when
// none is pinned (any algorithm; the key is then unknown).
func (k *HostKeys) algorithms(addr string) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cb, err := k.load()
	if err != nil {
		return nil, err
	}
	var ke *knownhosts.KeyError
	if err := cb(addr, placeholderAddr(addr), placeholderKey{}); !errors.As(err, &ke) {
		return nil, nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, w := range ke.Want {
		for _, a := range algorithmsForKeyType(w.Key.Type()) {
			if !seen[a] {
				seen[a] = true
				algos = append(algos, a)
			}
		}
	}
	return algos, nil
}

func algorithmsForKeyType(t string) []string {
	switch t {
	case gossh.KeyAlgoRSA:
		return []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA}
	case gossh.CertAlgoRSAv01:
		return []string{gossh.CertAlgoRSASHA512v01, gossh.CertAlgoRSASHA256v01, gossh.CertAlgoRSAv01}
	default:
		return []string{t}
	}
}

// Callback is the HostKeyCallback for dialing addr (host:port).
func (k *HostKeys) Callback(addr string) gossh.HostKeyCallback {
	return func(_ string, remote net.Addr, key gossh.PublicKey) error {
		k.mu.Lock()
		defer k.mu.Unlock()
		cb, err := k.load()
		if err != nil {
			return err
		}
		err = cb(addr, remote, key)
		var ke *knownhosts.KeyError
		if err == nil || !errors.As(err, &ke) {
			return err
		}
		if len(ke.Want) > 0 {
			ce := &ChangedHostKeyError{Host: addr, Presented: key.Type() + " " + gossh.FingerprintSHA256(key), File: k.File}
			for _, w := range ke.Want {
				ce.Known = append(ce.Known, fmt.Sprintf("%s %s (%s:%d)", w.Key.Type(), gossh.FingerprintSHA256(w.Key), w.Filename, w.Line))
			}
			return ce
		}
		if !k.AcceptNew {
			return &UnknownHostKeyError{Host: addr, Fingerprint: gossh.FingerprintSHA256(key), Type: key.Type(), File: k.File}
		}
		return k.pin(addr, key)
	}
}

// pin appends addr's key to the file. Called with mu held.
func (k *HostKeys) pin(addr string, key gossh.PublicKey) error {
	f, err := os.OpenFile(k.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("pinning the host key of %s: %w", addr, err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		// Make sure the new line does not run into an unterminated last one.
		if data, err := os.ReadFile(k.File); err == nil && len(data) > 0 && data[len(data)-1] != '\n' {
			line = "\n" + line
		}
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return fmt.Errorf("pinning the host key of %s: %w", addr, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pinning the host key of %s: %w", addr, err)
	}
	return f.Close()
}

// placeholderKey is a key no host has, used to ask knownhosts which keys
// it pins for an address.
type placeholderKey struct{}

func (placeholderKey) Type() string                          { return "kforge-placeholder" }
func (placeholderKey) Marshal() []byte                       { return []byte("kforge-placeholder") }
func (placeholderKey) Verify([]byte, *gossh.Signature) error { return errors.New("placeholder") }

func placeholderAddr(addr string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return &net.TCPAddr{IP: net.IPv4zero}
	}
	return a
}
