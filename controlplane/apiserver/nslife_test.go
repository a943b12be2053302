package apiserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"kforge.dev/kforge/controlplane/apiserver/encryption"
	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// statusOf returns the metav1.Status of an API error.
func statusOf(t *testing.T, err error) metav1.Status {
	t.Helper()
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		t.Fatalf("want an API status error, got %v", err)
	}
	return se.Status()
}

// TestNamespaceLifecycle checks the answers of upstream's namespace
// strategy and NamespaceLifecycle admission.
func TestNamespaceLifecycle(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	nss := e.admin.CoreV1().Namespaces()

	for _, name := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		err := nss.Delete(ctx, name, metav1.DeleteOptions{})
		st := statusOf(t, err)
		want := fmt.Sprintf(`namespaces "%s" is forbidden: this namespace may not be deleted`, name)
		if st.Code != 403 || st.Reason != metav1.StatusReasonForbidden || st.Message != want {
			t.Errorf("delete %s: %d %s %q, want 403 Forbidden %q", name, st.Code, st.Reason, st.Message, want)
		}
		if ns, err := nss.Get(ctx, name, metav1.GetOptions{}); err != nil || ns.DeletionTimestamp != nil {
			t.Errorf("%s after the refused delete: %v %v", name, err, ns.DeletionTimestamp)
		}
	}

	created, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "going"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(created.Spec.Finalizers, []corev1.FinalizerName{"kubernetes"}) || created.Status.Phase != corev1.NamespaceActive {
		t.Fatalf("created namespace: finalizers %v phase %q", created.Spec.Finalizers, created.Status.Phase)
	}
	// A plain update cannot drop the finalizer: only finalize can.
	created.Spec.Finalizers = nil
	created.Labels = map[string]string{"team": "a"}
	updated, err := nss.Update(ctx, created, metav1.UpdateOptions{})
	if err != nil || !slices.Equal(updated.Spec.Finalizers, []corev1.FinalizerName{"kubernetes"}) || updated.Labels["team"] != "a" {
		t.Fatalf("update: %v finalizers %v", err, updated.Spec.Finalizers)
	}
	if _, err := e.admin.CoreV1().ConfigMaps("going").Create(ctx, cm("before", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := nss.Delete(ctx, "going", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := nss.Get(ctx, "going", metav1.GetOptions{})
	if err != nil || got.DeletionTimestamp == nil || got.Status.Phase != corev1.NamespaceTerminating ||
		!slices.Equal(got.Spec.Finalizers, []corev1.FinalizerName{"kubernetes"}) {
		t.Fatalf("after delete: %v %+v", err, got)
	}
	// Its content stays until the namespace controller deletes it.
	if _, err := e.admin.CoreV1().ConfigMaps("going").Get(ctx, "before", metav1.GetOptions{}); err != nil {
		t.Fatalf("content of a terminating namespace: %v", err)
	}

	_, err = e.admin.CoreV1().ConfigMaps("going").Create(ctx, cm("x", nil), metav1.CreateOptions{})
	st := statusOf(t, err)
	want := `configmaps "x" is forbidden: unable to create new content in namespace going because it is being terminated`
	if st.Code != 403 || st.Reason != metav1.StatusReasonForbidden || st.Message != want {
		t.Fatalf("create in a terminating namespace: %d %s %q, want 403 %q", st.Code, st.Reason, st.Message, want)
	}
	if !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) || st.Details.Causes[0].Field != "metadata.namespace" {
		t.Fatalf("causes: %+v", st.Details)
	}
	// Updates of existing content are allowed, as upstream.
	c, _ := e.admin.CoreV1().ConfigMaps("going").Get(ctx, "before", metav1.GetOptions{})
	c.Data = map[string]string{"k": "v"}
	if _, err := e.admin.CoreV1().ConfigMaps("going").Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update in a terminating namespace: %v", err)
	}
	// In a namespace that does not exist: 404 for the namespace.
	_, err = e.admin.CoreV1().ConfigMaps("nowhere").Create(ctx, cm("x", nil), metav1.CreateOptions{})
	if st := statusOf(t, err); st.Code != 404 || st.Message != `namespaces "nowhere" not found` {
		t.Fatalf("create in a missing namespace: %d %q", st.Code, st.Message)
	}
}

