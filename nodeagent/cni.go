package nodeagent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	"kforge.dev/kforge/internal/atomicfile"
)

// cniNetworkName names the agent's network list, and its file in the CNI
// configuration folder.
const (
	cniNetworkName = "kforge"
	cniConfFile    = "10-kforge.conflist"
	cniVersion     = "1.0.0"
	podInterface   = "eth0"
)

// network attaches pods to the node's pod network through CNI: bridge +
// host-local IPAM on the node's pod CIDR, + portmap for pods with host
// ports. Each plugin is a process to start, the cost of a pod's start on
// a busy node, so the agent brings the namespace's "lo" up itself (the
// CRI plugin runs the loopback plugin for it) and leaves portmap out of
// the list for pods that map no host port.
type network struct {
	cfg     *Config
	cni     *libcni.CNIConfig
	lo      *libcni.NetworkConfigList // detaches pods an older agent attached with it
	mu      sync.RWMutex
	list    *libcni.NetworkConfigList // nil until the pod CIDR is known
	noPorts *libcni.NetworkConfigList // list without portmap
	cidr    string
}

func newNetwork(cfg *Config, exec invoke.Exec) (*network, error) {
	lo, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"` + cniVersion + `","name":"cni-loopback","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		return nil, fmt.Errorf("cni: %w", err)
	}
	return &network{
		cfg: cfg,
		cni: libcni.NewCNIConfigWithCacheDir(cfg.CNI.BinDirs, filepath.Join(cfg.RootDir, "cni", "cache"), exec),
		lo:  lo,
	}, nil
}

// cniConfList is the network list for a node's pod CIDR.
func cniConfList(cfg *Config, podCIDR string) ([]byte, error) {
	_, subnet, err := net.ParseCIDR(podCIDR)
	if err != nil {
		return nil, fmt.Errorf("pod CIDR %q: %w", podCIDR, err)
	}
	bridge := map[string]any{
		"type":        "bridge",
		"bridge":      cfg.CNI.Bridge,
		"isGateway":   true,
		"ipMasq":      cfg.CNI.Masquerade && cfg.CNI.ClusterCIDR == "", // else the agent's own rule
		"hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": subnet.String()}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			"dataDir": filepath.Join(cfg.RootDir, "cni", "networks"),
		},
	}
	if cfg.CNI.MTU > 0 {
		bridge["mtu"] = cfg.CNI.MTU
	}
	doc := map[string]any{
		"cniVersion": cniVersion,
		"name":       cniNetworkName,
		"plugins": []any{
			bridge,
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

// setPodCIDR writes the network list for podCIDR into the CNI
// configuration folder (when it differs) and uses it from now on.
func (n *network) setPodCIDR(podCIDR string) error {
	n.mu.RLock()
	same := n.cidr == podCIDR && n.list != nil
	n.mu.RUnlock()
	if same {
		return nil
	}
	data, err := cniConfList(n.cfg, podCIDR)
	if err != nil {
		return err
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		return fmt.Errorf("cni: %w", err)
	}
	noPorts := *list
	noPorts.Plugins = slices.DeleteFunc(slices.Clone(list.Plugins), func(p *libcni.PluginConfig) bool { return p.Network.Type == "portmap" })
	if err := os.MkdirAll(n.cfg.CNI.ConfDir, 0o755); err != nil {
		return fmt.Errorf("cni: %w", err)
	}
	path := filepath.Join(n.cfg.CNI.ConfDir, cniConfFile)
	if old, err := os.ReadFile(path); err != nil || !bytes.Equal(old, data) {
		if err := atomicfile.Write(path, data, 0o644); err != nil {
			return fmt.Errorf("cni: %w", err)
		}
	}
	n.mu.Lock()
	n.list, n.noPorts, n.cidr = list, &noPorts, podCIDR
	n.mu.Unlock()
	return nil
}

// ready reports whether pods can be networked (the pod CIDR is known).
func (n *network) ready() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.list != nil
}

func (n *network) current() *libcni.NetworkConfigList {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.list
}

// forPod is the network list for pod: without portmap when it maps no
// host port.
func (n *network) forPod(pod *corev1.Pod) *libcni.NetworkConfigList {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.list == nil || hasHostPorts(pod) {
		return n.list
	}
	return n.noPorts
}

func hasHostPorts(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				return true
			}
		}
	}
	return false
}

func runtimeConf(pod *corev1.Pod, id, netns, ifName string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       netns,
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", id},
			{"K8S_POD_UID", string(pod.UID)},
		},
	}
	var ports []map[string]any
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			pm := map[string]any{"hostPort": p.HostPort, "containerPort": p.ContainerPort, "protocol": strings.ToLower(string(proto))}
			if p.HostIP != "" {
				pm["hostIP"] = p.HostIP
			}
			ports = append(ports, pm)
		}
	}
	if len(ports) > 0 && ifName != "lo" {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	return rt
}

// add attaches the namespace at netns (whose "lo" newNetNS brought up)
// to the pod network. It returns the pod's IPv4 address.
func (n *network) add(ctx context.Context, pod *corev1.Pod, id, netns string) (string, error) {
	list := n.forPod(pod)
	if list == nil {
		return "", fmt.Errorf("cni: the network is not ready: no pod CIDR yet")
	}
	res, err := n.cni.AddNetworkList(ctx, list, runtimeConf(pod, id, netns, podInterface))
	if err != nil {
		return "", fmt.Errorf("cni: %s: %w", cniNetworkName, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return "", fmt.Errorf("cni: result: %w", err)
	}
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil {
			return ip.Address.IP.String(), nil
		}
	}
	return "", fmt.Errorf("cni: %s gave no IPv4 address", cniNetworkName)
}

// del detaches the pod (its address returns to the pool). It works with
// the namespace gone, as plugins must, with the network list libcni
// cached at ADD (with or without portmap, whatever the pod's record
// says), else the current one.
func (n *network) del(ctx context.Context, pod *corev1.Pod, id, netns string) error {
	rt := runtimeConf(pod, id, netns, podInterface)
	list := n.current()
	cached, _, err := n.cni.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: cniNetworkName}, rt)
	if err == nil && cached != nil {
		if list, err = libcni.ConfListFromBytes(cached); err != nil {
			return fmt.Errorf("cni: cached config: %w", err)
		}
	}
	if list == nil {
		return nil // never added, or nothing left to release
	}
	if err := n.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("cni: %s: %w", cniNetworkName, err)
	}
	// Pods that an older agent attached with the loopback plugin.
	loRT := runtimeConf(pod, id, netns, "lo")
	if res, err := n.cni.GetNetworkListCachedResult(n.lo, loRT); err == nil && res != nil {
		if err := n.cni.DelNetworkList(ctx, n.lo, loRT); err != nil {
			return fmt.Errorf("cni: loopback: %w", err)
		}
	}
	return nil
}
