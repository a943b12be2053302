package rbac

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

func put(t *testing.T, st *storage.Store, key string, o any) int64 {
	t.Helper()
	data, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := st.Create(context.Background(), Prefix+key, data)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 3s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The index lists, follows the watch, and Run returns when its context
// ends (its owner waits for it).
func TestRunListsWatchesAndStops(t *testing.T) {
	etcd := etcdtest.Start(t)
	st := storage.New(etcd)
	put(t, st, "clusterroles/reader", &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		Rules: []rbacv1.PolicyRule{allow("list", "", "pods")}})
	a := New(st, nil)
	if a.HasSynced() {
		t.Fatal("synced before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()
	if err := a.WaitForSync(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	bob := res("list", "", "pods", "", "", "")
	bob.User = User{Name: "bob"}
	if ok, _ := a.Authorize(bob); ok {
		t.Fatal("allowed without a binding")
	}
	rev := put(t, st, "clusterrolebindings/bob", &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bob"},
		Subjects: users("bob"), RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "reader"}})
	waitFor(t, "binding applied", func() bool { ok, _ := a.Authorize(bob); return ok })
	if a.Revision() < rev {
		t.Fatalf("revision %d < %d", a.Revision(), rev)
	}
	if _, err := st.Delete(context.Background(), Prefix+"clusterroles/reader", 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "role deletion applied", func() bool {
		ok, reason := a.Authorize(bob)
		return !ok && reason == `RBAC: clusterrole.rbac.authorization.k8s.io "reader" not found`
	})
}
