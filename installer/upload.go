package installer

import (
	"context"
	"debug/elf"
	"fmt"
	"time"

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

// UploadBinaryPhase pushes the kforge binary to /usr/local/bin/kforge on
// every host whose copy differs.
type UploadBinaryPhase struct {
	Env    *Env
	Binary BinaryInfo
	File   ssh.File
}

func (p *UploadBinaryPhase) ID() string    { return "upload-binary" }
func (p *UploadBinaryPhase) Title() string { return "Upload the kforge binary" }

// ShouldRun is false when the facts show every host already has it.
func (p *UploadBinaryPhase) ShouldRun() (bool, string) {
	for _, h := range p.Env.Hosts {
		f := p.Env.Facts.Get(h.Name())
		if f == nil || f.KforgeSHA256 != p.Binary.SHA256 {
			return true, ""
		}
	}
	return false, "every host has this binary (sha256 " + short(p.Binary.SHA256) + ")"
}

func (p *UploadBinaryPhase) Run(ctx context.Context) error {
	return p.Env.Each(ctx, p, p.Env.Hosts, func(ctx context.Context, h Host) (string, error) {
		start := time.Now()
		changed, err := p.Env.Gate.Upload(ctx, h, ssh.Upload{File: p.File, Remote: BinaryPath, Mode: 0o755, Owner: "root:root"})
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
			return "would upload " + humanBytes(p.Binary.Size) + " to " + BinaryPath, nil
		}
		d := time.Since(start)
		return fmt.Sprintf("uploaded %s to %s (%.0f MiB/s)", humanBytes(p.Binary.Size), BinaryPath, float64(p.Binary.Size)/(1<<20)/d.Seconds()), nil
	})
}
