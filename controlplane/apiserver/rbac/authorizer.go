package rbac

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// Prefix is the etcd prefix under which the four RBAC kinds are stored
// (/registry/rbac.authorization.k8s.io/<plural>/[<namespace>/]<name>).
const Prefix = "/registry/" + rbacv1.GroupName + "/"

// ErrNotSynced is returned by WaitForSync when the index has not loaded
// the stored roles and bindings in time.
var ErrNotSynced = errors.New("rbac: the authorization index is not synced yet")

// Authorizer answers RBAC questions from an in-memory index of the stored
// roles and bindings. Run keeps the index current; every other method is
// safe for concurrent use while it runs.
type Authorizer struct {
	store *storage.Store
	log   *slog.Logger

	mu              sync.RWMutex
	clusterRoles    map[string]*rbacv1.ClusterRole
	roles           map[string]*rbacv1.Role // "namespace/name"
	clusterBindings map[string]*rbacv1.ClusterRoleBinding
	bindings        map[string]map[string]*rbacv1.RoleBinding // namespace → name
	rev             int64                                     // the revision the index reflects

	synced     chan struct{}
	syncedOnce sync.Once
}

// New returns an Authorizer over store. It knows nothing until Run has
// listed the stored objects.
func New(store *storage.Store, log *slog.Logger) *Authorizer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Authorizer{store: store, log: log, synced: make(chan struct{})}
	a.reset()
	return a
}

func (a *Authorizer) reset() {
	a.clusterRoles = map[string]*rbacv1.ClusterRole{}
	a.roles = map[string]*rbacv1.Role{}
	a.clusterBindings = map[string]*rbacv1.ClusterRoleBinding{}
	a.bindings = map[string]map[string]*rbacv1.RoleBinding{}
}

// Run keeps the index current (storage.Follow: a list, then a watch,
// relisting when the watch ends). It returns when ctx ends; after the
// first list the index stays usable (possibly stale) across relists.
func (a *Authorizer) Run(ctx context.Context) {
	a.store.Follow(ctx, "rbac", Prefix, a, a.log)
}

// Replace loads the roles and bindings listed at rev (storage.Mirror).
func (a *Authorizer) Replace(items []storage.KV, rev int64) {
	a.mu.Lock()
	a.reset()
	for _, kv := range items {
		a.applyLocked(kv.Key, kv.Value)
	}
	a.rev = rev
	a.mu.Unlock()
	a.syncedOnce.Do(func() { close(a.synced) })
}

// Apply applies one watched change (storage.Mirror).
func (a *Authorizer) Apply(ev storage.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ev.Type == storage.Deleted {
		a.applyLocked(ev.KV.Key, nil)
	} else {
		a.applyLocked(ev.KV.Key, ev.KV.Value)
	}
	a.rev = ev.KV.ModRevision
}

// applyLocked stores (value != nil) or removes the object under key. An
// object that does not decode is treated as absent: it grants nothing.
func (a *Authorizer) applyLocked(key string, value []byte) {
	kind, rest, ok := strings.Cut(strings.TrimPrefix(key, Prefix), "/")
	if !ok || !strings.HasPrefix(key, Prefix) {
		return
	}
	ns, name, namespaced := strings.Cut(rest, "/")
	decode := func(into any) bool {
		if value == nil {
			return false
		}
		if err := json.Unmarshal(value, into); err != nil {
			a.log.Warn("rbac: ignoring undecodable object", "key", key, "err", err)
			return false
		}
		return true
	}
	switch {
	case kind == "clusterroles" && !namespaced:
		var o rbacv1.ClusterRole
		if decode(&o) {
			a.clusterRoles[rest] = &o
		} else {
			delete(a.clusterRoles, rest)
		}
	case kind == "clusterrolebindings" && !namespaced:
		var o rbacv1.ClusterRoleBinding
		if decode(&o) {
			a.clusterBindings[rest] = &o
		} else {
			delete(a.clusterBindings, rest)
		}
	case kind == "roles" && namespaced:
		var o rbacv1.Role
		if decode(&o) {
			a.roles[rest] = &o
		} else {
			delete(a.roles, rest)
		}
	case kind == "rolebindings" && namespaced:
		var o rbacv1.RoleBinding
		if decode(&o) {
			if a.bindings[ns] == nil {
				a.bindings[ns] = map[string]*rbacv1.RoleBinding{}
			}
			a.bindings[ns][name] = &o
		} else if m := a.bindings[ns]; m != nil {
			delete(m, name)
			if len(m) == 0 {
				delete(a.bindings, ns)
			}
		}
	}
}

