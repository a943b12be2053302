package nodeagent

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodResolvConf(t *testing.T) {
	host := parseResolvConf([]byte("# the node's\nnameserver 192.0.2.53\nnameserver 192.0.2.54 ; second\nsearch corp.example lab.example\noptions edns0\n"))
	two := "2"
	for _, tc := range []struct {
		name       string
		policy     corev1.DNSPolicy
		hostNet    bool
		clusterDNS string
		config     *corev1.PodDNSConfig
		want       string
	}{
		{name: "ClusterFirst", clusterDNS: "198.18.16.10",
			want: "nameserver 198.18.16.10\nsearch app.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\noptions ndots:5\n"},
		{name: "ClusterFirst without cluster DNS is Default", policy: corev1.DNSClusterFirst,
			want: "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\noptions edns0\n"},
		{name: "ClusterFirst with hostNetwork is Default", policy: corev1.DNSClusterFirst, hostNet: true, clusterDNS: "198.18.16.10",
			want: "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\noptions edns0\n"},
		{name: "ClusterFirstWithHostNet", policy: corev1.DNSClusterFirstWithHostNet, hostNet: true, clusterDNS: "198.18.16.10",
			want: "nameserver 198.18.16.10\nsearch app.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\noptions ndots:5\n"},
		{name: "Default", policy: corev1.DNSDefault, clusterDNS: "198.18.16.10",
			want: "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\noptions edns0\n"},
		{name: "None with dnsConfig", policy: corev1.DNSNone, clusterDNS: "198.18.16.10",
			config: &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.1"}, Searches: []string{"a.example"},
				Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "rotate"}}},
			want: "nameserver 192.0.2.1\nsearch a.example\noptions ndots:2 rotate\n"},
		{name: "ClusterFirst with dnsConfig merged", clusterDNS: "198.18.16.10",
			config: &corev1.PodDNSConfig{Nameservers: []string{"198.18.16.10", "192.0.2.1"}, Searches: []string{"cluster.local", "x.example"},
				Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}}},
			want: "nameserver 198.18.16.10\nnameserver 192.0.2.1\nsearch app.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example x.example\noptions ndots:2\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "app"},
				Spec: corev1.PodSpec{DNSPolicy: tc.policy, HostNetwork: tc.hostNet, DNSConfig: tc.config}}
			if got := string(podResolvConf(pod, host, tc.clusterDNS, "cluster.local")); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestPodResolvConfLimits(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
		Spec: corev1.PodSpec{DNSPolicy: corev1.DNSNone, DNSConfig: &corev1.PodDNSConfig{
			Nameservers: []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"}}}}
	got := string(podResolvConf(pod, resolvConf{}, "", "cluster.local"))
	if strings.Count(got, "nameserver") != 3 || strings.Contains(got, "192.0.2.4") {
		t.Errorf("more than 3 nameservers:\n%s", got)
	}
}

func TestPodHostsFile(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "app"},
		Spec: corev1.PodSpec{HostAliases: []corev1.HostAlias{{IP: "192.0.2.9", Hostnames: []string{"db", "db.local"}}}}}
	got := string(podHostsFile(pod, "198.19.7.5", "cluster.local"))
	for _, want := range []string{"127.0.0.1\tlocalhost\n", "198.19.7.5\tweb-0\n", "192.0.2.9\tdb\tdb.local\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts lacks %q:\n%s", want, got)
		}
	}
	pod.Spec.Hostname, pod.Spec.Subdomain = "db-0", "dbs"
	got = string(podHostsFile(pod, "198.19.7.5", "cluster.local"))
	if !strings.Contains(got, "198.19.7.5\tdb-0.dbs.app.svc.cluster.local\tdb-0\n") {
		t.Errorf("hosts lacks the FQDN:\n%s", got)
	}
}
