package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
)

// cleanupGrace is how long each container gets to stop when the node is
// being reset: the node is leaving, so short.
const cleanupGrace = 5 * time.Second

// Cleanup removes everything the agent made on this host, for `kforge
// reset` once the agent has stopped: every pod's containers (stopped with
// a short grace), sandboxes (CNI DEL, network namespaces, volumes), the
// routes to other nodes' pods, the masquerade table, the CNI network list
// and bridge, and the agent's state, run and pod log folders. Images stay
// in containerd. It goes on past failures and returns them all; running it
// again after a partial failure finishes the job.
func Cleanup(ctx context.Context, cfg *Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withNodeName()
	a := &Agent{cfg: cfg, log: log}
	a.probes = newProber(a)
	var errs []error
	var err error
	if a.net, err = newNetwork(cfg, nil); err != nil {
		return err
	}
	if a.rt, err = newRuntime(cfg, log); err != nil {
		errs = append(errs, err)
	} else {
		defer a.rt.c.Close()
		a.rt.closeIO() // the containers are going: their output is not reopened
		errs = append(errs, a.removeAllPods(ctx))
	}
	errs = append(errs, removeRoutes(), removeMasquerade())
	if link, err := netlink.LinkByName(cfg.CNI.Bridge); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("deleting bridge %s: %w", cfg.CNI.Bridge, err))
		}
	}
	for _, p := range []string{filepath.Join(cfg.CNI.ConfDir, cniConfFile), cfg.RootDir, cfg.RunDir, cfg.PodLogDir} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeAllPods stops and removes every pod the runtime or the sandbox
// records know of.
func (a *Agent) removeAllPods(ctx context.Context) error {
	byUID, err := a.runtimePods(ctx)
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	var errs []error
	for uid, recs := range byUID {
		a.log.Info("removing pod", "pod", recs[0].PodNamespace+"/"+recs[0].PodName, "containers", len(recs))
		errs = append(errs, a.removePodRuntime(ctx, uid, nil, recs, cleanupGrace))
	}
	for _, uid := range a.sandboxUIDs() {
		if byUID[uid] == nil {
			errs = append(errs, a.removePodRuntime(ctx, uid, nil, nil, 0))
		}
	}
	return errors.Join(errs...)
}
