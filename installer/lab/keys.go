package lab

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"kforge.dev/kforge/internal/atomicfile"
)

// Files under DIR/ssh.
const (
	sshDirName       = "ssh"
	identityName     = "id_ed25519"
	knownHostsName   = "known_hosts"
	sudoPasswordName = "sudo-password"
	// SudoUser is the non-root user on every host whose sudo asks for a password.
	SudoUser = "kforge"
	sudoUID  = 1000
)

// keyPair is an ed25519 key in OpenSSH form.
type keyPair struct {
	private []byte // OpenSSH PEM
	public  ssh.PublicKey
}

func newKeyPair(comment string) (keyPair, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return keyPair{}, err
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{private: pem.EncodeToMemory(block), public: pub}, nil
}

// authorizedLine is the key as one authorized_keys / .pub line.
func (k keyPair) authorizedLine(comment string) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.public))) + " " + comment + "\n"
}

// randomPassword returns n characters from a URL-safe alphabet.
func randomPassword(n int) (string, error) {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
	b := make([]byte, n)
	for i := range b {
		j, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", err
		}
		b[i] = alphabet[j.Int64()]
	}
	return string(b), nil
}

// knownHostsFile renders known_hosts lines for the hosts' real keys, by
// address (port 22 needs no brackets) and by name.
func knownHostsFile(hosts []HostSpec, keys map[string]ssh.PublicKey) []byte {
	var b strings.Builder
	for _, h := range hosts {
		b.WriteString(knownhosts.Line([]string{knownhosts.Normalize(h.Address.String() + ":22")}, keys[h.Name]))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// labKeys are the client-side secrets of one lab.
type labKeys struct {
	client       keyPair
	sudoPassword string
}

// writeClientFiles writes DIR/ssh/id_ed25519(.pub) and sudo-password.
func writeClientFiles(dir string, k labKeys) error {
	sd := filepath.Join(dir, sshDirName)
	if err := os.MkdirAll(sd, 0o700); err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{identityName, k.client.private, 0o600},
		{identityName + ".pub", []byte(k.client.authorizedLine("kforge-lab")), 0o644},
		{sudoPasswordName, []byte(k.sudoPassword + "\n"), 0o600},
	}
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(sd, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("writing %s: %w", f.name, err)
		}
	}
	return nil
}
