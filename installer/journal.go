package installer

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Journal record kinds.
const (
	JournalRunStart = "run-start"
	JournalStep     = "step" // a phase finished (or failed) on a host
	JournalRunEnd   = "run-end"
)

// JournalRecord is one line of the run journal (JSON Lines, append-only).
type JournalRecord struct {
	Time time.Time `json:"time"`
	// Run identifies one `kforge up`; every record of a run has it.
	Run   string `json:"run"`
	Kind  string `json:"kind"`
	Phase string `json:"phase,omitempty"`
	Host  string `json:"host,omitempty"`
	// OK is whether the step (or the run, on run-end) succeeded.
	OK         bool   `json:"ok"`
	DurationMS int64  `json:"durationMs,omitempty"`
	Error      string `json:"error,omitempty"`
	// Version is the kforge version, on run-start.
	Version string `json:"version,omitempty"`
	// Command is the command of the run ("up", "cert rotate"), on
	// run-start; empty means up.
	Command string `json:"command,omitempty"`
}

// JournalPath is where the journal of a cluster file lives: beside it,
// "cluster.yaml" → "cluster.journal.jsonl".
func JournalPath(clusterFile string) string {
	dir, base := filepath.Split(clusterFile)
	return filepath.Join(dir, strings.TrimSuffix(base, filepath.Ext(base))+".journal.jsonl")
}

// Journal appends records to the journal file, each flushed to disk, so a
// crashed run still says what finished. Safe for concurrent use.
type Journal struct {
	run string

	mu sync.Mutex
	f  *os.File
}

// OpenJournal opens (creating) the journal at path for a new run.
func OpenJournal(path, run string) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the run journal: %w", err)
	}
	return &Journal{run: run, f: f}, nil
}

// Record appends one record, stamping the run and, when unset, the time.
func (j *Journal) Record(r JournalRecord) error {
	if j == nil {
		return nil
	}
	r.Run = j.run
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("writing the run journal: %w", err)
	}
	return j.f.Sync()
}

// Close closes the file.
func (j *Journal) Close() error {
	if j == nil {
		return nil
	}
	return j.f.Close()
}

// ReadJournal reads every record of the journal at path. A missing file
// is an empty journal; a torn last line (a crash mid-write) is ignored.
func ReadJournal(path string) ([]JournalRecord, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []JournalRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	line := 0
	var pending error
	for sc.Scan() {
		line++
		if pending != nil {
			return nil, pending // a bad line that was not the last one
		}
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r JournalRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			pending = fmt.Errorf("%s:%d: %w", path, line, err)
			continue
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// RunSummary is what the journal says of one `kforge up`.
type RunSummary struct {
	Run     string
	Version string
	Start   time.Time
	// Ended is false when the run never wrote its end: it was killed.
	Ended      bool
	OK         bool
	DurationMS int64
	Error      string
	// Failed lists "phase on host" for every step that failed.
	Failed []string
}

// LastRun summarises the latest run in records; nil when there is none.
func LastRun(records []JournalRecord) *RunSummary {
	var sum *RunSummary
	for _, r := range records {
		switch {
		case r.Kind == JournalRunStart:
			sum = &RunSummary{Run: r.Run, Version: r.Version, Start: r.Time}
		case sum == nil || r.Run != sum.Run:
		case r.Kind == JournalStep && !r.OK:
			sum.Failed = append(sum.Failed, r.Phase+" on "+r.Host)
		case r.Kind == JournalRunEnd:
			sum.Ended, sum.OK, sum.DurationMS, sum.Error = true, r.OK, r.DurationMS, r.Error
		}
	}
	return sum
}
