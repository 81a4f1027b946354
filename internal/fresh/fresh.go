// Package fresh is a read-through cache for values read on every call
// (a pool's settings, an API key) that must never be older than a bound,
// without a stampede when they age out.
//
// A plain TTL cache makes every concurrent caller miss at the same moment:
// at 64 callers, 64 identical queries queue for the database's connections
// beside the work they delay, every TTL. Here an entry is served while it is
// younger than its TTL; the first call past half of it starts one
// background refresh, so a busy key never expires; and callers that find no
// fresh entry share one fetch.
package fresh

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Fetch reads a key's value and says how long it may be served.
type Fetch[V any] func(ctx context.Context, k string) (V, time.Duration, error)

// Cache caches Fetch's values by key.
type Cache[V any] struct {
	fetch   Fetch[V]
	timeout time.Duration
	max     int
	now     func() time.Time

	mu         sync.Mutex
	entries    map[string]entry[V]
	refreshing map[string]bool
	group      singleflight.Group
}

type entry[V any] struct {
	v   V
	at  time.Time
	ttl time.Duration
}

// New returns a cache over fetch. timeout bounds each fetch, which runs
// apart from any one caller's context (a caller that gives up does not fail
// the others); max > 0 bounds the entries (the cache starts over when full:
// a flood of keys cannot grow it).
func New[V any](fetch Fetch[V], timeout time.Duration, max int) *Cache[V] {
	return &Cache[V]{fetch: fetch, timeout: timeout, max: max, now: time.Now,
		entries: map[string]entry[V]{}, refreshing: map[string]bool{}}
}

// cached returns k's entry if it is younger than its TTL, and its age.
// Callers hold mu.
func (c *Cache[V]) cached(k string) (entry[V], time.Duration, bool) {
	e, ok := c.entries[k]
	age := c.now().Sub(e.at)
	return e, age, ok && age < e.ttl
}

// Fresh returns k's value if one younger than its TTL is cached, starting a
// background refresh if it is past half of its TTL; it never waits.
func (c *Cache[V]) Fresh(k string) (V, bool) {
	c.mu.Lock()
	e, age, ok := c.cached(k)
	if !ok {
		c.mu.Unlock()
		var zero V
		return zero, false
	}
	refresh := age >= e.ttl/2 && !c.refreshing[k]
	if refresh {
		c.refreshing[k] = true
	}
	c.mu.Unlock()
	if refresh {
		go c.refresh(k)
	}
	return e.v, true
}

// Get returns k's value: a fresh cached one (see Fresh), else one fetched
// now, by one fetch shared with the concurrent callers of the same key. A
// shared fetch that began more than the TTL before this call is not
// enough (the value may predate a change the caller must see): Get then
// fetches again. A failed fetch is returned, not cached.
func (c *Cache[V]) Get(ctx context.Context, k string) (V, error) {
	if v, ok := c.Fresh(k); ok {
		return v, nil
	}
	start := c.now()
	for {
		ch := c.group.DoChan(k, func() (any, error) {
			// A fresh entry stored meanwhile (by a fetch that began after
			// this one was asked for) needs no fetch of its own.
			c.mu.Lock()
			e, _, ok := c.cached(k)
			c.mu.Unlock()
			if ok {
				return e, nil
			}
			return c.load(k)
		})
		select {
		case r := <-ch:
			if r.Err != nil {
				var zero V
				return zero, r.Err
			}
			e := r.Val.(entry[V])
			if start.Sub(e.at) < e.ttl {
				return e.v, nil
			}
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
	}
}

// Known reports whether k has an entry, fresh or not.
func (c *Cache[V]) Known(k string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[k]
	return ok
}

// load fetches k and stores its entry.
func (c *Cache[V]) load(k string) (entry[V], error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	at := c.now()
	v, ttl, err := c.fetch(ctx, k)
	if err != nil {
		return entry[V]{}, err
	}
	c.mu.Lock()
	if _, ok := c.entries[k]; !ok && c.max > 0 && len(c.entries) >= c.max {
		clear(c.entries)
	}
	e := entry[V]{v: v, at: at, ttl: ttl}
	c.entries[k] = e
	c.mu.Unlock()
	return e, nil
}

// refresh replaces k's entry before it expires. On failure the entry stays
// until its TTL ends, and the next Get fetches (and reports the failure).
func (c *Cache[V]) refresh(k string) {
	defer func() {
		c.mu.Lock()
		delete(c.refreshing, k)
		c.mu.Unlock()
	}()
	_, _, _ = c.group.Do(k, func() (any, error) { return c.load(k) })
}
