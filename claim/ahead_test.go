package claim

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/pool"
)

// A flash sale on a pool with default settings, nothing staged beforehand
// and no refill job running: claims stage ahead of demand themselves, and
// while Redis is up and Postgres holds codes, none is served by the
// fallback. Then the pool runs dry: the last claims are refused, none
// claims a code twice. The same holds for a pool spread over three Redis
// shards, whose claims move to another shard when their own is empty.
func TestFlashSaleOnDefaultPoolNeverFallsBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                  string
		shards, codes, claims int
	}{
		{"one shard", 1, 12_000, 11_000},
		{"three shards", 3, 9_000, 8_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			flashSale(t, tc.shards, tc.codes, tc.claims)
		})
	}
}

func flashSale(t *testing.T, shards, codes, claims int) {
	const callers = 64
	e := newEnv(t)
	p := e.fill("sale", codes, pool.Pool{RedisShards: shards}) // defaults: low water 1,000, batch 5,000
	require.Equal(t, pool.DefaultRefillLowWater, p.RefillLowWater)

	var next atomic.Int64
	var mu sync.Mutex
	paths := map[Path]int{}
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(claims) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := e.svc.Claim(ctx, Request{PoolID: "sale", UserID: fmt.Sprint("u", i), RequestID: fmt.Sprint("r", i)})
				cancel()
				if !assertNoError(t, err) {
					return
				}
				mu.Lock()
				paths[res.Path]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Equal(t, map[Path]int{PathRedis: claims}, paths, "claims by path")

	// The rest of the pool, then nothing.
	ctx := context.Background()
	for i := range codes - claims {
		res, err := e.svc.Claim(ctx, Request{PoolID: "sale", UserID: fmt.Sprint("v", i), RequestID: fmt.Sprint("s", i)})
		require.NoError(t, err)
		require.Equal(t, PathRedis, res.Path)
	}
	_, err := e.svc.Claim(ctx, Request{PoolID: "sale", UserID: "late", RequestID: "late"})
	require.ErrorIs(t, err, ErrPoolExhausted)
	st := e.audit("sale")
	require.EqualValues(t, codes, st.Claimed)
	var batchShards []int
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT array_agg(DISTINCT shard ORDER BY shard) FROM stage_batches WHERE pool_id = 'sale'`).Scan(&batchShards))
	want := make([]int, shards)
	for i := range want {
		want[i] = i
	}
	require.Equal(t, want, batchShards, "every shard was refilled")
}

// assertNoError reports err without stopping the calling goroutine's test.
func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("claim: %v", err)
		return false
	}
	return true
}
