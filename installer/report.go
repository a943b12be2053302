package installer

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Event statuses.
const (
	StatusStart   = "start"   // a phase (Host empty) or a host's step began
	StatusOK      = "ok"      // finished
	StatusFailed  = "failed"  // finished with an error
	StatusSkipped = "skipped" // ShouldRun said no, or nothing to do on this host
	StatusChange  = "change"  // a remote write done, or planned in a dry run
	StatusSummary = "summary" // the end of the run
	// StatusProgress tells something a long step is going through (a
	// drain's refusals and retries) before its ✓ or ✗.
	StatusProgress = "progress"
)

// Event is one progress report. With --output json each is one line.
type Event struct {
	Time   time.Time `json:"time"`
	Phase  string    `json:"phase,omitempty"` // phase ID
	Title  string    `json:"title,omitempty"`
	Host   string    `json:"host,omitempty"`
	Status string    `json:"status"`
	// DurationMS is set on ok, failed and skipped events.
	DurationMS int64  `json:"durationMs,omitempty"`
	Message    string `json:"message,omitempty"`
	Error      string `json:"error,omitempty"`
	// Change is set on change events.
	Change *Change `json:"change,omitempty"`
	DryRun bool    `json:"dryRun,omitempty"`
}

// Reporter receives progress events. Implementations are safe for
// concurrent use (hosts finish in parallel).
type Reporter interface {
	Report(Event)
}

// JSONReporter writes one JSON object per event per line.
type JSONReporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewJSONReporter writes events to w.
func NewJSONReporter(w io.Writer) *JSONReporter { return &JSONReporter{enc: json.NewEncoder(w)} }

func (r *JSONReporter) Report(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.enc.Encode(e)
}

// TextReporter writes kind-style status lines: one line per phase and
// host, ✓ or ✗ with the duration. On a terminal a spinner line shows the
// running phase and is redrawn in place; elsewhere nothing is redrawn.
type TextReporter struct {
	w   io.Writer
	tty bool

	mu      sync.Mutex
	title   string
	started time.Time
	done    int
	total   int
	frame   int
	stop    chan struct{}
	wg      sync.WaitGroup
}

// NewTextReporter writes to w; tty turns the spinner on.
func NewTextReporter(w io.Writer, tty bool) *TextReporter { return &TextReporter{w: w, tty: tty} }

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

func (r *TextReporter) Report(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clearSpinner()
	d := ""
	if e.DurationMS > 0 || e.Status == StatusOK || e.Status == StatusFailed {
		d = " (" + formatDuration(time.Duration(e.DurationMS)*time.Millisecond) + ")"
	}
	switch {
	case e.Status == StatusStart && e.Host == "":
		fmt.Fprintf(r.w, "• %s\n", e.Title)
		r.title, r.started, r.done, r.total = e.Title, e.Time, 0, 0
		if r.tty {
			r.startSpinner()
		}
	case e.Status == StatusStart:
		r.total++
	case e.Host == "" && e.Status == StatusOK:
		r.stopSpinner()
		fmt.Fprintf(r.w, "✓ %s%s\n", e.Title, d)
	case e.Host == "" && e.Status == StatusFailed:
		r.stopSpinner()
		fmt.Fprintf(r.w, "✗ %s%s\n", e.Title, d)
	case e.Host == "" && e.Status == StatusSkipped:
		fmt.Fprintf(r.w, "- %s: skipped%s\n", e.Title, suffix(e.Message))
	case e.Status == StatusOK:
		r.done++
		fmt.Fprintf(r.w, " ✓ %-6s %s%s\n", e.Host, e.Message, d)
	case e.Status == StatusSkipped:
		r.done++
		fmt.Fprintf(r.w, " - %-6s %s%s\n", e.Host, e.Message, d)
	case e.Status == StatusFailed:
		r.done++
		fmt.Fprintf(r.w, " ✗ %-6s %s%s\n", e.Host, oneLine(e.Error), d)
	case e.Status == StatusChange:
		// The host's ✓ line says what changed (and stdout lists a dry
		// run's plan); JSON output carries every change as an event.
	case e.Status == StatusProgress:
		fmt.Fprintf(r.w, "   %-6s %s\n", e.Host, oneLine(e.Message))
	case e.Status == StatusSummary:
		r.stopSpinner()
	}
	r.drawSpinner()
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// The spinner goroutine redraws the line every 100ms; r.mu guards it.
func (r *TextReporter) startSpinner() {
	r.stopSpinnerLocked()
	r.stop = make(chan struct{})
	r.wg.Add(1)
	go func(stop chan struct{}) {
		defer r.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r.mu.Lock()
				r.clearSpinner()
				r.frame++
				r.drawSpinner()
				r.mu.Unlock()
			}
		}
	}(r.stop)
}

func (r *TextReporter) stopSpinner() {
	r.stopSpinnerLocked()
}

// stopSpinnerLocked ends the goroutine; called with r.mu held, so it
// must not wait for it (the goroutine may be waiting for r.mu).
func (r *TextReporter) stopSpinnerLocked() {
	if r.stop != nil {
		close(r.stop)
		r.stop = nil
	}
}

// Close stops the spinner and waits for its goroutine.
func (r *TextReporter) Close() {
	r.mu.Lock()
	r.stopSpinnerLocked()
	r.clearSpinner()
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *TextReporter) drawSpinner() {
	if !r.tty || r.stop == nil {
		return
	}
	el := time.Since(r.started).Truncate(100 * time.Millisecond)
	fmt.Fprintf(r.w, "%s %s %d/%d hosts %s", spinnerFrames[r.frame%len(spinnerFrames)], r.title, r.done, r.total, el)
}

func (r *TextReporter) clearSpinner() {
	if r.tty && r.stop != nil {
		fmt.Fprint(r.w, "\r\033[K")
	}
}

func formatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Truncate(time.Second).String()
}
