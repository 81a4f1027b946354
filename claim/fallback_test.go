package claim

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// Fallback claims that arrive together are decided in one transaction, each
// as if alone: under 300 concurrent calls (copies of requests, users asking
// more than their limit of two, holds) every request gets one answer, its
// copies the same code, no user more than two, and the audit balances.
func TestFallbackBatchesDecideEachClaimAlone(t *testing.T) {
	ctx, e := start(t)
	e.fill("p1", 500, pool.Pool{PerUserLimit: 2})
	type call struct {
		req  Request
		res  Result
		err  error
		copy int // index of the call it copies, or -1
	}
	var calls []*call
	for u := range 60 {
		user := fmt.Sprint("u", u)
		for r := range 3 { // three requests per user: one over the limit
			req := Request{PoolID: "p1", UserID: user, RequestID: fmt.Sprintf("%s-r%d", user, r)}
			if u%10 == 0 && r == 0 {
				req.reserve, req.hold = true, time.Minute
			}
			calls = append(calls, &call{req: req, copy: -1})
			if r < 2 {
				calls = append(calls, &call{req: req, copy: len(calls) - 1})
			}
		}
	}
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() { c.res, c.err = e.svc.fallback.Claim(ctx, pool.Pool{ID: "p1"}, c.req) })
	}
	wg.Wait()

	perUser := map[string]map[int64]bool{}
	for _, c := range calls {
		if c.err != nil {
			require.ErrorIs(t, c.err, ErrUserLimit, "%+v", c.req)
			continue
		}
		if perUser[c.req.UserID] == nil {
			perUser[c.req.UserID] = map[int64]bool{}
		}
		perUser[c.req.UserID][c.res.Claim.CodeID] = true
		if c.copy >= 0 && calls[c.copy].err == nil {
			require.Equal(t, calls[c.copy].res.Claim.CodeID, c.res.Claim.CodeID, "copies of %s", c.req.RequestID)
		}
	}
	require.Len(t, perUser, 60)
	for user, codes := range perUser {
		require.LessOrEqual(t, len(codes), 2, user)
	}
	st := e.audit("p1")
	require.EqualValues(t, 120, st.Held+st.Claimed, "two rows per user")
	require.LessOrEqual(t, st.Held, int64(6))
}

// A batch in which an item claimed commits durably even if another item's
// refusal turned synchronous_commit off for the transaction; a batch of
// refusals alone commits without waiting for its WAL flush, as a single
// refusal does.
func TestFallbackBatchCommitsClaimsDurably(t *testing.T) {
	ctx, e := start(t)
	e.fill("p1", 10, pool.Pool{})
	_, err := e.svc.fallback.Claim(ctx, pool.Pool{ID: "p1"}, Request{PoolID: "p1", UserID: "full", RequestID: "first"})
	require.NoError(t, err)

	syncAfter := func(users, requests []string) string {
		tx, err := e.db.Pool.Begin(ctx)
		require.NoError(t, err)
		defer func() { require.NoError(t, tx.Rollback(ctx)) }()
		n := len(users)
		pools, after, started, holds, down := make([]string, n), make([]int64, n), make([]time.Time, n), make([]pgtype.Int8, n), make([]bool, n)
		for i := range n {
			pools[i], started[i] = "p1", time.Now()
		}
		outs, err := pgx.CollectRows(testenv.Must(tx.Query(ctx, "SELECT outcome FROM ("+claimFallbackManySQL+") x",
			pools, requests, users, after, started, holds, time.Minute, down)), pgx.RowTo[string])
		require.NoError(t, err)
		require.Len(t, outs, n)
		var setting string
		require.NoError(t, tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&setting))
		return setting
	}
	require.Equal(t, "on", syncAfter([]string{"full", "fresh"}, []string{"again", "new"}),
		"a refusal, then a claim: the claim must be durable")
	require.Equal(t, "off", syncAfter([]string{"full"}, []string{"again"}), "a refusal alone")
}

// Two fallback batches of one user's different requests, in concurrent
// transactions (two replicas): both find the user without a claim, so both
// take the set-based path and slot 1. The second waits on the first's
// claim row, fails its INSERT once the first commits, undoes its fast path
// (the code it picked stays available) and decides its item the per-item
// way: the user's limit.
func TestFallbackBatchesRaceForAUsersSlot(t *testing.T) {
	ctx, e := start(t)
	e.fill("p1", 10, pool.Pool{})
	claimIn := func(tx pgx.Tx, request string) (string, error) {
		var out string
		err := tx.QueryRow(ctx, "SELECT outcome FROM ("+claimFallbackManySQL+") x",
			[]string{"p1"}, []string{request}, []string{"u"}, []int64{0}, []time.Time{time.Now()},
			[]pgtype.Int8{{}}, time.Minute, []bool{false}).Scan(&out)
		return out, err
	}
	first, err := e.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = first.Rollback(ctx) }()
	out, err := claimIn(first, "a")
	require.NoError(t, err)
	require.Equal(t, "claimed", out)

	second, err := e.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = second.Rollback(ctx) }()
	var pid int
	require.NoError(t, second.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
	type answer struct {
		out string
		err error
	}
	done := make(chan answer, 1)
	go func() {
		out, err := claimIn(second, "b")
		done <- answer{out, err}
	}()
	// The second waits on the first's claim of slot 1.
	require.Eventually(t, func() bool {
		var waiting bool
		err := e.db.Pool.QueryRow(ctx,
			"SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&waiting)
		return err == nil && waiting
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, first.Commit(ctx))
	a := <-done
	require.NoError(t, a.err)
	require.Equal(t, "limit", a.out)
	require.NoError(t, second.Commit(ctx))

	st := e.audit("p1")
	require.EqualValues(t, 1, st.Claimed)
	require.EqualValues(t, 9, st.Available, "the second batch's pick went back")
}
