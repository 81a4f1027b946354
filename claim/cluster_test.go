package claim

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// clusterEnv is an env on a Redis Cluster of its own (three masters, a
// replica each), opened the way dispenserd opens it.
func clusterEnv(t *testing.T) (*env, *testenv.RedisCluster) {
	t.Helper()
	cluster := testenv.StartRedisCluster(t)
	rdb, err := stock.Open(cluster.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	return newEnv(t, envOpts{redis: rdb}), cluster
}

// Every key one script touches is in one slot, whatever the pool, request
// and user ids: the pool id is the hash tag.
func TestKeysOfAPoolShareASlot(t *testing.T) {
	t.Parallel()
	e, cluster := clusterEnv(t)
	node := cluster.Nodes[0]
	ctx := context.Background()
	slot := func(key string) int64 {
		n, err := e.rdb.Do(ctx, "CLUSTER", "KEYSLOT", key).Int64()
		require.NoError(t, err, node.String())
		return n
	}
	slots := map[int64]bool{}
	for i := range 20 {
		p := stock.Shard(fmt.Sprintf("pool-%d", i), i%3) // a pool's shard keeps its keys together too
		k := e.keys
		want := slot(k.Staged(p))
		slots[want] = true
		for _, key := range []string{k.InFlight(p), k.Replay(p, "req-{x}-"+p), k.UserClaims(p, "user}{"+p),
			k.OneClaim(p, "user}{"+p),
			k.Batches(p), k.RefillLock(p)} {
			require.Equal(t, want, slot(key), key)
		}
	}
	require.Greater(t, len(slots), 10, "pools spread over slots")
}

// The claim drill on a Redis Cluster, over pools spread across its masters:
// the scripts, pipelines (split by node), refill and reconcile work as on
// one node, and the promises hold.
func TestClaimDrillOnRedisCluster(t *testing.T) {
	t.Parallel()
	e, _ := clusterEnv(t)
	ctx := context.Background()
	pools := []string{"alpha", "bravo", "charlie", "delta"}
	for _, id := range pools {
		e.fillStaged(id, 300, pool.Pool{RefillBatchSize: 100})
	}
	l := runMultiPoolWorkload(t, e, pools, workload{workers: 64, calls: 3000, users: 2000, replayRatio: 0.2,
		allowed: []error{ErrPoolExhausted, ErrUserLimit}})
	require.Zero(t, l.mismatch)
	for _, id := range pools {
		p, err := e.store.GetPool(ctx, id)
		require.NoError(t, err)
		_, err = e.reconciler.Reconcile(ctx, p, 0)
		require.NoError(t, err)
		st := e.audit(id)
		require.EqualValues(t, 300, st.Claimed, "pool %s sold out", id)
	}
	require.Positive(t, l.byPath[PathRedis])
	t.Logf("paths %v, errors %v", l.byPath, l.errCounts)
}

// A Redis Cluster master dies mid-run: its replica takes over after the
// node timeout. Claims of its pools go to the fallback meanwhile (the
// breaker), the fast path comes back on the promoted replica, and after
// reconcile every promise holds.
func TestClaimDrillRedisClusterFailover(t *testing.T) {
	t.Parallel()
	e, cluster := clusterEnv(t)
	ctx := context.Background()
	pools := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot"}
	for _, id := range pools {
		e.fill(id, 1000, pool.Pool{RefillBatchSize: 200})
	}
	l, killed := failoverStorm(t, e, cluster, pools)
	require.Zero(t, l.mismatch)
	for _, id := range pools {
		e.audit(id)
	}
	res, err := e.svc.Claim(ctx, Request{PoolID: "alpha", UserID: "after", RequestID: "after"})
	require.NoError(t, err)
	require.NotZero(t, res.Claim.CodeID)
	t.Logf("killed %s; paths %v, errors %v", killed, l.byPath, l.errCounts)
}

// Redis down while the pool's only codes left are staged in it: the
// fallback answers Unavailable (nothing decided, no refusal recorded), not
// POOL_EXHAUSTED; once Redis is back the same request gets a code.
func TestStagedCodesInADeadRedisAreNotSoldOut(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t)
	rdb, err := stock.Open("redis://" + srv.Addr() + "?dial_timeout=100ms&max_retries=1")
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	e := newEnv(t, envOpts{redis: rdb})
	ctx := context.Background()
	p := e.fillStaged("p1", 5, pool.Pool{RefillBatchSize: 5})
	srv.Kill()
	req := Request{PoolID: "p1", UserID: "u1", RequestID: "r1"}
	_, err = e.svc.Claim(ctx, req)
	require.ErrorIs(t, err, ErrStagedUnreachable)
	require.NotErrorIs(t, err, ErrPoolExhausted)
	srv.Start()
	// Redis came back empty: reconcile returns the lost batch.
	_, err = e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		res, err := e.svc.Claim(ctx, req)
		return err == nil && res.Claim.CodeID != 0
	}, 10*time.Second, 100*time.Millisecond)
	e.audit("p1")
}

