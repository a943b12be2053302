package nodeagent

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func nodeCond(st corev1.NodeStatus, t corev1.NodeConditionType) corev1.NodeCondition {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.NodeCondition{}
}

func TestNodeStatus(t *testing.T) {
	cfg := NewConfig()
	cfg.NodeName, cfg.NodeAddress = "w1", "198.18.0.21"
	cfg.Reserved = map[string]string{"cpu": "500m", "memory": "1Gi", "pods": "200"}
	h := hostFacts{cpus: 4, memTotal: 8 << 30, memAvailable: 4 << 30, diskTotal: 100 << 30, diskAvailable: 50 << 30,
		pids: 300, pidMax: 4194304, kernel: "6.1.0", osImage: "Debian GNU/Linux 12 (bookworm)", machineID: "m", bootID: "b"}

	st := nodeStatus(cfg, h, "1.6.20", nil, true, "v1.37.0", nil, t0)
	if q := st.Allocatable[corev1.ResourceCPU]; q.MilliValue() != 3500 {
		t.Errorf("allocatable cpu %s", q.String())
	}
	if q := st.Allocatable[corev1.ResourceMemory]; q.Value() != 7<<30 {
		t.Errorf("allocatable memory %s", q.String())
	}
	if q := st.Allocatable[corev1.ResourcePods]; q.Value() != 0 {
		t.Errorf("allocatable pods %s: a reservation above capacity must give 0", q.String())
	}
	if q := st.Capacity[corev1.ResourcePods]; !q.Equal(resource.MustParse("110")) {
		t.Errorf("capacity pods %s", q.String())
	}
	if st.NodeInfo.ContainerRuntimeVersion != "containerd://1.6.20" || st.NodeInfo.KubeletVersion != "v1.37.0" ||
		st.NodeInfo.OSImage != h.osImage || st.NodeInfo.BootID != "b" {
		t.Errorf("nodeInfo %+v", st.NodeInfo)
	}
	if st.Addresses[0] != (corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.0.21"}) {
		t.Errorf("addresses %v", st.Addresses)
	}
	for typ, want := range map[corev1.NodeConditionType]corev1.ConditionStatus{
		corev1.NodeReady: corev1.ConditionTrue, corev1.NodeMemoryPressure: corev1.ConditionFalse,
		corev1.NodeDiskPressure: corev1.ConditionFalse, corev1.NodePIDPressure: corev1.ConditionFalse,
		corev1.NodeNetworkUnavailable: corev1.ConditionFalse,
	} {
		if got := nodeCond(st, typ); got.Status != want || got.Reason == "" {
			t.Errorf("%s: %+v, want %s", typ, got, want)
		}
	}

	// Pressure and a missing runtime or network turn conditions over.
	h.memAvailable, h.diskAvailable = 10<<20, 1<<30
	bad := nodeStatus(cfg, h, "1.6.20", errors.New("connection refused"), true, "v1.37.0", &st, t0.Add(time.Minute))
	if nodeCond(bad, corev1.NodeMemoryPressure).Status != corev1.ConditionTrue || nodeCond(bad, corev1.NodeDiskPressure).Status != corev1.ConditionTrue {
		t.Errorf("pressure: %+v", bad.Conditions)
	}
	if r := nodeCond(bad, corev1.NodeReady); r.Status != corev1.ConditionFalse || !r.LastTransitionTime.Time.Equal(t0.Add(time.Minute)) {
		t.Errorf("runtime down: %+v", r)
	}
	if p := nodeCond(bad, corev1.NodePIDPressure); !p.LastTransitionTime.Time.Equal(t0) || !p.LastHeartbeatTime.Time.Equal(t0.Add(time.Minute)) {
		t.Errorf("an unchanged condition: %+v", p)
	}
	noNet := nodeStatus(cfg, hostFacts{}, "1.6.20", nil, false, "v1.37.0", nil, t0)
	if nodeCond(noNet, corev1.NodeReady).Status != corev1.ConditionFalse || nodeCond(noNet, corev1.NodeNetworkUnavailable).Status != corev1.ConditionTrue {
		t.Errorf("no pod CIDR: %+v", noNet.Conditions)
	}
}

