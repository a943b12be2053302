package apiserver

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"

	"kforge.dev/kforge/controlplane/apiserver/rbac"
)

// checkEscalation keeps RBAC from being a way around itself, as upstream
// does: whoever writes a Role or ClusterRole must already hold every
// permission in it (or be allowed the "escalate" verb on it), and whoever
// writes a binding must hold the permissions of the role it grants (or be
// allowed "bind" on that role). Writes made by the apiserver itself (no
// user) and by system:masters pass.
func (s *Server) checkEscalation(ctx context.Context, res *Resource, obj runtime.Object) error {
	u := writeInfoFrom(ctx).user
	if u.Name == "" || u.in(rbac.Masters) {
		return nil
	}
	var (
		ns, name, special, resource string
		rules                       []rbacv1.PolicyRule
	)
	switch o := obj.(type) {
	case *rbacv1.Role:
		ns, name, special, resource, rules = o.Namespace, o.Name, "escalate", "roles", o.Rules
	case *rbacv1.ClusterRole:
		name, special, resource, rules = o.Name, "escalate", "clusterroles", o.Rules
	case *rbacv1.RoleBinding:
		ns, name, special = o.Namespace, o.RoleRef.Name, "bind"
		resource = "clusterroles"
		if o.RoleRef.Kind == "Role" {
			resource = "roles"
		}
	case *rbacv1.ClusterRoleBinding:
		name, special, resource = o.RoleRef.Name, "bind", "clusterroles"
	default:
		return nil
	}
	ru := rbac.User{Name: u.Name, Groups: u.Groups}
	allowed, _, err := s.rbacAllows(ctx, rbac.Attributes{User: ru, Verb: special, ResourceRequest: true,
		APIGroup: rbacv1.GroupName, Resource: resource, Namespace: ns, Name: name})
	if err != nil || allowed {
		return err
	}
	if special == "bind" {
		// The granted role, read from storage so a role created just
		// before its binding (one kubectl apply) is found.
		roleRes := s.reg.Lookup(rbacv1.GroupName, "v1", resource)
		role, err := s.get(ctx, roleRes, ns, name)
		if err != nil {
			return apierrors.NewForbidden(groupResource(res), objectName(obj),
				fmt.Errorf("user %q cannot bind %s %q, which cannot be read: %v", u.Name, resource, name, err))
		}
		switch r := role.(type) {
		case *rbacv1.Role:
			rules = r.Rules
		case *rbacv1.ClusterRole:
			rules = r.Rules
		}
	}
	owner, _ := s.authz.RulesFor(ru, ns)
	if ok, missing := rbac.Covers(owner, rules); !ok {
		return apierrors.NewForbidden(groupResource(res), objectName(obj),
			fmt.Errorf("user %q (groups=%q) is attempting to grant RBAC permissions not currently held:\n%s",
				u.Name, u.Groups, rbac.FormatRules(missing)))
	}
	return nil
}

func objectName(obj runtime.Object) string {
	if a, ok := obj.(interface{ GetName() string }); ok {
		return a.GetName()
	}
	return ""
}
