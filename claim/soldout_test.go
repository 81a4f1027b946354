package claim

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/pool"
)

// soldOutAnswers asks dispenser_sold_out_v1 about requests given as
// "pool/request/user/hold" tuples and returns its answers in order.
func (e *env) soldOutAnswers(items ...[4]string) []bool {
	e.t.Helper()
	n := len(items)
	pools, reqs, users, holds := make([]string, n), make([]string, n), make([]string, n), make([]bool, n)
	for i, it := range items {
		pools[i], reqs[i], users[i], holds[i] = it[0], it[1], it[2], it[3] == "hold"
	}
	rows, err := e.db.Pool.Query(context.Background(), soldOutSQL, pools, reqs, users, holds)
	require.NoError(e.t, err)
	out := make([]bool, n)
	got := 0
	for rows.Next() {
		var ord int
		var sold bool
		require.NoError(e.t, rows.Scan(&ord, &sold))
		out[ord-1] = sold
		got++
	}
	require.NoError(e.t, rows.Err())
	require.Equal(e.t, n, got)
	return out
}

// The sold-out check clears a request only where the fallback would answer
// exhausted and record nothing; everything the fallback would answer
// otherwise (a claim to replay, a refusal, a code to give back, a limit)
// keeps it out.
func TestSoldOutCheckAgreesWithFallback(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("so", 3, pool.Pool{PerUserLimit: 2, HoldsPerUser: 1})
	fresh := [4]string{"so", "fresh", "fresh-user", ""}

	// Available codes, then staged ones: not sold out.
	require.Equal(t, []bool{false}, e.soldOutAnswers(fresh))
	e.stageAll(p)
	require.Equal(t, []bool{false}, e.soldOutAnswers(fresh))

	// u1 claims two codes (its limit), u2 holds the last one.
	for _, r := range []string{"r1", "r2"} {
		_, err := e.svc.Claim(ctx, Request{PoolID: "so", UserID: "u1", RequestID: r})
		require.NoError(t, err)
	}
	_, err := e.svc.Reserve(ctx, ReserveRequest{PoolID: "so", UserID: "u2", RequestID: "h1", HoldFor: time.Minute})
	require.NoError(t, err)

	_, err = e.db.Pool.Exec(ctx, `INSERT INTO refusals (pool_id, request_id, user_id, reason, expires_at) VALUES
		('so', 'refused-live', 'u3', 'exhausted', now() + interval '1 minute'),
		('so', 'refused-old', 'u3', 'exhausted', now() - interval '1 minute')`)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `INSERT INTO hold_releases (pool_id, request_id, user_id, reason, reserved_at, held_until)
		VALUES ('so', 'released', 'u4', 'cancelled', now() - interval '1 minute', now())`)
	require.NoError(t, err)

	require.Equal(t, []bool{
		true,  // a fresh request of a fresh user
		false, // a claim of this user: the fallback replays it
		false, // a claim of another user: the fallback says reused
		false, // a live refusal
		true,  // a refusal that has expired
		false, // an ended hold
		false, // u1 holds the pool's limit: the fallback records the limit
		false, // u2 asks for a second hold, past holds_per_user
		true,  // u2 asks for a claim: one row of two
		false, // a pool that does not exist
	}, e.soldOutAnswers(fresh,
		[4]string{"so", "r1", "u1", ""},
		[4]string{"so", "r1", "u9", ""},
		[4]string{"so", "refused-live", "u3", ""},
		[4]string{"so", "refused-old", "u3", ""},
		[4]string{"so", "released", "u4", ""},
		[4]string{"so", "new", "u1", ""},
		[4]string{"so", "h2", "u2", "hold"},
		[4]string{"so", "c2", "u2", ""},
		[4]string{"nope", "x", "y", ""},
	))

	// u2's hold ends without the expiry job: the fallback would give its
	// code back first, so u2 is not told the pool is sold out, others are.
	_, err = e.db.Pool.Exec(ctx, `UPDATE claims SET held_until = now() - interval '1 second', reserved_at = now() - interval '1 minute'
		WHERE pool_id = 'so' AND request_id = 'h1'`)
	require.NoError(t, err)
	require.Equal(t, []bool{false, true}, e.soldOutAnswers(
		[4]string{"so", "c3", "u2", ""}, fresh))

	// A pool whose unclaimed codes have all expired is sold out.
	e.fill("so-expired", 2, pool.Pool{})
	expired := [4]string{"so-expired", "x", "y", ""}
	_, err = e.db.Pool.Exec(ctx, `UPDATE codes SET expires_at = now() - interval '1 second' WHERE pool_id = 'so-expired' AND code LIKE '%0'`)
	require.NoError(t, err)
	require.Equal(t, []bool{false}, e.soldOutAnswers(expired))
	_, err = e.db.Pool.Exec(ctx, `UPDATE codes SET expires_at = now() - interval '1 second' WHERE pool_id = 'so-expired'`)
	require.NoError(t, err)
	require.Equal(t, []bool{true}, e.soldOutAnswers(expired))
}

