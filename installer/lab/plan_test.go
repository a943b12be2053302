package lab

import (
	"net/netip"
	"testing"

	"kforge.dev/kforge/api/v1alpha1"
)

func TestPlan(t *testing.T) {
	hosts, err := Plan(3, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, role, addr string }{
		{"lb", v1alpha1.RoleLoadBalancer, "198.18.0.10"},
		{"m1", v1alpha1.RoleMaster, "198.18.0.11"},
		{"m2", v1alpha1.RoleMaster, "198.18.0.12"},
		{"m3", v1alpha1.RoleMaster, "198.18.0.13"},
		{"w1", v1alpha1.RoleWorker, "198.18.0.21"},
		{"w2", v1alpha1.RoleWorker, "198.18.0.22"},
		{"w3", v1alpha1.RoleWorker, "198.18.0.23"},
	}
	if len(hosts) != len(want) {
		t.Fatalf("got %d hosts, want %d", len(hosts), len(want))
	}
	for i, w := range want {
		h := hosts[i]
		if h.Name != w.name || h.Role != w.role || h.Address != netip.MustParseAddr(w.addr) {
			t.Errorf("host %d = %+v, want %v", i, h, w)
		}
		if !HostNet.Contains(h.Address) || h.Address == BridgeAddr {
			t.Errorf("host %s address %s outside %s or the bridge's", h.Name, h.Address, HostNet)
		}
	}
}

func TestPlanLimits(t *testing.T) {
	for _, tc := range []struct {
		m, w int
		ok   bool
	}{
		{1, 0, true}, {0, 1, false}, {-1, 1, false}, {maxMasters, maxWorkers, true},
		{maxMasters + 1, 1, false}, {1, maxWorkers + 1, false}, {1, -1, false},
	} {
		hosts, err := Plan(tc.m, tc.w)
		if (err == nil) != tc.ok {
			t.Errorf("Plan(%d, %d) err = %v, want ok=%v", tc.m, tc.w, err, tc.ok)
			continue
		}
		seen := map[netip.Addr]bool{}
		for _, h := range hosts {
			if seen[h.Address] || !HostNet.Contains(h.Address) || h.Address == BridgeAddr || h.Address == HostNet.Addr() {
				t.Errorf("Plan(%d, %d): bad or duplicate address %s", tc.m, tc.w, h.Address)
			}
			seen[h.Address] = true
		}
	}
}

func TestLabRangesStayInBenchmarkNet(t *testing.T) {
	for _, p := range []netip.Prefix{HostNet, ServiceCIDR, PodCIDR} {
		if !LabNet.Contains(p.Addr()) || p.Bits() < LabNet.Bits() {
			t.Errorf("%s is outside %s", p, LabNet)
		}
	}
	if HostNet.Overlaps(ServiceCIDR) || HostNet.Overlaps(PodCIDR) || ServiceCIDR.Overlaps(PodCIDR) {
		t.Error("lab ranges overlap")
	}
}

func TestBridgeName(t *testing.T) {
	for name, ok := range map[string]bool{
		"kforge0": true, "kforge-lab": true, "br0": false, "kforg": false,
		"kforge0123456789": false, "kforge0 x": false, "KFORGE0": false,
	} {
		if err := validBridgeName(name); (err == nil) != ok {
			t.Errorf("validBridgeName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
	if got := vethName("m1"); got != "vb-m1" {
		t.Errorf("vethName(m1) = %q", got)
	}
	if got := vethName("a-very-long-machine-name"); len(got) != 15 {
		t.Errorf("vethName too long: %q", got)
	}
}
