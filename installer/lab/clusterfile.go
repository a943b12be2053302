package lab

import (
	"bytes"
	"fmt"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"kforge.dev/kforge/installer/cluster"
)

// ClusterName is metadata.name of the lab's cluster.yaml.
const ClusterName = "lab"

// ClusterSpec is the cluster.yaml for a lab's hosts. SSH paths are
// relative to DIR (where the file is written), so the folder can move.
func ClusterSpec(hosts []HostSpec) *cluster.Cluster {
	c := &cluster.Cluster{
		APIVersion: cluster.APIVersion,
		Kind:       cluster.Kind,
		Metadata:   cluster.Metadata{Name: ClusterName},
		Spec: cluster.Spec{
			SSH: cluster.SSH{
				User:         "root",
				Port:         22,
				IdentityFile: "./" + filepath.Join(sshDirName, identityName),
				KnownHosts:   "./" + filepath.Join(sshDirName, knownHostsName),
			},
			Network: cluster.Network{
				PodCIDR:     PodCIDR.String(),
				ServiceCIDR: ServiceCIDR.String(),
			},
		},
	}
	masters := 0
	for _, h := range hosts {
		c.Spec.Hosts = append(c.Spec.Hosts, cluster.Host{Name: h.Name, Address: h.Address.String(), Role: h.Role})
		switch h.Role {
		case cluster.RoleLoadBalancer:
			c.Spec.LoadBalancer = cluster.LoadBalancer{Address: h.Address.String(), Port: cluster.DefaultLBPort, Host: h.Name}
		case cluster.RoleMaster:
			masters++
		}
	}
	c.Spec.AllowEvenMasters = masters%2 == 0
	return c
}

// clusterYAML renders the spec with a header comment.
func clusterYAML(c *cluster.Cluster) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# Written by `kforge lab up` for the lab in this folder; `kforge lab down` removes it.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeClusterFile writes DIR/cluster.yaml and checks it with cluster.Load,
// the same validation every installer command applies.
func writeClusterFile(dir string, hosts []HostSpec) (string, error) {
	data, err := clusterYAML(ClusterSpec(hosts))
	if err != nil {
		return "", fmt.Errorf("rendering cluster.yaml: %w", err)
	}
	p := filepath.Join(dir, "cluster.yaml")
	if err := writeFileAtomic(p, data, 0o644); err != nil {
		return "", err
	}
	if _, err := cluster.Load(p); err != nil {
		return "", fmt.Errorf("the lab's cluster.yaml does not validate: %w", err)
	}
	return p, nil
}
