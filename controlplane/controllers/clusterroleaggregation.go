package controllers

import (
	"context"
	"log/slog"
	"sort"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	rbacinformers "k8s.io/client-go/informers/rbac/v1"
	"k8s.io/client-go/kubernetes"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
)

// ClusterRoleAggregationController fills the rules of every ClusterRole
// with an aggregationRule (admin, edit, view and any a user makes) with
// the union of the rules of the ClusterRoles its selectors match, as
// upstream's clusterrole-aggregation controller: a role labelled
// rbac.authorization.k8s.io/aggregate-to-view: "true" joins view. Its
// queue holds the names of aggregated roles; any ClusterRole change
// enqueues them all.
type ClusterRoleAggregationController struct {
	*loop
	client kubernetes.Interface
	roles  rbaclisters.ClusterRoleLister
}

// NewClusterRoleAggregationController wires the controller to the shared
// ClusterRole informer.
func NewClusterRoleAggregationController(client kubernetes.Interface, inf rbacinformers.ClusterRoleInformer, log *slog.Logger, m *metrics) (*ClusterRoleAggregationController, error) {
	c := &ClusterRoleAggregationController{client: client, roles: inf.Lister()}
	c.loop = newLoop(NameClusterRoleAggregation, log, m, c.sync, inf.Informer().HasSynced)
	all := func(any) { c.enqueueAggregated() }
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    all,
		UpdateFunc: func(_, n any) { all(n) },
		DeleteFunc: all,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// enqueueAggregated queues every aggregated role: any change may add to or
// take from any of them.
func (c *ClusterRoleAggregationController) enqueueAggregated() {
	roles, err := c.roles.List(labels.Everything())
	if err != nil {
		return
	}
	for _, r := range roles {
		if r.AggregationRule != nil {
			c.queue.Add(r.Name)
		}
	}
}

func (c *ClusterRoleAggregationController) sync(ctx context.Context, name string) error {
	role, err := c.roles.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if role.AggregationRule == nil {
		return nil
	}
	want, err := aggregatedRules(c.roles, role)
	if err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(role.Rules, want) {
		return nil
	}
	role = role.DeepCopy()
	role.Rules = want
	_, err = c.client.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// aggregatedRules is the union, in role-name order and without repeats, of
// the rules of the ClusterRoles role's selectors match (role itself aside).
func aggregatedRules(lister rbaclisters.ClusterRoleLister, role *rbacv1.ClusterRole) ([]rbacv1.PolicyRule, error) {
	seen := map[string]bool{}
	var sources []*rbacv1.ClusterRole
	for _, s := range role.AggregationRule.ClusterRoleSelectors {
		sel, err := metav1.LabelSelectorAsSelector(&s)
		if err != nil {
			// An invalid selector selects nothing; validation keeps them out.
			continue
		}
		matched, err := lister.List(sel)
		if err != nil {
			return nil, err
		}
		for _, r := range matched {
			if r.Name != role.Name && !seen[r.Name] {
				seen[r.Name] = true
				sources = append(sources, r)
			}
		}
	}
	sort.Slice(sources, func(i, j int) bool { return sources[i].Name < sources[j].Name })
	rules := []rbacv1.PolicyRule{}
	for _, r := range sources {
		for _, rule := range r.Rules {
			dup := false
			for _, have := range rules {
				if equality.Semantic.DeepEqual(have, rule) {
					dup = true
					break
				}
			}
			if !dup {
				rules = append(rules, rule)
			}
		}
	}
	return rules, nil
}
