package controllers

import (
	"sync"
	"time"
)

// expectationsTTL bounds how long a controller waits for the informer to
// show what it created or deleted before it trusts the cache again.
const expectationsTTL = 5 * time.Minute

// expectations record, per controller key, the pod creations and
// deletions a sync made that the informer has not shown yet. A sync with
// unmet expectations does not create or delete again, so a slow informer
// does not make it double-create.
type expectations struct {
	mu sync.Mutex
	m  map[string]*expectation
}

type expectation struct {
	adds    int
	deletes map[string]bool // pod keys
	at      time.Time
}

func newExpectations() *expectations { return &expectations{m: map[string]*expectation{}} }

// satisfied reports whether key may act on the cache: nothing is pending,
// or what is pending is older than expectationsTTL.
func (e *expectations) satisfied(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	if !ok {
		return true
	}
	if x.adds <= 0 && len(x.deletes) == 0 {
		return true
	}
	return time.Since(x.at) > expectationsTTL
}

func (e *expectations) expectCreations(key string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[key] = &expectation{adds: n, deletes: map[string]bool{}, at: time.Now()}
}

func (e *expectations) expectDeletions(key string, podKeys []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &expectation{deletes: map[string]bool{}, at: time.Now()}
	for _, k := range podKeys {
		x.deletes[k] = true
	}
	e.m[key] = x
}

// expect records n creations and the deletions of podKeys at once.
func (e *expectations) expect(key string, n int, podKeys []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &expectation{adds: n, deletes: map[string]bool{}, at: time.Now()}
	for _, k := range podKeys {
		x.deletes[k] = true
	}
	e.m[key] = x
}

func (e *expectations) creationObserved(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok && x.adds > 0 {
		x.adds--
	}
}

func (e *expectations) deletionObserved(key, podKey string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		delete(x.deletes, podKey)
	}
}

func (e *expectations) forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}
