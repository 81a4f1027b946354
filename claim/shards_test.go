package claim

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/pool"
)

// shardLevels reads the staged list length of each of a pool's first n
// shards.
func (e *env) shardLevels(poolID string, n int) []int64 {
	e.t.Helper()
	levels, err := stock.New(e.rdb, e.keys).ShardLevels(context.Background(), stock.Shards(poolID, n)...)
	require.NoError(e.t, err)
	return levels
}

// userWithHome returns a user id whose home shard, of n, is home.
func userWithHome(prefix string, home, n int) string {
	for i := 0; ; i++ {
		u := fmt.Sprint(prefix, i)
		if stock.HomeShard(u, n) == home {
			return u
		}
	}
}

// A refill gives each of a pool's shards its share of the low-water mark
// and of the batch, each batch recorded with its shard; stats and the audit
// read every shard.
func TestRefillSpreadsOverShards(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("hot", 1000, pool.Pool{RedisShards: 3, RefillBatchSize: 300, RefillLowWater: 60})
	n, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)
	require.Equal(t, 300, n)
	require.Equal(t, []int64{100, 100, 100}, e.shardLevels("hot", 3))
	var shards []int
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT array_agg(shard ORDER BY shard) FROM stage_batches WHERE pool_id = 'hot'`).Scan(&shards))
	require.Equal(t, []int{0, 1, 2}, shards)

	// Above each shard's mark (20): nothing to do. One shard under it: only
	// that one is refilled.
	n, err = e.stager.Refill(ctx, p)
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, e.rdb.LTrim(ctx, e.keys.Staged(stock.Shard("hot", 1)), 0, 9).Err())
	n, err = e.stager.Refill(ctx, p)
	require.NoError(t, err)
	require.Equal(t, 100, n)
	require.Equal(t, []int64{100, 110, 100}, e.shardLevels("hot", 3))

	// StageAtLeast fills the emptiest shards first.
	n, err = e.stager.StageAtLeast(ctx, p, 600)
	require.NoError(t, err)
	require.Equal(t, 290, n)
	require.Equal(t, []int64{200, 200, 200}, e.shardLevels("hot", 3))
	staged, err := e.stager.StagedLen(ctx, p)
	require.NoError(t, err)
	require.EqualValues(t, 600, staged)

	// The 90 codes cut from shard 1's list are in neither list nor ledger:
	// the audit sees them as staged in Postgres only, and reconcile (with
	// the shard's list not empty) leaves them for the lost-batch check.
	rep, err := Audit(ctx, e.db.Pool, stock.New(e.rdb, e.keys), "hot")
	require.NoError(t, err)
	require.Equal(t, []int{0, 1, 2}, rep.RedisShards)
	require.Zero(t, rep.RedisDuplicates)
	require.Zero(t, rep.RedisStale)
	require.EqualValues(t, 690, rep.Staged)
}

// A claim pops from its user's home shard and moves to the next ones when
// it is empty. The replay record lives in the shard that popped; a retry
// that finds a code in another shard first is answered by Postgres with
// the first claim's code, and the user's limit holds across shards.
func TestClaimMovesToAnotherShard(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("p", 30, pool.Pool{RedisShards: 3, PerUserLimit: 1})
	_, err := e.stager.stageBatch(ctx, p, 2, 5)
	require.NoError(t, err)

	u0 := userWithHome("u", 0, 3)
	first, err := e.svc.Claim(ctx, Request{PoolID: "p", UserID: u0, RequestID: "r1"})
	require.NoError(t, err)
	require.Equal(t, PathRedis, first.Path)
	require.Equal(t, []int64{0, 0, 4}, e.shardLevels("p", 3))
	require.EqualValues(t, 1, e.rdb.Exists(ctx, e.keys.OneClaim(stock.Shard("p", 2), u0)).Val(), "the user's one claim in the shard that popped")

	again, err := e.svc.Claim(ctx, Request{PoolID: "p", UserID: u0, RequestID: "r1"})
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, first.Claim.CodeID, again.Claim.CodeID)

	// Now the home shard has codes: the retry pops one there, Postgres
	// answers with the first claim, and the popped code goes back.
	_, err = e.stager.stageBatch(ctx, p, 0, 5)
	require.NoError(t, err)
	again, err = e.svc.Claim(ctx, Request{PoolID: "p", UserID: u0, RequestID: "r1"})
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, first.Claim.CodeID, again.Claim.CodeID)
	require.Equal(t, first.Claim.Code.Reveal(), again.Claim.Code.Reveal())
	// The retry's pop went back to available, and the user's one claim in
	// the home shard now names r1's: a new request of the user is refused
	// there, by Postgres, without a pop.
	require.Equal(t, []int64{4, 0, 4}, e.shardLevels("p", 3))
	_, err = e.svc.Claim(ctx, Request{PoolID: "p", UserID: u0, RequestID: "r2"})
	require.ErrorIs(t, err, ErrUserLimit)
	require.Equal(t, []int64{4, 0, 4}, e.shardLevels("p", 3))
	// So is one in a home shard that knows nothing of the claim.
	e.forget(stock.Shard("p", 0), "r1", u0)
	_, err = e.svc.Claim(ctx, Request{PoolID: "p", UserID: u0, RequestID: "r2"})
	require.ErrorIs(t, err, ErrUserLimit)

	// A user at home in shard 1 (empty) moves on: 1, then 2.
	u1 := userWithHome("v", 1, 3)
	res, err := e.svc.Claim(ctx, Request{PoolID: "p", UserID: u1, RequestID: "r3"})
	require.NoError(t, err)
	require.Equal(t, PathRedis, res.Path)
	// Both refused pops went back to available.
	require.Equal(t, []int64{3, 0, 3}, e.shardLevels("p", 3))

	st := e.audit("p")
	require.EqualValues(t, 2, st.Claimed)
	require.EqualValues(t, 6, st.Staged)
}

// Lowering a pool's shard count: claims stop popping from the dropped
// shards at once; reconcile returns their codes once older than its grace,
// deletes their keys, and every code can still be claimed.
func TestLoweringRedisShardsReturnsTheirCodes(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("p", 90, pool.Pool{RedisShards: 3, RefillBatchSize: 30})
	e.stageAll(p)
	require.Equal(t, []int64{30, 30, 30}, e.shardLevels("p", 3))
	p, err := e.store.UpdatePool(ctx, "p", func(p *pool.Pool) error { p.RedisShards = 1; return nil })
	require.NoError(t, err)
	require.Equal(t, 1, p.RedisShards)

	// Within the grace period the dropped shards' batches may still be in
	// use: nothing moves, and the audit still reads those shards.
	rep, err := e.reconciler.Reconcile(ctx, p, time.Hour)
	require.NoError(t, err)
	require.Zero(t, rep.Dropped)
	au, err := Audit(ctx, e.db.Pool, stock.New(e.rdb, e.keys), "p")
	require.NoError(t, err)
	require.Equal(t, []int{0, 1, 2}, au.RedisShards)

	rep, err = e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	require.EqualValues(t, 60, rep.Dropped)
	require.Zero(t, rep.LostBatches+rep.Stale+rep.Orphans)
	for _, s := range []int{1, 2} {
		name := stock.Shard("p", s)
		require.Zero(t, e.rdb.Exists(ctx, e.keys.Staged(name), e.keys.Batches(name)).Val(), "shard %d deleted", s)
	}
	st := e.audit("p")
	require.EqualValues(t, 30, st.Staged)
	require.EqualValues(t, 60, st.Available)
	au, err = Audit(ctx, e.db.Pool, stock.New(e.rdb, e.keys), "p")
	require.NoError(t, err)
	require.Equal(t, []int{0}, au.RedisShards)

	e.stageAll(p)
	for i := range 90 {
		res, err := e.svc.Claim(ctx, Request{PoolID: "p", UserID: fmt.Sprint("u", i), RequestID: fmt.Sprint("r", i)})
		require.NoError(t, err)
		require.Equal(t, PathRedis, res.Path)
	}
	_, err = e.svc.Claim(ctx, Request{PoolID: "p", UserID: "late", RequestID: "late"})
	require.ErrorIs(t, err, ErrPoolExhausted)
	st = e.audit("p")
	require.EqualValues(t, 90, st.Claimed)
}

// The drill on a pool spread over four shards, with duplicate requests and
// a user limit of 2: exactly the pool's codes handed out, each once, every
// replay the same code, and Redis loses the shards' data mid-run.
func TestClaimDrillShardedPool(t *testing.T) {
	ctx, e := start(t)
	p := e.fill("drill", 1500, pool.Pool{RedisShards: 4, RefillBatchSize: 200, PerUserLimit: 2})
	l := runWorkload(t, e, "drill", workload{workers: 64, calls: 3000, users: 1000, replayRatio: 0.2,
		allowed: []error{ErrPoolExhausted, ErrUserLimit},
		during: func(tenth int, _ *ledger) {
			if tenth == 2 {
				// Shard 2 forgets everything: list, ledger, markers, replay
				// records and counts.
				keys, err := e.rdb.Keys(ctx, strings.TrimSuffix(e.keys.Staged(stock.Shard("drill", 2)), "staged")+"*").Result()
				require.NoError(t, err)
				if len(keys) > 0 {
					require.NoError(t, e.rdb.Del(ctx, keys...).Err())
				}
			}
		}})
	_, err := e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	codes := l.check(t, e, "drill")
	st := e.audit("drill")
	require.EqualValues(t, len(codes), st.Claimed)
	require.Positive(t, l.byPath[PathRedis])
	t.Logf("paths %v, errors %v, claimed %d", l.byPath, l.errCounts, st.Claimed)
}
