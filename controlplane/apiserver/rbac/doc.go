// Package rbac is the apiserver's authorizer: rbac.authorization.k8s.io/v1
// semantics evaluated from an in-memory index of Roles, ClusterRoles,
// RoleBindings and ClusterRoleBindings that a watch on etcd keeps current,
// so a request never reads etcd to be authorized. It also holds the
// bootstrap policy: the roles and bindings for kforge's own component
// identities (the users and groups of the certificates kforge's PKI
// issues: scheduler, controller manager, proxy, ingress, DNS), the
// user-facing cluster-admin role and the aggregated admin/edit/view
// roles, and NodeRules, what the apiserver's Node authorizer grants a node
// agent (nodes get nothing through RBAC).
//
// RBAC only ever allows: a request is allowed when some binding that
// applies to the user grants a rule matching it, and denied otherwise.
// Escalation prevention on writes to roles and bindings (upstream's
// "escalate" and "bind" verbs) is not implemented here.
package rbac
