package claim

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/pool"
)

// allocatorCase is one Allocator implementation under the shared contract.
type allocatorCase struct {
	name string
	// prepare makes the pool's codes claimable by this allocator.
	prepare func(e *env, p pool.Pool)
	// alloc is the implementation under test.
	alloc func(e *env) Allocator
	path  Path
}

// setup starts a parallel subtest on a pool p1 of n codes with settings,
// prepared for the allocator.
func (ac allocatorCase) setup(t *testing.T, n int, settings pool.Pool) (context.Context, *env, pool.Pool) {
	t.Helper()
	t.Parallel()
	e := newEnv(t)
	p := e.fill("p1", n, settings)
	ac.prepare(e, p)
	return context.Background(), e, p
}

// claim runs one claim through the contract.
func (ac allocatorCase) claim(ctx context.Context, e *env, p pool.Pool, req Request) (Result, error) {
	return ac.alloc(e).Claim(ctx, p, req)
}

var allocators = []allocatorCase{
	{
		name:    "redis",
		prepare: func(e *env, p pool.Pool) { e.stageAll(p) },
		alloc:   func(e *env) Allocator { return e.svc.redis },
		path:    PathRedis,
	},
	{
		name:    "fallback",
		prepare: func(*env, pool.Pool) {},
		alloc:   func(e *env) Allocator { return e.svc.fallback },
		path:    PathFallback,
	},
}

// TestAllocatorConformance runs the one contract both allocators keep.
func TestAllocatorConformance(t *testing.T) {
	t.Parallel()
	for _, ac := range allocators {
		t.Run(ac.name, func(t *testing.T) {
			t.Parallel()
			t.Run("distinct codes until exhausted", func(t *testing.T) {
				ctx, e, p := ac.setup(t, 50, pool.Pool{})
				seen := map[string]bool{}
				for i := range 50 {
					res, err := ac.claim(ctx, e, p, Request{PoolID: "p1", UserID: fmt.Sprint("u", i), RequestID: fmt.Sprint("r", i)})
					require.NoError(t, err)
					require.Equal(t, ac.path, res.Path)
					require.False(t, res.Replayed)
					require.False(t, seen[res.Claim.Code.Reveal()], "code handed out twice")
					seen[res.Claim.Code.Reveal()] = true
					require.False(t, res.Claim.ClaimedAt.IsZero())
				}
				_, err := ac.claim(ctx, e, p, Request{PoolID: "p1", UserID: "late", RequestID: "late"})
				require.ErrorIs(t, err, ErrPoolExhausted)
				st := e.audit("p1")
				require.EqualValues(t, 50, st.Claimed)
			})
			t.Run("replay returns the same code", func(t *testing.T) {
				ctx, e, p := ac.setup(t, 10, pool.Pool{})
				req := Request{PoolID: "p1", UserID: "alice", RequestID: "req-1"}
				first, err := ac.claim(ctx, e, p, req)
				require.NoError(t, err)
				for range 3 {
					again, err := ac.claim(ctx, e, p, req)
					require.NoError(t, err)
					require.True(t, again.Replayed)
					require.Equal(t, PathReplay, again.Path)
					require.Equal(t, first.Claim.CodeID, again.Claim.CodeID)
					require.Equal(t, first.Claim.Code, again.Claim.Code)
					require.True(t, first.Claim.ClaimedAt.Equal(again.Claim.ClaimedAt))
				}
				st := e.audit("p1")
				require.EqualValues(t, 1, st.Claimed)
			})
			t.Run("per-user limit", func(t *testing.T) {
				ctx, e, p := ac.setup(t, 10, pool.Pool{PerUserLimit: 2})
				for i := range 2 {
					_, err := ac.claim(ctx, e, p, Request{PoolID: "p1", UserID: "bob", RequestID: fmt.Sprint("r", i)})
					require.NoError(t, err)
				}
				_, err := ac.claim(ctx, e, p, Request{PoolID: "p1", UserID: "bob", RequestID: "r2"})
				require.ErrorIs(t, err, ErrUserLimit)
				// A retry of an earlier request still answers.
				res, err := ac.claim(ctx, e, p, Request{PoolID: "p1", UserID: "bob", RequestID: "r0"})
				require.NoError(t, err)
				require.True(t, res.Replayed)
				st := e.audit("p1")
				require.EqualValues(t, 2, st.Claimed)
				require.EqualValues(t, 8, st.Available+st.Staged, "the refused claim's code went back")
			})
			t.Run("void and expired codes are never handed out", func(t *testing.T) {
				ctx, e, p := ac.setup(t, 20, pool.Pool{})
				// Half the codes turn void or expire after staging.
				_, err := e.db.Pool.Exec(ctx, `UPDATE codes SET state = 'void', void_reason = 'recall', stage_batch = NULL
					WHERE pool_id = 'p1' AND id % 4 = 0`)
				require.NoError(t, err)
				_, err = e.db.Pool.Exec(ctx, `UPDATE codes SET expires_at = now() - interval '1 second'
					WHERE pool_id = 'p1' AND id % 4 = 1`)
				require.NoError(t, err)
				got := 0
				for i := range 20 {
					res, err := ac.claim(ctx, e, p, Request{PoolID: "p1", UserID: fmt.Sprint("u", i), RequestID: fmt.Sprint("r", i)})
					if errors.Is(err, ErrPoolExhausted) {
						break
					}
					require.NoError(t, err)
					require.NotZero(t, res.Claim.CodeID%4, "void code %d handed out", res.Claim.CodeID)
					require.NotEqual(t, int64(1), res.Claim.CodeID%4, "expired code %d handed out", res.Claim.CodeID)
					got++
				}
				require.Equal(t, 10, got)
				e.audit("p1")
			})
		})
	}
}

// A request claimed on one path is replayed, with the same code, on the
// other: idempotency does not depend on the path.
func TestReplayAcrossPaths(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("p1", 10, pool.Pool{RefillBatchSize: 5})
	n, err := e.stager.Refill(ctx, p) // half staged, half left to the fallback
	require.NoError(t, err)
	require.Equal(t, 5, n)
	viaRedis, err := e.svc.redis.Claim(ctx, p, Request{PoolID: "p1", UserID: "u1", RequestID: "r1"})
	require.NoError(t, err)
	res, err := e.svc.fallback.Claim(ctx, p, Request{PoolID: "p1", UserID: "u1", RequestID: "r1"})
	require.NoError(t, err)
	require.True(t, res.Replayed)
	require.Equal(t, viaRedis.Claim.CodeID, res.Claim.CodeID)

	viaPG, err := e.svc.fallback.Claim(ctx, p, Request{PoolID: "p1", UserID: "u2", RequestID: "r2"})
	require.NoError(t, err)
	res, err = e.svc.redis.Claim(ctx, p, Request{PoolID: "p1", UserID: "u2", RequestID: "r2"})
	require.NoError(t, err)
	require.True(t, res.Replayed)
	require.Equal(t, viaPG.Claim.CodeID, res.Claim.CodeID)
	st := e.audit("p1")
	require.EqualValues(t, 2, st.Claimed)
	// The code Redis popped for the replayed request went back.
	require.EqualValues(t, 8, st.Available+st.Staged)
}
