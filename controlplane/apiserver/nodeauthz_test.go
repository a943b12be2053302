package apiserver

import (
	"context"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// nodePods makes, in namespace default, secrets s1 and s2, configmap c1,
// the default service account, pod p1 on w1 (using s1 and c1) and pod p2
// on w2 (using s2).
func nodePods(t *testing.T, admin *kubernetes.Clientset) (p1, p2 *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	for _, n := range []string{"s1", "s2", "unused"} {
		must(admin.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})).get(t)
	}
	must(admin.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c1"}}, metav1.CreateOptions{})).get(t)
	if _, err := admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := func(name, node, secret string, env bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
			Volumes:    []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}}}}}
		if env {
			p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c1"}}}}
		}
		return must(admin.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})).get(t)
	}
	return pod("p1", "w1", "s1", true), pod("p2", "w2", "s2", false)
}

// A node reads only what its own pods use and writes only its own
// objects: upstream's Node authorizer and NodeRestriction admission.
func TestNodeAuthorizerAndRestriction(t *testing.T) {
	e := startIdentityServer(t)
	ctx := context.Background()
	p1, p2 := nodePods(t, e.admin)
	w1 := e.clientFor(t, "system:node:w1", "system:nodes")
	forbidden := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s: %v, want 403", what, err)
		}
	}
	ok := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	_, err := w1.CoreV1().Secrets("default").Get(ctx, "s1", metav1.GetOptions{})
	ok("its pod's secret", err)
	_, err = w1.CoreV1().ConfigMaps("default").Get(ctx, "c1", metav1.GetOptions{})
	ok("its pod's configmap", err)
	_, err = w1.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=s1"})
	ok("its pod's secret, listed by name", err)
	_, err = w1.CoreV1().Secrets("default").Get(ctx, "s2", metav1.GetOptions{})
	forbidden("another node's pod's secret", err)
	_, err = w1.CoreV1().Secrets("default").Get(ctx, "unused", metav1.GetOptions{})
	forbidden("a secret no pod uses", err)
	_, err = w1.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
	forbidden("every secret", err)
	_, err = w1.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mine"}}, metav1.CreateOptions{})
	forbidden("creating a secret", err)

	// Its own Node, not another's, and no restricted labels.
	w1Node := must(w1.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}}, metav1.CreateOptions{})).get(t)
	_, err = w1.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w2"}}, metav1.CreateOptions{})
	forbidden("creating another node", err)
	must(e.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w2"}}, metav1.CreateOptions{})).get(t)
	w2Node := must(w1.CoreV1().Nodes().Get(ctx, "w2", metav1.GetOptions{})).get(t)
	w2Node.Labels = map[string]string{"x": "y"}
	_, err = w1.CoreV1().Nodes().Update(ctx, w2Node, metav1.UpdateOptions{})
	forbidden("updating another node", err)
	_, err = w1.CoreV1().Nodes().UpdateStatus(ctx, w2Node, metav1.UpdateOptions{})
	forbidden("updating another node's status", err)
	forbidden("deleting another node", w1.CoreV1().Nodes().Delete(ctx, "w2", metav1.DeleteOptions{}))
	w1Node.Labels = map[string]string{"kubernetes.io/hostname": "w1"}
	w1Node = must(w1.CoreV1().Nodes().Update(ctx, w1Node, metav1.UpdateOptions{})).get(t)
	w1Node.Labels["node-restriction.kubernetes.io/trusted"] = "yes"
	_, err = w1.CoreV1().Nodes().Update(ctx, w1Node, metav1.UpdateOptions{})
	forbidden("labelling itself node-restriction.kubernetes.io/", err)
	w1Node.Labels = map[string]string{"kubernetes.io/hostname": "w1"}
	w1Node.Spec.Taints = []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}
	_, err = w1.CoreV1().Nodes().Update(ctx, w1Node, metav1.UpdateOptions{})
	forbidden("changing its taints", err)

	// Its Lease only, in kube-node-lease.
	_, err = w1.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "w1"}}, metav1.CreateOptions{})
	ok("its lease", err)
	_, err = w1.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "w2"}}, metav1.CreateOptions{})
	forbidden("another node's lease", err)
	_, err = w1.CoordinationV1().Leases("kube-system").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "w1"}}, metav1.CreateOptions{})
	forbidden("a lease elsewhere", err)

	// Pods: status and delete on its own only; no pods of its own making.
	_, err = w1.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=w1"})
	ok("listing its pods", err)
	p1.Status.Phase = corev1.PodRunning
	_, err = w1.CoreV1().Pods("default").UpdateStatus(ctx, p1, metav1.UpdateOptions{})
	ok("its pod's status", err)
	p2.Status.Phase = corev1.PodRunning
	_, err = w1.CoreV1().Pods("default").UpdateStatus(ctx, p2, metav1.UpdateOptions{})
	forbidden("another node's pod's status", err)
	forbidden("deleting another node's pod", w1.CoreV1().Pods("default").Delete(ctx, "p2", metav1.DeleteOptions{}))
	_, err = w1.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"},
		Spec: corev1.PodSpec{NodeName: "w1", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	forbidden("creating a pod that is not a mirror", err)

	// Tokens: for its own pods, bound to them.
	sas := w1.CoreV1().ServiceAccounts("default")
	bound := func(p *corev1.Pod) *authenticationv1.TokenRequest {
		return &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}
	}
	_, err = sas.CreateToken(ctx, "default", bound(p1), metav1.CreateOptions{})
	ok("a token for its pod", err)
	_, err = sas.CreateToken(ctx, "default", bound(p2), metav1.CreateOptions{})
	forbidden("a token for another node's pod", err)
	_, err = sas.CreateToken(ctx, "default", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	forbidden("an unbound token", err)

	// Deleting its own pod works; the pod's secret is then out of reach.
	ok("deleting its pod", w1.CoreV1().Pods("default").Delete(ctx, "p1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
	if _, err := e.admin.CoreV1().Pods("default").Get(ctx, "p1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("p1 after a delete with no grace period: %v", err)
	}
	_, err = w1.CoreV1().Secrets("default").Get(ctx, "s1", metav1.GetOptions{})
	forbidden("a secret of a pod that is gone", err)
}

// `kubectl auth can-i --as=system:node:w1 --as-group=system:nodes get
// secrets/x` answers from the same chain.
func TestCanIAsANode(t *testing.T) {
	e := startIdentityServer(t)
	ctx := context.Background()
	nodePods(t, e.admin)
	cfg := &rest.Config{Host: e.host, TLSClientConfig: rest.TLSClientConfig{CAData: e.ca.pem}}
	c, k := e.ca.issue(t, "kubernetes-admin", []string{"system:masters"}, false)
	cfg.CertData, cfg.KeyData = c, k
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:node:w1", Groups: []string{"system:nodes"}}
	as := must(kubernetes.NewForConfig(cfg)).get(t)
	for _, tt := range []struct {
		verb, resource, name string
		want                 bool
	}{
		{"get", "secrets", "x", false},
		{"get", "secrets", "s1", true},
		{"get", "secrets", "s2", false},
		{"list", "secrets", "", false},
		{"get", "configmaps", "c1", true},
		{"update", "nodes", "w1", true},
		{"list", "pods", "", true},
	} {
		rev := must(as.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: "default", Verb: tt.verb, Resource: tt.resource, Name: tt.name}}}, metav1.CreateOptions{})).get(t)
		if rev.Status.Allowed != tt.want {
			t.Errorf("can-i %s %s/%s: %v (%s), want %v", tt.verb, tt.resource, tt.name, rev.Status.Allowed, rev.Status.Reason, tt.want)
		}
	}
}

// An older kforge bound system:node to every node; bootstrap takes that
// back, so upgraded clusters get the Node authorizer's limits too.
func TestBootstrapDropsOldNodeGrants(t *testing.T) {
	e := startIdentityServer(t)
	ctx := context.Background()
	crbs := e.admin.RbacV1().ClusterRoleBindings()
	b := must(crbs.Get(ctx, "system:node", metav1.GetOptions{})).get(t)
	b.Subjects = []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:nodes"},
		{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "someone"}}
	must(crbs.Update(ctx, b, metav1.UpdateOptions{})).get(t)
	must(e.admin.RbacV1().RoleBindings(corev1.NamespaceNodeLease).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "system:kforge:node-lease"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:nodes"}}}, metav1.CreateOptions{})).get(t)
	if err := e.srv.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	b = must(crbs.Get(ctx, "system:node", metav1.GetOptions{})).get(t)
	if len(b.Subjects) != 1 || b.Subjects[0].Name != "someone" {
		t.Errorf("system:node subjects after bootstrap: %+v", b.Subjects)
	}
	if _, err := e.admin.RbacV1().RoleBindings(corev1.NamespaceNodeLease).Get(ctx, "system:kforge:node-lease", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the node-lease binding after bootstrap: %v", err)
	}
}
