package apiserver

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

func TestFinalizersHoldDeletion(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	c := cm("held", nil)
	c.Finalizers = []string{"example.com/hold"}
	if _, err := cms.Create(ctx, c, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx, "held", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := cms.Get(ctx, "held", metav1.GetOptions{})
	if err != nil || got.DeletionTimestamp == nil {
		t.Fatalf("after delete with a finalizer: %v, deletionTimestamp %v", err, got.DeletionTimestamp)
	}
	got.Finalizers = nil
	if _, err := cms.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "held", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after the last finalizer went: %v", err)
	}
}

func TestPodGracefulDeletion(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	pods := e.admin.CoreV1().Pods("default")
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: "w1",
		Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A bound pod waits for its node: the first delete only marks it.
	if err := pods.Delete(ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := pods.Get(ctx, "p", metav1.GetOptions{})
	if err != nil || got.DeletionTimestamp == nil || got.DeletionGracePeriodSeconds == nil || *got.DeletionGracePeriodSeconds != 30 {
		t.Fatalf("graceful delete: %v %+v", err, got.ObjectMeta)
	}
	// The node's final delete with grace 0 removes it.
	zero := int64(0)
	if err := pods.Delete(ctx, "p", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "p", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after grace 0: %v", err)
	}
	// An unbound pod goes at once.
	p.Name, p.Spec.NodeName = "q", ""
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "q", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "q", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("unbound pod after delete: %v", err)
	}
}

func TestTerminatingNamespaceRefusesCreates(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	nss := e.admin.CoreV1().Namespaces()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "going"}, Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}}
	if _, err := nss.Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := nss.Delete(ctx, "going", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := nss.Get(ctx, "going", metav1.GetOptions{})
	if err != nil || got.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("namespace after delete: %v phase %q", err, got.Status.Phase)
	}
	_, err = e.admin.CoreV1().ConfigMaps("going").Create(ctx, cm("x", nil), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("create in terminating namespace: %v", err)
	}
	// A label change does not finish the deletion; the finalize step does.
	got.Labels = map[string]string{"x": "y"}
	if got, err = nss.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update of a terminating namespace: %v", err)
	}
	got.Spec.Finalizers = nil
	if _, err := nss.Finalize(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nss.Get(ctx, "going", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace after finalize: %v", err)
	}
	for _, n := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		if _, err := nss.Get(ctx, n, metav1.GetOptions{}); err != nil {
			t.Errorf("bootstrap namespace %s: %v", n, err)
		}
	}
}

