package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"kforge.dev/kforge/controlplane/apiserver/internal/etcdtest"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// eventually polls f until it returns nil or timeout passes; the last
// error is the failure. RBAC changes reach the index through a watch, so
// they take effect shortly after the write, not at once.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// propagation bounds how long a role or binding change may take to reach
// the authorizer (a watch event on loopback; generous for -race).
const propagation = 3 * time.Second

func forbidden(err error) error {
	if apierrors.IsForbidden(err) {
		return nil
	}
	return fmt.Errorf("want 403, got %v", err)
}

func mustNS(t *testing.T, e *env, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := e.admin.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRBACNoBindingsIs403AndDiscoveryWorks(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	bob := e.clientFor(t, "bob")
	_, err := bob.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	want := `pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default"`
	if !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("list pods:\n got %v\nwant %q", err, want)
	}
	_, err = bob.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	want = `nodes "n1" is forbidden: User "bob" cannot get resource "nodes" in API group "" at the cluster scope`
	if !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("get node:\n got %v\nwant %q", err, want)
	}
	// Discovery goes through the authorizer and system:discovery allows it
	// to every authenticated user, as upstream.
	if _, err := bob.Discovery().ServerVersion(); err != nil {
		t.Fatalf("version: %v", err)
	}
	groups, resources, err := bob.Discovery().ServerGroupsAndResources()
	if err != nil || len(groups) == 0 || len(resources) == 0 {
		t.Fatalf("discovery: %d groups, %d lists, %v", len(groups), len(resources), err)
	}
	// Paths outside system:discovery are refused with upstream's message.
	err = bob.CoreV1().RESTClient().Post().AbsPath("/apis").Do(ctx).Error()
	if !apierrors.IsForbidden(err) || err.Error() != `forbidden: User "bob" cannot post path "/apis"` {
		t.Fatalf("post /apis: %v", err)
	}
	// No certificate is 401, for discovery too; /version alone is
	// public (system:public-info-viewer).
	anon, _ := kubernetes.NewForConfig(&rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem}})
	if _, err := anon.Discovery().ServerVersion(); err != nil {
		t.Fatalf("anonymous version: %v", err)
	}
	if _, err := anon.Discovery().ServerGroups(); !apierrors.IsUnauthorized(err) {
		t.Fatalf("anonymous discovery: %v", err)
	}
	if _, err := anon.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("anonymous list: %v", err)
	}
}

func TestRBACRoleBindingIsNamespacedAndFollowsChanges(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	mustNS(t, e, "a", "b")
	bob := e.clientFor(t, "bob", "devs")
	if _, err := bob.CoreV1().Pods("a").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("before binding: %v", err)
	}
	rbac := e.admin.RbacV1()
	if _, err := rbac.Roles("a").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules: []rbacv1.PolicyRule{{Verbs: []string{"get", "list", "watch"}, APIGroups: []string{""}, Resources: []string{"pods"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.RoleBindings("a").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bob-reads-pods"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: "bob"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pod-reader"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A binding created at run time takes effect without a restart.
	eventually(t, propagation, "list pods in a after the binding", func() error {
		_, err := bob.CoreV1().Pods("a").List(ctx, metav1.ListOptions{})
		return err
	})
	_, err := bob.CoreV1().Pods("b").List(ctx, metav1.ListOptions{})
	want := `pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "b"`
	if !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("list pods in b:\n got %v\nwant %q", err, want)
	}
	if _, err := bob.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a RoleBinding granted a cluster-wide list: %v", err)
	}
	if err := bob.CoreV1().Pods("a").Delete(ctx, "x", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("delete granted by a read role: %v", err)
	}
	// Deleting the binding revokes.
	if err := rbac.RoleBindings("a").Delete(ctx, "bob-reads-pods", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagation, "list pods in a refused after the binding is deleted", func() error {
		_, err := bob.CoreV1().Pods("a").List(ctx, metav1.ListOptions{})
		return forbidden(err)
	})
}

