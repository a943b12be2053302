package v1alpha1

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func readFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// replaceOnce replaces old, which must occur exactly once in s.
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%q occurs %d times in the fixture", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

func TestAddHostEntry(t *testing.T) {
	lab := readFixture(t, "testdata/lab.yaml")
	commented := readFixture(t, "testdata/edit/commented.yaml")
	const w2Tail = "      # w2 is the last one for now\n"
	for _, tc := range []struct {
		name string
		in   string
		host Host
		want string
	}{
		{
			name: "flow entries get a flow entry after the last",
			in:   lab,
			host: Host{Name: "w4", Address: "198.18.0.24", Role: RoleWorker},
			want: replaceOnce(t, lab, "  - {name: w3, address: 198.18.0.23, role: worker}\n",
				"  - {name: w3, address: 198.18.0.23, role: worker}\n  - {name: w4, address: 198.18.0.24, role: worker}\n"),
		},
		{
			name: "an ssh override is written in the entry's style",
			in:   lab,
			host: Host{Name: "w4", Address: "198.18.0.24", Role: RoleWorker, SSH: &SSH{User: "kforge"}},
			want: replaceOnce(t, lab, "  - {name: w3, address: 198.18.0.23, role: worker}\n",
				"  - {name: w3, address: 198.18.0.23, role: worker}\n  - {name: w4, address: 198.18.0.24, role: worker, ssh: {user: kforge}}\n"),
		},
		{
			name: "block entries get a block entry at the same indentation, after the last entry's comments",
			in:   commented,
			host: Host{Name: "w3", Address: "198.18.0.23", Role: RoleWorker},
			want: replaceOnce(t, commented, w2Tail, w2Tail+"    - name: w3\n      address: 198.18.0.23\n      role: worker\n"),
		},
		{
			name: "a nested ssh override in block style",
			in:   commented,
			host: Host{Name: "w3", Address: "198.18.0.23", Role: RoleWorker, SSH: &SSH{User: "admin", Port: 2222}},
			want: replaceOnce(t, commented, w2Tail, w2Tail+"    - name: w3\n      address: 198.18.0.23\n      role: worker\n      ssh:\n        user: admin\n        port: 2222\n"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AddHostEntry([]byte(tc.in), tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			c, err := Parse(got, "/")
			if err != nil {
				t.Fatal(err)
			}
			if h := c.Host(tc.host.Name); h == nil || h.Address != tc.host.Address || h.Role != tc.host.Role {
				t.Errorf("the parsed file has %+v", h)
			}
		})
	}
}

func TestAddHostEntryInUse(t *testing.T) {
	commented := readFixture(t, "testdata/edit/commented.yaml")
	for _, tc := range []struct {
		name  string
		host  Host
		field string
		line  int
		says  string
	}{
		{"name", Host{Name: "w1", Address: "198.18.0.29", Role: RoleWorker}, "spec.hosts[4].name", 25, `host name "w1" is already in use by spec.hosts[2] (line 25)`},
		{"address", Host{Name: "w9", Address: "198.18.0.11", Role: RoleWorker}, "spec.hosts[4].address", 21, `address 198.18.0.11 is already in use by host "m1", spec.hosts[1] (line 21)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := AddHostEntry([]byte(commented), tc.host)
			var ve *ValidationError
			if !errors.As(err, &ve) || out != nil {
				t.Fatalf("got %v, %q; want a *ValidationError", err, out)
			}
			if len(ve.Errors) != 1 || ve.Errors[0].Field != tc.field || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %v; want one on %s saying %s", err, tc.field, tc.says)
			}
		})
	}
	// The whole spec is validated: an address inside the pod range.
	_, err := AddHostEntry([]byte(commented), Host{Name: "w9", Address: "198.19.0.5", Role: RoleWorker})
	if err == nil || !strings.Contains(err.Error(), "spec.hosts[4].address: 198.19.0.5 lies inside spec.network.podCIDR") {
		t.Errorf("pod-range address: %v", err)
	}
	_, err = AddHostEntry([]byte(commented), Host{Name: "w9", Address: "198.18.0.29", Role: "gpu"})
	if err == nil || !strings.Contains(err.Error(), `unknown role "gpu"`) {
		t.Errorf("unknown role: %v", err)
	}
}

func TestRemoveHostEntry(t *testing.T) {
	lab := readFixture(t, "testdata/lab.yaml")
	commented := readFixture(t, "testdata/edit/commented.yaml")
	for _, tc := range []struct {
		name, in, host, want string
	}{
		{"a flow entry", lab, "w2", replaceOnce(t, lab, "  - {name: w2, address: 198.18.0.22, role: worker}\n", "")},
		{"the last flow entry", lab, "w3", replaceOnce(t, lab, "  - {name: w3, address: 198.18.0.23, role: worker}\n", "")},
		{"a block entry with its comment", commented, "m1",
			replaceOnce(t, commented, "    # control plane\n    - name: m1\n      address: 198.18.0.11   # first master\n      role: master\n", "")},
		{"the last block entry keeps what follows", commented, "w2",
			replaceOnce(t, commented, "    - name: w2\n      address: '198.18.0.22'\n      role: worker\n      # w2 is the last one for now\n", "")},
		{"a nested ssh block goes with its entry", commented, "w1",
			replaceOnce(t, commented, "    # workers below\n    - name: w1\n      address: 198.18.0.21\n      role: worker\n      ssh:\n        user: kforge\n", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RemoveHostEntry([]byte(tc.in), tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
	if _, err := RemoveHostEntry([]byte(lab), "w9"); err == nil || !strings.Contains(err.Error(), `no host named "w9"`) {
		t.Errorf("unknown host: %v", err)
	}
}

// Adding a host and removing it again gives back the file byte for byte.
func TestHostEntryRoundTrip(t *testing.T) {
	for _, f := range []string{"testdata/lab.yaml", "testdata/edit/commented.yaml"} {
		in := readFixture(t, f)
		added, err := AddHostEntry([]byte(in), Host{Name: "w7", Address: "198.18.0.27", Role: RoleWorker, SSH: &SSH{User: "u"}})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		back, err := RemoveHostEntry(added, "w7")
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if string(back) != in {
			t.Errorf("%s: after add and remove:\n%s", f, back)
		}
	}
}

func TestHostEntryLayoutsRefused(t *testing.T) {
	flow := readFixture(t, "testdata/edit/flowlist.yaml")
	if _, err := AddHostEntry([]byte(flow), Host{Name: "w1", Address: "198.18.0.21", Role: RoleWorker}); err == nil || !strings.Contains(err.Error(), "flow list") {
		t.Errorf("flow list: %v", err)
	}
	// An entry whose dash stands alone on its line.
	odd := "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata: {name: lab}\nspec:\n  hosts:\n  -\n    name: m1\n    address: 198.18.0.11\n    role: master\n  network: {podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.16.0/20}\n"
	if _, err := AddHostEntry([]byte(odd), Host{Name: "w1", Address: "198.18.0.21", Role: RoleWorker}); err == nil || !strings.Contains(err.Error(), "by hand") {
		t.Errorf("dash on its own line: %v", err)
	}
}
