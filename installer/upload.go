package installer

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"kforge.dev/kforge/installer/ssh"
)

// LoadBinary describes the kforge binary at path: size, sha256 and arch.
func LoadBinary(path string) (BinaryInfo, ssh.File, error) {
	f, err := ssh.LocalFile(path)
	if err != nil {
		return BinaryInfo{}, ssh.File{}, fmt.Errorf("the kforge binary: %w", err)
	}
	info := BinaryInfo{Path: path, Size: f.Size, SHA256: f.SHA256}
	e, err := elf.Open(path)
	if err != nil {
		return BinaryInfo{}, ssh.File{}, fmt.Errorf("the kforge binary %s is not a Linux executable: %w", path, err)
	}
	defer e.Close()
	switch e.Machine {
	case elf.EM_X86_64:
		info.Arch = "amd64"
	case elf.EM_AARCH64:
		info.Arch = "arm64"
	default:
		return BinaryInfo{}, ssh.File{}, fmt.Errorf("the kforge binary %s is for %s, which kforge does not support", path, e.Machine)
	}
	return info, f, nil
}

// Upload encodings of the binary (UpOptions.UploadEncoding).
const (
	// EncodingAuto is zstd when the host has zstd(1), else gzip (which
	// every Debian-like host has).
	EncodingAuto = "auto"
	EncodingZstd = "zstd"
	EncodingGzip = "gzip"
	// EncodingNone streams the plain bytes through the same SSH session.
	EncodingNone = "none"
	// EncodingSFTP writes the plain bytes with SFTP (concurrent writes).
	EncodingSFTP = "sftp"
)

// UploadEncodings lists the valid encodings.
var UploadEncodings = []string{EncodingAuto, EncodingZstd, EncodingGzip, EncodingNone, EncodingSFTP}

// UploadBinaryPhase pushes the kforge binary to /usr/local/bin/kforge on
// every host whose copy differs, compressed on the wire (zstd or gzip,
// compressed once locally, decoded on the host), its sha256 checked on the
// host before it replaces the old one; then it writes the stamp
// (BinaryStampPath). A host whose binary matches but was hashed because
// it had no valid stamp only gets the stamp.
type UploadBinaryPhase struct {
	Env    *Env
	Binary BinaryInfo
	File   ssh.File
	// Encoding is one of UploadEncodings; EncodingAuto when empty.
	Encoding string
	// Hosts narrows the phase to these hosts; every host of Env when nil.
	Hosts []Host

	mu      sync.Mutex
	encoded map[string]*encodedBinary
}

// encodedBinary is the binary compressed once per run and encoding.
type encodedBinary struct {
	once sync.Once
	enc  *ssh.Encoded
	err  error
}

func (p *UploadBinaryPhase) ID() string    { return "upload-binary" }
func (p *UploadBinaryPhase) Title() string { return "Upload the kforge binary" }

func (p *UploadBinaryPhase) hosts() []Host {
	if p.Hosts != nil {
		return p.Hosts
	}
	return p.Env.Hosts
}

// ShouldRun is false when the facts show every host already has it, stamped.
func (p *UploadBinaryPhase) ShouldRun() (bool, string) {
	for _, h := range p.hosts() {
		f := p.Env.Facts.Get(h.Name())
		if f == nil || f.KforgeSHA256 != p.Binary.SHA256 || f.KforgeUnstamped {
			return true, ""
		}
	}
	return false, "every host has this binary (sha256 " + short(p.Binary.SHA256) + ", stamped)"
}

// stampCommand writes BinaryStampPath for the binary now at BinaryPath,
// whose sha256 is sha.
func stampCommand(sha string) string {
	return "set -e; mkdir -p /var/lib/kforge; printf '%s\\n%s\\n' " + sha + ` "$(` + binaryStampKey + `)" > ` +
		BinaryStampPath + ".tmp; mv -f " + BinaryStampPath + ".tmp " + BinaryStampPath
}

func (p *UploadBinaryPhase) Run(ctx context.Context) error {
	return p.Env.Each(ctx, p, p.hosts(), p.upload)
}

