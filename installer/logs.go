package installer

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/templates"
)

// LogsOptions configure `kforge logs`.
type LogsOptions struct {
	Cluster *v1alpha1.Cluster
	// Roles and Hosts narrow the units and hosts read; empty means all.
	Roles, Hosts []string
	// Since reads entries no older than this; 0 reads the whole journal.
	Since time.Duration
	// Follow keeps streaming new entries from every host until ctx ends.
	Follow bool
	// ReorderWindow is how long a followed entry waits for earlier ones
	// from slower hosts before it is printed (DefaultReorderWindow when 0).
	ReorderWindow time.Duration
	// JSON prints each entry's journal fields, plus "host" and "role",
	// as one JSON object per line.
	JSON        bool
	Out, ErrOut io.Writer
	// PromptPassword asks for a sudo password on a terminal; nil when
	// there is none.
	PromptPassword func(prompt string) (string, error)
	Log            *slog.Logger
	// HostList replaces the SSH hosts (tests); each must be a LogStreamer.
	HostList []Host
}

// DefaultReorderWindow is how long `kforge logs --follow` holds an entry
// so that one from another host stamped earlier can still go before it.
const DefaultReorderWindow = 500 * time.Millisecond

// LogStreamer is a Host that can stream a command's output (SSHHost).
type LogStreamer interface {
	Host
	Stream(ctx context.Context, cmd string, stdout, stderr io.Writer) error
}

// LogEntry is one journal entry of one host.
type LogEntry struct {
	Host, Role string
	// Time is __REALTIME_TIMESTAMP (the host's clock).
	Time    time.Time
	Message string
	// Fields are every field journalctl -o json gave.
	Fields map[string]any
}

// journalCommand is the journalctl command for units on one host.
func journalCommand(units []string, since time.Duration, follow bool) string {
	var b strings.Builder
	b.WriteString("journalctl -o json --no-pager --quiet")
	for _, u := range units {
		b.WriteString(" -u " + u)
	}
	if since > 0 {
		fmt.Fprintf(&b, " --since=-%ds", int64(since.Seconds()+0.5))
	}
	if follow {
		b.WriteString(" --follow")
		if since <= 0 {
			b.WriteString(" --lines=10")
		}
	}
	return b.String()
}

// parseJournalLine reads one line of journalctl -o json.
func parseJournalLine(host string, line []byte) (LogEntry, error) {
	var fields map[string]any
	if err := json.Unmarshal(line, &fields); err != nil {
		return LogEntry{}, fmt.Errorf("journal entry from %s: %w", host, err)
	}
	e := LogEntry{Host: host, Fields: fields}
	if s, ok := fields["__REALTIME_TIMESTAMP"].(string); ok {
		if us, err := strconv.ParseInt(s, 10, 64); err == nil {
			e.Time = time.UnixMicro(us)
		}
	}
	unit, _ := fields["_SYSTEMD_UNIT"].(string)
	if u, _ := fields["UNIT"].(string); strings.HasPrefix(u, "kforge-") {
		unit = u // systemd's own lines about the unit (_SYSTEMD_UNIT init.scope)
	}
	e.Role = strings.TrimSuffix(strings.TrimPrefix(unit, "kforge-"), ".service")
	if e.Role == "" {
		e.Role = "-"
	}
	switch m := fields["MESSAGE"].(type) {
	case string:
		e.Message = m
	case []any: // not valid UTF-8: journalctl gives the bytes
		b := make([]byte, 0, len(m))
		for _, v := range m {
			if f, ok := v.(float64); ok {
				b = append(b, byte(f))
			}
		}
		e.Message = string(b)
	}
	return e, nil
}

