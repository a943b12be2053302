package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// seconds is a duration that prints as "1.2s" and is JSON seconds; a
// negative one means "never".
type seconds time.Duration

func (s seconds) String() string {
	if s < 0 {
		return "never"
	}
	return time.Duration(s).Round(100 * time.Millisecond).String()
}

func (s seconds) MarshalJSON() ([]byte, error) {
	if s < 0 {
		return []byte("null"), nil
	}
	return []byte(strconv.FormatFloat(time.Duration(s).Seconds(), 'f', 3, 64)), nil
}

// never marks a time that was not reached.
const never = seconds(-1)

// Result is what one fault did to the cluster and its clients.
type Result struct {
	Fault       string `json:"fault"`
	Description string `json:"description"`
	// Writes is every ConfigMap create attempted while the fault ran
	// (before, during and after it); Acked those that succeeded; Lost the
	// acknowledged ones not readable afterwards (must be 0).
	Writes int `json:"writes"`
	Acked  int `json:"acked"`
	Lost   int `json:"ackedLost"`
	// Failed writes, of which Timeouts got no answer within the client
	// timeout.
	Failed      int `json:"failedWrites"`
	Timeouts    int `json:"timeouts"`
	ReadsFailed int `json:"failedReads"`
	// StaleReads are reads of an acknowledged write that answered
	// NotFound.
	StaleReads int `json:"staleReads"`
	// FirstWrite is from the heal (for a fault that heals itself, the
	// injection) to the end of the first successful write started after
	// it.
	FirstWrite seconds `json:"firstWriteSeconds"`
	// LongestGap is the longest time without an acknowledged write from
	// the injection on.
	LongestGap seconds `json:"longestWriteGapSeconds"`
	// SlowestFailure is the longest a failed write took to fail.
	SlowestFailure seconds `json:"slowestFailureSeconds"`
	// Healthy is from the heal until `kforge status` exits 0.
	Healthy seconds `json:"healthySeconds"`
	// Problems are the assertions that failed; Notes what was observed.
	Problems []string `json:"problems,omitempty"`
	Notes    []string `json:"notes,omitempty"`
}

// OK reports whether every assertion held.
func (r *Result) OK() bool { return r.Lost == 0 && len(r.Problems) == 0 }

// summarize fills the write and read figures of r from the load's
// attempts, the moment the fault was injected and the moment it healed.
func summarize(r *Result, writes, reads []attempt, injected, healed time.Time) {
	r.Writes, r.Acked, r.Failed, r.Timeouts = len(writes), 0, 0, 0
	r.FirstWrite, r.LongestGap, r.SlowestFailure = never, 0, 0
	last := injected
	for _, a := range writes {
		if !a.OK {
			r.Failed++
			if a.Timeout {
				r.Timeouts++
			}
			r.SlowestFailure = max(r.SlowestFailure, seconds(a.End.Sub(a.Start)))
			continue
		}
		r.Acked++
		if r.FirstWrite == never && !a.Start.Before(healed) {
			r.FirstWrite = seconds(a.End.Sub(healed))
		}
		if a.End.After(injected) {
			r.LongestGap = max(r.LongestGap, seconds(a.End.Sub(last)))
			last = a.End
		}
	}
	r.ReadsFailed = 0
	for _, a := range reads {
		if !a.OK {
			r.ReadsFailed++
		}
	}
}

// printTable writes one row per fault.
func printTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tWRITES\tACKED LOST\tFAILED\tTIMEOUTS\tFAILED READS\tFIRST WRITE\tLONGEST GAP\tHEALTHY\tRESULT")
	for _, r := range results {
		res := "ok"
		if !r.OK() {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", r.Fault, r.Writes, r.Lost, r.Failed, r.Timeouts,
			r.ReadsFailed, r.FirstWrite, r.LongestGap, r.Healthy, res)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		for _, p := range r.Problems {
			fmt.Fprintf(w, "✗ %s: %s\n", r.Fault, p)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  %s: %s\n", r.Fault, n)
		}
	}
	return nil
}

// writeJSON writes the results as one indented JSON document.
func writeJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Results []Result `json:"results"`
	}{results})
}

// oneLine shortens an error or command output for a note.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
