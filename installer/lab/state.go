package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"kforge.dev/kforge/internal/atomicfile"
)

const (
	stateFile = "lab.json"
	stateKind = "kforge-lab/v1"
)

// State is DIR/lab.json: everything a lab made, written before it is made,
// so Down can undo a crashed Up.
type State struct {
	Kind    string    `json:"kind"`
	ID      string    `json:"id"` // random; the bridge alias carries it
	Created time.Time `json:"created"`
	Bridge  string    `json:"bridge"`
	// BridgeCreated is true once the lab made the bridge (so Down removes it).
	BridgeCreated bool   `json:"bridgeCreated"`
	Base          string `json:"base"` // base rootfs the overlays sit on
	// Cgroups are the lab's cgroup folders (one per hierarchy), recorded
	// before they are made.
	Cgroups []string    `json:"cgroups,omitempty"`
	Hosts   []HostState `json:"hosts"`
	// Ready is set when Up finished successfully.
	Ready bool `json:"ready"`
}

// HostState is one host's part of State.
type HostState struct {
	HostSpec
	// PID and StartTime identify the systemd-nspawn process; the start
	// time (clock ticks after boot, /proc/PID/stat field 22) guards
	// against a recycled PID.
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"startTime,omitempty"`
	// Mounted is true while the host's overlay is (or may be) mounted.
	Mounted bool `json:"mounted,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, stateFile) }

// loadState reads DIR/lab.json; it returns (nil, nil) when there is none.
func loadState(dir string) (*State, error) {
	data, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s is not a kforge lab state file: %w", statePath(dir), err)
	}
	if s.Kind != stateKind {
		return nil, fmt.Errorf("%s is not a kforge lab state file (kind %q)", statePath(dir), s.Kind)
	}
	return &s, nil
}

// save writes the state atomically (temp file, fsync, rename).
func (s *State) save(dir string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(statePath(dir), append(data, '\n'), 0o600)
}

func (s *State) host(name string) *HostState {
	for i := range s.Hosts {
		if s.Hosts[i].Name == name {
			return &s.Hosts[i]
		}
	}
	return nil
}