func TestStatusWorthWriting(t *testing.T) {
	cfg := NewConfig()
	cfg.NodeName, cfg.NodeAddress = "w1", "198.18.0.21"
	h := hostFacts{cpus: 2, memTotal: 1 << 30, memAvailable: 1 << 29}
	old := nodeStatus(cfg, h, "1.6.20", nil, true, "v1", nil, t0)
	same := nodeStatus(cfg, h, "1.6.20", nil, true, "v1", &old, t0.Add(20*time.Second))
	if statusWorthWriting(&old, &same, time.Minute, t0.Add(20*time.Second)) {
		t.Error("an unchanged status 20s later is written")
	}
	later := nodeStatus(cfg, h, "1.6.20", nil, true, "v1", &old, t0.Add(61*time.Second))
	if !statusWorthWriting(&old, &later, time.Minute, t0.Add(61*time.Second)) {
		t.Error("an unchanged status a minute later is not written")
	}
	h.memAvailable = 1 << 20
	changed := nodeStatus(cfg, h, "1.6.20", nil, true, "v1", &old, t0.Add(10*time.Second))
	if !statusWorthWriting(&old, &changed, time.Minute, t0.Add(10*time.Second)) {
		t.Error("a changed status is not written")
	}
}

func TestCNIConfList(t *testing.T) {
	cfg := NewConfig()
	cfg.RootDir, cfg.CNI.MTU = "/var/lib/kforge/agent", 1400
	data, err := cniConfList(cfg, "198.19.3.0/24")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Plugins    []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
			IPMasq bool   `json:"ipMasq"`
			MTU    int    `json:"mtu"`
			IPAM   struct {
				Type    string                `json:"type"`
				Ranges  [][]map[string]string `json:"ranges"`
				DataDir string                `json:"dataDir"`
			} `json:"ipam"`
			Capabilities map[string]bool `json:"capabilities"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Name != "kforge" || len(doc.Plugins) != 2 {
		t.Fatalf("%s", data)
	}
	br, pm := doc.Plugins[0], doc.Plugins[1]
	if br.Type != "bridge" || br.Bridge != "cni0" || !br.IPMasq || br.MTU != 1400 || br.IPAM.Type != "host-local" ||
		br.IPAM.Ranges[0][0]["subnet"] != "198.19.3.0/24" || br.IPAM.DataDir != "/var/lib/kforge/agent/cni/networks" {
		t.Errorf("bridge %+v", br)
	}
	if pm.Type != "portmap" || !pm.Capabilities["portMappings"] {
		t.Errorf("portmap %+v", pm)
	}
	if _, err := cniConfList(cfg, "nonsense"); err == nil {
		t.Error("a bad CIDR was accepted")
	}

	// Pods without host ports skip the portmap plugin (one process less).
	cfg.CNI.ConfDir = t.TempDir()
	n, err := newNetwork(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.setPodCIDR("198.19.3.0/24"); err != nil {
		t.Fatal(err)
	}
	types := func(l *libcni.NetworkConfigList) (out []string) {
		for _, p := range l.Plugins {
			out = append(out, p.Network.Type)
		}
		return out
	}
	plain := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{ContainerPort: 80}}}}}}
	withHostPort := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}}}}}
	if got := types(n.forPod(plain)); !slices.Equal(got, []string{"bridge"}) {
		t.Errorf("plugins for a pod without host ports: %v", got)
	}
	if got := types(n.forPod(withHostPort)); !slices.Equal(got, []string{"bridge", "portmap"}) {
		t.Errorf("plugins for a pod with a host port: %v", got)
	}
	if got := types(n.current()); !slices.Equal(got, []string{"bridge", "portmap"}) {
		t.Errorf("the node's list: %v", got)
	}
}

func TestWriteVolumeFiles(t *testing.T) {
	dir := t.TempDir()
	if err := writeVolumeFiles(dir, map[string]volumeFile{"a": {data: []byte("1"), mode: 0o644}, "sub/b": {data: []byte("2"), mode: 0o600}}); err != nil {
		t.Fatal(err)
	}
	if err := writeVolumeFiles(dir, map[string]volumeFile{"a": {data: []byte("changed"), mode: 0o644}}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a")); string(b) != "changed" {
		t.Errorf("a = %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub", "b")); !os.IsNotExist(err) {
		t.Errorf("a file no longer listed is still there: %v", err)
	}
	if err := writeVolumeFiles(dir, map[string]volumeFile{"../escape": {data: []byte("x")}}); err == nil {
		t.Error("a path leaving the volume was accepted")
	}
}

func TestParseMeminfo(t *testing.T) {
	m := parseMeminfo([]byte("MemTotal:        8000000 kB\nMemAvailable:    4000000 kB\nHugePages_Total:       0\n"))
	if m["MemTotal"] != 8000000*1024 || m["MemAvailable"] != 4000000*1024 || m["HugePages_Total"] != 0 {
		t.Errorf("%v", m)
	}
}
