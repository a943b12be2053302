package podlogs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Streams, as the records name them.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Tags of a record.
const (
	tagFull    = "F"
	tagPartial = "P"
)

// maxLine is the longest text one record carries; a longer line is split
// into partial records, as containerd's CRI plugin does at 16 KiB.
const maxLine = 16 << 10

// rotatedTimeFormat names rotated files (N.log.20240102-150405.000000000):
// sorting the names sorts them by age.
const rotatedTimeFormat = "20060102-150405.000000000"

// Writer appends records to one container's log file, rotating it by
// size. It is safe for concurrent use by its stream writers.
type Writer struct {
	path     string
	maxBytes int64
	maxFiles int
	now      func() time.Time

	mu   sync.Mutex
	f    *os.File
	size int64
	err  error // the first write error; later writes are dropped
}

// NewWriter opens (appending) the log file at path, creating its folder.
// maxBytes > 0 rotates the file once it is larger; maxFiles (at least 1)
// is how many files are kept, the current one included.
func NewWriter(path string, maxBytes int64, maxFiles int) (*Writer, error) {
	if maxFiles < 1 {
		maxFiles = 1
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	w := &Writer{path: path, maxBytes: maxBytes, maxFiles: maxFiles, now: time.Now}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// Stream returns a writer of one stream's output: it cuts what it is
// given into lines and appends a record per line. Call its Close at the
// end of the stream to write a last line without a newline.
func (w *Writer) Stream(stream string) *StreamWriter {
	return &StreamWriter{w: w, stream: stream}
}

// record appends one record, rotating first when the file is full.
func (w *Writer) record(stream, tag string, text []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil || w.err != nil {
		return
	}
	var b bytes.Buffer
	b.Grow(len(text) + 48)
	b.WriteString(w.now().UTC().Format(time.RFC3339Nano))
	b.WriteByte(' ')
	b.WriteString(stream)
	b.WriteByte(' ')
	b.WriteString(tag)
	b.WriteByte(' ')
	b.Write(text)
	b.WriteByte('\n')
	if w.maxBytes > 0 && w.size > 0 && w.size+int64(b.Len()) > w.maxBytes {
		if err := w.rotate(); err != nil {
			w.err = err
			return
		}
	}
	n, err := w.f.Write(b.Bytes())
	w.size += int64(n)
	if err != nil {
		w.err = err
	}
}

// rotate renames the current file aside, drops the oldest rotated files
// beyond maxFiles-1, and opens a new current file.
func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	w.f = nil
	if w.maxFiles == 1 {
		if err := os.Remove(w.path); err != nil {
			return err
		}
		return w.open()
	}
	if err := os.Rename(w.path, w.path+"."+w.now().UTC().Format(rotatedTimeFormat)); err != nil {
		return err
	}
	old, err := Rotated(w.path)
	if err != nil {
		return err
	}
	for len(old) > w.maxFiles-1 {
		if err := os.Remove(old[0]); err != nil {
			return err
		}
		old = old[1:]
	}
	return w.open()
}

// Err is the first error writing the file, if any: the records after it
// were dropped.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close closes the file. Stream writers should be closed first.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// Rotated lists the rotated files of the log at path, oldest first.
func Rotated(path string) ([]string, error) {
	m, err := filepath.Glob(globEscape(path) + ".*")
	if err != nil {
		return nil, err
	}
	out := m[:0]
	for _, p := range m {
		if _, err := time.Parse(rotatedTimeFormat, strings.TrimPrefix(p, path+".")); err == nil {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

func globEscape(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`)
	return r.Replace(p)
}

// StreamWriter is one stream of a Writer (see Writer.Stream).
type StreamWriter struct {
	w      *Writer
	stream string
	mu     sync.Mutex
	buf    []byte
}

// Write appends a full record for every complete line and keeps the
// rest, writing it as partial records when it exceeds the longest line.
// It never fails: a file error is kept in the Writer's Err.
func (s *StreamWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.buf = append(s.buf, p...)
			break
		}
		line := p[:i]
		if len(s.buf) > 0 {
			line = append(s.buf, line...)
			s.buf = s.buf[:0]
		}
		s.full(line)
		p = p[i+1:]
	}
	for len(s.buf) > maxLine {
		s.w.record(s.stream, tagPartial, s.buf[:maxLine])
		s.buf = append(s.buf[:0], s.buf[maxLine:]...)
	}
	return n, nil
}

// full writes one line, as partial records and a full one when long.
func (s *StreamWriter) full(line []byte) {
	for len(line) > maxLine {
		s.w.record(s.stream, tagPartial, line[:maxLine])
		line = line[maxLine:]
	}
	s.w.record(s.stream, tagFull, line)
}

// Close writes what is left of a last line without a newline.
func (s *StreamWriter) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buf) > 0 {
		s.full(s.buf)
		s.buf = nil
	}
	return nil
}

// ParseRecord splits one line of a log file (without its newline) into
// its fields.
func ParseRecord(line []byte) (ts time.Time, stream string, partial bool, text []byte, err error) {
	f := bytes.SplitN(line, []byte{' '}, 4)
	if len(f) < 3 {
		return time.Time{}, "", false, nil, fmt.Errorf("not a CRI log record: %q", truncate(line))
	}
	ts, err = time.Parse(time.RFC3339Nano, string(f[0]))
	if err != nil {
		return time.Time{}, "", false, nil, fmt.Errorf("not a CRI log record: bad timestamp %q", f[0])
	}
	stream = string(f[1])
	if stream != Stdout && stream != Stderr {
		return time.Time{}, "", false, nil, fmt.Errorf("not a CRI log record: bad stream %q", f[1])
	}
	switch string(f[2]) {
	case tagFull:
	case tagPartial:
		partial = true
	default:
		return time.Time{}, "", false, nil, fmt.Errorf("not a CRI log record: bad tag %q", f[2])
	}
	if len(f) == 4 {
		text = f[3]
	}
	return ts, stream, partial, text, nil
}

func truncate(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}
