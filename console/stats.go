package console

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// statsTTL is how long a pool's stats answer serves every page of this
// console, at least. GetPoolStats counts the pool's codes in Postgres; with
// the cache, any number of people watching a pool during a sale cost one
// count per pool every statsTTL, not one per open page.
const statsTTL = 4 * time.Second

// statsCostShare bounds the share of time the console spends waiting for
// one pool's stats: an answer that took d is kept for at least
// d / statsCostShare (a count that takes 0.2 s, as for a pool of a million
// codes, is kept 10 s), so watching many large pools cannot load Postgres.
const statsCostShare = 0.02

// statsCache shares GetPoolStats answers between sessions (every role that
// may sign in may read every pool's stats, and they hold no code) and lets
// one call per pool be in flight at a time.
type statsCache struct {
	mu      sync.Mutex
	entries map[string]statsEntry
	group   singleflight.Group
}

type statsEntry struct {
	at    time.Time
	ttl   time.Duration
	stats *dispenserv1.PoolStats
}

// get returns the pool's stats, read through fetch when the cached answer
// is older than statsTTL. Errors are not cached.
func (s *statsCache) get(ctx context.Context, pool string, fetch func(context.Context) (*dispenserv1.PoolStats, error)) (*dispenserv1.PoolStats, error) {
	s.mu.Lock()
	e, ok := s.entries[pool]
	s.mu.Unlock()
	if ok && time.Since(e.at) < e.ttl {
		return e.stats, nil
	}
	v, err, _ := s.group.Do(pool, func() (any, error) {
		start := time.Now()
		st, err := fetch(ctx)
		if err != nil {
			return nil, err
		}
		ttl := max(statsTTL, time.Duration(float64(time.Since(start))/statsCostShare))
		s.mu.Lock()
		if s.entries == nil || len(s.entries) >= maxTrackedPools {
			s.entries = map[string]statsEntry{}
		}
		s.entries[pool] = statsEntry{at: time.Now(), ttl: ttl, stats: st}
		s.mu.Unlock()
		return st, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*dispenserv1.PoolStats), nil
}