// Claims of a sold-out pool are refused by the sold-out check, in batches,
// not by a refill attempt and a fallback transaction each; the requests it
// must not refuse still get their answers when Redis has forgotten them: a
// retry its claim, a user at the limit its refusal.
func TestSoldOutPoolRefusesAtOnceAndKeepsAnswers(t *testing.T) {
	ctx, e := start(t)
	p := e.fillStaged("gone", 4, pool.Pool{PerUserLimit: 1})
	first := map[string]Claim{}
	for i := range 4 {
		res, err := e.svc.Claim(ctx, Request{PoolID: "gone", UserID: fmt.Sprintf("w%d", i), RequestID: fmt.Sprintf("win-%d", i)})
		require.NoError(t, err)
		first[res.Claim.RequestID] = res.Claim
	}

	// The crowd that comes after the last code.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			_, err := e.svc.Claim(ctx, Request{PoolID: "gone", UserID: fmt.Sprintf("late-%d", i), RequestID: fmt.Sprintf("late-%d", i)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, ErrPoolExhausted)
	}
	require.EqualValues(t, 64, e.svc.redis.soldOut.refused.Load(), "every late claim refused by the sold-out check")

	// Redis forgets a winner's request and its count (a flush, a failover
	// that lost writes): the retry still gets its code, and a new request
	// of that user the limit, both from Postgres.
	e.forget(p.ID, "win-0", "w0")
	res, err := e.svc.Claim(ctx, Request{PoolID: "gone", UserID: "w0", RequestID: "win-0"})
	require.NoError(t, err)
	require.True(t, res.Replayed)
	require.Equal(t, first["win-0"].CodeID, res.Claim.CodeID)
	e.forget(p.ID, "win-0", "w0")
	_, err = e.svc.Claim(ctx, Request{PoolID: "gone", UserID: "w0", RequestID: "win-0-again"})
	require.ErrorIs(t, err, ErrUserLimit)
	require.EqualValues(t, 64, e.svc.redis.soldOut.refused.Load())

	// Nothing of the refusals was written: they are not recorded, as the
	// fallback records none for a pool with nothing staged.
	var refusals int
	require.NoError(t, e.db.Pool.QueryRow(ctx, "SELECT count(*) FROM refusals WHERE pool_id = 'gone' AND reason = 'exhausted'").Scan(&refusals))
	require.Zero(t, refusals)

	// A code comes back (an admin imports one more): the next claim gets it.
	_, err = e.store.Import(ctx, pool.ImportOptions{PoolID: "gone", Format: pool.FormatLines}, strings.NewReader("gone-late-code\n"))
	require.NoError(t, err)
	res, err = e.svc.Claim(ctx, Request{PoolID: "gone", UserID: "after-restock", RequestID: "after-restock"})
	require.NoError(t, err)
	require.Equal(t, "gone-late-code", res.Claim.Code.Reveal())
	e.audit("gone")
}
