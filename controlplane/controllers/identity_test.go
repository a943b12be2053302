package controllers

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	core "k8s.io/client-go/testing"
)

func TestRootCAPublisherCreatesAndRepairs(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}
	gone := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "old"}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}
	f := newFixture(t, ns, gone)
	f.load(ns, gone)
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	c, err := NewRootCACertPublisher(f.client, f.factory.Core().V1().Namespaces(), ca, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.sync(ctx, "team"); err != nil || f.count("create", "configmaps", "") != 1 {
		t.Fatalf("err %v, writes %v", err, f.writes())
	}
	made := f.writes()[0].(core.CreateAction).GetObject().(*corev1.ConfigMap)
	if made.Name != RootCAConfigMap || made.Data["ca.crt"] != string(ca) {
		t.Fatalf("made %+v", made)
	}
	// Edited: put back. Current: left alone.
	edited := made.DeepCopy()
	edited.Data = map[string]string{"ca.crt": "mine", "extra": "x"}
	if err := c.cmInformer.GetIndexer().Add(edited); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	if err := c.sync(ctx, "team"); err != nil || f.count("update", "configmaps", "") != 1 {
		t.Fatalf("repair: err %v, writes %v", err, f.writes())
	}
	if got := f.writes()[0].(core.UpdateAction).GetObject().(*corev1.ConfigMap).Data; len(got) != 1 || got["ca.crt"] != string(ca) {
		t.Fatalf("repaired to %v", got)
	}
	if err := c.cmInformer.GetIndexer().Update(made); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	if err := c.sync(ctx, "team"); err != nil || len(f.writes()) != 0 {
		t.Fatalf("current: err %v, writes %v", err, f.writes())
	}
	// A terminating namespace gets nothing.
	if err := c.sync(ctx, "old"); err != nil || len(f.writes()) != 0 {
		t.Fatalf("terminating: err %v, writes %v", err, f.writes())
	}
}

func TestClusterRoleAggregation(t *testing.T) {
	view := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "view"},
		AggregationRule: &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{
			{MatchLabels: map[string]string{"rbac.authorization.k8s.io/aggregate-to-view": "true"}}}},
		Rules: []rbacv1.PolicyRule{{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"stale"}}}}
	rule := func(res string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{Verbs: []string{"get", "list", "watch"}, APIGroups: []string{"example.com"}, Resources: []string{res}}
	}
	part := func(name string, label bool, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
		r := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
		if label {
			r.Labels = map[string]string{"rbac.authorization.k8s.io/aggregate-to-view": "true"}
		}
		return r
	}
	b := part("b-widgets", true, rule("widgets"), rule("gadgets"))
	a := part("a-gadgets", true, rule("gadgets"))
	other := part("unlabelled", false, rule("secrets"))
	f := newFixture(t, view, a, b, other)
	inf := f.factory.Rbac().V1().ClusterRoles()
	for _, o := range []*rbacv1.ClusterRole{view, a, b, other} {
		if err := inf.Informer().GetIndexer().Add(o); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewClusterRoleAggregationController(f.client, inf, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.sync(ctx, "view"); err != nil || f.count("update", "clusterroles", "") != 1 {
		t.Fatalf("err %v, writes %v", err, f.writes())
	}
	got := f.writes()[0].(core.UpdateAction).GetObject().(*rbacv1.ClusterRole).Rules
	// The union in role-name order, each rule once; the stale rule gone.
	if len(got) != 2 || got[0].Resources[0] != "gadgets" || got[1].Resources[0] != "widgets" {
		t.Fatalf("aggregated rules %+v", got)
	}
	// Already current: no write. Not aggregated: nothing.
	current := view.DeepCopy()
	current.Rules = got
	if err := inf.Informer().GetIndexer().Update(current); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	if err := c.sync(ctx, "view"); err != nil || len(f.writes()) != 0 {
		t.Fatalf("current: err %v, writes %v", err, f.writes())
	}
	if err := c.sync(ctx, "unlabelled"); err != nil || len(f.writes()) != 0 {
		t.Fatalf("a plain role: err %v, writes %v", err, f.writes())
	}
}
