package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer/ssh"
	"kforge.dev/kforge/pki"
)

const nodeTestCluster = `# lab
apiVersion: kforge.dev/v1alpha1
kind: Cluster
metadata: {name: lab}
spec:
  loadBalancer: {address: 198.18.0.10, host: lb}
  hosts:
  - {name: lb, address: 198.18.0.10, role: loadbalancer}
  - {name: m1, address: 198.18.0.11, role: master}
  # the workers
  - {name: w1, address: 198.18.0.21, role: worker}
  - {name: w3, address: 198.18.0.23, role: worker}   # to go
  network: {podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.16.0/20}
`

// nodeTestDir writes the cluster file and a PKI folder per worker.
func nodeTestDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(nodeTestCluster), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"w1", "w3"} {
		if err := os.MkdirAll(filepath.Join(dir, "pki", "hosts", w), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "pki", "hosts", w, "agent-client.crt"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// evictingClient is a fake API with Nodes w1, w3 and a pod on each;
// evictions delete the pod.
func evictingClient(t *testing.T) *fake.Clientset {
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w3"}},
		drainPod("default", "web-a", "w3"),
		drainPod("default", "web-b", "w1"),
	)
	client.PrependReactor("create", "pods", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		name := a.(clienttesting.CreateAction).GetObject().(metav1.Object).GetName()
		return true, nil, client.Tracker().Delete(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, a.GetNamespace(), name)
	})
	return client
}

type unreachableHost struct{ *fakeHost }

func (unreachableHost) Connect(context.Context) error {
	return errors.New("dial tcp 198.18.0.23:22: connect: no route to host")
}