// Logs prints the journal entries of kforge's units across the hosts,
// merged in time order (by each entry's __REALTIME_TIMESTAMP, the host's
// clock), each line prefixed with its host and role. With Follow it streams
// from every host at once, each entry held ReorderWindow so that an
// earlier one from a slower host can still go first. A host that cannot be
// read is reported on ErrOut and the others go on; the error names every
// such host.
func Logs(ctx context.Context, o LogsOptions) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := o.Cluster
	for _, r := range o.Roles {
		if RoleNamed(r) == nil {
			var names []string
			for _, r := range Roles {
				names = append(names, r.Name)
			}
			return fmt.Errorf("unknown role %q (roles: %s)", r, strings.Join(names, ", "))
		}
	}
	for _, h := range o.Hosts {
		if c.Host(h) == nil {
			return fmt.Errorf("%s has no host %q", c.Path, h)
		}
	}
	hosts := o.HostList
	if hosts == nil {
		hosts = SSHHosts(c, false, o.PromptPassword, o.Log)
	}
	defer func() {
		for _, h := range hosts {
			_ = h.Close()
		}
	}()
	type source struct {
		h     LogStreamer
		units []string
	}
	var sources []source
	for _, h := range hosts {
		if len(o.Hosts) > 0 && !slices.Contains(o.Hosts, h.Name()) {
			continue
		}
		var units []string
		for _, r := range rolesOn(c, hostEntry(c, h)) {
			if len(o.Roles) == 0 || slices.Contains(o.Roles, r.Name) {
				units = append(units, templates.UnitName(r.Name))
			}
		}
		if len(units) == 0 {
			continue
		}
		ls, ok := h.(LogStreamer)
		if !ok {
			return fmt.Errorf("host %s cannot stream", h.Name())
		}
		sources = append(sources, source{ls, units})
	}
	if len(sources) == 0 {
		return errors.New("no host runs the roles asked for")
	}
	width := 0
	for _, s := range sources {
		width = max(width, len(s.h.Name()))
	}
	pr := &logPrinter{out: o.Out, json: o.JSON, width: width}
	window := o.ReorderWindow
	if window <= 0 {
		window = DefaultReorderWindow
	}
	m := newLogMerger(pr, o.Follow, window)
	errs := make([]error, len(sources))
	var wg sync.WaitGroup
	for i, s := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = readJournal(ctx, s.h, journalCommand(s.units, o.Since, o.Follow), m.add)
			if errs[i] != nil && ctx.Err() == nil {
				fmt.Fprintf(o.ErrOut, "✗ %s: %s\n", s.h.Name(), oneLine(errs[i].Error()))
			}
		}()
	}
	stop := make(chan struct{})
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		m.run(stop)
	}()
	wg.Wait()
	close(stop)
	<-flushed
	if o.Follow && ctx.Err() != nil {
		return nil // ^C ends a follow: not an error
	}
	var failed []error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, hostError(sources[i].h.Name(), err))
		}
	}
	return errors.Join(failed...)
}

// readJournal runs cmd on h and hands each entry to add.
func readJournal(ctx context.Context, h LogStreamer, cmd string, add func(LogEntry)) error {
	if err := h.Connect(ctx); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 4<<20)
		var perr error
		for sc.Scan() {
			if len(sc.Bytes()) == 0 {
				continue
			}
			e, err := parseJournalLine(h.Name(), sc.Bytes())
			if err != nil {
				perr = err
				continue
			}
			add(e)
		}
		if perr == nil {
			perr = sc.Err()
		}
		_, _ = io.Copy(io.Discard, pr)
		done <- perr
	}()
	err := h.Stream(ctx, cmd, pw, io.Discard)
	pw.Close()
	perr := <-done
	if err != nil {
		return err
	}
	return perr
}

// logMerger orders entries from several hosts. Without follow it keeps
// them all and prints them sorted at the end; with follow it prints each
// once it has waited the window, earliest first.
type logMerger struct {
	pr     *logPrinter
	follow bool
	window time.Duration

	mu  sync.Mutex
	buf []pendingEntry
}

type pendingEntry struct {
	e       LogEntry
	arrived time.Time
	seq     int
}

func newLogMerger(pr *logPrinter, follow bool, window time.Duration) *logMerger {
	return &logMerger{pr: pr, follow: follow, window: window}
}

func (m *logMerger) add(e LogEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.buf = append(m.buf, pendingEntry{e: e, arrived: time.Now(), seq: len(m.buf)})
}

// run flushes ripe entries every tick while following, and everything
// once stop is closed.
func (m *logMerger) run(stop <-chan struct{}) {
	if m.follow {
		t := time.NewTicker(m.window / 5)
		defer t.Stop()
		for {
			select {
			case <-stop:
				m.flush(time.Time{})
				return
			case now := <-t.C:
				m.flush(now.Add(-m.window))
			}
		}
	}
	<-stop
	m.flush(time.Time{})
}

// flush prints, in time order, the entries that arrived before cutoff
// (every entry when cutoff is zero).
func (m *logMerger) flush(cutoff time.Time) {
	m.mu.Lock()
	var ripe, keep []pendingEntry
	for _, p := range m.buf {
		if cutoff.IsZero() || !p.arrived.After(cutoff) {
			ripe = append(ripe, p)
		} else {
			keep = append(keep, p)
		}
	}
	m.buf = keep
	m.mu.Unlock()
	sort.SliceStable(ripe, func(i, j int) bool {
		if !ripe[i].e.Time.Equal(ripe[j].e.Time) {
			return ripe[i].e.Time.Before(ripe[j].e.Time)
		}
		return ripe[i].seq < ripe[j].seq
	})
	for _, p := range ripe {
		m.pr.print(p.e)
	}
}

// logPrinter writes entries as "HOST ROLE TIME MESSAGE" lines or JSON.
type logPrinter struct {
	out   io.Writer
	json  bool
	width int
}

func (p *logPrinter) print(e LogEntry) {
	if p.json {
		f := make(map[string]any, len(e.Fields)+2)
		for k, v := range e.Fields {
			f[k] = v
		}
		f["host"], f["role"] = e.Host, e.Role
		data, err := json.Marshal(f)
		if err == nil {
			fmt.Fprintf(p.out, "%s\n", data)
		}
		return
	}
	fmt.Fprintf(p.out, "%-*s %-18s %s %s\n", p.width, e.Host, e.Role, e.Time.Local().Format("15:04:05.000"), strings.TrimRight(e.Message, "\n"))
}
