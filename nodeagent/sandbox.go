package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"kforge.dev/kforge/internal/atomicfile"
)

// sandboxFile records a pod's sandbox in its folder, so a restarted agent
// knows the namespace and address it gave the pod.
const sandboxFile = "sandbox.json"

// sandbox is a pod's shared environment: its network namespace (none
// with hostNetwork), address, and the /etc files its containers mount.
type sandbox struct {
	UID         types.UID `json:"uid"`
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	NetNS       string    `json:"netns,omitempty"`
	IP          string    `json:"ip"`
	HostNetwork bool      `json:"hostNetwork,omitempty"`
	Created     time.Time `json:"created"`
}

func (a *Agent) podDir(uid types.UID) string {
	return filepath.Join(a.cfg.RootDir, "pods", string(uid))
}

func (a *Agent) loadSandbox(uid types.UID) (*sandbox, error) {
	data, err := os.ReadFile(filepath.Join(a.podDir(uid), sandboxFile))
	if err != nil {
		return nil, err
	}
	var sb sandbox
	if err := json.Unmarshal(data, &sb); err != nil {
		return nil, fmt.Errorf("sandbox record of %s: %w", uid, err)
	}
	return &sb, nil
}

// ensureSandbox returns the pod's sandbox, making it when there is none
// (or when its namespace is gone, as after a reboot): a network namespace
// attached through CNI, then hosts, resolv.conf and hostname files.
func (a *Agent) ensureSandbox(ctx context.Context, pod *corev1.Pod) (*sandbox, error) {
	sb, err := a.loadSandbox(pod.UID)
	if err == nil {
		if sb.HostNetwork || fileExists(sb.NetNS) {
			return sb, nil
		}
		// The namespace is gone: release the old address and start over.
		_ = a.net.del(ctx, pod, string(pod.UID), "")
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	dir := a.podDir(pod.UID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	sb = &sandbox{UID: pod.UID, Namespace: pod.Namespace, Name: pod.Name, Created: time.Now()}
	if pod.Spec.HostNetwork {
		sb.HostNetwork, sb.IP = true, a.cfg.NodeAddress
	} else {
		if !a.net.ready() {
			return nil, errors.New("network not ready: the node has no pod CIDR yet")
		}
		// An agent killed half-way through a sandbox leaves its pinned
		// namespace (and maybe an address) without a record: both go, or
		// the pin blocks this pod for good.
		pin := filepath.Join(a.cfg.RunDir, "netns", "pod-"+string(pod.UID))
		if fileExists(pin) {
			_ = a.net.del(ctx, pod, string(pod.UID), pin)
			if err := removeNetNS(pin); err != nil {
				return nil, err
			}
		}
		start := time.Now()
		ns, err := newNetNS(filepath.Dir(pin), filepath.Base(pin))
		if err != nil {
			return nil, err
		}
		a.metrics.since(opNetNS, start)
		start = time.Now()
		ip, err := a.net.add(ctx, pod, string(pod.UID), ns)
		if err != nil {
			_ = a.net.del(ctx, pod, string(pod.UID), ns)
			_ = removeNetNS(ns)
			return nil, err
		}
		a.metrics.since(opNetwork, start)
		sb.NetNS, sb.IP = ns, ip
	}
	if err := a.writeEtcFiles(pod, sb); err != nil {
		return nil, err
	}
	data, err := json.Marshal(sb)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, sandboxFile), data, 0o600); err != nil {
		return nil, err
	}
	return sb, nil
}

// writeEtcFiles writes the pod's hosts, resolv.conf and hostname.
func (a *Agent) writeEtcFiles(pod *corev1.Pod, sb *sandbox) error {
	dir := a.podDir(pod.UID)
	hosts := podHostsFile(pod, sb.IP, a.cfg.ClusterDomain)
	if sb.HostNetwork {
		if b, err := os.ReadFile("/etc/hosts"); err == nil {
			hosts = b
		}
	}
	var host resolvConf
	if b, err := os.ReadFile(a.cfg.ResolvConf); err == nil {
		host = parseResolvConf(b)
	}
	hostname := podHostname(pod)
	if sb.HostNetwork {
		hostname, _ = os.Hostname()
	}
	for name, data := range map[string][]byte{
		"etc-hosts":   hosts,
		"resolv.conf": podResolvConf(pod, host, a.cfg.ClusterDNS, a.cfg.ClusterDomain),
		"hostname":    []byte(hostname + "\n"),
	} {
		if err := atomicfile.Write(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// teardownSandbox detaches the pod from the network, removes its
// namespace, unmounts its volumes and deletes its folder. It works from
// the record alone, so it also cleans up after pods the API forgot.
func (a *Agent) teardownSandbox(ctx context.Context, uid types.UID, pod *corev1.Pod) error {
	sb, err := a.loadSandbox(uid)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if sb != nil && !sb.HostNetwork {
		if pod == nil {
			pod = &corev1.Pod{}
			pod.UID, pod.Namespace, pod.Name = uid, sb.Namespace, sb.Name
		}
		if err := a.net.del(ctx, pod, string(uid), sb.NetNS); err != nil {
			return err
		}
		if err := removeNetNS(sb.NetNS); err != nil {
			return err
		}
	}
	dir := a.podDir(uid)
	if err := unmountVolumes(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return p != "" && err == nil
}
