package lab

import (
	"bytes"
	"fmt"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/internal/atomicfile"
)

// ClusterName is metadata.name of the lab's cluster.yaml.
const ClusterName = "lab"

// ClusterSpec is the cluster.yaml for a lab's hosts. SSH paths are
// relative to DIR (where the file is written), so the folder can move.
func ClusterSpec(hosts []HostSpec) *v1alpha1.Cluster {
	c := &v1alpha1.Cluster{
		APIVersion: v1alpha1.APIVersion,
		Kind:       v1alpha1.Kind,
		Metadata:   v1alpha1.Metadata{Name: ClusterName},
		Spec: v1alpha1.Spec{
			SSH: v1alpha1.SSH{
				User:         "root",
				Port:         22,
				IdentityFile: "./" + filepath.Join(sshDirName, identityName),
				KnownHosts:   "./" + filepath.Join(sshDirName, knownHostsName),
			},
			Network: v1alpha1.Network{
				PodCIDR:     PodCIDR.String(),
				ServiceCIDR: ServiceCIDR.String(),
			},
		},
	}
	masters := 0
	for _, h := range hosts {
		c.Spec.Hosts = append(c.Spec.Hosts, v1alpha1.Host{Name: h.Name, Address: h.Address.String(), Role: h.Role})
		switch h.Role {
		case v1alpha1.RoleLoadBalancer:
			c.Spec.LoadBalancer = v1alpha1.LoadBalancer{Address: h.Address.String(), Port: v1alpha1.DefaultLBPort, Host: h.Name}
		case v1alpha1.RoleMaster:
			masters++
		}
	}
	c.Spec.AllowEvenMasters = masters%2 == 0
	return c
}

// clusterYAML renders the spec with a header comment.
func clusterYAML(c *v1alpha1.Cluster) ([]byte, error) {
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

// writeClusterFile writes DIR/cluster.yaml and checks it with v1alpha1.Load,
// the same validation every installer command applies.
func writeClusterFile(dir string, hosts []HostSpec) (string, error) {
	data, err := clusterYAML(ClusterSpec(hosts))
	if err != nil {
		return "", fmt.Errorf("rendering cluster.yaml: %w", err)
	}
	p := filepath.Join(dir, "cluster.yaml")
	if err := atomicfile.Write(p, data, 0o644); err != nil {
		return "", err
	}
	if _, err := v1alpha1.Load(p); err != nil {
		return "", fmt.Errorf("the lab's cluster.yaml does not validate: %w", err)
	}
	return p, nil
}