// Redis behind a Sentinel: the master dies mid-run, the Sentinel promotes
// its replica, the failover client follows it; claims go to Postgres
// meanwhile and the fast path comes back; every promise holds. The master
// is killed once its replica has every write (writes paused, offsets
// compared): a
// failover that loses writes leaves staged codes only Postgres knows, which
// reconcile returns after its grace period (RELIABILITY.md, known limits).
func TestClaimDrillRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	sentinel := testenv.StartRedisSentinel(t)
	rdb, err := stock.Open(sentinel.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	e := newEnv(t, envOpts{redis: rdb})
	ctx := context.Background()
	pools := []string{"alpha", "bravo"}
	for _, id := range pools {
		e.fill(id, 1500, pool.Pool{RefillBatchSize: 300})
	}
	l := runMultiPoolWorkload(t, e, pools, workload{workers: 32, calls: 4000, users: 3000, replayRatio: 0.2,
		allowed: []error{ErrPoolExhausted, ErrUserLimit, ErrStagedUnreachable},
		during: func(tenth int, _ *ledger) {
			if tenth == 2 {
				testenv.PauseWritesAndSync(t, rdb)
				sentinel.Master.Kill()
				sentinel.WaitFailover()
			}
		}})
	require.Zero(t, l.mismatch)
	// The fast path serves again from the promoted replica.
	i := 0
	require.Eventually(t, func() bool {
		i++
		res, err := e.svc.Claim(ctx, Request{PoolID: "alpha", UserID: fmt.Sprint("after-", i), RequestID: fmt.Sprint("after-", i)})
		return err == nil && res.Path == PathRedis
	}, 30*time.Second, 50*time.Millisecond, "the fast path serves again from the promoted replica")
	for _, id := range pools {
		p, err := e.store.GetPool(ctx, id)
		require.NoError(t, err)
		_, err = e.reconciler.Reconcile(ctx, p, 0)
		require.NoError(t, err)
		e.audit(id)
	}
	t.Logf("paths %v, errors %v", l.byPath, l.errCounts)
}

// Redis answers, but has lost the pool's staged codes (a failover that
// dropped writes, a flush): Postgres still has them staged, so the pool is
// not sold out. Callers get Unavailable (retry) until reconcile returns the
// codes, never a POOL_EXHAUSTED that would bind their request.
func TestStagedCodesRedisLostAreNotSoldOut(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fillStaged("p1", 5, pool.Pool{RefillBatchSize: 5})
	k := e.keys
	require.NoError(t, e.rdb.Del(ctx, k.Staged("p1"), k.InFlight("p1"), k.Batches("p1")).Err())
	req := Request{PoolID: "p1", UserID: "u1", RequestID: "r1"}
	_, err := e.svc.Claim(ctx, req)
	require.ErrorIs(t, err, ErrStagedUnreachable)
	_, err = e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	res, err := e.svc.Claim(ctx, req)
	require.NoError(t, err)
	require.NotZero(t, res.Claim.CodeID)
	// Sold out for real: every code claimed, nothing staged.
	for i := range 4 {
		_, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: fmt.Sprint("v", i), RequestID: fmt.Sprint("s", i)})
		require.NoError(t, err)
	}
	_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "late", RequestID: "late"})
	require.ErrorIs(t, err, ErrPoolExhausted)
	e.audit("p1")
}