// upload brings one host's binary up to date: the stamp alone, the
// upload and the stamp, or nothing (a *SkipError).
func (p *UploadBinaryPhase) upload(ctx context.Context, h Host) (string, error) {
	f := p.Env.Facts.Get(h.Name())
	if f != nil && f.KforgeSHA256 == p.Binary.SHA256 {
		if !f.KforgeUnstamped {
			return "", &SkipError{Why: "up to date (sha256 match, stamped)"}
		}
		if _, err := p.Env.Gate.Write(ctx, h, stampCommand(p.Binary.SHA256), "stamp the binary's sha256"); err != nil {
			return "", err
		}
		return "up to date (sha256 match); stamped", nil
	}
	u := ssh.Upload{File: p.File, Remote: BinaryPath, Mode: 0o755, Owner: "root:root", Differs: f != nil}
	enc := p.encodingFor(f)
	if enc != EncodingSFTP && !p.Env.Gate.DryRun() {
		e, err := p.encode(enc)
		if err != nil {
			return "", err
		}
		u.Encoded = e
	}
	start := time.Now()
	changed, err := p.Env.Gate.Upload(ctx, h, u)
	if err != nil {
		return "", err
	}
	if changed {
		p.Env.Changed.add(h.Name(), BinaryPath)
	}
	switch {
	case !changed:
		return "", &SkipError{Why: "up to date (sha256 match)"}
	case p.Env.Gate.DryRun():
		return "would upload " + humanBytes(p.Binary.Size) + " to " + BinaryPath + " (" + enc + ")", nil
	}
	d := time.Since(start)
	if _, err := p.Env.Gate.Write(ctx, h, stampCommand(p.Binary.SHA256), "stamp the binary's sha256"); err != nil {
		return "", err
	}
	wire := p.Binary.Size
	if u.Encoded != nil {
		wire = u.Encoded.Size
	}
	return fmt.Sprintf("uploaded %s to %s in %s: %.1f MiB/s of binary, %s on the wire (%s), sha256 checked",
		humanBytes(p.Binary.Size), BinaryPath, formatDuration(d), float64(p.Binary.Size)/(1<<20)/d.Seconds(), humanBytes(wire), enc), nil
}

// encodingFor picks the encoding for a host with facts f.
func (p *UploadBinaryPhase) encodingFor(f *Facts) string {
	enc := p.Encoding
	if enc == "" {
		enc = EncodingAuto
	}
	if enc != EncodingAuto {
		return enc
	}
	switch {
	case f != nil && slices.Contains(f.Decoders, "zstd"):
		return EncodingZstd
	case f != nil && slices.Contains(f.Decoders, "gzip"):
		return EncodingGzip
	}
	return EncodingNone
}

// encode returns the binary in encoding enc, compressing it on first use.
func (p *UploadBinaryPhase) encode(enc string) (*ssh.Encoded, error) {
	if enc == EncodingNone {
		return EncodeBinary(enc, p.File)
	}
	p.mu.Lock()
	if p.encoded == nil {
		p.encoded = map[string]*encodedBinary{}
	}
	e := p.encoded[enc]
	if e == nil {
		e = &encodedBinary{}
		p.encoded[enc] = e
	}
	p.mu.Unlock()
	e.once.Do(func() { e.enc, e.err = EncodeBinary(enc, p.File) })
	return e.enc, e.err
}

// EncodeBinary encodes f for an Upload's Encoded: zstd or gzip compressed
// in memory (once; every host reads the same bytes), or none (the file
// itself, decoded by cat).
func EncodeBinary(enc string, f ssh.File) (*ssh.Encoded, error) {
	decoder := map[string]string{EncodingZstd: "zstd -dcq", EncodingGzip: "gzip -dc", EncodingNone: "cat"}[enc]
	switch {
	case decoder == "":
		return nil, fmt.Errorf("upload encoding %q cannot be streamed (want zstd, gzip or none)", enc)
	case enc == EncodingNone:
		return &ssh.Encoded{Decoder: decoder, Open: f.Open, Size: f.Size}, nil
	}
	data, err := compress(enc, f)
	if err != nil {
		return nil, fmt.Errorf("compressing the binary (%s): %w", enc, err)
	}
	return &ssh.Encoded{Decoder: decoder, Size: int64(len(data)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}, nil
}

// compress encodes the file's content with zstd (default level) or gzip
// (default level): both decode far faster than an SSH link carries.
func compress(enc string, f ssh.File) ([]byte, error) {
	src, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var buf bytes.Buffer
	buf.Grow(int(f.Size / 3))
	var w io.WriteCloser
	switch enc {
	case EncodingZstd:
		w, err = zstd.NewWriter(&buf)
	case EncodingGzip:
		w, err = gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	default:
		return nil, fmt.Errorf("unknown upload encoding %q", enc)
	}
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, src); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
