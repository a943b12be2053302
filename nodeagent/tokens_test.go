package nodeagent

import (
	"errors"
	"testing"
	"time"
)

func TestTokenCacheReusesUntilEightyPercent(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := newTokenCache()
	c.now = func() time.Time { return now }
	calls := 0
	request := func() (string, time.Time, error) {
		calls++
		return "tok" + string(rune('0'+calls)), now.Add(time.Hour), nil
	}
	k := tokenKey{pod: "u1", account: "default"}
	for range 3 {
		if tok, err := c.get(k, request); err != nil || tok != "tok1" {
			t.Fatalf("get: %q, %v", tok, err)
		}
	}
	now = now.Add(47 * time.Minute) // < 48 min: 80% of an hour
	if tok, _ := c.get(k, request); tok != "tok1" || calls != 1 {
		t.Fatalf("at 47 min: %q after %d requests, want the cached token", tok, calls)
	}
	now = now.Add(2 * time.Minute)
	if tok, _ := c.get(k, request); tok != "tok2" || calls != 2 {
		t.Fatalf("at 49 min: %q after %d requests, want a new token", tok, calls)
	}
	// Another audience is another token; a failed request caches nothing.
	if tok, _ := c.get(tokenKey{pod: "u1", account: "default", audience: "vault"}, request); tok != "tok3" {
		t.Fatalf("other audience: %q", tok)
	}
	boom := errors.New("apiserver down")
	if _, err := c.get(tokenKey{pod: "u2", account: "default"}, func() (string, time.Time, error) { return "", time.Time{}, boom }); !errors.Is(err, boom) {
		t.Fatalf("failed request: %v", err)
	}
	c.forgetPod("u1")
	if tok, _ := c.get(k, request); tok != "tok4" {
		t.Fatalf("after forgetPod: %q, want a new token", tok)
	}
	// A long-lived token is renewed after a day at the most.
	now = now.Add(time.Minute)
	c.m[k] = cachedToken{token: "year", issued: now, expires: now.Add(365 * 24 * time.Hour)}
	now = now.Add(25 * time.Hour)
	if tok, _ := c.get(k, request); tok == "year" {
		t.Fatal("a token older than a day was reused")
	}
}
