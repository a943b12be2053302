package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"kforge.dev/kforge/controlplane/apiserver/rbac"
)

// startIndexes runs the RBAC index and the object cache in goroutines the first
// time it is called and returns a func that stops them and waits for them;
// later calls return nil (the first caller owns the goroutines).
func (s *Server) startIndexes(ctx context.Context) (stop func()) {
	s.indexOnce.Do(func() {
		ctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { s.authz.Run(ctx) })
		wg.Go(func() { s.store.Follow(ctx, "node-graph", podsPrefix, s.nodes, s.log) })
		wg.Go(func() { s.store.Follow(ctx, "cache", "/registry/", s.cache, s.log) })
		wg.Go(func() { s.store.Follow(ctx, "crds", s.crdRes().KeyPrefix(""), s.crds, s.log) })
		wg.Go(func() { s.crds.run(ctx) })
		stop = func() {
			cancel()
			wg.Wait()
		}
	})
	return stop
}

// isResourcePath tells resource requests (api/v1/RES..., apis/G/V/RES...)
// from the rest (discovery, /version, /): upstream's split, which decides
// between resource rules and nonResourceURLs rules.
func isResourcePath(parts []string) bool {
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		return true
	case len(parts) >= 4 && parts[0] == "apis":
		return true
	}
	return false
}

// authorize allows system:masters everything and asks RBAC about everyone
// else. A denial is a 403 Status with upstream's message.
func (s *Server) authorize(r *http.Request, req *request) error {
	if req.user.in(rbac.Masters) {
		return nil
	}
	at := rbac.Attributes{
		User: rbac.User{Name: req.user.Name, Groups: req.user.Groups}, Verb: req.verb,
		ResourceRequest: true, APIGroup: req.res.Group, Resource: req.res.Plural, Subresource: req.sub,
		Namespace: req.ns, Name: req.name,
	}
	// As upstream: a namespace object is in its own namespace, so a
	// RoleBinding there can grant reading it.
	if req.res.Group == "" && req.res.Plural == "namespaces" && req.name != "" {
		at.Namespace = req.name
	}
	// As upstream: a list or watch of one object by metadata.name is a
	// request for that name, so resourceNames rules can grant it (an
	// informer on a single node or secret).
	if (req.verb == "list" || req.verb == "watch") && req.name == "" {
		if fs, err := fields.ParseSelector(r.URL.Query().Get("fieldSelector")); err == nil {
			if name, ok := fs.RequiresExactMatch("metadata.name"); ok && len(path.IsValidPathSegmentName(name)) == 0 {
				at.Name = name
			}
		}
	}
	allowed, reason, err := s.allows(r.Context(), at)
	if err != nil || allowed {
		return err
	}
	resource := at.Resource
	if at.Subresource != "" {
		resource += "/" + at.Subresource
	}
	what := fmt.Sprintf("User %q cannot %s resource %q in API group %q", at.User.Name, at.Verb, resource, at.APIGroup)
	if at.Namespace != "" {
		what += fmt.Sprintf(" in the namespace %q", at.Namespace)
	} else {
		what += " at the cluster scope"
	}
	if reason != "" {
		what += ": " + reason
	}
	return apierrors.NewForbidden(req.gr(), at.Name, errors.New(what))
}

// authorizeNonResource checks a request for a path that is not a resource
// (discovery, /version) against nonResourceURLs rules.
func (s *Server) authorizeNonResource(ctx context.Context, u user, method, path string) error {
	if u.in(rbac.Masters) {
		return nil
	}
	verb := strings.ToLower(method)
	allowed, reason, err := s.allows(ctx, rbac.Attributes{User: rbac.User{Name: u.Name, Groups: u.Groups}, Verb: verb, Path: path})
	if err != nil || allowed {
		return err
	}
	what := fmt.Sprintf("User %q cannot %s path %q", u.Name, verb, path)
	if reason != "" {
		what += ": " + reason
	}
	return apierrors.NewForbidden(schema.GroupResource{}, "", errors.New(what))
}

// allows asks the authorizer chain, as upstream's
// --authorization-mode=Node,RBAC: the Node authorizer (nodeauthz.go),
// then RBAC. Every authorization decision goes through it.
func (s *Server) allows(ctx context.Context, at rbac.Attributes) (bool, string, error) {
	ok, nodeReason, err := s.nodeAuthorize(ctx, at)
	if err != nil || ok {
		return ok, "", err
	}
	ok, reason, err := s.rbacAllows(ctx, at)
	if !ok && nodeReason != "" {
		if reason == "" {
			reason = nodeReason
		} else {
			reason = nodeReason + "; " + reason
		}
	}
	return ok, reason, err
}

// rbacAllows waits (briefly) for the RBAC index to sync, then asks it: a
// request is never allowed by an index that has not loaded yet.
func (s *Server) rbacAllows(ctx context.Context, at rbac.Attributes) (bool, string, error) {
	if err := s.authz.WaitForSync(ctx, s.cfg.AuthzSyncTimeout); err != nil {
		return false, "", apierrors.NewServiceUnavailable("authorization is not ready yet: " + err.Error())
	}
	allowed, reason := s.authz.Authorize(at)
	return allowed, reason, nil
}

