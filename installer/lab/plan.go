package lab

import (
	"fmt"
	"net/netip"

	"kforge.dev/kforge/api/v1alpha1"
)

// Address plan of the lab. Everything stays inside the benchmarking range
// 198.18.0.0/15 (RFC 2544).
var (
	// HostNet is the bridge network; the bridge itself is its first address.
	HostNet = netip.MustParsePrefix("198.18.0.0/24")
	// BridgeAddr is the host side of the bridge.
	BridgeAddr = netip.MustParseAddr("198.18.0.1")
	// LabNet is the whole lab range; hosts route it to the bridge and
	// nothing else.
	LabNet = netip.MustParsePrefix("198.18.0.0/15")
	// ServiceCIDR and PodCIDR are written to cluster.yaml.
	ServiceCIDR = netip.MustParsePrefix("198.18.16.0/20")
	PodCIDR     = netip.MustParsePrefix("198.19.0.0/16")
)

const (
	// DefaultBridge is the bridge name used unless Options.Bridge says otherwise.
	DefaultBridge = "kforge0"
	// DefaultDir is where a lab keeps its files unless told otherwise.
	DefaultDir = "kforge-lab"

	lbOctet      = 10
	firstMaster  = 11
	firstWorker  = 21
	maxMasters   = firstWorker - firstMaster // .11–.20
	maxWorkers   = 50                        // .21–.70
	bridgePrefix = "kforge"
)

// HostSpec is one planned lab host.
type HostSpec struct {
	Name    string     `json:"name"`
	Role    string     `json:"role"` // a v1alpha1.Role* value
	Address netip.Addr `json:"address"`
}

// Plan lists the hosts of a lab of the given size: lb, m1..mN, w1..wN.
// It is pure and is checked before anything is made.
func Plan(masters, workers int) ([]HostSpec, error) {
	if masters < 1 || masters > maxMasters {
		return nil, fmt.Errorf("--masters %d: must be between 1 and %d", masters, maxMasters)
	}
	if workers < 0 || workers > maxWorkers {
		return nil, fmt.Errorf("--workers %d: must be between 0 and %d", workers, maxWorkers)
	}
	base := HostNet.Addr().As4()
	addr := func(last int) netip.Addr {
		a := base
		a[3] = byte(last)
		return netip.AddrFrom4(a)
	}
	hosts := []HostSpec{{Name: "lb", Role: v1alpha1.RoleLoadBalancer, Address: addr(lbOctet)}}
	for i := 0; i < masters; i++ {
		hosts = append(hosts, HostSpec{Name: fmt.Sprintf("m%d", i+1), Role: v1alpha1.RoleMaster, Address: addr(firstMaster + i)})
	}
	for i := 0; i < workers; i++ {
		hosts = append(hosts, HostSpec{Name: fmt.Sprintf("w%d", i+1), Role: v1alpha1.RoleWorker, Address: addr(firstWorker + i)})
	}
	return hosts, nil
}

// validBridgeName reports whether name is a bridge name the lab may own:
// it starts with "kforge" and fits in IFNAMSIZ.
func validBridgeName(name string) error {
	if len(name) < len(bridgePrefix) || name[:len(bridgePrefix)] != bridgePrefix {
		return fmt.Errorf("bridge name %q must start with %q", name, bridgePrefix)
	}
	if len(name) > 15 {
		return fmt.Errorf("bridge name %q is longer than 15 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("bridge name %q: only a-z, 0-9, '-' and '_'", name)
		}
	}
	return nil
}

// vethName is the host side of a host's veth: systemd-nspawn names it
// "vb-" plus the machine name, cut to IFNAMSIZ-1.
func vethName(machine string) string {
	n := "vb-" + machine
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}
