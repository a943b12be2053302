package podlogs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// clock gives each record a distinct, increasing time.
type clock struct{ t time.Time }

func (c *clock) now() time.Time {
	c.t = c.t.Add(time.Second)
	return c.t
}

func newTestWriter(t *testing.T, maxBytes int64, maxFiles int) (*Writer, string, *clock) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c", "0.log")
	w, err := NewWriter(path, maxBytes, maxFiles)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	w.now = c.now
	t.Cleanup(func() { _ = w.Close() })
	return w, path, c
}

func TestWriterFormat(t *testing.T) {
	w, path, _ := newTestWriter(t, 0, 1)
	out, errw := w.Stream(Stdout), w.Stream(Stderr)
	_, _ = out.Write([]byte("hello\nwor"))
	_, _ = errw.Write([]byte("oops\n"))
	_, _ = out.Write([]byte("ld\nlast"))
	_ = out.Close()
	_ = errw.Close()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "2026-01-02T03:04:06Z stdout F hello\n" +
		"2026-01-02T03:04:07Z stderr F oops\n" +
		"2026-01-02T03:04:08Z stdout F world\n" +
		"2026-01-02T03:04:09Z stdout F last\n"
	if string(got) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriterSplitsLongLines(t *testing.T) {
	w, path, _ := newTestWriter(t, 0, 1)
	long := strings.Repeat("x", maxLine+10)
	s := w.Stream(Stdout)
	_, _ = s.Write([]byte(long + "\n"))
	var b bytes.Buffer
	if err := Read(context.Background(), path, Options{}, nil, &b); err != nil {
		t.Fatal(err)
	}
	if b.String() != long+"\n" {
		t.Fatalf("read %d bytes, want %d", b.Len(), len(long)+1)
	}
	data, _ := os.ReadFile(path)
	if n := bytes.Count(data, []byte(" P ")); n != 1 {
		t.Errorf("%d partial records, want 1", n)
	}
}

func TestRotation(t *testing.T) {
	// Each record is 36 bytes; 100 bytes hold two.
	w, path, _ := newTestWriter(t, 100, 3)
	s := w.Stream(Stdout)
	for i := range 9 {
		_, _ = s.Write([]byte("line-" + string(rune('a'+i)) + "\n"))
	}
	old, err := Rotated(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 2 {
		t.Fatalf("rotated files %v, want 2 kept", old)
	}
	var b bytes.Buffer
	if err := Read(context.Background(), path, Options{}, nil, &b); err != nil {
		t.Fatal(err)
	}
	// 9 lines, 2 per file, 3 files kept: the last 5 survive.
	if want := "line-e\nline-f\nline-g\nline-h\nline-i\n"; b.String() != want {
		t.Fatalf("read %q, want %q", b.String(), want)
	}
}

func TestReadOptions(t *testing.T) {
	w, path, c := newTestWriter(t, 0, 1)
	s := w.Stream(Stdout)
	for _, l := range []string{"one", "two", "three", "four"} {
		_, _ = s.Write([]byte(l + "\n"))
	}
	i64 := func(n int64) *int64 { return &n }
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"all", Options{}, "one\ntwo\nthree\nfour\n"},
		{"tail 2", Options{TailLines: i64(2)}, "three\nfour\n"},
		{"tail 0", Options{TailLines: i64(0)}, ""},
		{"tail 10", Options{TailLines: i64(10)}, "one\ntwo\nthree\nfour\n"},
		{"since", Options{Since: c.t.Add(-time.Second)}, "three\nfour\n"},
		{"timestamps", Options{TailLines: i64(1), Timestamps: true}, "2026-01-02T03:04:09Z four\n"},
		{"limit", Options{LimitBytes: i64(6)}, "one\ntw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Read(context.Background(), path, tc.o, nil, &b); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Fatalf("got %q, want %q", b.String(), tc.want)
			}
		})
	}
}

func TestReadMissingFile(t *testing.T) {
	var b bytes.Buffer
	err := Read(context.Background(), filepath.Join(t.TempDir(), "none.log"), Options{Follow: true}, func() bool { return false }, &b)
	if err != nil || b.Len() != 0 {
		t.Fatalf("read %q, %v", b.String(), err)
	}
}

// syncBuffer is a bytes.Buffer read while another goroutine writes it.
type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// TestFollowAcrossRotation follows a log while the writer rotates it and
// stops once the container is done and everything was read.
func TestFollowAcrossRotation(t *testing.T) {
	w, path, _ := newTestWriter(t, 100, 5)
	s := w.Stream(Stdout)
	_, _ = s.Write([]byte("first\n"))
	var live atomic.Bool
	live.Store(true)
	out := newSyncBuffer()
	done := make(chan error, 1)
	go func() { done <- Read(context.Background(), path, Options{Follow: true}, live.Load, out) }()
	waitFor(t, func() bool { return out.String() == "first\n" })
	var want strings.Builder
	want.WriteString("first\n")
	for i := range 7 {
		l := "more-" + string(rune('a'+i)) + "\n"
		want.WriteString(l)
		_, _ = s.Write([]byte(l))
		waitFor(t, func() bool { return out.String() == want.String() })
	}
	live.Store(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out.String() != want.String() {
		t.Fatalf("followed %q, want %q", out.String(), want.String())
	}
}

// waitFor polls cond; the test's deadline bounds it.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatal("test ended while waiting")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseRecordRejects(t *testing.T) {
	for _, l := range []string{"", "garbage", "2026-01-02T03:04:05Z stdin F x", "2026-01-02T03:04:05Z stdout X x", "yesterday stdout F x"} {
		if _, _, _, _, err := ParseRecord([]byte(l)); err == nil {
			t.Errorf("%q parsed", l)
		}
	}
	ts, st, p, text, err := ParseRecord([]byte("2026-01-02T03:04:05.5Z stderr P a b"))
	if err != nil || st != Stderr || !p || string(text) != "a b" || ts.Nanosecond() != 5e8 {
		t.Errorf("got %v %q %v %q %v", ts, st, p, text, err)
	}
}