func TestNodeRemoveWorker(t *testing.T) {
	dir := nodeTestDir(t)
	client := evictingClient(t)
	h := &fakeHost{name: "w3", role: "worker"}
	resetFirst := false
	client.PrependReactor("delete", "nodes", func(clienttesting.Action) (bool, runtime.Object, error) {
		h.mu.Lock()
		resetFirst = len(h.writes) == 1 && h.writes[0] == resetScript
		h.mu.Unlock()
		return false, nil, nil
	})
	var out, errOut bytes.Buffer
	_, err := NodeRemove(context.Background(), NodeRemoveOptions{
		File: filepath.Join(dir, "cluster.yaml"), Name: "w3", Out: &out, ErrOut: &errOut, Host: h, Client: client,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	ctx := context.Background()
	if _, err := client.CoreV1().Nodes().Get(ctx, "w3", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Node w3: %v", err)
	}
	if _, err := client.CoreV1().Pods("default").Get(ctx, "web-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("w3's pod: %v", err)
	}
	if n, _ := client.CoreV1().Nodes().Get(ctx, "w1", metav1.GetOptions{}); n.Spec.Unschedulable {
		t.Error("w1 was cordoned")
	}
	if _, err := client.CoreV1().Pods("default").Get(ctx, "web-b", metav1.GetOptions{}); err != nil {
		t.Errorf("w1's pod: %v", err)
	}
	if len(h.writes) != 1 || h.writes[0] != resetScript {
		t.Errorf("writes on w3: %q", h.writes)
	}
	// The actions in order: cordon before the eviction before the
	// reset (the agent stops) before the Node's deletion.
	var verbs []string
	for _, a := range client.Actions() {
		if a.GetVerb() == "patch" || a.GetVerb() == "delete" || a.GetSubresource() == "eviction" {
			verbs = append(verbs, a.GetVerb()+" "+a.GetResource().Resource+"/"+a.GetSubresource())
		}
	}
	if got := strings.Join(verbs, ", "); got != "patch nodes/, create pods/eviction, delete nodes/" {
		t.Errorf("API writes: %s", got)
	}
	if !resetFirst {
		t.Error("the Node was deleted before the host was reset (its agent would register it again)")
	}
	data, _ := os.ReadFile(filepath.Join(dir, "cluster.yaml"))
	want := strings.Replace(nodeTestCluster, "  - {name: w3, address: 198.18.0.23, role: worker}   # to go\n", "", 1)
	if string(data) != want {
		t.Errorf("cluster.yaml:\n%s", data)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "cluster.yaml")); fi.Mode().Perm() != 0o640 {
		t.Errorf("cluster.yaml mode %v", fi.Mode())
	}
	if _, err := os.Stat(filepath.Join(dir, "pki", "hosts", "w3")); !os.IsNotExist(err) {
		t.Errorf("w3's PKI folder: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pki", "hosts", "w1", "agent-client.crt")); err != nil {
		t.Errorf("w1's PKI folder: %v", err)
	}
	for _, s := range []string{"✓ Cordon w3", "✓ Drain w3", "1 pod(s) evicted and gone", "✓ Delete Node w3", "✓ Reset w3", "✓ Remove w3 from cluster.yaml"} {
		if !strings.Contains(errOut.String(), s) {
			t.Errorf("progress lacks %q:\n%s", s, errOut.String())
		}
	}
	// A second run has nothing to do.
	out.Reset()
	if _, err := NodeRemove(ctx, NodeRemoveOptions{File: filepath.Join(dir, "cluster.yaml"), Name: "w3", Out: &out, ErrOut: &errOut, Host: h, Client: client}); err != nil ||
		!strings.Contains(out.String(), "nothing to remove") {
		t.Errorf("second run: %v, %s", err, out.String())
	}
}

func TestNodeRemoveUnreachable(t *testing.T) {
	dir := nodeTestDir(t)
	file := filepath.Join(dir, "cluster.yaml")
	client := evictingClient(t)
	h := unreachableHost{&fakeHost{name: "w3", role: "worker"}}
	var out, errOut bytes.Buffer
	_, err := NodeRemove(context.Background(), NodeRemoveOptions{File: file, Name: "w3", Out: &out, ErrOut: &errOut, Host: h, Client: client})
	if err == nil || !strings.Contains(err.Error(), "unreachable, nothing was changed") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("err %v", err)
	}
	data, _ := os.ReadFile(file)
	if string(data) != nodeTestCluster {
		t.Error("cluster.yaml changed")
	}
	if n, _ := client.CoreV1().Nodes().Get(context.Background(), "w3", metav1.GetOptions{}); n.Spec.Unschedulable {
		t.Error("w3 was cordoned")
	}

	res, err := NodeRemove(context.Background(), NodeRemoveOptions{File: file, Name: "w3", Force: true, Out: &out, ErrOut: &errOut, Host: h, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	if res.Unreachable == "" || len(h.writes) != 0 || !strings.Contains(out.String(), "Warning: w3 was unreachable and was not reset") {
		t.Errorf("forced: %+v, writes %q, out %s", res, h.writes, out.String())
	}
	// Forced: the evicted pod is deleted with a zero grace period too.
	var forced bool
	for _, a := range client.Actions() {
		if d, ok := a.(clienttesting.DeleteAction); ok && a.GetResource().Resource == "pods" {
			forced = d.GetDeleteOptions().GracePeriodSeconds != nil && *d.GetDeleteOptions().GracePeriodSeconds == 0
		}
	}
	if !forced {
		t.Error("no forced pod delete")
	}
	if data, _ := os.ReadFile(file); strings.Contains(string(data), "w3") {
		t.Errorf("cluster.yaml still names w3:\n%s", data)
	}
}

func TestNodeOpsRefused(t *testing.T) {
	dir := nodeTestDir(t)
	file := filepath.Join(dir, "cluster.yaml")
	var out bytes.Buffer
	for _, tc := range []struct {
		name string
		run  func() error
		says string
	}{
		{"remove a master", func() error {
			_, err := NodeRemove(context.Background(), NodeRemoveOptions{File: file, Name: "m1", Out: &out, ErrOut: &out, Host: &fakeHost{name: "m1"}, Client: evictingClient(t)})
			return err
		}, "masters cannot be added or removed by kforge node yet"},
		{"remove the lb", func() error {
			_, err := NodeRemove(context.Background(), NodeRemoveOptions{File: file, Name: "lb", Out: &out, ErrOut: &out, Host: &fakeHost{name: "lb"}, Client: evictingClient(t)})
			return err
		}, "a loadbalancer host cannot be removed"},
		{"add a master", func() error {
			_, err := NodeAdd(context.Background(), NodeAddOptions{File: file, Host: v1alpha1.Host{Name: "m2", Address: "198.18.0.12", Role: "master"}})
			return err
		}, "masters cannot be added or removed by kforge node yet"},
		{"add a name in use with another address", func() error {
			_, err := NodeAdd(context.Background(), NodeAddOptions{File: file, Host: v1alpha1.Host{Name: "w1", Address: "198.18.0.29"}})
			return err
		}, "host w1 is already in the file: it has address 198.18.0.21, not 198.18.0.29"},
		{"add an address in use", func() error {
			_, err := NodeAdd(context.Background(), NodeAddOptions{File: file, Host: v1alpha1.Host{Name: "w4", Address: "198.18.0.21"}})
			return err
		}, "invalid cluster spec (1 problem):\n  - " + `spec.hosts[4].address: address 198.18.0.21 is already in use by host "w1", spec.hosts[2] (line 11)`},
		{"add without an address", func() error {
			_, err := NodeAdd(context.Background(), NodeAddOptions{File: file, Host: v1alpha1.Host{Name: "w4"}})
			return err
		}, "has no host w4: give its --address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err %v; want %q", err, tc.says)
			}
			if data, _ := os.ReadFile(file); string(data) != nodeTestCluster {
				t.Error("cluster.yaml changed")
			}
		})
	}
}

