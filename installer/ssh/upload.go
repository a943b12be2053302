package ssh

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/pkg/sftp"
)

// File is local content to upload.
type File struct {
	// Open returns the content from its start; called once per upload.
	Open   func() (io.ReadCloser, error)
	Size   int64
	SHA256 string // lowercase hex
}

// LocalFile describes the file at p, hashing it once.
func LocalFile(p string) (File, error) {
	f, err := os.Open(p)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return File{}, fmt.Errorf("reading %s: %w", p, err)
	}
	return File{
		Open:   func() (io.ReadCloser, error) { return os.Open(p) },
		Size:   n,
		SHA256: hex.EncodeToString(h.Sum(nil)),
	}, nil
}

// BytesFile describes content held in memory.
func BytesFile(b []byte) File {
	sum := sha256.Sum256(b)
	return File{
		Open:   func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(b))), nil },
		Size:   int64(len(b)),
		SHA256: hex.EncodeToString(sum[:]),
	}
}

// Upload is one file to place on the host.
type Upload struct {
	File File
	// Remote is the absolute destination path.
	Remote string
	Mode   fs.FileMode
	// Owner is "user:group"; empty means root:root.
	Owner string
	// Encoded, when set, is sent instead of File: through an SSH
	// session's standard input, decoded on the host, and the result's
	// sha256 checked against File.SHA256 before it replaces Remote.
	Encoded *Encoded
	// Differs skips the comparison with the remote file, which the caller
	// knows to differ (hashing a large remote file costs seconds).
	Differs bool
}

// Encoded is a file's content as sent on the wire.
type Encoded struct {
	// Decoder is the host's command that reads the encoded bytes on stdin
	// and writes the content on stdout: "zstd -dcq", "gzip -dc" or "cat".
	Decoder string
	// Open returns the encoded bytes from their start; Size is their length.
	Open func() (io.ReadCloser, error)
	Size int64
}

// RemoteFile is what a remote path holds.
type RemoteFile struct {
	Exists bool
	SHA256 string
	Mode   fs.FileMode
	Owner  string // user:group
}

// Stat reads the sha256, mode and owner of a remote file as root.
func (c *Client) Stat(ctx context.Context, p string) (RemoteFile, error) {
	q := ShellQuote(p)
	out, err := c.Run(ctx, "if [ -f "+q+" ]; then stat -c '%a %U:%G' "+q+" && sha256sum "+q+"; else echo absent; fi", RunOptions{Sudo: true})
	if err != nil {
		return RemoteFile{}, err
	}
	return parseStat(string(out))
}

func parseStat(out string) (RemoteFile, error) {
	f := strings.Fields(out)
	if len(f) == 1 && f[0] == "absent" {
		return RemoteFile{}, nil
	}
	if len(f) < 3 {
		return RemoteFile{}, fmt.Errorf("unexpected output of stat and sha256sum: %q", out)
	}
	mode, err := strconv.ParseUint(f[0], 8, 32)
	if err != nil {
		return RemoteFile{}, fmt.Errorf("unexpected mode %q", f[0])
	}
	return RemoteFile{Exists: true, Mode: fs.FileMode(mode), Owner: f[1], SHA256: f[2]}, nil
}

// Upload places u.File at u.Remote atomically (a temporary file in the
// same folder, fsync, mode and owner, rename), so a reader sees the old
// file or the new one, never a part. It does nothing and returns false when
// the remote file already has the same sha256, mode and owner. A non-root
// user uploads to a private temporary file that sudo then installs.
func (c *Client) Upload(ctx context.Context, u Upload) (changed bool, err error) {
	if u.Owner == "" {
		u.Owner = "root:root"
	}
	if !path.IsAbs(u.Remote) {
		return false, fmt.Errorf("host %s: upload destination %q is not absolute", c.cfg.Name, u.Remote)
	}
	if !u.Differs {
		cur, err := c.Stat(ctx, u.Remote)
		if err != nil {
			return false, err
		}
		if cur.Exists && cur.SHA256 == u.File.SHA256 && cur.Mode == u.Mode.Perm() && cur.Owner == u.Owner {
			return false, nil
		}
	}
	switch {
	case u.Encoded != nil:
		err = c.uploadEncoded(ctx, u)
	case c.cfg.User == "root":
		err = c.uploadDirect(ctx, u)
	default:
		err = c.uploadSudo(ctx, u)
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

func (c *Client) sftpClient() (*sftp.Client, error) {
	c.sftpMu.Lock()
	defer c.sftpMu.Unlock()
	if c.sftp != nil {
		return c.sftp, nil
	}
	s, err := sftp.NewClient(c.conn, sftp.UseConcurrentWrites(true), sftp.UseFstat(true))
	if err != nil {
		return nil, fmt.Errorf("host %s: starting sftp: %w", c.cfg.Name, err)
	}
	c.sftp = s
	return s, nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeTemp writes the file through SFTP to tmp (created exclusively) and
// fsyncs it; it removes tmp on failure.
func (c *Client) writeTemp(ctx context.Context, s *sftp.Client, tmp string, u Upload, mode fs.FileMode) (err error) {
	src, err := u.File.Open()
	if err != nil {
		return fmt.Errorf("opening the local file: %w", err)
	}
	defer src.Close()
	f, err := s.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("sftp create %s: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			_ = s.Remove(tmp)
		}
	}()
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("sftp chmod %s: %w", tmp, err)
	}
	n, err := f.ReadFrom(src)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("sftp write %s: %w", tmp, err)
	}
	if n != u.File.Size {
		return fmt.Errorf("sftp write %s: wrote %d bytes, want %d (did the local file change?)", tmp, n, u.File.Size)
	}
	if err := f.Sync(); err != nil {
		var se *sftp.StatusError
		if !errors.As(err, &se) || se.FxCode() != sftp.ErrSSHFxOpUnsupported {
			return fmt.Errorf("sftp fsync %s: %w", tmp, err)
		}
		// A server without fsync@openssh.com: flush with sync(1) instead.
		if err := f.Close(); err != nil {
			return fmt.Errorf("sftp close %s: %w", tmp, err)
		}
		if _, err := c.Run(ctx, "sync -- "+ShellQuote(tmp), RunOptions{}); err != nil {
			_ = s.Remove(tmp)
			return err
		}
		return nil
	}
	return f.Close()
}

