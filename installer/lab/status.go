package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"kforge.dev/kforge/installer"
)

// HostStatus is one line of Status.
type HostStatus struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Address string `json:"address"`
	PID     int    `json:"pid,omitempty"`
	// State is "stopped", "unreachable", or what systemctl
	// is-system-running says (running, degraded, starting, ...).
	State string `json:"state"`
	// MemoryKB is the PSS of the host's processes (0 when unknown).
	MemoryKB int64 `json:"memoryKB,omitempty"`
}

// Status reports every host of the lab in o.Dir and prints a table.
func Status(ctx context.Context, o Options) ([]HostStatus, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	st, err := loadState(o.Dir)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("no lab in %s (no %s); start one with `kforge lab up --dir %s`", o.Dir, stateFile, o.Dir)
	}
	canLook := os.Geteuid() == 0 || canRead(filepath.Join(o.Dir, sshDirName, identityName))
	hk := hostKeys(o.Dir)
	states := make(map[string]string, len(st.Hosts))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, hs := range st.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := "stopped"
			if alive(hs.PID, hs.StartTime) {
				s = "running (no key to look inside)"
				if canLook {
					cfg := sshConfig(o.Dir, hs.HostSpec, "root", hk, o.Log)
					cfg.ConnectAttempts, cfg.DialTimeout = 1, 5*time.Second
					s = probeHost(ctx, newHost(hs.HostSpec, cfg))
				}
			}
			mu.Lock()
			states[hs.Name] = s
			mu.Unlock()
		}()
	}
	wg.Wait()
	rows := statusRows(st, states)
	if len(st.Cgroups) > 0 {
		for i := range rows {
			if rows[i].State != "stopped" {
				rows[i].MemoryKB = cgroupPSS(filepath.Join(st.Cgroups[0], rows[i].Name))
			}
		}
	}
	writeHostTable(o.Out, rows)
	return rows, nil
}

func canRead(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// probeHost asks the host's systemd how it is, within 5 seconds.
func probeHost(ctx context.Context, h installer.Host) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := h.Connect(ctx); err != nil {
		return "unreachable"
	}
	defer h.Close()
	// Not "running" exits non-zero; the state is in the output.
	out, _ := h.Run(ctx, "systemctl is-system-running")
	if s := strings.TrimSpace(out); s != "" {
		return s
	}
	return "unknown"
}

func statusRows(st *State, states map[string]string) []HostStatus {
	var rows []HostStatus
	for _, h := range st.Hosts {
		s := states[h.Name]
		if s == "" {
			s = "running"
			if !alive(h.PID, h.StartTime) {
				s = "stopped"
			}
		}
		rows = append(rows, HostStatus{Name: h.Name, Role: h.Role, Address: h.Address.String(), PID: h.PID, State: s})
	}
	return rows
}

func writeHostTable(w io.Writer, rows []HostStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var total int64
	for _, r := range rows {
		total += r.MemoryKB
	}
	if total > 0 {
		fmt.Fprintln(tw, "NAME\tROLE\tADDRESS\tPID\tSTATE\tMEMORY (PSS)")
	} else {
		fmt.Fprintln(tw, "NAME\tROLE\tADDRESS\tPID\tSTATE")
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s", r.Name, r.Role, r.Address, r.PID, r.State)
		if total > 0 {
			fmt.Fprintf(tw, "\t%.0f MiB", float64(r.MemoryKB)/1024)
		}
		fmt.Fprintln(tw)
	}
	if total > 0 {
		fmt.Fprintf(tw, "total\t\t\t\t\t%.0f MiB\n", float64(total)/1024)
	}
	tw.Flush()
}
