package claim

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/pool"
)

// A burst of requests Redis refuses, settled together in Postgres: users at
// their limit asking again (some requests twice, concurrently) are refused
// and each refusal recorded once; a user whose Redis count outlived its
// claims (Postgres has none) is not refused but gets a code; a retry of a
// winner's request that Redis does not know is answered with its claim. Each gets its own answer
// whatever batch it shared.
func TestSettlesOfABurstEachGetTheirAnswer(t *testing.T) {
	ctx, e := start(t)
	p := e.fillStaged("burst", 40, pool.Pool{PerUserLimit: 1})
	winners := map[string]int64{}
	for i := range 16 {
		res, err := e.svc.Claim(ctx, Request{PoolID: "burst", UserID: fmt.Sprint("w", i), RequestID: fmt.Sprint("win-", i)})
		require.NoError(t, err)
		winners[fmt.Sprint("win-", i)] = res.Claim.CodeID
	}
	// For half the winners, Redis's record of their one claim names
	// another request (say one that Postgres refused and whose release
	// was lost): their retries are settled in Postgres, which replays the
	// claims.
	lost := stock.FormatEntry(1)
	for i := range 8 {
		require.NoError(t, e.rdb.Set(ctx, e.keys.OneClaim(p.ID, fmt.Sprint("w", i)),
			stock.OneClaimRecord(fmt.Sprint("lost-", i), lost), 0).Err())
	}
	// ghost's record says it holds its limit; Postgres has no claim of it.
	require.NoError(t, e.rdb.Set(ctx, e.keys.OneClaim(p.ID, "ghost"), stock.OneClaimRecord("ghost-0", lost), 0).Err())

	type call struct {
		user, req string
	}
	var calls []call
	for i := range 16 {
		calls = append(calls, call{fmt.Sprint("w", i), fmt.Sprint("again-", i)}, call{fmt.Sprint("w", i), fmt.Sprint("again-", i)})
		calls = append(calls, call{fmt.Sprint("w", i), fmt.Sprint("win-", i)})
	}
	calls = append(calls, call{"ghost", "ghost-1"})
	errs := make([]error, len(calls))
	codes := make([]int64, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() {
			res, err := e.svc.Claim(ctx, Request{PoolID: "burst", UserID: c.user, RequestID: c.req})
			errs[i], codes[i] = err, res.Claim.CodeID
		})
	}
	wg.Wait()
	for i, c := range calls {
		switch {
		case c.user == "ghost":
			require.NoError(t, errs[i], c)
			require.NotZero(t, codes[i])
		case winners[c.req] != 0:
			require.NoError(t, errs[i], c)
			require.Equal(t, winners[c.req], codes[i], c)
		default:
			require.ErrorIs(t, errs[i], ErrUserLimit, c)
		}
	}
	var refusals int
	require.NoError(t, e.db.Pool.QueryRow(ctx,
		"SELECT count(*) FROM refusals WHERE pool_id = 'burst' AND reason = 'limit' AND request_id LIKE 'again-%'").Scan(&refusals))
	require.Equal(t, 16, refusals)
	e.audit("burst")
}

// dispenser_settle_many_v1 answers every item of a batch as
// dispenser_settle_v2 answers it alone, in batch order: the set-based step
// for users at their limit and the per-item rest alike. Both run on the
// same rows, each in a transaction rolled back afterwards.
func TestSettleManyAgreesWithSettleOne(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fillStaged("eq", 12, pool.Pool{PerUserLimit: 2, HoldsPerUser: 1})
	for _, c := range []struct{ user, req string }{{"a", "a-1"}, {"a", "a-2"}, {"b", "b-1"}, {"c", "c-1"}, {"d", "d-1"}, {"d", "d-2"}, {"e", "e-1"}, {"e", "e-2"}} {
		_, err := e.svc.Claim(ctx, Request{PoolID: p.ID, UserID: c.user, RequestID: c.req})
		require.NoError(t, err)
	}
	_, err := e.svc.Reserve(ctx, ReserveRequest{PoolID: p.ID, UserID: "c", RequestID: "c-hold", HoldFor: time.Minute})
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `UPDATE claims SET held_until = now() - interval '1 second' WHERE request_id = 'c-hold'`)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `INSERT INTO refusals (pool_id, request_id, user_id, reason, expires_at)
		VALUES ('eq', 'e-refused', 'e', 'limit', now() + interval '1 minute')`)
	require.NoError(t, err)

	// Sorted as the settler sorts them: pool, user, request.
	items := []struct {
		user, req string
		limit     bool
	}{
		{"a", "a-1", true},       // its claim: replay
		{"a", "a-new", true},     // at the limit: refused (set-based)
		{"b", "b-new", true},     // below it: open
		{"c", "c-new", true},     // at it with an ended hold: released, open
		{"d", "d-dup", true},     // twice in the batch: refused, then the same
		{"d", "d-dup", true},     //
		{"e", "e-refused", true}, // a live refusal
		{"f", "f-new", true},     // no row at all: open
		{"z", "a-1", false},      // another user's request: reused
	}
	started := time.Now()
	args := func() []any {
		n := len(items)
		pools, reqs, users, limits, st := make([]string, n), make([]string, n), make([]string, n), make([]bool, n), make([]time.Time, n)
		for i, it := range items {
			pools[i], reqs[i], users[i], limits[i], st[i] = p.ID, it.req, it.user, it.limit, started
		}
		return []any{pools, reqs, users, limits, st, time.Minute}
	}
	type answer struct {
		Out  string
		Code *int64
		Held int64
	}
	tx, err := e.db.Pool.Begin(ctx)
	require.NoError(t, err)
	rows, err := tx.Query(ctx, settleSQL, args()...)
	require.NoError(t, err)
	many := make([]answer, len(items))
	for rows.Next() {
		var ord int
		var a answer
		var skip1 *string
		var skip2, skip3, skip4, skip5 *time.Time
		require.NoError(t, rows.Scan(&ord, &a.Out, &a.Code, &skip1, &skip2, &skip3, &skip4, &skip5, &a.Held))
		many[ord-1] = a
	}
	require.NoError(t, rows.Err())
	require.NoError(t, tx.Rollback(ctx))

	tx, err = e.db.Pool.Begin(ctx)
	require.NoError(t, err)
	one := make([]answer, len(items))
	for i, it := range items {
		require.NoError(t, tx.QueryRow(ctx, `SELECT outcome, code_id, held FROM dispenser_settle_v2($1, $2, $3, $4, $5, $6)`,
			p.ID, it.req, it.user, it.limit, started, time.Minute).Scan(&one[i].Out, &one[i].Code, &one[i].Held))
	}
	require.NoError(t, tx.Rollback(ctx))

	require.Equal(t, one, many)
	outs := make([]string, len(many))
	for i, a := range many {
		outs[i] = a.Out
	}
	require.Equal(t, []string{"replay", "limit", "open", "open", "limit", "limit", "limit", "open", "reused"}, outs)
}
