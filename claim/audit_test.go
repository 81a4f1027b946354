package claim

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/pool"
)

// The audit must see every kind of breach, or a clean audit proves nothing.
func TestAuditDetectsBreaches(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("p1", 20, pool.Pool{RefillBatchSize: 10})
	_, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)
	first, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u1", RequestID: "r1"})
	require.NoError(t, err)
	rep, err := Audit(ctx, e.db.Pool, stock.New(e.rdb, e.keys), "p1")
	require.NoError(t, err)
	require.Zero(t, rep.Duplicates()+rep.Lost()+rep.UsersOverLimit)

	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := e.db.Pool.Exec(ctx, sql, args...)
		require.NoError(t, err)
	}
	// A claim whose code went back to available.
	exec(`UPDATE codes SET state = 'available' WHERE id = $1`, first.Claim.CodeID)
	// A code that vanished.
	exec(`DELETE FROM codes WHERE id = (SELECT max(id) FROM codes k WHERE state = 'available'
		AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.code_id = k.id))`)
	// A second claim for a user whose limit is 1, bypassing the claim path.
	exec(`WITH c AS (UPDATE codes SET state = 'claimed' WHERE id = (SELECT min(id) FROM codes k WHERE state = 'available'
			AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.code_id = k.id)) RETURNING id)
		INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id) SELECT 'p1', 'r-extra', 'u1', 2, id FROM c`)
	// A prize sent another user's code (a caller's claim that took the
	// prize's request id, as before prize ids had their own space).
	var firstClaim int64
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT id FROM claims WHERE request_id = 'r1'`).Scan(&firstClaim))
	exec(`INSERT INTO prizes (pool_id, user_id, external_id, state, claim_id) VALUES ('p1', 'winner', 'draw-1', 'delivered', $1)`,
		firstClaim)
	// A claim in the prizes' id space that no prize holds.
	_, err = e.svc.ClaimPrize(ctx, "p1", "stranger", 999)
	require.NoError(t, err)
	// An entry staged twice in Redis.
	head, err := e.rdb.LIndex(ctx, e.keys.Staged("p1"), 0).Result()
	require.NoError(t, err)
	require.NoError(t, e.rdb.RPush(ctx, e.keys.Staged("p1"), head).Err())

	rep, err = Audit(ctx, e.db.Pool, stock.New(e.rdb, e.keys), "p1")
	require.NoError(t, err)
	require.EqualValues(t, 1, rep.ClaimsOnUnclaimed)
	require.EqualValues(t, 1, rep.Unbalanced())
	require.EqualValues(t, 1, rep.UsersOverLimit)
	require.EqualValues(t, 1, rep.RedisDuplicates)
	require.EqualValues(t, 1, rep.PrizesAstray)
	require.EqualValues(t, 1, rep.PrizeClaimsAstray)
	require.EqualValues(t, 2, rep.Duplicates(), "an entry staged twice is not a double issue")
	require.EqualValues(t, 2, rep.Lost())
}

// A lowered limit leaves users the claims they held (the API says so), so
// the audit counts a user over the limit against the highest limit the pool
// has had; a user above that is still a breach.
func TestAuditAfterTheLimitIsLowered(t *testing.T) {
	ctx, e := start(t)
	e.fillStaged("p1", 10, pool.Pool{RefillBatchSize: 10, PerUserLimit: 3})
	for _, r := range []string{"r1", "r2", "r3"} {
		_, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u1", RequestID: r})
		require.NoError(t, err)
	}
	for _, n := range []int{1, 2} {
		_, err := e.store.UpdatePool(ctx, "p1", func(p *pool.Pool) error { p.PerUserLimit = n; return nil })
		require.NoError(t, err)
	}
	audit := func() AuditReport {
		t.Helper()
		rep, err := Audit(ctx, e.db.Pool, stock.New(e.rdb, e.keys), "p1")
		require.NoError(t, err)
		return rep
	}
	rep := audit()
	require.Zero(t, rep.UsersOverLimit, "u1's three claims were made under a limit of 3")
	require.EqualValues(t, 3, rep.Claimed)

	// A fourth claim for u1, bypassing the claim path: over every limit
	// the pool has had.
	_, err := e.db.Pool.Exec(ctx, `WITH c AS (UPDATE codes SET state = 'claimed', stage_batch = NULL
			WHERE id = (SELECT min(id) FROM codes WHERE pool_id = 'p1' AND state = 'staged') RETURNING id)
		INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id) SELECT 'p1', 'r-extra', 'u1', 4, id FROM c`)
	require.NoError(t, err)
	require.EqualValues(t, 1, audit().UsersOverLimit)
}

// A Redis failover that loses writes can bring back a popped entry whose
// claim Postgres refused: its code went back to available, is staged again,
// and is then listed twice. Postgres still issues it once (the later pop
// finds it claimed and takes another code), and the audit reports the copy
// without counting it as a double issue.
func TestEntryBroughtBackByFailoverIsIssuedOnce(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("p1", 4, pool.Pool{RefillBatchSize: 2, PerUserLimit: 1})
	_, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)
	list := func() []string {
		t.Helper()
		l, err := stock.New(e.rdb, e.keys).StagedEntries(ctx, "p1")
		require.NoError(t, err)
		return l
	}
	_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u1", RequestID: "r1"})
	require.NoError(t, err)
	before := list()
	require.Len(t, before, 1)

	// Redis forgets u1's claim (as a failover may), so u1's next request
	// pops a code, which Postgres refuses (u1 holds the limit) and returns.
	e.forget("p1", "r1", "u1")
	_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u1", RequestID: "r2"})
	require.ErrorIs(t, err, ErrUserLimit)
	require.Empty(t, list())
	var state string
	id, err := stock.EntryCodeID(before[0])
	require.NoError(t, err)
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT state FROM codes WHERE id = $1`, id).Scan(&state))
	require.Equal(t, "available", state)

	// The failover brings the pop back; the code is staged again.
	require.NoError(t, e.rdb.LPush(ctx, e.keys.Staged("p1"), before[0]).Err())
	e.stageAll(p)
	require.Len(t, list(), 4)
	rep, err := Audit(ctx, e.db.Pool, stock.New(e.rdb, e.keys), "p1")
	require.NoError(t, err)
	require.EqualValues(t, 1, rep.RedisDuplicates)
	require.Zero(t, rep.Duplicates()+rep.Lost()+rep.UsersOverLimit, "%+v", rep)

	// Every code left goes to one user, the brought-back one included.
	got := map[int64]string{}
	for i := range 4 {
		user := fmt.Sprint("v", i)
		res, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: user, RequestID: "q-" + user})
		if i == 3 {
			require.ErrorIs(t, err, ErrPoolExhausted)
			break
		}
		require.NoError(t, err)
		require.NotContains(t, got, res.Claim.CodeID)
		got[res.Claim.CodeID] = user
	}
	require.Contains(t, got, id)
	require.Empty(t, list())
	e.audit("p1")
}

