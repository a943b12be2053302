package ingress

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessLog writes one JSON object per request, buffered: Flush (called
// periodically by the controller and at shutdown) pushes the lines out.
type accessLog struct {
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
}

func newAccessLog(w io.Writer) *accessLog {
	return &accessLog{w: bufio.NewWriterSize(w, 64<<10)}
}

// Flush writes out the buffered lines.
func (l *accessLog) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Flush()
}

func (l *accessLog) write(r *http.Request, e *logEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf[:0]
	b = append(b, `{"time":"`...)
	b = e.start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","remote":`...)
	b = appendJSON(b, r.RemoteAddr)
	b = append(b, `,"host":`...)
	b = appendJSON(b, r.Host)
	b = append(b, `,"method":`...)
	b = appendJSON(b, r.Method)
	b = append(b, `,"uri":`...)
	b = appendJSON(b, r.RequestURI)
	b = append(b, `,"proto":`...)
	b = appendJSON(b, r.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(time.Since(e.start).Microseconds())/1000, 'f', 3, 64)
	if e.route != nil {
		b = append(b, `,"ingress":`...)
		b = appendJSON(b, e.route.Ingress)
		b = append(b, `,"service":`...)
		b = appendJSON(b, e.route.Backend.Name)
	}
	if e.upstream != "" {
		b = append(b, `,"upstream":`...)
		b = appendJSON(b, e.upstream)
		b = append(b, `,"upstream_ms":`...)
		b = strconv.AppendFloat(b, e.upstreamMs, 'f', 3, 64)
	}
	if e.retries > 0 {
		b = append(b, `,"retries":`...)
		b = strconv.AppendInt(b, int64(e.retries), 10)
	}
	if e.requestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendJSON(b, e.requestID)
	}
	b = append(b, `,"user_agent":`...)
	b = appendJSON(b, r.UserAgent())
	b = append(b, "}\n"...)
	l.buf = b
	_, _ = l.w.Write(b)
}

const hexDigits = "0123456789abcdef"

// appendJSON appends s as a JSON string (invalid UTF-8 becomes U+FFFD).
func appendJSON(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
