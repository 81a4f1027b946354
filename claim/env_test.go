package claim

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is one test's service on its own schema and Redis namespace.
type env struct {
	t     *testing.T
	db    *testenv.Schema
	rdb   redis.UniversalClient
	keys  pool.RedisKeys
	store *pool.Store
	svc   *Service
}

type envOpts struct {
	// redis, if set, replaces the shared test Redis (fault tests).
	redis redis.UniversalClient
}

func newEnv(t *testing.T, opts ...envOpts) *env {
	t.Helper()
	db := testenv.Postgres(t)
	rdb, ns := testenv.Redis(t)
	var use redis.UniversalClient = rdb
	if len(opts) > 0 && opts[0].redis != nil {
		use = opts[0].redis
	}
	e := &env{t: t, db: db, rdb: use, keys: pool.NewRedisKeys(ns), store: pool.NewStore(db.Pool)}
	e.svc = NewService(Config{
		DB: db.Pool, Redis: use, Keys: e.keys,
		PoolCacheTTL:   20 * time.Millisecond,
		BreakerOpenFor: 100 * time.Millisecond,
		Logger:         slog.New(slog.DiscardHandler),
	})
	t.Cleanup(e.svc.Stop)
	return e
}

// fill creates a pool and imports n codes into it: "<prefix>-<i>".
func (e *env) fill(id string, n int, p pool.Pool) pool.Pool {
	e.t.Helper()
	ctx := context.Background()
	p.ID = id
	p, err := e.store.CreatePool(ctx, p)
	require.NoError(e.t, err)
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%s-CODE-%06d\n", id, i)
	}
	sum, err := e.store.Import(ctx, pool.ImportOptions{PoolID: id, Format: pool.FormatLines}, strings.NewReader(b.String()))
	require.NoError(e.t, err)
	require.EqualValues(e.t, n, sum.Inserted)
	return p
}

// stageAll refills until nothing is left to stage.
func (e *env) stageAll(p pool.Pool) int {
	e.t.Helper()
	total := 0
	for {
		// A zero low-water mark with a non-empty list would skip the refill.
		p.RefillLowWater = 1 << 30
		n, err := e.svc.Refill(context.Background(), p)
		require.NoError(e.t, err)
		if n == 0 {
			return total
		}
		total += n
	}
}

// audit checks promises 1, 2 and 5 in Postgres for a pool, and that Redis
// holds no code twice.
func (e *env) audit(poolID string, limit int) pool.Stats {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.store.PoolStats(ctx, poolID)
	require.NoError(e.t, err)
	require.True(e.t, st.Balanced(), "imported %d != available %d + staged %d + claimed %d + void %d",
		st.Imported, st.Available, st.Staged, st.Claimed, st.Void)
	var claims, distinctCodes, overLimit, mismatched int64
	require.NoError(e.t, e.db.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT code_id) FROM claims WHERE pool_id = $1`, poolID).
		Scan(&claims, &distinctCodes))
	require.Equal(e.t, claims, distinctCodes, "a code has two claims")
	require.Equal(e.t, st.Claimed, claims, "claimed codes and claims differ")
	require.NoError(e.t, e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT user_id FROM claims WHERE pool_id = $1
		GROUP BY user_id HAVING count(*) > $2) t`, poolID, limit).Scan(&overLimit))
	require.Zero(e.t, overLimit, "users over the limit")
	require.NoError(e.t, e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM claims c JOIN codes k ON k.id = c.code_id
		WHERE c.pool_id = $1 AND k.state <> 'claimed'`, poolID).Scan(&mismatched))
	require.Zero(e.t, mismatched, "a claim points at a code that is not claimed")
	return st
}
