package installer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"kforge.dev/kforge/installer/ssh"
)

// inTempRoot rewrites a host script's binary and stamp paths into dir and
// runs it with sh on this machine.
func inTempRoot(t *testing.T, dir, script string) string {
	t.Helper()
	script = strings.ReplaceAll(script, "/var/lib/kforge", filepath.Join(dir, "var/lib/kforge"))
	script = strings.ReplaceAll(script, BinaryPath, filepath.Join(dir, "usr/local/bin/kforge"))
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return string(out)
}

// TestBinaryStamp runs the facts script and the stamp command with a real
// shell: a binary without a stamp is hashed (and says so); once stamped
// its sha256 comes from the stamp; any rewrite of the binary (even with
// the same size and mtime) invalidates the stamp.
func TestBinaryStamp(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "usr/local/bin/kforge")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	content := []byte("#!/bin/sh\necho kforge\n")
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	facts := func() *Facts {
		f, err := parseFacts(inTempRoot(t, dir, factsScript))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := facts(); f.KforgeSHA256 != sha || !f.KforgeUnstamped {
		t.Fatalf("unstamped: sha %q unstamped %v; want %s, true", f.KforgeSHA256, f.KforgeUnstamped, sha)
	}
	inTempRoot(t, dir, stampCommand(sha))
	if f := facts(); f.KforgeSHA256 != sha || f.KforgeUnstamped {
		t.Fatalf("stamped: sha %q unstamped %v; want %s, false", f.KforgeSHA256, f.KforgeUnstamped, sha)
	}
	// A stamp whose sha is not the file's is believed while the file is
	// untouched (that is the point: no hashing)...
	inTempRoot(t, dir, stampCommand(strings.Repeat("0", 64)))
	if f := facts(); f.KforgeSHA256 != strings.Repeat("0", 64) {
		t.Fatalf("the stamp was not read: %q", f.KforgeSHA256)
	}
	// ...and a rewrite in place with the old mtime still invalidates it (ctime).
	st, _ := os.Stat(bin)
	time.Sleep(1100 * time.Millisecond) // ctime has a one-second resolution in the key
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(bin, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if f := facts(); f.KforgeSHA256 != sha || !f.KforgeUnstamped {
		t.Fatalf("rewritten: sha %q unstamped %v; want a fresh hash", f.KforgeSHA256, f.KforgeUnstamped)
	}
}

// TestUploadBinaryPhaseStampsOrUploads: a host with the binary but no
// stamp only gets the stamp; a host with another binary gets it encoded
// as its decoders allow, then the stamp; a stamped host is skipped.
func TestUploadBinaryPhaseStampsOrUploads(t *testing.T) {
	content := bytes.Repeat([]byte("binary "), 1000)
	file := ssh.BytesFile(content)
	stamped := &fakeHost{name: "a", role: "master"}
	unstamped := &fakeHost{name: "b", role: "master"}
	old := &fakeHost{name: "c", role: "worker", files: map[string]ssh.RemoteFile{BinaryPath: {Exists: true, SHA256: "old", Mode: 0o755, Owner: "root:root"}}}
	env, _ := newEnv([]Host{stamped, unstamped, old}, false)
	env.Changed = &ChangeSet{}
	env.Facts.set("a", &Facts{KforgeSHA256: file.SHA256})
	env.Facts.set("b", &Facts{KforgeSHA256: file.SHA256, KforgeUnstamped: true})
	env.Facts.set("c", &Facts{KforgeSHA256: "old", Decoders: []string{"gzip"}})
	p := &UploadBinaryPhase{Env: env, Binary: BinaryInfo{Size: file.Size, SHA256: file.SHA256}, File: file}
	if run, _ := p.ShouldRun(); !run {
		t.Fatal("ShouldRun false with an unstamped and an old host")
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if stamped.changes() != 0 {
		t.Errorf("stamped host changed: %v %v", stamped.writes, stamped.uploads)
	}
	if len(unstamped.uploads) != 0 || len(unstamped.writes) != 1 || !strings.Contains(unstamped.writes[0], BinaryStampPath) {
		t.Errorf("unstamped host: uploads %v writes %v; want the stamp only", unstamped.uploads, unstamped.writes)
	}
	if len(old.uploads) != 1 || len(old.writes) != 1 || !strings.Contains(old.writes[0], file.SHA256) {
		t.Errorf("old host: uploads %v writes %v; want the binary and its stamp", old.uploads, old.writes)
	}
	if len(env.Changed.Changed("c", BinaryPath)) != 1 || len(env.Changed.Changed("b", BinaryPath)) != 0 {
		t.Error("the change set does not say the binary changed on c only")
	}
	env.Facts.set("b", &Facts{KforgeSHA256: file.SHA256})
	env.Facts.set("c", &Facts{KforgeSHA256: file.SHA256})
	if run, why := p.ShouldRun(); run {
		t.Error("ShouldRun true with every host stamped")
	} else if !strings.Contains(why, "stamped") {
		t.Errorf("why = %q", why)
	}
}

// TestEncodeRoundTrip: each encoding decodes to the binary, compressed
// once however many hosts ask.
func TestEncodeRoundTrip(t *testing.T) {
	content := bytes.Repeat([]byte("a kforge binary compresses well "), 20000)
	p := &UploadBinaryPhase{File: ssh.BytesFile(content)}
	for _, enc := range []string{EncodingZstd, EncodingGzip, EncodingNone} {
		e, err := p.encode(enc)
		if err != nil {
			t.Fatal(err)
		}
		e2, _ := p.encode(enc)
		r, _ := e.Open()
		r2, _ := e2.Open()
		a, _ := io.ReadAll(r)
		b, _ := io.ReadAll(r2)
		if !bytes.Equal(a, b) || int64(len(a)) != e.Size {
			t.Fatalf("%s: two encodings differ or the size is wrong", enc)
		}
		var dec []byte
		switch enc {
		case EncodingZstd:
			d, _ := zstd.NewReader(nil)
			dec, err = d.DecodeAll(a, nil)
			d.Close()
		case EncodingGzip:
			var zr *gzip.Reader
			if zr, err = gzip.NewReader(bytes.NewReader(a)); err == nil {
				dec, err = io.ReadAll(zr)
			}
		default:
			dec = a
		}
		if err != nil || !bytes.Equal(dec, content) {
			t.Fatalf("%s: decoded %d bytes, %v", enc, len(dec), err)
		}
		if enc != EncodingNone && e.Size > int64(len(content))/10 {
			t.Errorf("%s: %d bytes from %d", enc, e.Size, len(content))
		}
	}
	if got := p.encodingFor(&Facts{Decoders: []string{"zstd", "gzip"}}); got != EncodingZstd {
		t.Errorf("auto with zstd: %s", got)
	}
	if got := p.encodingFor(&Facts{Decoders: []string{"gzip"}}); got != EncodingGzip {
		t.Errorf("auto with gzip: %s", got)
	}
	if got := p.encodingFor(&Facts{}); got != EncodingNone {
		t.Errorf("auto with no decoder: %s", got)
	}
}