func TestRBACClusterRoleBindingToGroup(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	carol := e.clientFor(t, "carol", "auditors")
	dave := e.clientFor(t, "dave", "devs")
	rbac := e.admin.RbacV1()
	if _, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "ns-and-cm-reader"},
		Rules: []rbacv1.PolicyRule{{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"namespaces", "configmaps"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "auditors"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, Name: "auditors"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "ns-and-cm-reader"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagation, "carol lists namespaces", func() error {
		_, err := carol.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		return err
	})
	if _, err := carol.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("cluster-wide list of configmaps: %v", err)
	}
	if _, err := carol.CoreV1().ConfigMaps("kube-system").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("list of configmaps in a namespace: %v", err)
	}
	if _, err := dave.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a user outside the group: %v", err)
	}
}

func TestRBACResourceNamesAndSubresources(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	mustNS(t, e, "a")
	for _, n := range []string{"allowed", "other"} {
		if _, err := e.admin.CoreV1().ConfigMaps("a").Create(ctx, cm(n, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}
	if _, err := e.admin.CoreV1().Pods("a").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rbac := e.admin.RbacV1()
	if _, err := rbac.Roles("a").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "narrow"},
		Rules: []rbacv1.PolicyRule{
			{Verbs: []string{"get", "list", "watch"}, APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"allowed"}},
			{Verbs: []string{"get", "update"}, APIGroups: []string{""}, Resources: []string{"pods/status"}},
		}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.RoleBindings("a").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "narrow"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: "erin"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "narrow"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	erin := e.clientFor(t, "erin")
	eventually(t, propagation, "get the named configmap", func() error {
		_, err := erin.CoreV1().ConfigMaps("a").Get(ctx, "allowed", metav1.GetOptions{})
		return err
	})
	_, err := erin.CoreV1().ConfigMaps("a").Get(ctx, "other", metav1.GetOptions{})
	want := `configmaps "other" is forbidden: User "erin" cannot get resource "configmaps" in API group "" in the namespace "a"`
	if !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("get other:\n got %v\nwant %q", err, want)
	}
	if _, err := erin.CoreV1().ConfigMaps("a").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("resourceNames granted a list: %v", err)
	}
	// A list or watch of the one allowed name (as a single-object informer
	// does) is a request for that name, as upstream.
	one := metav1.ListOptions{FieldSelector: "metadata.name=allowed"}
	if l, err := erin.CoreV1().ConfigMaps("a").List(ctx, one); err != nil || len(l.Items) != 1 {
		t.Fatalf("list by metadata.name: %v", err)
	}
	w, err := erin.CoreV1().ConfigMaps("a").Watch(ctx, one)
	if err != nil {
		t.Fatalf("watch by metadata.name: %v", err)
	}
	w.Stop()
	_, err = erin.CoreV1().ConfigMaps("a").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=other"})
	if want := `configmaps "other" is forbidden: User "erin" cannot list resource "configmaps" in API group "" in the namespace "a"`; !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("list other by name:\n got %v\nwant %q", err, want)
	}

	// pods/status is allowed, the pod itself is not.
	st := &corev1.Pod{}
	if err := erin.CoreV1().RESTClient().Get().Namespace("a").Resource("pods").Name("p").SubResource("status").Do(ctx).Into(st); err != nil {
		t.Fatalf("get pods/status: %v", err)
	}
	st.Status.Message = "seen by erin"
	if _, err := erin.CoreV1().Pods("a").UpdateStatus(ctx, st, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update pods/status: %v", err)
	}
	_, err = erin.CoreV1().Pods("a").Get(ctx, "p", metav1.GetOptions{})
	want = `pods "p" is forbidden: User "erin" cannot get resource "pods" in API group "" in the namespace "a"`
	if !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("get pod:\n got %v\nwant %q", err, want)
	}
	_, err = erin.CoreV1().Pods("a").Update(ctx, st, metav1.UpdateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("update pod: %v", err)
	}
}

