package prize_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/pool"
	"github.com/dispenserhq/dispenser/prize"
)

// The case 1: a claimer sends "prize:<id>" as its request id before
// the delivery run. It gets a code of its own; the winner's webhook gets
// another, claimed for the prize and its winner only.
func TestPrizeCodeNotReachableByClaimers(t *testing.T) {
	ctx, e := start(t)
	r := newReceiver(t, ok)
	e.setupPool(t, "p1", r.srv.URL, 10, 1)
	all, err := e.store.List(ctx, "p1", "", 0, 10)
	require.NoError(t, err)
	require.Len(t, all, 1)
	id := strconv.FormatInt(all[0].ID, 10)
	_, err = e.pools.UpdatePool(ctx, "p1", func(p *pool.Pool) error { p.ClaimEndsAt = time.Time{}; return nil })
	require.NoError(t, err)

	mallory, err := e.claims.Claim(ctx, claim.Request{PoolID: "p1", UserID: "mallory", RequestID: "prize:" + id})
	require.NoError(t, err)
	reports, err := e.deliverer(2*time.Second).Run(ctx, "")
	require.NoError(t, err)
	require.Equal(t, prize.DeliverReport{Assigned: 1, Delivered: 1}, reports["p1"])
	require.Equal(t, 1, r.distinctCodes())
	for _, codes := range r.byID {
		require.NotEqual(t, mallory.Claim.Code.Reveal(), codes[0], "the winner was sent mallory's code")
	}
	got, err := e.store.Get(ctx, all[0].ID)
	require.NoError(t, err)
	require.NotEqual(t, mallory.Claim.Code.Reveal(), got.Code)

	// A caller's later "prize:<id>" replays mallory's own claim, never the
	// prize's.
	again, err := e.claims.Claim(ctx, claim.Request{PoolID: "p1", UserID: "mallory", RequestID: "prize:" + id})
	require.NoError(t, err)
	require.Equal(t, mallory.Claim.Code, again.Claim.Code)
	_, err = e.claims.Claim(ctx, claim.Request{PoolID: "p1", UserID: all[0].UserID, RequestID: "prize:" + id})
	require.ErrorIs(t, err, claim.ErrRequestReused)
	e.audit(t, "p1")
}

// A prize that cannot be claimed for (a record no API accepts today, put
// there by an older version or by hand) parks with a reason; the run goes
// on for every other prize.
func TestPoisonedPrizeParksAndTheRunGoesOn(t *testing.T) {
	ctx, e := start(t)
	r := newReceiver(t, ok)
	e.setupPool(t, "p1", r.srv.URL, 20, 5)

	// The API refuses such a user id now...
	_, _, err := e.store.Record(ctx, prize.RecordRequest{PoolID: "p1", UserID: "bad\x07user", ExternalID: "poison"})
	var fe *prize.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "user_id", fe.Field)
	// ...but the record may already be stored.
	var poisoned int64
	require.NoError(t, e.db.Pool.QueryRow(ctx, `INSERT INTO prizes (pool_id, user_id, external_id, state, details, ready_at)
		VALUES ('p1', E'bad\x07user', 'poison', 'ready', '{}', now()) RETURNING id`).Scan(&poisoned))

	reports, err := e.deliverer(2*time.Second).Run(ctx, "")
	require.NoError(t, err)
	require.Equal(t, prize.DeliverReport{Assigned: 5, Delivered: 5, Parked: 1}, reports["p1"])
	got, err := e.store.Get(ctx, poisoned)
	require.NoError(t, err)
	require.Equal(t, prize.Failed, got.State)
	require.Equal(t, prize.ParkInvalidPrize, got.ParkReason)
	require.Empty(t, got.Code)
	require.Equal(t, 5, r.distinctCodes())
	e.audit(t, "p1")
}
