package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	writes := []attempt{
		{Start: at(0), End: at(0.1), OK: true},
		{Start: at(1), End: at(1.1), OK: true},    // last ack before the fault
		{Start: at(2), End: at(7), Timeout: true}, // injected at 2
		{Start: at(7), End: at(7.5)},
		{Start: at(8), End: at(8.2), OK: true}, // started before the heal at 9
		{Start: at(9.5), End: at(9.7), OK: true},
		{Start: at(10), End: at(10.1), OK: true},
	}
	reads := []attempt{{OK: true}, {Err: "x"}, {OK: true}}
	var r Result
	summarize(&r, writes, reads, at(2), at(9))
	want := Result{Writes: 7, Acked: 5, Failed: 2, Timeouts: 1, ReadsFailed: 1,
		FirstWrite: seconds(700 * time.Millisecond), LongestGap: seconds(6200 * time.Millisecond), SlowestFailure: seconds(5 * time.Second)}
	if r.Writes != want.Writes || r.Acked != want.Acked || r.Failed != want.Failed || r.Timeouts != want.Timeouts || r.ReadsFailed != want.ReadsFailed {
		t.Errorf("counts %+v; want %+v", r, want)
	}
	for _, c := range []struct {
		name      string
		got, want seconds
	}{{"first write", r.FirstWrite, want.FirstWrite}, {"longest gap", r.LongestGap, want.LongestGap}, {"slowest failure", r.SlowestFailure, want.SlowestFailure}} {
		if d := time.Duration(c.got - c.want); d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("%s = %s; want %s", c.name, c.got, c.want)
		}
	}

	// No write after the heal: never.
	summarize(&r, writes[:4], nil, at(2), at(9))
	if r.FirstWrite != never || r.FirstWrite.String() != "never" {
		t.Errorf("first write with no ack after the heal = %s", r.FirstWrite)
	}
}

func TestReportOutput(t *testing.T) {
	results := []Result{
		{Fault: "a", Writes: 10, FirstWrite: seconds(1500 * time.Millisecond), Healthy: never},
		{Fault: "b", Writes: 3, Lost: 1, Problems: []string{"1 acknowledged write(s) not readable"}},
	}
	if results[0].OK() != true || results[1].OK() {
		t.Errorf("OK: %v %v", results[0].OK(), results[1].OK())
	}
	var b bytes.Buffer
	if err := printTable(&b, results); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"FAULT", "1.5s", "never", "FAIL", "✗ b: 1 acknowledged"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, b.String())
		}
	}
	b.Reset()
	if err := writeJSON(&b, results); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Results[0]["firstWriteSeconds"]; got != 1.5 {
		t.Errorf("firstWriteSeconds = %v", got)
	}
	if got, ok := back.Results[0]["healthySeconds"]; !ok || got != nil {
		t.Errorf("healthySeconds of never = %v (present %v); want null", got, ok)
	}
	if back.Results[1]["ackedLost"] != 1.0 {
		t.Errorf("ackedLost = %v", back.Results[1]["ackedLost"])
	}
}

func TestSelectFaults(t *testing.T) {
	all, err := selectFaults("")
	if err != nil || len(all) != len(faults) {
		t.Fatalf("all: %d %v", len(all), err)
	}
	some, err := selectFaults("lb-down, kill-etcd-leader")
	if err != nil || len(some) != 2 || some[0].name != "lb-down" || some[1].name != "kill-etcd-leader" {
		t.Errorf("some: %v", err)
	}
	if _, err := selectFaults("lb-down,nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown fault: %v", err)
	}
	seen := map[string]bool{}
	for _, f := range faults {
		if seen[f.name] || f.run == nil || f.desc == "" {
			t.Errorf("fault %q: duplicate, or no run or description", f.name)
		}
		seen[f.name] = true
	}
}

func TestPartitionRules(t *testing.T) {
	s := partitionRules([]string{"198.18.0.12", "198.18.0.13"})
	for _, w := range []string{"table inet kforge-chaos", "hook input", "hook output",
		"ip saddr { 198.18.0.12, 198.18.0.13 } drop", "ip daddr { 198.18.0.12, 198.18.0.13 } drop"} {
		if !strings.Contains(s, w) {
			t.Errorf("rules lack %q:\n%s", w, s)
		}
	}
}
