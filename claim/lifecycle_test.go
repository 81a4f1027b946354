package claim

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// A service starts nothing until Start: claims before it, and after Stop,
// answer ErrStopped at once instead of waiting on a sender that is not
// there. Stop without Start returns.
func TestServiceLifecycle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := newEnv(t)
	e.fillStaged("p1", 5, pool.Pool{RefillBatchSize: 5})

	idle := testenv.Must(NewService(e.db.Pool, e.rdb, e.keys, Config{}))
	_, err := idle.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: "r"})
	require.ErrorIs(t, err, ErrStopped)
	idle.Stop()

	svc := testenv.Must(NewService(e.db.Pool, e.rdb, e.keys, Config{}))
	require.NoError(t, svc.Start(ctx))
	res, err := svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: "r"})
	require.NoError(t, err)
	require.Equal(t, PathRedis, res.Path)
	svc.Stop()
	_, err = svc.Claim(ctx, Request{PoolID: "p1", UserID: "u2", RequestID: "r2"})
	require.ErrorIs(t, err, ErrStopped)
	e.audit("p1")
}

// A tunable out of range is refused when the service is made, naming it.
func TestConfigValidated(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"PoolCacheTTL":                      {PoolCacheTTL: -time.Second},
		"RedisAllocator.Commit.MaxBatch":    {RedisAllocator: RedisConfig{Commit: CommitterConfig{MaxBatch: 1_000_000}}},
		"RedisAllocator.Commit.MaxInFlight": {RedisAllocator: RedisConfig{Commit: CommitterConfig{MaxInFlight: -1}}},
		"FallbackConcurrency":               {FallbackConcurrency: -2},
	} {
		_, err := NewService(nil, nil, stock.Keys{}, cfg)
		require.ErrorContains(t, err, name)
	}
	require.NoError(t, Config{}.Validate(), "zero values mean the defaults")
}