// TestEventsAreOneResource writes Events through each version and reads
// them through the other: one stored object, upstream's field mapping.
func TestEventsAreOneResource(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	now := metav1.NewMicroTime(time.Now().Truncate(time.Microsecond))
	pod := corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-1", UID: "u1", APIVersion: "v1"}

	// The scheduler's way: events.k8s.io/v1.
	ev := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Name: "web-1.sched", Namespace: "default"},
		EventTime: now, ReportingController: "default-scheduler", ReportingInstance: "default-scheduler-m1",
		Action: "Scheduling", Reason: "FailedScheduling", Regarding: pod, Note: "0/3 nodes are available",
		Type: corev1.EventTypeWarning, Series: &eventsv1.EventSeries{Count: 2, LastObservedTime: now},
		Related: &corev1.ObjectReference{Kind: "Node", Name: "w1"}}
	if _, err := e.admin.EventsV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// kubectl describe pod's way: v1 with an involvedObject selector.
	sel := fields.Set{"involvedObject.name": "web-1", "involvedObject.kind": "Pod"}.AsSelector().String()
	list, err := e.admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("v1 list: %v %d", err, len(list.Items))
	}
	core := list.Items[0]
	if core.Message != ev.Note || core.InvolvedObject != pod || core.Reason != "FailedScheduling" || core.Type != "Warning" ||
		core.ReportingController != "default-scheduler" || core.ReportingInstance != "default-scheduler-m1" || core.Action != "Scheduling" ||
		!core.EventTime.Equal(&now) || core.Series == nil || core.Series.Count != 2 || core.Related == nil || core.Related.Name != "w1" {
		t.Fatalf("v1 view of an events.k8s.io Event: %+v", core)
	}

	// The other way: a v1 Event with the deprecated fields.
	first := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	last := metav1.NewTime(time.Now().Truncate(time.Second))
	old := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "web-1.pulled", Namespace: "default"}, InvolvedObject: pod,
		Reason: "Pulled", Message: "image present", Source: corev1.EventSource{Component: "kubelet", Host: "w1"},
		FirstTimestamp: first, LastTimestamp: last, Count: 3, Type: corev1.EventTypeNormal}
	created, err := e.admin.CoreV1().Events("default").Create(ctx, old, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nev, err := e.admin.EventsV1().Events("default").Get(ctx, "web-1.pulled", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nev.Note != "image present" || nev.Regarding != pod || nev.DeprecatedSource.Component != "kubelet" || nev.DeprecatedCount != 3 ||
		!nev.DeprecatedFirstTimestamp.Equal(&first) || !nev.DeprecatedLastTimestamp.Equal(&last) ||
		nev.ResourceVersion != created.ResourceVersion || nev.UID != created.UID {
		t.Fatalf("events.k8s.io view of a v1 Event: %+v", nev)
	}
	// An update through one version is seen through the other.
	nev.Note = "image present on machine"
	if _, err := e.admin.EventsV1().Events("default").Update(ctx, nev, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.admin.CoreV1().Events("default").Get(ctx, "web-1.pulled", metav1.GetOptions{}); err != nil || got.Message != "image present on machine" || got.Count != 3 {
		t.Fatalf("v1 after an events.k8s.io update: %v %+v", err, got)
	}
	// One stored object per Event, under the core prefix.
	raw, err := e.etcd.Get(ctx, "/registry/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range raw.Kvs {
		if strings.Contains(string(kv.Key), "events") {
			keys = append(keys, string(kv.Key))
		}
	}
	if !slices.Equal(keys, []string{"/registry/core/events/default/web-1.pulled", "/registry/core/events/default/web-1.sched"}) {
		t.Fatalf("event keys in etcd: %v", keys)
	}
	// Deleting through one version deletes it for both.
	if err := e.admin.EventsV1().Events("default").Delete(ctx, "web-1.pulled", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CoreV1().Events("default").Get(ctx, "web-1.pulled", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("v1 after an events.k8s.io delete: %v", err)
	}
}

// TestOldEventsDropped: events.k8s.io Events an older kforge stored apart
// (never served again, never expiring) are removed when the server starts.
func TestOldEventsDropped(t *testing.T) {
	etcd := etcdtest.Start(t)
	ctx := context.Background()
	for i := range 3 {
		if _, err := etcd.Put(ctx, fmt.Sprintf("/registry/events.k8s.io/events/default/old-%d", i), `{"kind":"Event"}`); err != nil {
			t.Fatal(err)
		}
	}
	startServerOn(t, etcd, nil)
	r, err := etcd.Get(ctx, "/registry/events.k8s.io/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || r.Count != 0 {
		t.Fatalf("old events left: %d %v", r.Count, err)
	}
}

// TestEventsExpire: Events are written on an etcd lease of EventTTL.
func TestEventsExpire(t *testing.T) {
	e := startServerOn(t, etcdtest.Start(t), func(o *Options) { o.EventTTL = 2 * time.Second })
	ctx := context.Background()
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "short", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "p", Namespace: "default"}, Reason: "Test", Message: "m"}
	if _, err := e.admin.CoreV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	nev := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Name: "short2", Namespace: "default"}, EventTime: metav1.NowMicro(),
		ReportingController: "c", ReportingInstance: "i", Action: "A", Reason: "R", Type: "Normal",
		Regarding: corev1.ObjectReference{Kind: "Pod", Name: "p", Namespace: "default"}}
	if _, err := e.admin.EventsV1().Events("default").Create(ctx, nev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CoreV1().ConfigMaps("default").Create(ctx, cm("stays", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/registry/core/events/default/short", "/registry/core/events/default/short2"} {
		raw, err := e.etcd.Get(ctx, k)
		if err != nil || len(raw.Kvs) != 1 || raw.Kvs[0].Lease == 0 {
			t.Fatalf("%s in etcd: %v %+v", k, err, raw)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		l, err := e.admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err == nil && len(l.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events still there 20s after a 2s TTL: %v %d", err, len(l.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := e.admin.CoreV1().ConfigMaps("default").Get(ctx, "stays", metav1.GetOptions{}); err != nil {
		t.Fatalf("a configmap expired with the events: %v", err)
	}
}

func secretboxEntry(name string, fill byte) encryption.ResourceConfig {
	return encryption.ResourceConfig{Resources: []string{"secrets"}, Providers: []encryption.Provider{
		{Secretbox: &encryption.KeyList{Keys: []encryption.Key{{Name: name, Secret: base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, 32))}}}},
		{Identity: &struct{}{}},
	}}
}

// encryptedStore is a Store over etcd encrypting Secrets with entries.
func encryptedStore(t *testing.T, e *env, entries ...encryption.ResourceConfig) *storage.Store {
	t.Helper()
	opts, err := encryptionOptions(entries, DefaultResources())
	if err != nil {
		t.Fatal(err)
	}
	return storage.New(e.etcd, opts...)
}

// TestSecretsEncryptedAtRest: etcd's own client finds no Secret value in
// etcd; Secrets written before encryption still read; and rewriting every
// Secret as it is (kubectl get secrets -A -o json | kubectl replace -f -,
// done here with client-go) moves them all to the current key.
func TestSecretsEncryptedAtRest(t *testing.T) {
	etcd := etcdtest.Start(t)
	// Before encryption: a plaintext Secret.
	plain := startServerOn(t, etcd, nil)
	ctx := context.Background()
	mk := func(e *env, name, value string) {
		t.Helper()
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"password": []byte(value)}}
		if _, err := e.admin.CoreV1().Secrets("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk(plain, "old", "plaintext-value-1")
	plain.stop()

	raw := func(name string) []byte {
		t.Helper()
		r, err := etcd.Get(ctx, "/registry/core/secrets/default/"+name)
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("raw get %s: %v", name, err)
		}
		return r.Kvs[0].Value
	}
	if !bytes.Contains(raw("old"), []byte(base64.StdEncoding.EncodeToString([]byte("plaintext-value-1")))) {
		t.Fatal("the Secret written before encryption is not plaintext: the test proves nothing")
	}

	// Encryption on, with key1.
	e1 := startServerOn(t, etcd, func(o *Options) { o.Store = encryptedStore(t, &env{etcd: etcd}, secretboxEntry("key1", 1)) })
	mk(e1, "new", "s3cr3t-value-2")
	v := raw("new")
	if !bytes.HasPrefix(v, []byte("k8s:enc:secretbox:v1:key1:")) || bytes.Contains(v, []byte("s3cr3t-value-2")) ||
		bytes.Contains(v, []byte(base64.StdEncoding.EncodeToString([]byte("s3cr3t-value-2")))) {
		t.Fatalf("etcd holds %q", v)
	}
	for name, want := range map[string]string{"old": "plaintext-value-1", "new": "s3cr3t-value-2"} {
		s, err := e1.admin.CoreV1().Secrets("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil || string(s.Data["password"]) != want {
			t.Fatalf("get %s: %v %q", name, err, s.Data["password"])
		}
	}
	e1.stop()

	// Key rotation: key2 first, key1 still read. Then every Secret is
	// read and replaced as it is.
	e2 := startServerOn(t, etcd, func(o *Options) {
		two := secretboxEntry("key2", 2)
		two.Providers = append([]encryption.Provider{two.Providers[0]}, secretboxEntry("key1", 1).Providers...)
		o.Store = encryptedStore(t, &env{etcd: etcd}, two)
	})
	all, err := e2.admin.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil || len(all.Items) != 2 {
		t.Fatalf("list all secrets: %v %d", err, len(all.Items))
	}
	for i := range all.Items {
		s := &all.Items[i]
		if _, err := e2.admin.CoreV1().Secrets(s.Namespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("replace %s: %v", s.Name, err)
		}
	}
	for _, name := range []string{"old", "new"} {
		if v := raw(name); !bytes.HasPrefix(v, []byte("k8s:enc:secretbox:v1:key2:")) || bytes.Contains(v, []byte("value")) {
			t.Fatalf("%s after re-encryption: %q", name, v)
		}
	}
	// A second replace changes nothing: the revision stays.
	again, _ := e2.admin.CoreV1().Secrets("default").Get(ctx, "old", metav1.GetOptions{})
	if after, err := e2.admin.CoreV1().Secrets("default").Update(ctx, again, metav1.UpdateOptions{}); err != nil || after.ResourceVersion != again.ResourceVersion {
		t.Fatalf("a replace of a current Secret wrote it: %v %s -> %s", err, again.ResourceVersion, after.ResourceVersion)
	}
	e2.stop()

	// key1 retired: everything still reads.
	e3 := startServerOn(t, etcd, func(o *Options) { o.Store = encryptedStore(t, &env{etcd: etcd}, secretboxEntry("key2", 2)) })
	for name, want := range map[string]string{"old": "plaintext-value-1", "new": "s3cr3t-value-2"} {
		s, err := e3.admin.CoreV1().Secrets("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil || string(s.Data["password"]) != want {
			t.Fatalf("after retiring key1, get %s: %v %q", name, err, s.Data["password"])
		}
	}
}