// HasSynced reports whether the index has loaded the stored objects once.
func (a *Authorizer) HasSynced() bool {
	select {
	case <-a.synced:
		return true
	default:
		return false
	}
}

// WaitForSync waits until the index has synced, ctx ends or timeout
// passes; it returns ErrNotSynced in the last two cases.
func (a *Authorizer) WaitForSync(ctx context.Context, timeout time.Duration) error {
	if a.HasSynced() {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-a.synced:
		return nil
	case <-ctx.Done():
	case <-t.C:
	}
	return ErrNotSynced
}

// Revision is the etcd revision the index reflects.
func (a *Authorizer) Revision() int64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.rev
}

// Authorize reports whether some binding allows the request. When it does
// not, reason lists the broken references met on the way (bindings to a
// missing role), in upstream's "RBAC: ..." form, or is empty. Call it only
// after the index has synced: before that it knows no bindings and denies.
func (a *Authorizer) Authorize(at Attributes) (allowed bool, reason string) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var errs []string
	for _, b := range a.clusterBindings {
		if !subjectsInclude(b.Subjects, at.User, "") {
			continue
		}
		rules, err := a.rulesLocked(b.RoleRef, "")
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if anyRuleAllows(at, rules) {
			return true, ""
		}
	}
	// Namespaced bindings grant only namespaced resource requests in
	// their own namespace; non-resource paths need a ClusterRoleBinding.
	if at.ResourceRequest && at.Namespace != "" {
		for _, b := range a.bindings[at.Namespace] {
			if !subjectsInclude(b.Subjects, at.User, at.Namespace) {
				continue
			}
			rules, err := a.rulesLocked(b.RoleRef, at.Namespace)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			if anyRuleAllows(at, rules) {
				return true, ""
			}
		}
	}
	switch len(errs) {
	case 0:
		return false, ""
	case 1:
		return false, "RBAC: " + errs[0]
	default:
		sort.Strings(errs)
		return false, "RBAC: [" + strings.Join(errs, ", ") + "]"
	}
}

func anyRuleAllows(at Attributes, rules []rbacv1.PolicyRule) bool {
	for i := range rules {
		if RuleAllows(at, &rules[i]) {
			return true
		}
	}
	return false
}

// rulesLocked resolves a binding's roleRef: a ClusterRole anywhere, a Role
// only in the binding's namespace.
func (a *Authorizer) rulesLocked(ref rbacv1.RoleRef, namespace string) ([]rbacv1.PolicyRule, error) {
	switch {
	case ref.Kind == "ClusterRole":
		if r, ok := a.clusterRoles[ref.Name]; ok {
			return r.Rules, nil
		}
		return nil, fmt.Errorf("clusterrole.%s %q not found", rbacv1.GroupName, ref.Name)
	case ref.Kind == "Role" && namespace != "":
		if r, ok := a.roles[namespace+"/"+ref.Name]; ok {
			return r.Rules, nil
		}
		return nil, fmt.Errorf("role.%s %q not found", rbacv1.GroupName, ref.Name)
	default:
		return nil, fmt.Errorf("unsupported role reference kind: %q", ref.Kind)
	}
}

// RulesFor lists the rules that apply to a user in a namespace (cluster
// bindings plus the namespace's bindings), for SelfSubjectRulesReview.
// Broken role references are reported in incomplete.
func (a *Authorizer) RulesFor(u User, namespace string) (rules []rbacv1.PolicyRule, incomplete []string) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, b := range a.clusterBindings {
		if !subjectsInclude(b.Subjects, u, "") {
			continue
		}
		rs, err := a.rulesLocked(b.RoleRef, "")
		if err != nil {
			incomplete = append(incomplete, err.Error())
			continue
		}
		rules = append(rules, rs...)
	}
	if namespace != "" {
		for _, b := range a.bindings[namespace] {
			if !subjectsInclude(b.Subjects, u, namespace) {
				continue
			}
			rs, err := a.rulesLocked(b.RoleRef, namespace)
			if err != nil {
				incomplete = append(incomplete, err.Error())
				continue
			}
			rules = append(rules, rs...)
		}
	}
	return rules, incomplete
}