// bootstrapRBAC creates the bootstrap roles and bindings that do not exist;
// an existing object, perhaps edited by an operator, is left alone.
func (s *Server) bootstrapRBAC(ctx context.Context) error {
	p := rbac.Bootstrap()
	type item struct {
		kind string
		obj  runtime.Object
	}
	var items []item
	for _, o := range p.ClusterRoles {
		items = append(items, item{"ClusterRole", o})
	}
	for _, o := range p.ClusterRoleBindings {
		items = append(items, item{"ClusterRoleBinding", o})
	}
	for _, o := range p.Roles {
		items = append(items, item{"Role", o})
	}
	for _, o := range p.RoleBindings {
		items = append(items, item{"RoleBinding", o})
	}
	for _, it := range items {
		res := s.reg.ByKind(rbacv1.GroupName, it.kind)
		if res == nil {
			return fmt.Errorf("apiserver: bootstrap RBAC: %s is not served", it.kind)
		}
		m, err := meta.Accessor(it.obj)
		if err != nil {
			return fmt.Errorf("apiserver: bootstrap RBAC: %w", err)
		}
		_, err = s.create(ctx, res, m.GetNamespace(), it.obj)
		if apierrors.IsAlreadyExists(err) {
			err = s.reconcileBootstrap(ctx, res, m.GetNamespace(), m.GetName(), it.obj)
		}
		if err != nil {
			return fmt.Errorf("apiserver: bootstrap RBAC: %s %s: %w", it.kind, m.GetName(), err)
		}
	}
	return s.dropNodeGrants(ctx)
}

// autoupdateAnnotation set to "false" on a bootstrap role or binding keeps
// the apiserver from adding to it, as upstream.
const autoupdateAnnotation = "rbac.authorization.kubernetes.io/autoupdate"

// reconcileBootstrap brings an existing bootstrap role or binding up to
// what this version grants, as upstream's reconciliation does: rules and
// subjects it lacks are added, nothing is removed (an operator's additions
// stay), and one annotated autoupdate=false is left alone. So an upgraded
// cluster's roles gain the rights new code needs. Roles with an
// aggregationRule are the aggregation controller's to fill.
func (s *Server) reconcileBootstrap(ctx context.Context, res *Resource, ns, name string, want runtime.Object) error {
	_, err := s.guaranteedUpdate(ctx, res, ns, name, "", func(old runtime.Object) (runtime.Object, error) {
		m, err := meta.Accessor(old)
		if err != nil {
			return nil, err
		}
		if m.GetAnnotations()[autoupdateAnnotation] == "false" {
			return nil, errNoChange
		}
		changed := false
		switch cur := old.(type) {
		case *rbacv1.ClusterRole:
			if cur.AggregationRule == nil {
				cur.Rules, changed = addMissing(cur.Rules, want.(*rbacv1.ClusterRole).Rules)
			}
		case *rbacv1.Role:
			cur.Rules, changed = addMissing(cur.Rules, want.(*rbacv1.Role).Rules)
		case *rbacv1.ClusterRoleBinding:
			cur.Subjects, changed = addMissing(cur.Subjects, want.(*rbacv1.ClusterRoleBinding).Subjects)
		case *rbacv1.RoleBinding:
			cur.Subjects, changed = addMissing(cur.Subjects, want.(*rbacv1.RoleBinding).Subjects)
		}
		if !changed {
			return nil, errNoChange
		}
		return old, nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	return err
}

// errNoChange ends a reconcile update that has nothing to write.
var errNoChange = errors.New("no change")

// addMissing appends to have each of want's items it does not hold.
func addMissing[T any](have, want []T) ([]T, bool) {
	changed := false
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h T) bool { return equality.Semantic.DeepEqual(h, w) }) {
			have = append(have, w)
			changed = true
		}
	}
	return have, changed
}

// dropNodeGrants takes back what an older kforge's bootstrap granted every
// node through RBAC (the system:nodes group in the system:node binding,
// and the node-lease RoleBinding), as upstream's reconciliation empties
// the system:node binding once the Node authorizer is on: a node's rights
// come from the Node authorizer alone.
func (s *Server) dropNodeGrants(ctx context.Context) error {
	crb := s.reg.ByKind(rbacv1.GroupName, "ClusterRoleBinding")
	_, err := s.guaranteedUpdate(ctx, crb, "", "system:node", "", func(old runtime.Object) (runtime.Object, error) {
		b := old.(*rbacv1.ClusterRoleBinding)
		kept := b.Subjects[:0]
		for _, sub := range b.Subjects {
			if sub.Kind != rbacv1.GroupKind || sub.Name != rbac.Nodes {
				kept = append(kept, sub)
			}
		}
		b.Subjects = kept
		return b, nil
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("apiserver: bootstrap RBAC: the system:node binding: %w", err)
	}
	rb := s.reg.ByKind(rbacv1.GroupName, "RoleBinding")
	if _, err := s.delete(ctx, rb, corev1.NamespaceNodeLease, "system:kforge:node-lease", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("apiserver: bootstrap RBAC: the node-lease binding: %w", err)
	}
	return nil
}
