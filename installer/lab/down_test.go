package lab

import (
	"os/exec"
	"testing"
	"time"
)

// startProc starts a stand-in for a host's systemd-nspawn and returns its
// state; the test waits for it.
func startProc(t *testing.T, name, script string) HostState {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	_, start, err := procStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// Its child (the "init" stopHosts also watches) must exist first.
	deadline := time.Now().Add(5 * time.Second)
	for len(children(cmd.Process.Pid)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return HostState{HostSpec: HostSpec{Name: name}, PID: cmd.Process.Pid, StartTime: start}
}

func TestStopHosts(t *testing.T) {
	st := &State{Hosts: []HostState{
		// Stops with its child on SIGTERM, as nspawn and the guest do.
		startProc(t, "m1", `trap 'kill $!; exit 0' TERM; sleep 60 & wait`),
		// Ignores SIGTERM (so does its child): needs SIGKILL.
		startProc(t, "w1", `trap "" TERM; sleep 60 & wait`),
		{HostSpec: HostSpec{Name: "w2"}}, // never started
	}}
	began := time.Now()
	if err := stopHosts(st, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, h := range st.Hosts {
		if alive(h.PID, h.StartTime) {
			t.Errorf("%s still alive", h.Name)
		}
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}
