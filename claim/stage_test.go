package claim

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

func TestRefillRespectsLowWater(t *testing.T) {
	ctx, e := start(t)
	p := e.fill("p1", 100, pool.Pool{RefillLowWater: 30, RefillBatchSize: 40})
	n, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)
	require.Equal(t, 40, n)
	n, err = e.stager.Refill(ctx, p) // 40 staged >= 30: nothing to do
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, e.rdb.LTrim(ctx, e.keys.Staged("p1"), 0, 19).Err()) // 20 left < 30
	n, err = e.stager.Refill(ctx, p)
	require.NoError(t, err)
	require.Equal(t, 40, n)
	require.EqualValues(t, 60, e.rdb.LLen(ctx, e.keys.Staged("p1")).Val())
	require.EqualValues(t, 2, e.rdb.SCard(ctx, e.keys.Batches("p1")).Val())
	st := e.audit("p1")
	require.EqualValues(t, 80, st.Staged)
}

// Redis lost the pool's keys: reconciliation returns the staged codes of
// batches whose marker is gone, but only once they are older than grace.
func TestReconcileLostBatches(t *testing.T) {
	ctx, e := start(t)
	p := e.fillStaged("p1", 100, pool.Pool{RefillBatchSize: 30})
	require.NoError(t, e.rdb.Del(ctx, e.keys.Staged("p1"), e.keys.Batches("p1")).Err())

	rep, err := e.reconciler.Reconcile(ctx, p, time.Hour)
	require.NoError(t, err)
	require.Zero(t, rep.LostBatches, "young batches are left alone")
	rep, err = e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	require.EqualValues(t, 100, rep.LostBatches)
	st := e.audit("p1")
	require.EqualValues(t, 100, st.Available)
	// And the codes are claimable again: the claim that finds the list
	// empty stages a batch and is served from Redis.
	res, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: "r"})
	require.NoError(t, err)
	require.Equal(t, PathRedis, res.Path)
}

// A server popped a code and died before its commit: the code sits in the
// in-flight ledger. Reconciliation returns it, and a retry of the request
// claims afresh (Postgres wins over the stale replay record).
func TestReconcileStaleLedger(t *testing.T) {
	ctx, e := start(t)
	p := e.fillStaged("p1", 10, pool.Pool{RefillBatchSize: 10})
	req := Request{PoolID: "p1", UserID: "u1", RequestID: "r1"}
	ans, err := stock.New(e.rdb, e.keys).ClaimOnce(ctx,
		stock.ClaimArgs{PoolID: "p1", RequestID: "r1", UserID: "u1", Limit: 1, TTL: time.Hour}, time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.Equal(t, string(outPopped), ans.Outcome)
	popped, err := stock.EntryCodeID(ans.Entry)
	require.NoError(t, err)

	rep, err := e.reconciler.Reconcile(ctx, p, 30*time.Second)
	require.NoError(t, err)
	require.EqualValues(t, 1, rep.Stale)
	require.Zero(t, e.rdb.ZCard(ctx, e.keys.InFlight("p1")).Val())
	var state string
	require.NoError(t, e.db.Pool.QueryRow(ctx, "SELECT state FROM codes WHERE id = $1", popped).Scan(&state))
	require.Equal(t, "available", state)

	res, err := e.svc.Claim(ctx, req)
	require.NoError(t, err)
	require.False(t, res.Replayed)
	require.NotEqual(t, popped, res.Claim.CodeID, "the stale replay record was dropped")
	again, err := e.svc.Claim(ctx, req)
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, res.Claim.CodeID, again.Claim.CodeID)
	e.audit("p1")
}

// A pop whose ledger write Redis lost leaves a staged code that is nowhere
// in Redis; once the list is empty, reconciliation finds it.
func TestReconcileOrphans(t *testing.T) {
	ctx, e := start(t)
	p := e.fillStaged("p1", 5, pool.Pool{RefillBatchSize: 5})
	for range 5 {
		require.NoError(t, e.rdb.LPop(ctx, e.keys.Staged("p1")).Err())
	}
	rep, err := e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	require.EqualValues(t, 5, rep.Orphans)
	st := e.audit("p1")
	require.EqualValues(t, 5, st.Available)
	require.Zero(t, e.rdb.SCard(ctx, e.keys.Batches("p1")).Val(), "the spent batch marker is dropped")
}

func TestReconcileVoidsExpired(t *testing.T) {
	ctx, e := start(t)
	p := e.fill("p1", 20, pool.Pool{RefillBatchSize: 10})
	_, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `UPDATE codes SET expires_at = now() - interval '1 second' WHERE id % 2 = 0`)
	require.NoError(t, err)
	rep, err := e.reconciler.Reconcile(ctx, p, time.Hour)
	require.NoError(t, err)
	require.EqualValues(t, 10, rep.Expired)
	st := e.audit("p1")
	require.EqualValues(t, 10, st.Void)
	var reason string
	require.NoError(t, e.db.Pool.QueryRow(ctx, "SELECT DISTINCT void_reason FROM codes WHERE state = 'void'").Scan(&reason))
	require.Equal(t, "expired", reason)
}

// A refill that staged in Postgres but could not push to Redis (Redis down,
// or the process died between the two steps) loses nothing: reconciliation
// returns the batch.
func TestRefillPushFailsThenReconcile(t *testing.T) {
	ctx, e := start(t)
	p := e.fill("p1", 50, pool.Pool{RefillBatchSize: 20})
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = dead.Close() })
	broken := NewStager(e.db.Pool, dead, e.keys, false)
	// With Redis down, a refill fails as a Redis failure and stages nothing.
	_, err := broken.Refill(ctx, p)
	var re *redisError
	require.ErrorAs(t, err, &re)
	require.EqualValues(t, 0, e.audit("p1").Staged)

	// The crash window between Refill's two steps: a batch staged in
	// Postgres (the refill's own statement) that never reached Redis.
	rows, err := e.db.Pool.Query(ctx, stageBatchSQL, "p1", 0, 20)
	require.NoError(t, err)
	rows.Close()
	require.NoError(t, rows.Err())
	st := e.audit("p1")
	require.EqualValues(t, 20, st.Staged)
	rep, err := e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	require.EqualValues(t, 20, rep.LostBatches)
	st = e.audit("p1")
	require.EqualValues(t, 50, st.Available)
}

