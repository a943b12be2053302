package podlogs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// Options are kubectl logs' options, as the pods/log query carries them.
type Options struct {
	// Follow keeps reading as the container writes, until Running reports
	// false and everything written has been read, or the context ends.
	Follow bool
	// TailLines, when set, starts this many lines before the end.
	TailLines *int64
	// Since drops lines written before it.
	Since time.Time
	// Timestamps prefixes each line with its RFC 3339 timestamp.
	Timestamps bool
	// LimitBytes, when set, stops after this many bytes.
	LimitBytes *int64
}

// PollInterval is how often a following reader looks for more output.
var PollInterval = 100 * time.Millisecond

// errLimit stops a read at LimitBytes.
var errLimit = errors.New("log limit reached")

// Read writes the log at path (its rotated files first) to out with
// opts. running says whether the container may still write; it is asked
// only when following. A missing file is an empty log.
func Read(ctx context.Context, path string, opts Options, running func() bool, out io.Writer) error {
	lw := &lineWriter{out: out, opts: opts}
	if opts.LimitBytes != nil {
		lw.left = *opts.LimitBytes
		lw.limited = true
	}
	var err error
	if opts.TailLines != nil {
		err = readTail(path, *opts.TailLines, lw)
	} else {
		err = readAll(path, lw)
	}
	if errors.Is(err, errLimit) {
		return nil
	}
	if err != nil || !opts.Follow {
		return err
	}
	err = follow(ctx, path, lw, running)
	if errors.Is(err, errLimit) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// lineWriter turns records into output lines.
type lineWriter struct {
	out     io.Writer
	opts    Options
	limited bool
	left    int64
	inLine  bool // the last record was partial: the next continues its line
	// pos of the current file up to the last whole record, for follow.
	pos int64
}

// record writes one parsed record; the returned error stops the read.
func (l *lineWriter) record(line []byte) error {
	ts, _, partial, text, err := ParseRecord(line)
	if err != nil {
		return nil // a torn or foreign line is skipped, as upstream
	}
	if !l.opts.Since.IsZero() && ts.Before(l.opts.Since) {
		l.inLine = partial
		return nil
	}
	var b []byte
	if l.opts.Timestamps && !l.inLine {
		b = append(b, ts.UTC().Format(time.RFC3339Nano)...)
		b = append(b, ' ')
	}
	b = append(b, text...)
	if !partial {
		b = append(b, '\n')
	}
	l.inLine = partial
	return l.write(b)
}

func (l *lineWriter) write(b []byte) error {
	if l.limited {
		if l.left <= 0 {
			return errLimit
		}
		if int64(len(b)) > l.left {
			b = b[:l.left]
		}
		l.left -= int64(len(b))
	}
	if _, err := l.out.Write(b); err != nil {
		return err
	}
	if l.limited && l.left <= 0 {
		return errLimit
	}
	return nil
}

func files(path string) ([]string, error) {
	old, err := Rotated(path)
	if err != nil {
		return nil, err
	}
	return append(old, path), nil
}

// readAll reads every file in order; pos ends at the current file's end.
func readAll(path string, lw *lineWriter) error {
	fs, err := files(path)
	if err != nil {
		return err
	}
	for _, p := range fs {
		n, err := readFile(p, 0, lw.record)
		if p == path {
			lw.pos = n
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readFile calls fn for each whole record of the file from offset and
// returns the offset after the last whole record. A missing file reads
// as empty.
func readFile(p string, offset int64, fn func([]byte) error) (int64, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return offset, nil
	}
	if err != nil {
		return offset, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return offset, err
	}
	return readRecords(f, offset, fn)
}

func readRecords(r io.Reader, offset int64, fn func([]byte) error) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			offset += int64(len(line))
			if ferr := fn(line[:len(line)-1]); ferr != nil {
				return offset, ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return offset, nil // a torn last line is read again later
		}
		if err != nil {
			return offset, err
		}
	}
}

// readTail writes the last n logical lines (a partial record and the
// records completing it are one line).
func readTail(path string, n int64, lw *lineWriter) error {
	if n < 0 {
		return readAll(path, lw)
	}
	fs, err := files(path)
	if err != nil {
		return err
	}
	// Records of the last n lines, kept as a window of whole lines.
	var lines [][][]byte
	var cur [][]byte
	for _, p := range fs {
		end, err := readFile(p, 0, func(rec []byte) error {
			_, _, partial, _, perr := ParseRecord(rec)
			if perr != nil {
				return nil
			}
			cur = append(cur, bytes.Clone(rec))
			if !partial {
				lines = append(lines, cur)
				cur = nil
				if int64(len(lines)) > n {
					lines = lines[1:]
				}
			}
			return nil
		})
		if p == path {
			lw.pos = end
		}
		if err != nil {
			return err
		}
	}
	if len(cur) > 0 {
		lines = append(lines, cur)
		if int64(len(lines)) > n {
			lines = lines[1:]
		}
	}
	for _, l := range lines {
		for _, rec := range l {
			if err := lw.record(rec); err != nil {
				return err
			}
		}
	}
	return nil
}

// follow reads what is appended to path after lw.pos, following the file
// across rotations, until running is false and nothing is left.
func follow(ctx context.Context, path string, lw *lineWriter, running func() bool) error {
	f, err := os.Open(path)
	for errors.Is(err, os.ErrNotExist) {
		if !running() {
			return nil
		}
		if err := sleep(ctx); err != nil {
			return err
		}
		lw.pos = 0
		f, err = os.Open(path)
	}
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	if _, err := f.Seek(lw.pos, io.SeekStart); err != nil {
		return err
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var pending []byte // a torn last line, completed by a later read
	for {
		// Whether to stop is decided before reading: output written before
		// the container stopped is then always read.
		live := running()
		for {
			line, err := br.ReadBytes('\n')
			pending = append(pending, line...)
			if len(pending) > 0 && pending[len(pending)-1] == '\n' {
				if werr := lw.record(pending[:len(pending)-1]); werr != nil {
					return werr
				}
				pending = pending[:0]
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
		}
		// A rotation renamed the file we hold: after draining it, move on
		// to the new one.
		if rotated(f, path) {
			nf, err := os.Open(path)
			if err != nil {
				return err
			}
			f.Close()
			f = nf
			br.Reset(f)
			pending = pending[:0]
			continue
		}
		if !live {
			return nil
		}
		if err := sleep(ctx); err != nil {
			return err
		}
	}
}

// rotated reports whether path names a file other than the open f (a
// rotation renamed f and the writer opened a new file).
func rotated(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	return !os.SameFile(a, b)
}

func sleep(ctx context.Context) error {
	t := time.NewTimer(PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
