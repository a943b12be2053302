package templates

import (
	"strings"
	"testing"
)

func TestUnit(t *testing.T) {
	data, err := Unit(UnitData{Role: "apiserver", Description: "kforge apiserver", After: []string{"kforge-etcd.service"},
		Binary: BinaryPath, Config: ConfigPath("apiserver")})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Description=kforge apiserver\n",
		"After=network-online.target kforge-etcd.service\n",
		"ExecStart=/usr/local/bin/kforge apiserver --config /etc/kforge/apiserver.yaml\n",
		"Restart=on-failure\n",
		"WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("unit lacks %q:\n%s", want, data)
		}
	}
	if got := UnitPath("apiserver"); got != "/etc/systemd/system/kforge-apiserver.service" {
		t.Errorf("UnitPath = %s", got)
	}
}

func TestUnitRequiresItsFields(t *testing.T) {
	if _, err := Unit(UnitData{Role: "etcd", Binary: BinaryPath, Config: ConfigPath("etcd")}); err == nil {
		t.Error("a unit without a description rendered")
	}
}