func TestWatchListSendsInitialEventsThenBookmark(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	for _, n := range []string{"a", "b"} {
		if _, err := cms.Create(ctx, cm(n, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	yes := true
	w, err := cms.Watch(ctx, metav1.ListOptions{SendInitialEvents: &yes, AllowWatchBookmarks: true,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var added []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-w.ResultChan():
			m := ev.Object.(*corev1.ConfigMap)
			switch ev.Type {
			case watch.Added:
				added = append(added, m.Name)
				continue
			case watch.Bookmark:
				if m.Annotations[metav1.InitialEventsAnnotationKey] != "true" || m.ResourceVersion == "" {
					t.Fatalf("bookmark without the initial-events-end annotation: %+v", m.ObjectMeta)
				}
				if len(added) != 2 {
					t.Fatalf("initial events before the bookmark: %v", added)
				}
				return
			default:
				t.Fatalf("unexpected %s", ev.Type)
			}
		case <-timeout:
			t.Fatalf("no initial-events-end bookmark; got %v", added)
		}
	}
}

func TestServiceDefaultsAndClusterIP(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	svcs := e.admin.CoreV1().Services("default")
	k, err := svcs.Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil || k.Spec.ClusterIP != "10.96.0.1" {
		t.Fatalf("the kubernetes service: %v %+v", err, k.Spec)
	}
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	got, err := svcs.Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Type != corev1.ServiceTypeClusterIP || got.Spec.ClusterIP == "" || got.Spec.Ports[0].Protocol != corev1.ProtocolTCP || got.Spec.Ports[0].TargetPort.IntValue() != 80 {
		t.Fatalf("service defaults: %+v", got.Spec)
	}
	s2 := s.DeepCopy()
	s2.Name = "other"
	got2, err := svcs.Create(ctx, s2, metav1.CreateOptions{})
	if err != nil || got2.Spec.ClusterIP == got.Spec.ClusterIP {
		t.Fatalf("second service: %v, IPs %s %s", err, got.Spec.ClusterIP, got2.Spec.ClusterIP)
	}
	s3 := s.DeepCopy()
	s3.Name, s3.Spec.ClusterIP = "taken", got.Spec.ClusterIP
	if _, err := svcs.Create(ctx, s3, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("duplicate ClusterIP: %v", err)
	}
	// Deleting a Service frees its address for the next one that asks.
	if err := svcs.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Create(ctx, s3, metav1.CreateOptions{}); err != nil {
		t.Fatalf("reusing a freed ClusterIP: %v", err)
	}
	// Concurrent creates never share an address.
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func(i int) {
			c := s.DeepCopy()
			c.Name = fmt.Sprintf("par-%d", i)
			_, err := svcs.Create(ctx, c, metav1.CreateOptions{})
			errs <- err
		}(i)
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	list, _ := svcs.List(ctx, metav1.ListOptions{})
	seen := map[string]string{}
	for _, it := range list.Items {
		if other, dup := seen[it.Spec.ClusterIP]; dup {
			t.Fatalf("%s and %s share ClusterIP %s", it.Name, other, it.Spec.ClusterIP)
		}
		seen[it.Spec.ClusterIP] = it.Name
	}
}

func TestDeletedNamespaceComesBackEmpty(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	mustNS(t, e, "gone")
	if _, err := e.admin.CoreV1().ConfigMaps("gone").Create(ctx, cm("left", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	created, err := e.admin.CoreV1().Services("gone").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.admin.CoreV1().Namespaces().Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Finalized by hand while content remains (the namespace controller
	// would have emptied it first): what is left goes with it.
	ns, err := e.admin.CoreV1().Namespaces().Get(ctx, "gone", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Spec.Finalizers = nil
	if _, err := e.admin.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	mustNS(t, e, "gone")
	if l, err := e.admin.CoreV1().ConfigMaps("gone").List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Fatalf("the recreated namespace holds %v (%v)", l.Items, err)
	}
	// The Service's address was freed with it.
	svc.Spec.ClusterIP = created.Spec.ClusterIP
	if _, err := e.admin.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("reusing the purged Service's ClusterIP: %v", err)
	}
}

// The object cache lets creates skip reading their namespace; when it
// lags behind etcd the create's guard catches it and a live read decides.
func TestCreatesStaySafeWhenTheCacheLags(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	nss := e.admin.CoreV1().Namespaces()
	key := e.srv.reg.Lookup("", "v1", "namespaces").Key("", "lag")
	waitCache := func(what string, cond func(storage.KV, bool) bool) storage.KV {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			kv, ok := e.srv.cache.Get(key)
			if cond(kv, ok) {
				return kv
			}
			if time.Now().After(deadline) {
				t.Fatalf("object cache: timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// A create right after its namespace's: the cache may not have it yet.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "lag"}, Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}}
	created, err := nss.Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CoreV1().ConfigMaps("lag").Create(ctx, cm("first", nil), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create right after the namespace: %v", err)
	}
	active := waitCache("the new namespace", func(kv storage.KV, ok bool) bool {
		return ok && fmt.Sprint(kv.ModRevision) == created.ResourceVersion
	})
	stale := func() { e.srv.cache.Apply(storage.Event{Type: storage.Put, KV: active}) }

	// The namespace starts terminating, but the cache still has it active.
	if err := nss.Delete(ctx, "lag", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCache("the terminating namespace", func(kv storage.KV, ok bool) bool { return ok && kv.ModRevision != active.ModRevision })
	stale()
	if _, err := e.admin.CoreV1().ConfigMaps("lag").Create(ctx, cm("second", nil), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("create in a terminating namespace the cache had active: %v, want 403", err)
	}

	// The namespace is gone, but the cache still has it.
	got, err := nss.Get(ctx, "lag", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Spec.Finalizers = nil
	if _, err := nss.Finalize(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCache("the namespace's removal", func(_ storage.KV, ok bool) bool { return !ok })
	stale()
	if _, err := e.admin.CoreV1().ConfigMaps("lag").Create(ctx, cm("third", nil), metav1.CreateOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("create in a deleted namespace the cache still had: %v, want 404", err)
	}
}

// Updates read the object from the cache; a cache that lags costs a live
// read, never a lost write or a wrong 409.
func TestUpdatesStaySafeWhenTheCacheLags(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	v1, err := cms.Create(ctx, cm("u", map[string]string{"k": "1"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := e.srv.reg.Lookup("", "v1", "configmaps").Key("default", "u")
	waitFor := func(rv string) storage.KV {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if kv, ok := e.srv.cache.Get(key); ok && fmt.Sprint(kv.ModRevision) == rv {
				return kv
			}
			if time.Now().After(deadline) {
				t.Fatalf("object cache: timed out waiting for revision %s", rv)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	old := waitFor(v1.ResourceVersion)
	v1.Data["k"] = "2"
	v2, err := cms.Update(ctx, v1, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(v2.ResourceVersion)
	e.srv.cache.Apply(storage.Event{Type: storage.Put, KV: old})

	// With the current resourceVersion: the cache's old copy must not
	// turn it into a 409.
	v2.Data["k"] = "3"
	if _, err := cms.Update(ctx, v2, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update with the current resourceVersion over a lagging cache: %v", err)
	}
	// Without one (a merge patch): applied to the current object, not the
	// cache's old copy.
	e.srv.cache.Apply(storage.Event{Type: storage.Put, KV: old})
	patched, err := cms.Patch(ctx, "u", types.MergePatchType, []byte(`{"data":{"p":"x"}}`), metav1.PatchOptions{})
	if err != nil || patched.Data["k"] != "3" || patched.Data["p"] != "x" {
		t.Fatalf("patch over a lagging cache: %v %v", patched.Data, err)
	}
	// With the old resourceVersion: a 409 from etcd even when the cache
	// agrees with the caller.
	e.srv.cache.Apply(storage.Event{Type: storage.Put, KV: old})
	v1.Data["k"] = "stale"
	if _, err := cms.Update(ctx, v1, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("update with an old resourceVersion the cache still has: %v, want 409", err)
	}
	got, err := cms.Get(ctx, "u", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "3" || got.Data["p"] != "x" {
		t.Fatalf("stored object: %v %v", got.Data, err)
	}
	// A deleted object the cache still has: 404.
	if err := cms.Delete(ctx, "u", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.srv.cache.Apply(storage.Event{Type: storage.Put, KV: old})
	if _, err := cms.Patch(ctx, "u", types.MergePatchType, []byte(`{"data":{"p":"y"}}`), metav1.PatchOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("patch of a deleted object the cache still has: %v, want 404", err)
	}
}

// Watches are served from the object cache (one etcd watch for all); a
// cache that relists ends them with a 410, since they may have missed
// changes, and the client lists again.
func TestWatchesServedFromTheCache(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	waitCacheSynced(t, e)
	// Written after the cache synced: its history covers this revision.
	first, err := cms.Create(ctx, cm("a", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if n := e.srv.cache.Watchers(); n != 1 {
		t.Fatalf("the cache serves %d watches, want 1", n)
	}
	if _, err := cms.Create(ctx, cm("b", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		if m, ok := ev.Object.(*corev1.ConfigMap); ev.Type != watch.Added || !ok || m.Name != "b" {
			t.Fatalf("got %s %#v, want b ADDED", ev.Type, ev.Object)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event for b")
	}

	lr, err := e.srv.store.List(ctx, "/registry/", storage.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.cache.Replace(lr.Items, lr.Revision)
	select {
	case ev := <-w.ResultChan():
		st, ok := ev.Object.(*metav1.Status)
		if ev.Type != watch.Error || !ok || st.Code != 410 {
			t.Fatalf("after a relist: %s %#v, want a 410 ERROR", ev.Type, ev.Object)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch outlived the cache's relist")
	}
}

// A watch on a quiet namespace still gets bookmarks that move with the
// cluster's revision, so a client resuming from its last bookmark after a
// compaction is not sent to relist.
func TestBookmarksOfAQuietWatchFollowTheCluster(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	if _, err := e.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "quiet"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCacheSynced(t, e)
	// Written after the cache synced: its history covers this revision.
	first, err := e.admin.CoreV1().ConfigMaps("default").Create(ctx, cm("busy-0", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := e.admin.CoreV1().ConfigMaps("quiet").Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion, AllowWatchBookmarks: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	last, err := e.admin.CoreV1().ConfigMaps("default").Create(ctx, cm("busy-1", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := strconv.ParseInt(last.ResourceVersion, 10, 64)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Bookmark {
				t.Fatalf("the quiet watch got %s %v", ev.Type, ev.Object)
			}
			got, _ := strconv.ParseInt(ev.Object.(*corev1.ConfigMap).ResourceVersion, 10, 64)
			if got >= want {
				return
			}
		case <-deadline:
			t.Fatalf("no bookmark at or after revision %d", want)
		}
	}
}

// waitCacheSynced waits until the object cache has listed and caught up
// with a write made now, so the history covers every later revision.
func waitCacheSynced(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	probe, err := e.admin.CoreV1().ConfigMaps("default").Create(ctx, cm("cache-sync-probe", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := strconv.ParseInt(probe.ResourceVersion, 10, 64)
	if !e.srv.cache.WaitFor(ctx, rev, 5*time.Second) {
		t.Fatal("the object cache did not sync")
	}
}

// Watches of one cache event share its decoded objects; each still gets
// its own events (filters apply per watch) and DELETED carries the
// deletion's revision in every watch. Run with -race, this also checks
// nobody writes to the shared objects.
func TestWatchersShareDecodedEvents(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps("default")
	waitCacheSynced(t, e)
	start, err := cms.Create(ctx, cm("start", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	ws := make([]watch.Interface, n)
	for i := range ws {
		opts := metav1.ListOptions{ResourceVersion: start.ResourceVersion}
		if i%2 == 1 {
			opts.LabelSelector = "team=a"
		}
		if ws[i], err = cms.Watch(ctx, opts); err != nil {
			t.Fatal(err)
		}
		defer ws[i].Stop()
	}
	obj := cm("shared", nil)
	obj.Labels = map[string]string{"team": "b"}
	created, err := cms.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Labels["team"] = "a" // enters the filtered watches
	if _, err := cms.Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx, "shared", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	gone, err := e.srv.store.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, w := range ws {
		want := "ADDED MODIFIED DELETED"
		if i%2 == 1 {
			want = "ADDED DELETED" // entered on the update
		}
		wg.Go(func() {
			var got []string
			timeout := time.After(10 * time.Second)
			for len(got) < len(strings.Fields(want)) {
				select {
				case ev := <-w.ResultChan():
					got = append(got, string(ev.Type))
					m := ev.Object.(*corev1.ConfigMap)
					if ev.Type == watch.Deleted && m.ResourceVersion != fmt.Sprint(gone) {
						t.Errorf("watch %d: DELETED at %s, want the deletion's revision %d", i, m.ResourceVersion, gone)
					}
				case <-timeout:
					t.Errorf("watch %d: got %v, want %s", i, got, want)
					return
				}
			}
			if strings.Join(got, " ") != want {
				t.Errorf("watch %d: got %v, want %s", i, got, want)
			}
		})
	}
	wg.Wait()
}
