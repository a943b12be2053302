package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"

	"kforge.dev/kforge/installer"
)

// recorder is a Reporter that keeps every event as "STATUS PHASE[/HOST]".
type recorder struct {
	mu     sync.Mutex
	events []installer.Event
}

func (r *recorder) Report(e installer.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		s := e.Status + " " + e.Phase
		if e.Host != "" {
			s += "/" + e.Host
		}
		out = append(out, s)
	}
	return out
}

func TestRunStepsInOrderStopsAtFailure(t *testing.T) {
	rep := &recorder{}
	var ran []string
	mk := func(id string, err error) step {
		return step{id: id, title: "Step " + id, run: func(context.Context) error { ran = append(ran, id); return err }}
	}
	boom := errors.New("boom")
	err := runSteps(context.Background(), rep, []step{mk("a", nil), mk("b", boom), mk("c", nil)})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v; want boom", err)
	}
	if got := strings.Join(ran, ","); got != "a,b" {
		t.Errorf("ran %s; want a,b", got)
	}
	want := []string{"start a", "ok a", "start b", "failed b"}
	if got := rep.lines(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events %v; want %v", got, want)
	}
	if e := rep.events[3]; e.Error != "boom" || e.Title != "Step b" {
		t.Errorf("failed event %+v", e)
	}
}

func TestRunStepsChecksContextBetweenSteps(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rep := &recorder{}
	var ran []string
	steps := []step{
		{id: "a", title: "A", run: func(context.Context) error { ran = append(ran, "a"); cancel(); return nil }},
		{id: "b", title: "B", run: func(context.Context) error { ran = append(ran, "b"); return nil }},
	}
	err := runSteps(ctx, rep, steps)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), `before "B"`) {
		t.Fatalf("err = %v; want cancelled before B", err)
	}
	if len(ran) != 1 {
		t.Errorf("ran %v after the context ended", ran)
	}
}

func TestEachHostReportsEveryHost(t *testing.T) {
	rep := &recorder{}
	hosts := []HostSpec{
		{Name: "m1", Address: netip.MustParseAddr("198.18.0.11")},
		{Name: "w1", Address: netip.MustParseAddr("198.18.0.21")},
		{Name: "w2", Address: netip.MustParseAddr("198.18.0.22")},
	}
	s := step{id: "wait", title: "Waiting"}
	err := eachHost(context.Background(), rep, s, hosts, func(_ context.Context, h HostSpec) (string, error) {
		switch h.Name {
		case "w1":
			return "", errors.New("no sshd")
		case "w2":
			return "", fmt.Errorf("host w2: already named")
		}
		return "running", nil
	})
	if err == nil || !strings.Contains(err.Error(), "host w1: no sshd") || strings.Contains(err.Error(), "host w2: host w2") {
		t.Fatalf("err = %v; want each host named once", err)
	}
	got := rep.lines()
	sort.Strings(got)
	want := []string{"failed wait/w1", "failed wait/w2", "ok wait/m1", "start wait/m1", "start wait/w1", "start wait/w2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events %v; want %v", got, want)
	}
	for _, e := range rep.events {
		if e.Host == "m1" && e.Status == installer.StatusOK && e.Message != "running" {
			t.Errorf("m1's message %q", e.Message)
		}
	}
}
