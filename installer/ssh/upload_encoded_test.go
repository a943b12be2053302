package ssh

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func gzipped(t *testing.T, data []byte) *Encoded {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	enc := b.Bytes()
	return &Encoded{Decoder: "gzip -dc", Size: int64(len(enc)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(enc)), nil }}
}

// TestUploadEncoded sends a gzip stream through a session, decoded by
// gzip(1) on the "host", checked, and renamed into place; a stream that
// decodes to other bytes than File's sha256 says is refused and leaves the
// old file and no temporary one.
func TestUploadEncoded(t *testing.T) {
	e := newEnv(t, true)
	c := dial(t, e.config("root"))
	ctx := context.Background()
	dir := t.TempDir()
	dst := filepath.Join(dir, "bin", "kforge")
	content := bytes.Repeat([]byte("kforge binary bytes\n"), 50000)
	up := Upload{File: BytesFile(content), Remote: dst, Mode: 0o755, Owner: currentOwner(t), Encoded: gzipped(t, content)}
	if changed, err := c.Upload(ctx, up); err != nil || !changed {
		t.Fatalf("encoded upload: changed=%v %v", changed, err)
	}
	got, _ := os.ReadFile(dst)
	st, _ := os.Stat(dst)
	if !bytes.Equal(got, content) || st.Mode().Perm() != 0o755 {
		t.Fatalf("got %d bytes (want %d), mode %v", len(got), len(content), st.Mode())
	}
	// Skipped when it matches, unless the caller says it differs.
	up.Encoded = gzipped(t, content)
	if changed, err := c.Upload(ctx, up); err != nil || changed {
		t.Errorf("same content: changed=%v %v; want skipped", changed, err)
	}
	// A corrupt stream: the checksum refuses it, the old file stays.
	bad := append([]byte(nil), content...)
	bad[100] = 'X'
	up.Encoded, up.Differs = gzipped(t, bad), true
	_, err := c.Upload(ctx, up)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("corrupt stream: err = %v, want a checksum mismatch", err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, content) {
		t.Error("a refused upload changed the destination")
	}
	if entries, _ := os.ReadDir(filepath.Dir(dst)); len(entries) != 1 {
		t.Errorf("%d files beside the destination, want 1", len(entries))
	}
}

func TestUploadEncodedThroughSudo(t *testing.T) {
	fakeSudo(t, "pw")
	e := newEnv(t, true)
	cfg := e.config("kforge")
	cfg.SudoPassword = func(context.Context) (string, error) { return "pw", nil }
	c := dial(t, cfg)
	dst := filepath.Join(t.TempDir(), "kforge")
	content := []byte("through sudo, password first on stdin\n")
	up := Upload{File: BytesFile(content), Remote: dst, Mode: 0o700, Owner: currentOwner(t), Encoded: gzipped(t, content), Differs: true}
	if _, err := c.Upload(context.Background(), up); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, content) {
		t.Fatalf("got %q", got)
	}
}