// The refill cursor leaves no available code behind (migration 013): a
// code another transaction holds is waited for and read again (taken
// meanwhile, it is passed; still available, it is staged), and a code about
// to expire is passed with a return row, so it stays findable. A code that
// comes back below the cursor is staged again from its return row.
func TestRefillCursorLeavesNoAvailableCodeBehind(t *testing.T) {
	ctx, e := start(t)
	p := e.fill("p1", 20, pool.Pool{RefillBatchSize: 10})
	var ids []int64
	rows, err := e.db.Pool.Query(ctx, `SELECT id FROM codes WHERE pool_id = 'p1' ORDER BY id`)
	require.NoError(t, err)
	ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `UPDATE codes SET expires_at = now() + interval '30 seconds' WHERE id = $1`, ids[2])
	require.NoError(t, err)

	// A fallback claim's transaction holds the fifth code; it voids it
	// (a recall) while the refill waits.
	holder, err := e.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(ctx) }()
	_, err = holder.Exec(ctx, `SELECT 1 FROM codes WHERE id = $1 FOR UPDATE`, ids[4])
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := e.stager.Refill(ctx, p)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the refill did not wait for the held code: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	_, err = holder.Exec(ctx, `UPDATE codes SET state = 'void', void_reason = 'recall' WHERE id = $1`, ids[4])
	require.NoError(t, err)
	require.NoError(t, holder.Commit(ctx))
	require.NoError(t, <-done)

	staged, err := pgx.CollectRows(testenv.Must(e.db.Pool.Query(ctx,
		`SELECT id FROM codes WHERE pool_id = 'p1' AND state = 'staged' ORDER BY id`)), pgx.RowTo[int64])
	require.NoError(t, err)
	want := append(append([]int64{ids[0], ids[1]}, ids[3]), ids[5:12]...)
	require.Equal(t, want, staged, "ten codes staged, the expiring and the voided ones passed")
	var after int64
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT after_id FROM stage_cursors WHERE pool_id = 'p1'`).Scan(&after))
	require.Equal(t, ids[11], after)
	returned, err := pgx.CollectRows(testenv.Must(e.db.Pool.Query(ctx,
		`SELECT code_id FROM code_returns WHERE pool_id = 'p1' ORDER BY code_id`)), pgx.RowTo[int64])
	require.NoError(t, err)
	require.Equal(t, []int64{ids[2]}, returned)
	rep, err := Audit(ctx, e.db.Pool, nil, "p1")
	require.NoError(t, err)
	require.Zero(t, rep.Lost(), "%+v", rep)
	var has bool
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT dispenser_has_available_v1('p1')`).Scan(&has))
	require.True(t, has)

	// Reconcile returns the whole batch (Redis lost it): its codes come
	// back below the cursor, each with a return row, and the next refill
	// stages them from there, in a batch of their own.
	require.NoError(t, e.rdb.Del(ctx, e.keys.Staged("p1"), e.keys.Batches("p1")).Err())
	_, err = e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	rep, err = Audit(ctx, e.db.Pool, nil, "p1")
	require.NoError(t, err)
	require.Zero(t, rep.Lost(), "%+v", rep)
	require.EqualValues(t, 0, rep.Staged)
	n, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)
	require.Equal(t, 10, n)
	restaged, err := pgx.CollectRows(testenv.Must(e.db.Pool.Query(ctx,
		`SELECT id FROM codes WHERE pool_id = 'p1' AND state = 'staged' ORDER BY id`)), pgx.RowTo[int64])
	require.NoError(t, err)
	require.Equal(t, want, restaged)
	rep, err = Audit(ctx, e.db.Pool, nil, "p1")
	require.NoError(t, err)
	require.Zero(t, rep.Lost(), "%+v", rep)
}

// Voids and refills of one pool never deadlock: a refill waits for the
// available codes it walks past that another transaction holds, and a void
// locks its codes in no particular order, so both take the pool's refill
// cursor first. Voids of scattered codes, listed in reverse, run beside
// refills of the same range; every call succeeds and the audit is clean.
func TestVoidsBesideRefillsDoNotDeadlock(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	const n = 3000
	p := e.fill("p1", n, pool.Pool{RefillBatchSize: 200})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	wg.Go(func() {
		for range 10 {
			if _, err := e.stager.Refill(ctx, p); err != nil {
				errs <- err
			}
			// Let Redis's list drain so that each round stages again.
			if err := e.rdb.Del(ctx, e.keys.Staged("p1")).Err(); err != nil {
				errs <- err
			}
		}
	})
	for w := range 3 {
		wg.Go(func() {
			for round := range 10 {
				var codes []string
				for i := n - 1 - w - 3*round; i >= 0; i -= 37 {
					codes = append(codes, fmt.Sprintf("p1-CODE-%06d", i))
				}
				_, err := e.store.Void(ctx, pool.VoidRequest{PoolID: "p1", Codes: codes, Reason: "recall"})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	rep, err := Audit(ctx, e.db.Pool, nil, "p1")
	require.NoError(t, err)
	require.Zero(t, rep.Lost(), "%+v", rep)
	require.Zero(t, rep.Unbalanced(), "%+v", rep)
}