// Staged codes are found through their live batch's id range (migration
// 012): one outside it, or in a batch marked drained, could never be
// returned by reconcile, and the audit counts it lost.
func TestAuditCountsStagedCodesNoLookupFinds(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("p1", 10, pool.Pool{RefillBatchSize: 4})
	_, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)
	audit := func() AuditReport {
		t.Helper()
		rep, err := Audit(ctx, e.db.Pool, nil, "p1")
		require.NoError(t, err)
		return rep
	}
	rep := audit()
	require.EqualValues(t, 4, rep.Staged)
	require.Zero(t, rep.Lost())

	// Marking drained spares a batch with staged codes...
	require.NoError(t, markDrained(ctx, e.db.Pool, "p1"))
	require.Zero(t, audit().Lost())
	// ...and a code staged outside its batch's range is lost to reconcile.
	_, err = e.db.Pool.Exec(ctx, `UPDATE codes SET state = 'staged',
		stage_batch = (SELECT max(id) FROM stage_batches WHERE pool_id = 'p1')
		WHERE id = (SELECT max(id) FROM codes WHERE pool_id = 'p1')`)
	require.NoError(t, err)
	rep = audit()
	require.EqualValues(t, 1, rep.StagedUnfindable)
	require.EqualValues(t, 1, rep.Lost())
	// So is a batch marked drained while it still has staged codes.
	_, err = e.db.Pool.Exec(ctx, `UPDATE stage_batches SET drained_at = now() WHERE pool_id = 'p1'`)
	require.NoError(t, err)
	require.EqualValues(t, 5, audit().StagedUnfindable)
}
