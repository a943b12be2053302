package nodeagent

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// tokenCache keeps the service-account tokens requested for the pods'
// projected volumes, as the kubelet's token manager does: a token is
// reused until 80% of its lifetime (at most 24 h) has passed, so that a
// pod's syncs — one per status change — do not each call the
// TokenRequest API and rewrite the token file.
type tokenCache struct {
	mu  sync.Mutex
	m   map[tokenKey]cachedToken
	now func() time.Time
}

// tokenKey is what a token was requested for.
type tokenKey struct {
	pod        types.UID
	account    string
	audience   string
	expiration int64 // the requested expirationSeconds, 0 for the default
}

type cachedToken struct {
	token           string
	issued, expires time.Time
}

// maxTokenAge is the longest a token is reused, whatever its lifetime.
const maxTokenAge = 24 * time.Hour

func newTokenCache() *tokenCache {
	return &tokenCache{m: map[tokenKey]cachedToken{}, now: time.Now}
}

// get returns the cached token for key while it is fresh, else the one
// request returns (with its expiry), which it caches. A nil cache
// always requests.
func (c *tokenCache) get(key tokenKey, request func() (string, time.Time, error)) (string, error) {
	if c == nil {
		tok, _, err := request()
		return tok, err
	}
	c.mu.Lock()
	t, ok := c.m[key]
	now := c.now()
	c.mu.Unlock()
	if ok && !t.stale(now) {
		return t.token, nil
	}
	tok, exp, err := request()
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, old := range c.m { // tokens of pods gone: expired, never reused
		if !now.Before(old.expires) {
			delete(c.m, k)
		}
	}
	c.m[key] = cachedToken{token: tok, issued: now, expires: exp}
	return tok, nil
}

// forgetPod drops a pod's tokens.
func (c *tokenCache) forgetPod(uid types.UID) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if k.pod == uid {
			delete(c.m, k)
		}
	}
}

// stale reports whether 80% of the token's lifetime, or maxTokenAge,
// has passed at now.
func (t cachedToken) stale(now time.Time) bool {
	life := t.expires.Sub(t.issued)
	if life <= 0 {
		return true
	}
	return now.Sub(t.issued) > min(life*8/10, maxTokenAge)
}