// One breaker per pool: when one Cluster master dies, only the pools whose
// slots it served go to Postgres; a pool on another master keeps the fast
// path throughout.
func TestBreakerPerPoolOnRedisCluster(t *testing.T) {
	t.Parallel()
	e, cluster := clusterEnv(t)
	ctx := context.Background()
	cc := e.rdb.(*redis.ClusterClient)
	masterOf := func(pool string) string {
		c, err := cc.MasterForKey(ctx, e.keys.Staged(pool))
		require.NoError(t, err)
		return c.Options().Addr
	}
	// Two pools on different masters.
	doomed, safe := "alpha", ""
	for _, id := range []string{"bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"} {
		if masterOf(id) != masterOf(doomed) {
			safe = id
			break
		}
	}
	require.NotEmpty(t, safe)
	for _, id := range []string{doomed, safe} {
		e.fillStaged(id, 200, pool.Pool{RefillBatchSize: 200})
	}
	for _, n := range cluster.Nodes {
		if n.Addr() == masterOf(doomed) {
			n.Kill()
		}
	}
	// The doomed pool's claims fail over to Postgres (its codes are all
	// staged on the dead master: Unavailable) until its breaker opens...
	for i := range 5 {
		_, err := e.svc.Claim(ctx, Request{PoolID: doomed, UserID: fmt.Sprint("d", i), RequestID: fmt.Sprint("d", i)})
		require.ErrorIs(t, err, ErrStagedUnreachable)
	}
	// (open, or half-open if the claims after it took longer than its
	// 100 ms open time, as on a loaded machine under -race)...
	require.Contains(t, []string{"open", "half-open"}, e.svc.BreakerState())
	// ...while the other pool's claims keep the fast path.
	for i := range 20 {
		res, err := e.svc.Claim(ctx, Request{PoolID: safe, UserID: fmt.Sprint("s", i), RequestID: fmt.Sprint("s", i)})
		require.NoError(t, err)
		require.Equal(t, PathRedis, res.Path)
	}
	cluster.WaitHealthy()
	e.audit(safe)
}

// A hot pool spread over three shards on a Redis Cluster of three masters:
// its shards land on different masters (the test picks a pool id whose
// shards do), claims pop from all of them, a master dies mid-run, and after
// reconcile every promise holds.
func TestShardedPoolOnRedisCluster(t *testing.T) {
	t.Parallel()
	e, cluster := clusterEnv(t)
	ctx := context.Background()
	cc, ok := e.rdb.(*redis.ClusterClient)
	require.True(t, ok, "a cluster client")
	masterOf := func(shard string) string {
		c, err := cc.MasterForKey(ctx, e.keys.Staged(shard))
		require.NoError(t, err)
		return c.Options().Addr
	}
	var id string
	for i := 0; id == ""; i++ {
		cand := fmt.Sprint("hot-", i)
		masters := map[string]bool{}
		for _, sh := range stock.Shards(cand, 3) {
			masters[masterOf(sh)] = true
		}
		if len(masters) == 3 {
			id = cand
		}
	}
	// Nothing staged beforehand: claims stage ahead of demand, shard by
	// shard.
	e.fill(id, 1800, pool.Pool{RedisShards: 3, RefillBatchSize: 300})
	l, killed := failoverStorm(t, e, cluster, []string{id})
	codes := l.check(t, e, id)
	var popped []int
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT array_agg(DISTINCT b.shard ORDER BY b.shard)
		FROM stage_batches b WHERE b.pool_id = $1`, id).Scan(&popped))
	require.Equal(t, []int{0, 1, 2}, popped, "every shard was staged")
	require.Positive(t, l.byPath[PathRedis])
	t.Logf("pool %s, killed %s; claimed %d; paths %v, errors %v", id, killed, len(codes), l.byPath, l.errCounts)
}

// failoverStorm runs the drill's workload over pools while a master dies
// (at a third of the calls; the cluster is healthy again by two thirds),
// then reconciles every pool once the cluster answers, and returns the
// answers and the master killed.
func failoverStorm(t *testing.T, e *env, cluster *testenv.RedisCluster, pools []string) (*ledger, string) {
	t.Helper()
	ctx := context.Background()
	var killed string
	l := runMultiPoolWorkload(t, e, pools, workload{workers: 48, calls: 4000, users: 3000, replayRatio: 0.2,
		allowed: []error{ErrPoolExhausted, ErrUserLimit, ErrStagedUnreachable},
		during: func(tenth int, _ *ledger) {
			if tenth == 3 {
				killed = cluster.KillMaster()
			}
			if tenth == 6 {
				cluster.WaitHealthy()
			}
		}})
	require.NotEmpty(t, killed)
	cluster.WaitHealthy()
	require.Eventually(t, func() bool {
		for _, id := range pools {
			p, err := e.store.GetPool(ctx, id)
			require.NoError(t, err)
			if _, err := e.reconciler.Reconcile(ctx, p, 0); err != nil {
				t.Logf("reconcile %s: %v", id, err)
				return false
			}
		}
		return true
	}, 20*time.Second, 200*time.Millisecond)
	return l, killed
}