func (c *Client) uploadDirect(ctx context.Context, u Upload) error {
	s, err := c.sftpClient()
	if err != nil {
		return err
	}
	dir, base := path.Split(u.Remote)
	tmp := dir + "." + base + ".kforge-" + randomSuffix()
	fail := func(step string, err error) error {
		_ = s.Remove(tmp)
		return fmt.Errorf("host %s: uploading %s: %s: %w", c.cfg.Name, u.Remote, step, err)
	}
	if err := s.MkdirAll(dir); err != nil {
		return fmt.Errorf("host %s: uploading %s: creating %s: %w", c.cfg.Name, u.Remote, dir, err)
	}
	if err := c.writeTemp(ctx, s, tmp, u, u.Mode.Perm()); err != nil {
		return fmt.Errorf("host %s: uploading %s: %w", c.cfg.Name, u.Remote, err)
	}
	if u.Owner != "root:root" {
		if _, err := c.Run(ctx, "chown "+ShellQuote(u.Owner)+" "+ShellQuote(tmp), RunOptions{}); err != nil {
			return fail("chown", err)
		}
	} else if err := s.Chown(tmp, 0, 0); err != nil {
		return fail("chown", err)
	}
	if err := s.PosixRename(tmp, u.Remote); err != nil {
		return fail("rename", err)
	}
	return nil
}

func (c *Client) uploadSudo(ctx context.Context, u Upload) error {
	s, err := c.sftpClient()
	if err != nil {
		return err
	}
	// A file only the login user can read, then sudo copies it next to
	// the destination and renames it over.
	staged := "/tmp/.kforge-upload-" + randomSuffix()
	if err := c.writeTemp(ctx, s, staged, u, 0o600); err != nil {
		return fmt.Errorf("host %s: uploading %s: %w", c.cfg.Name, u.Remote, err)
	}
	defer func() { _ = s.Remove(staged) }()
	dir, base := path.Split(u.Remote)
	tmp := dir + "." + base + ".kforge-" + randomSuffix()
	user, group, _ := strings.Cut(u.Owner, ":")
	if group == "" {
		group = user
	}
	script := fmt.Sprintf("set -e; mkdir -p %s; trap 'rm -f %s' EXIT; install -m %04o -o %s -g %s %s %s; sync %s; mv -f %s %s; trap - EXIT",
		ShellQuote(dir), ShellQuote(tmp), u.Mode.Perm(), ShellQuote(user), ShellQuote(group), ShellQuote(staged), ShellQuote(tmp),
		ShellQuote(tmp), ShellQuote(tmp), ShellQuote(u.Remote))
	if _, err := c.Run(ctx, script, RunOptions{Sudo: true}); err != nil {
		return err
	}
	return nil
}

// uploadEncoded streams u.Encoded into the decoder on the host, as root,
// into a temporary file beside the destination, checks its sha256, sets
// mode and owner, syncs it and renames it over the destination. One
// session, no SFTP: the bytes cross the wire once, compressed.
func (c *Client) uploadEncoded(ctx context.Context, u Upload) error {
	src, err := u.Encoded.Open()
	if err != nil {
		return fmt.Errorf("host %s: uploading %s: opening the local file: %w", c.cfg.Name, u.Remote, err)
	}
	defer src.Close()
	dir, base := path.Split(u.Remote)
	tmp := dir + "." + base + ".kforge-" + randomSuffix()
	user, group, _ := strings.Cut(u.Owner, ":")
	if group == "" {
		group = user
	}
	script := fmt.Sprintf(`set -e; mkdir -p %[1]s; trap 'rm -f %[2]s' EXIT; %[3]s > %[2]s
got=$(sha256sum %[2]s | cut -d' ' -f1)
if [ "$got" != %[4]s ]; then echo "checksum mismatch after the upload: sha256 $got, want %[4]s" >&2; exit 1; fi
chmod %04[5]o %[2]s; chown %[6]s:%[7]s %[2]s; sync %[2]s; mv -f %[2]s %[8]s; trap - EXIT`,
		ShellQuote(dir), ShellQuote(tmp), u.Encoded.Decoder, u.File.SHA256, u.Mode.Perm(),
		ShellQuote(user), ShellQuote(group), ShellQuote(u.Remote))
	if _, err := c.Run(ctx, script, RunOptions{Sudo: true, Stdin: src}); err != nil {
		return fmt.Errorf("host %s: uploading %s: %w", c.cfg.Name, u.Remote, err)
	}
	return nil
}
