package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// user is an authenticated client.
type user struct {
	name   string
	groups []string
}

// authorizer asks the apiserver whether a user may use a node
// subresource, remembering answers for a while.
type authorizer struct {
	client            kubernetes.Interface
	node              string
	allowTTL, denyTTL time.Duration
	mu                sync.Mutex
	cache             map[string]answer
	now               func() time.Time
}

type answer struct {
	allowed bool
	reason  string
	expires time.Time
}

func newAuthorizer(c kubernetes.Interface, node string, allowTTL, denyTTL time.Duration) *authorizer {
	return &authorizer{client: c, node: node, allowTTL: allowTTL, denyTTL: denyTTL, cache: map[string]answer{}, now: time.Now}
}

// allowed is true when any of subs allows verb on this node.
func (a *authorizer) allowed(ctx context.Context, u user, verb string, subs []string) (bool, string, error) {
	var reason string
	for _, sub := range subs {
		ok, why, err := a.check(ctx, u, verb, sub)
		if err != nil || ok {
			return ok, why, err
		}
		if reason == "" {
			reason = why
		}
	}
	return false, reason, nil
}

func (a *authorizer) check(ctx context.Context, u user, verb, sub string) (bool, string, error) {
	groups := slices.Clone(u.groups)
	slices.Sort(groups)
	key := strings.Join([]string{u.name, strings.Join(groups, ","), verb, sub}, "\x00")
	now := a.now()
	a.mu.Lock()
	if ans, ok := a.cache[key]; ok && now.Before(ans.expires) {
		a.mu.Unlock()
		return ans.allowed, ans.reason, nil
	}
	a.mu.Unlock()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: u.name, Groups: u.groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: "nodes", Subresource: sub, Name: a.node},
	}}
	out, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	ans := answer{allowed: out.Status.Allowed, reason: out.Status.Reason, expires: now.Add(a.denyTTL)}
	if ans.allowed {
		ans.expires = now.Add(a.allowTTL)
	}
	a.mu.Lock()
	// Expired answers go when the cache grows: it holds one entry per
	// user, verb and subresource seen recently.
	if len(a.cache) > 1024 {
		for k, v := range a.cache {
			if !now.Before(v.expires) {
				delete(a.cache, k)
			}
		}
	}
	a.cache[key] = ans
	a.mu.Unlock()
	return ans.allowed, ans.reason, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
