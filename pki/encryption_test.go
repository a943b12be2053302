package pki

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"kforge.dev/kforge/controlplane/apiserver/encryption"
)

func TestEncryptionKeyCreatedOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	path, err := EncryptionKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "ca", "encryption.yaml") {
		t.Fatalf("path %s", path)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi.Mode(), err)
	}
	first, _ := os.ReadFile(path)
	c, err := encryption.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := c.Resources[0].Providers
	if len(c.Resources) != 1 || c.Resources[0].Resources[0] != "secrets" || len(ps) != 2 ||
		ps[0].Secretbox == nil || len(ps[0].Secretbox.Keys) != 1 || ps[1].Identity == nil {
		t.Fatalf("generated %s", first)
	}
	// The key works: what it writes is not plaintext and reads back.
	tr, err := encryption.NewTransformer(ps)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := tr.TransformToStorage("/registry/core/secrets/a/b", []byte("hunter2"))
	if err != nil || bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatalf("sealed %q %v", sealed, err)
	}

	// A second call keeps the file, and a second directory gets another key.
	if _, err := EncryptionKey(dir); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, first) {
		t.Fatal("the second call replaced the key")
	}
	other, err := EncryptionKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := os.ReadFile(other); bytes.Equal(o, first) {
		t.Fatal("two directories got the same key")
	}

	// A readable-by-others or broken file is refused, not rewritten.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := EncryptionKey(dir); err == nil {
		t.Fatal("a 0644 key file was accepted")
	}
	if err := os.WriteFile(path, []byte("kind: nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EncryptionKey(dir); err == nil {
		t.Fatal("a broken file was accepted")
	}
	if data, _ := os.ReadFile(path); string(data) != "kind: nonsense\n" {
		t.Fatal("a broken file was rewritten")
	}
}
