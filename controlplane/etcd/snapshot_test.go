package etcd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestSnapshotSaveVerifyRestore takes a snapshot of a running member,
// verifies it, refuses a damaged copy, and restores it twice: over the
// member's own data dir (moved aside) and as a new three-member cluster.
// Keys written before the snapshot are back, keys written after are not,
// the cluster has a new ID, and a watch from a revision seen before the
// restore ends with "compacted".
func TestSnapshotSaveVerifyRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd members")
	}
	p := newTestPKI(t)
	src := testClusterConfigs(t, p, 1)[0]
	m := startMember(t, src)
	waitReady(t, m)
	oldCluster := uint64(m.Etcd().Server.Cluster().ID())
	cli := newClient(t, p, true, src.ListenClientURLs[0])
	for i := range 10 {
		put(t, cli, fmt.Sprintf("/k/before-%02d", i), "v")
	}
	var calls int
	var last int64
	path := filepath.Join(t.TempDir(), "snap.db")
	info, version, err := SaveSnapshot(t.Context(), cli, path, func(n int64) { calls++; last = n })
	if err != nil {
		t.Fatal(err)
	}
	after := put(t, cli, "/k/after", "v")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != info.Size || last != info.Size || calls == 0 {
		t.Errorf("file %v %d bytes; info %d bytes; progress %d calls, last %d", fi.Mode(), fi.Size(), info.Size, calls, last)
	}
	if info.Revision != after-1 || info.TotalKeys < 10 || version == "" || len(info.SHA256) != 64 {
		t.Errorf("info %+v version %q; want revision %d", info, version, after-1)
	}

	// A flipped byte in the middle is caught by the trailer.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.db")
	if err := os.WriteFile(bad, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifySnapshot(bad); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("a damaged snapshot: %v", err)
	}
	if err := os.WriteFile(bad, data[:len(data)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifySnapshot(bad); err == nil {
		t.Error("a truncated snapshot verified")
	}

	// Over the member's own data dir.
	m.Close()
	aside := src.DataDir + ".before-restore"
	if err := os.WriteFile(JoinMarker(src.DataDir), []byte("existing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSnapshot(src, RestoreOptions{Snapshot: path, ClusterToken: "t"}); err == nil {
		t.Error("restored over a data dir with nowhere to move it")
	}
	moved, err := RestoreSnapshot(src, RestoreOptions{Snapshot: path, ClusterToken: RestoreToken(src.InitialClusterToken, "1"), MoveAside: aside, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if moved != aside {
		t.Errorf("moved aside to %q, want %q", moved, aside)
	}
	if _, err := os.Stat(filepath.Join(aside, "member", "wal")); err != nil {
		t.Errorf("the old data dir was not kept: %v", err)
	}
	if _, err := os.Stat(JoinMarker(src.DataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the join marker is still there: %v", err)
	}
	if fi, err := os.Stat(src.DataDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("restored data dir: %v %v", fi, err)
	}
	m = startMember(t, src)
	waitReady(t, m)
	if id := uint64(m.Etcd().Server.Cluster().ID()); id == oldCluster {
		t.Errorf("the restored cluster kept the old cluster ID %x", id)
	}
	cli = newClient(t, p, true, src.ListenClientURLs[0])
	checkRestored(t, cli, after)

	// As a new three-member cluster (empty data dirs).
	cfgs := testClusterConfigs(t, p, 3)
	token := RestoreToken(cfgs[0].InitialClusterToken, "2")
	for _, c := range cfgs {
		if moved, err := RestoreSnapshot(c, RestoreOptions{Snapshot: path, ClusterToken: token}); err != nil || moved != "" {
			t.Fatalf("restore %s: %q %v", c.Name, moved, err)
		}
	}
	ms := make([]*Member, 3)
	for i, c := range cfgs {
		ms[i] = startMember(t, c)
	}
	waitReady(t, ms...)
	cli3 := newClient(t, p, true, cfgs[0].ListenClientURLs[0], cfgs[1].ListenClientURLs[0], cfgs[2].ListenClientURLs[0])
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	list, err := cli3.MemberList(ctx)
	if err != nil || len(list.Members) != 3 {
		t.Fatalf("members: %v %v", list, err)
	}
	checkRestored(t, cli3, after)
}

// checkRestored checks a restored cluster: the keys written before the
// snapshot, not the one written after (at revision after), a head moved
// past the bump, and a watch from after ending with "compacted".
func checkRestored(t *testing.T, cli *clientv3.Client, after int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/k/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	if len(keys) != 10 || strings.Contains(strings.Join(keys, " "), "after") {
		t.Errorf("keys after the restore: %v", keys)
	}
	if resp.Header.Revision < RestoreRevisionBump {
		t.Errorf("head revision %d; want it moved past %d", resp.Header.Revision, RestoreRevisionBump)
	}
	wc := cli.Watch(clientv3.WithRequireLeader(ctx), "/k/", clientv3.WithPrefix(), clientv3.WithRev(after))
	select {
	case w := <-wc:
		if !errors.Is(w.Err(), rpctypes.ErrCompacted) {
			t.Errorf("a watch from revision %d: %v (compact revision %d); want compacted", after, w.Err(), w.CompactRevision)
		}
	case <-ctx.Done():
		t.Error("a watch from a revision before the restore got nothing")
	}
}