// node add converges the new host alone: no other host sees a change, the
// file gets the entry, and a full up afterwards changes nothing.
func TestNodeAddTouchesOnlyTheNewHost(t *testing.T) {
	s := newSim(t)
	s.up(false)
	w2 := &simHost{name: "w2", role: "worker", addr: "198.18.0.22", log: s.log,
		files: map[string]ssh.RemoteFile{}, contents: map[string][]byte{}, units: map[string]string{}}
	for _, h := range s.hosts {
		h.reset()
	}
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w2"},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}})
	var out, errOut bytes.Buffer
	_, err := NodeAdd(context.Background(), NodeAddOptions{
		File: s.c.Path, Host: v1alpha1.Host{Name: "w2", Address: "198.18.0.22"}, Client: client,
		Up: UpOptions{Binary: s.exe, Out: &out, ErrOut: &errOut, Hosts: []Host{w2},
			NewProber: func(*v1alpha1.Cluster, *pki.Inventory) (Prober, error) { return &simProber{log: s.log}, nil }},
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	for _, h := range s.hosts {
		if ch := h.changes(); len(ch) > 0 {
			t.Errorf("node add changed %s: %v", h.name, ch)
		}
	}
	if len(w2.uploads) == 0 || w2.units["kforge-agent.service"] != "active" {
		t.Errorf("w2: uploads %v, units %v", w2.uploads, w2.units)
	}
	for _, want := range []string{"✓ Add w2 to cluster.yaml", "✓ Node w2 registered and Ready", "- etcd members (quorum and health): skipped: no host of this run runs it"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, errOut.String())
		}
	}
	if !strings.Contains(out.String(), "kforge node add w2 done") || !strings.Contains(out.String(), "on 1 hosts: binary, PKI, agent, proxy, dns, ingress (") {
		t.Errorf("summary: %s", out.String())
	}
	data, _ := os.ReadFile(s.c.Path)
	if !strings.HasSuffix(string(data), "  - {name: w1, address: 198.18.0.21, role: worker}\n  - {name: w2, address: 198.18.0.22, role: worker}\n") {
		t.Errorf("cluster.yaml:\n%s", data)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.c.Path), "pki", "hosts", "w2", "agent-client.crt")); err != nil {
		t.Errorf("w2's certificate: %v", err)
	}
	// up afterwards, on every host with the new file: nothing to do.
	c, err := v1alpha1.Load(s.c.Path)
	if err != nil {
		t.Fatal(err)
	}
	s.c = c
	s.hosts = append(s.hosts, w2)
	res, _, _ := s.up(false)
	if len(res.Changes) != 0 {
		t.Errorf("up after node add: %v", res.Changes)
	}
}

