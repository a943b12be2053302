package apiserver

import (
	"context"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A user who may write roles and bindings still cannot grant what she
// does not hold: RBAC is not a way around itself.
func TestRBACEscalationIsRefused(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	mustNS(t, e, "team")
	admin := e.admin.RbacV1()
	// dana manages roles and bindings in "team" and may read pods there.
	if _, err := admin.Roles("team").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "rbac-manager"},
		Rules: []rbacv1.PolicyRule{
			{Verbs: []string{"create", "update", "patch", "get", "list"}, APIGroups: []string{rbacv1.GroupName}, Resources: []string{"roles", "rolebindings"}},
			{Verbs: []string{"get", "list"}, APIGroups: []string{""}, Resources: []string{"pods"}},
		}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RoleBindings("team").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "dana"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: "dana"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "rbac-manager"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dana := e.clientFor(t, "dana", "devs").RbacV1()
	role := func(name string, rules ...rbacv1.PolicyRule) *rbacv1.Role {
		return &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	}
	readPods := rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"pods"}}
	readSecrets := rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"secrets"}}

	// Granting what she holds is fine (once her binding has reached the index).
	eventually(t, propagation, "dana creates a role within her rights", func() error {
		_, err := dana.Roles("team").Create(ctx, role("pod-getter", readPods), metav1.CreateOptions{})
		return err
	})
	// More than she holds is refused, with upstream's message.
	_, err := dana.Roles("team").Create(ctx, role("secret-getter", readSecrets), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "is attempting to grant RBAC permissions not currently held") ||
		!strings.Contains(err.Error(), `Resources:["secrets"]`) {
		t.Fatalf("escalating role: %v", err)
	}
	// So is widening an existing role by update.
	r, err := dana.Roles("team").Get(ctx, "pod-getter", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.Rules = append(r.Rules, readSecrets)
	if _, err := dana.Roles("team").Update(ctx, r, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("escalating update: %v", err)
	}
	// Binding herself to cluster-admin is refused; binding a role she
	// could have written is not.
	bind := func(name, kind, roleName string) error {
		_, err := dana.RoleBindings("team").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: "dana"}},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: roleName}}, metav1.CreateOptions{})
		return err
	}
	if err := bind("grab", "ClusterRole", "cluster-admin"); !apierrors.IsForbidden(err) {
		t.Fatalf("binding cluster-admin: %v", err)
	}
	if err := bind("ok", "Role", "pod-getter"); err != nil {
		t.Fatalf("binding a role she holds: %v", err)
	}
	// The "escalate" verb lifts the check, as upstream.
	if _, err := admin.Roles("team").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "escalator"},
		Rules: []rbacv1.PolicyRule{{Verbs: []string{"escalate"}, APIGroups: []string{rbacv1.GroupName}, Resources: []string{"roles"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RoleBindings("team").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "dana-escalates"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: "dana"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "escalator"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagation, "escalate verb allows a wider role", func() error {
		_, err := dana.Roles("team").Create(ctx, role("secret-getter", readSecrets), metav1.CreateOptions{})
		return err
	})
}