func TestRBACSchedulerIdentity(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	mustNS(t, e, "apps")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:local"}}}}
	if _, err := e.admin.CoreV1().Pods("apps").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The bootstrap policy exists before Serve, so no waiting: the first
	// request waits for the index to sync, never for a watch event.
	sched := e.clientFor(t, "system:kube-scheduler")
	if _, err := sched.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("list nodes: %v", err)
	}
	if _, err := sched.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("list pods: %v", err)
	}
	if err := sched.CoreV1().Pods("apps").Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Target: corev1.ObjectReference{Kind: "Node", Name: "w1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	got, err := e.admin.CoreV1().Pods("apps").Get(ctx, "p", metav1.GetOptions{})
	if err != nil || got.Spec.NodeName != "w1" {
		t.Fatalf("after bind: %v %v", got.Spec.NodeName, err)
	}
	err = sched.CoreV1().Namespaces().Delete(ctx, "apps", metav1.DeleteOptions{})
	want := `namespaces "apps" is forbidden: User "system:kube-scheduler" cannot delete resource "namespaces" in API group "" in the namespace "apps"`
	if !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("delete namespace:\n got %v\nwant %q", err, want)
	}
	if _, err := sched.CoreV1().Secrets("apps").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list secrets: %v", err)
	}
	// Its leader-election lease in kube-system.
	if _, err := sched.CoordinationV1().Leases("kube-system").Get(ctx, "kube-scheduler", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get lease: %v", err)
	}
	// A node agent may write its node but not bind pods.
	node := e.clientFor(t, "system:node:w1", "system:nodes")
	if _, err := node.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("node registers: %v", err)
	}
	if err := node.CoreV1().Pods("apps").Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Target: corev1.ObjectReference{Kind: "Node", Name: "w1"}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("node binds: %v", err)
	}
}

func TestRBACBootstrapKeepsEditsAndRecreates(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	crs := e.admin.RbacV1().ClusterRoles()
	dns, err := crs.Get(ctx, "system:kforge:dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dns.Rules = append(dns.Rules, rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"configmaps"}})
	if _, err := crs.Update(ctx, dns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.RbacV1().ClusterRoleBindings().Delete(ctx, "system:kforge:dns", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Bootstrap(ctx); err != nil {
		t.Fatalf("second bootstrap: %v", err)
	}
	after, err := crs.Get(ctx, "system:kforge:dns", metav1.GetOptions{})
	if err != nil || len(after.Rules) != len(dns.Rules) {
		t.Fatalf("bootstrap overwrote an edited role: %v rules, want %d (%v)", len(after.Rules), len(dns.Rules), err)
	}
	if _, err := e.admin.RbacV1().ClusterRoleBindings().Get(ctx, "system:kforge:dns", metav1.GetOptions{}); err != nil {
		t.Fatalf("deleted binding not recreated: %v", err)
	}

	// A role from an older version lacks a rule this version grants: the
	// next bootstrap adds it and keeps the operator's extra one; a role
	// annotated autoupdate=false is left as it is.
	after.Rules = after.Rules[1:]
	if _, err := crs.Update(ctx, after, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sched, err := crs.Get(ctx, "system:kube-scheduler", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sched.Annotations = map[string]string{"rbac.authorization.kubernetes.io/autoupdate": "false"}
	sched.Rules = sched.Rules[:1]
	if _, err := crs.Update(ctx, sched, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Bootstrap(ctx); err != nil {
		t.Fatalf("third bootstrap: %v", err)
	}
	again, err := crs.Get(ctx, "system:kforge:dns", metav1.GetOptions{})
	if err != nil || len(again.Rules) != len(dns.Rules) {
		t.Fatalf("bootstrap did not restore the missing rule: %d rules, want %d (%v)", len(again.Rules), len(dns.Rules), err)
	}
	if s2, _ := crs.Get(ctx, "system:kube-scheduler", metav1.GetOptions{}); len(s2.Rules) != 1 {
		t.Errorf("a role annotated autoupdate=false was changed: %d rules", len(s2.Rules))
	}
}

// Until the index has loaded, a non-master is never allowed: it waits,
// then gets 503. Masters do not depend on the index.
func TestRBACNotSyncedIs503(t *testing.T) {
	etcd := etcdtest.Start(t)
	srv, err := New(Options{Store: storage.New(etcd), ServiceCIDR: "10.96.0.0/16", AuthzSyncTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t)
	as := func(cn string, orgs ...string) *http.Request {
		c, _ := ca.issue(t, cn, orgs, false)
		b, _ := pem.Decode(c)
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/version", nil)
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert, ca.cert}}}
		return r
	}
	// Serve was never called, so the index never syncs.
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, as("bob"))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("unsynced: %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	srv.ServeHTTP(w, as("admin", "system:masters"))
	if w.Code != http.StatusOK {
		t.Fatalf("master: %d %s", w.Code, w.Body)
	}
}