// A host that fails its facts or preflight leaves cluster.yaml as it was.
func TestNodeAddStopsBeforeChanges(t *testing.T) {
	s := newSim(t)
	before, _ := os.ReadFile(s.c.Path)
	bad := &fakeHost{name: "w2", role: "worker", respond: func(string) (string, error) {
		return "", errors.New("ssh: handshake failed")
	}}
	var out, errOut bytes.Buffer
	_, err := NodeAdd(context.Background(), NodeAddOptions{
		File: s.c.Path, Host: v1alpha1.Host{Name: "w2", Address: "198.18.0.22"},
		Up: UpOptions{Binary: s.exe, Out: &out, ErrOut: &errOut, Hosts: []Host{bad}},
	})
	if err == nil || !strings.Contains(err.Error(), "handshake failed") {
		t.Fatalf("err %v", err)
	}
	if after, _ := os.ReadFile(s.c.Path); string(after) != string(before) {
		t.Errorf("cluster.yaml changed:\n%s", after)
	}
	if len(bad.writes) != 0 || len(bad.uploads) != 0 {
		t.Errorf("w2 changed: %v %v", bad.writes, bad.uploads)
	}
}

// --output json: one event per line, a start and an ok per step, the
// summary last.
func TestNodeRemoveJSON(t *testing.T) {
	dir := nodeTestDir(t)
	var out bytes.Buffer
	_, err := NodeRemove(context.Background(), NodeRemoveOptions{File: filepath.Join(dir, "cluster.yaml"), Name: "w3", JSON: true,
		Out: &out, ErrOut: io.Discard, Host: &fakeHost{name: "w3", role: "worker"}, Client: evictingClient(t)})
	if err != nil {
		t.Fatal(err)
	}
	var phases []string
	var last Event
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		last = Event{}
		if err := json.Unmarshal([]byte(l), &last); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		if last.Host == "" && last.Status == StatusOK {
			phases = append(phases, last.Phase)
		}
	}
	if got := strings.Join(phases, " "); got != "connect cordon drain reset delete-node cluster-file pki-folder" {
		t.Errorf("phases: %s", got)
	}
	if last.Status != StatusSummary || !strings.Contains(last.Message, "kforge node remove w3 done") {
		t.Errorf("last event %+v", last)
	}
}

// A dry run of node add writes neither the file nor the host, and prints
// the entry it would add.
func TestNodeAddDryRun(t *testing.T) {
	s := newSim(t)
	before, _ := os.ReadFile(s.c.Path)
	w2 := &simHost{name: "w2", role: "worker", addr: "198.18.0.22", log: s.log,
		files: map[string]ssh.RemoteFile{}, contents: map[string][]byte{}, units: map[string]string{}}
	var out bytes.Buffer
	_, err := NodeAdd(context.Background(), NodeAddOptions{
		File: s.c.Path, Host: v1alpha1.Host{Name: "w2", Address: "198.18.0.22", SSH: &v1alpha1.SSH{User: "kforge"}},
		Up: UpOptions{DryRun: true, Binary: s.exe, Out: &out, ErrOut: io.Discard, Hosts: []Host{w2},
			NewProber: func(*v1alpha1.Cluster, *pki.Inventory) (Prober, error) { return &simProber{log: s.log}, nil }},
	})
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(s.c.Path); string(after) != string(before) {
		t.Errorf("cluster.yaml changed:\n%s", after)
	}
	if ch := w2.changes(); len(ch) != 0 {
		t.Errorf("w2 changed: %v", ch)
	}
	if !strings.Contains(out.String(), "Would add to "+s.c.Path+":\n  - {name: w2, address: 198.18.0.22, role: worker, ssh: {user: kforge}}\n") ||
		!strings.Contains(out.String(), "w2: upload /usr/local/bin/kforge") {
		t.Errorf("dry run output:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.c.Path), "pki")); !os.IsNotExist(err) {
		t.Errorf("the dry run made the PKI: %v", err)
	}
}
