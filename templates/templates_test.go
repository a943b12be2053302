package templates

import (
	"strings"
	"testing"

	"kforge.dev/kforge/controlplane/apiserver"
	"kforge.dev/kforge/controlplane/etcd"
	"kforge.dev/kforge/controlplane/lb"
)

// The lab: masters m1-m3 at 198.18.0.11-13, the lb at .10.
var labMasters = []struct{ name, addr string }{{"m1", "198.18.0.11"}, {"m2", "198.18.0.12"}, {"m3", "198.18.0.13"}}

func TestEtcdRendersAValidConfig(t *testing.T) {
	ic := "m1=https://198.18.0.11:2380,m2=https://198.18.0.12:2380,m3=https://198.18.0.13:2380"
	for _, m := range labMasters {
		data, err := Etcd(EtcdData{Name: m.name, Address: m.addr, DataDir: StateDir + "/etcd", InitialCluster: ic,
			InitialClusterState: "new", Token: "kforge-lab", PKIDir: PKIDir})
		if err != nil {
			t.Fatal(err)
		}
		c, err := etcd.ParseConfig(data, "/")
		if err != nil {
			t.Fatalf("%s:\n%s\n%v", m.name, data, err)
		}
		if c.Name != m.name || c.AdvertiseClientURLs[0] != "https://"+m.addr+":2379" || c.TLS.TrustedCAFile != "/etc/kforge/pki/etcd-ca.crt" {
			t.Errorf("%s: %+v", m.name, c)
		}
	}
}

func TestAPIServerRendersAValidConfig(t *testing.T) {
	eps := []string{"https://198.18.0.11:2379", "https://198.18.0.12:2379", "https://198.18.0.13:2379"}
	data, err := APIServer(APIServerData{Name: "m1", BindAddress: "0.0.0.0:6443", EtcdEndpoints: eps, ServiceCIDR: "198.18.16.0/20", PKIDir: PKIDir})
	if err != nil {
		t.Fatal(err)
	}
	c, err := apiserver.ParseConfig(data, "/")
	if err != nil {
		t.Fatalf("%s\n%v", data, err)
	}
	if len(c.Etcd.Endpoints) != 3 || c.ServiceAccount.KeyFile != "/etc/kforge/pki/sa.key" || c.TLS.ClientCAFile != "/etc/kforge/pki/cluster-ca.crt" {
		t.Errorf("%+v", c)
	}
}

func TestLBRendersAValidConfig(t *testing.T) {
	data, err := LB(LBData{Name: "lb", ListenAddress: "0.0.0.0:6443", Backends: []string{"198.18.0.11:6443", "198.18.0.12:6443", "198.18.0.13:6443"},
		MetricsAddress: "127.0.0.1:9443", PKIDir: PKIDir})
	if err != nil {
		t.Fatal(err)
	}
	c, err := lb.ParseConfig(data, "/")
	if err != nil {
		t.Fatalf("%s\n%v", data, err)
	}
	if len(c.Backends) != 3 || c.HealthCheck.CAFile != "/etc/kforge/pki/cluster-ca.crt" || c.HealthCheck.Period.Seconds() != 1 {
		t.Errorf("%+v", c)
	}
}

func TestUnits(t *testing.T) {
	for _, role := range Roles {
		data, err := Unit(role, UnitData{Binary: BinaryPath, Config: ConfigPath(role)})
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		for _, want := range []string{
			"ExecStart=/usr/local/bin/kforge " + role + " --config /etc/kforge/" + role + ".yaml\n",
			"Type=simple\n", "Restart=on-failure\n", "RestartSec=1\n", "LimitNOFILE=", "WantedBy=multi-user.target",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("%s lacks %q:\n%s", UnitName(role), want, s)
			}
		}
	}
}

func TestMissingFieldIsAnError(t *testing.T) {
	if _, err := render("kforge-etcd.service.tmpl", map[string]string{}); err == nil {
		t.Error("rendering with a missing key succeeded")
	}
}
