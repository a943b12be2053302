package podlogs

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
)

// BenchmarkWriter writes 100-byte lines; the rotation size keeps about
// ten files' turnover in the run.
func BenchmarkWriter(b *testing.B) {
	w, err := NewWriter(filepath.Join(b.TempDir(), "0.log"), 10<<20, 5)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	s := w.Stream(Stdout)
	line := append(bytes.Repeat([]byte("x"), 99), '\n')
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		_, _ = s.Write(line)
	}
}

// BenchmarkRead reads a 10 MiB log of 100-byte lines.
func BenchmarkRead(b *testing.B) {
	path := filepath.Join(b.TempDir(), "0.log")
	w, err := NewWriter(path, 0, 1)
	if err != nil {
		b.Fatal(err)
	}
	s := w.Stream(Stdout)
	line := append(bytes.Repeat([]byte("x"), 99), '\n')
	for range (10 << 20) / len(line) {
		_, _ = s.Write(line)
	}
	_ = w.Close()
	b.SetBytes(10 << 20)
	for b.Loop() {
		if err := Read(context.Background(), path, Options{}, nil, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
