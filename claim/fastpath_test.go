package claim

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// Two requests of one user in concurrent group commits both pass the fast
// path's probes (each holds only its own request's lock) and both take slot
// 1. The second INSERT waits for the first transaction, then fails; the
// group commit must undo its fast path and decide the item the slow way:
// the user is at the limit, the second code is not claimed, and the batch
// still commits.
func TestGroupCommitSameUserRaceGoesTheSlowWay(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	e.refilled("race", 10, pool.Pool{PerUserLimit: 1})
	ids := stagedIDs(t, e.db.Pool, "race", 3)

	// item runs one claim of user u as a group commit, in a transaction
	// it leaves open; pid is told the transaction's backend first.
	item := func(request string, code int64, pid chan<- uint32) (pgx.Tx, string, error) {
		tx, err := e.db.Pool.Begin(ctx)
		if err != nil {
			return nil, "", err
		}
		// A failed test must not leave a connection in the pool's way.
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		if pid != nil {
			pid <- tx.Conn().PgConn().PID()
		}
		var out string
		err = tx.QueryRow(ctx, `SELECT outcome FROM (`+claimStagedSQL+`) b`, []string{"race"}, []string{request},
			[]string{"u"}, []int64{code}, []time.Time{time.Now()}, []pgtype.Int8{{}}, []bool{true}, time.Minute).Scan(&out)
		return tx, out, err
	}

	first, out, err := item("r1", ids[0], nil)
	require.NoError(t, err)
	require.Equal(t, "claimed", out)
	type answer struct {
		tx  pgx.Tx
		out string
		err error
	}
	second, pid := make(chan answer, 1), make(chan uint32, 1)
	go func() {
		tx, out, err := item("r2", ids[1], pid)
		second <- answer{tx, out, err}
	}()
	// The second batch waits on the first's slot 1 (a lock wait).
	waiter := <-pid
	require.Eventually(t, func() bool {
		var waiting bool
		require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE pid = $1 AND wait_event_type = 'Lock')`, int64(waiter)).Scan(&waiting))
		return waiting
	}, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, first.Commit(ctx))
	got := <-second
	require.NoError(t, got.err)
	require.Equal(t, "limit", got.out, "the second request of a user at the limit")
	require.NoError(t, got.tx.Commit(ctx))

	var claims int
	require.NoError(t, e.db.Pool.QueryRow(ctx,
		`SELECT count(*) FROM claims WHERE pool_id = 'race' AND user_id = 'u'`).Scan(&claims))
	require.Equal(t, 1, claims)
	var state string
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT state::text FROM codes WHERE id = $1`, ids[1]).Scan(&state))
	require.NotEqual(t, "claimed", state, "the refused request's code")
}

// WarmConn runs the group commit's statement, with its argument types, on a
// migrated schema; where the function is missing (a database not migrated
// yet) it runs nothing that fails, and leaves the connection usable.
func TestWarmConnRunsTheGroupCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Postgres(t)
	conn, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	defer conn.Close(ctx)

	require.NoError(t, WarmConn(ctx, conn))

	bare, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	defer bare.Close(ctx)
	_, err = bare.Exec(ctx, "SET search_path = pg_catalog")
	require.NoError(t, err)
	// In a transaction, so that a statement failing in Postgres (and
	// logged there as an ERROR) would abort it.
	_, err = bare.Exec(ctx, "BEGIN")
	require.NoError(t, err)
	require.NoError(t, WarmConn(ctx, bare))
	require.False(t, bare.IsClosed())
	var one int
	require.NoError(t, bare.QueryRow(ctx, "SELECT 1").Scan(&one), "the warm-up ran a statement that failed")
	_, err = bare.Exec(ctx, "ROLLBACK")
	require.NoError(t, err)
}

// The set-based path answers each item from its own update (not from the
// inserted rows): what it answers must be what it stored, for a claim and a
// hold alike, and what a replay of the request reads back.
func TestGroupCommitAnswersWhatItStored(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	e.refilled("answers", 10, pool.Pool{PerUserLimit: 1})
	ids := stagedIDs(t, e.db.Pool, "answers", 3)

	// Three fresh requests: a claim, a hold of 90 s, a claim; given in an
	// order that is not the codes' order.
	reqs, users := []string{"a", "b", "c"}, []string{"ua", "ub", "uc"}
	codes := []int64{ids[2], ids[0], ids[1]}
	holds := []pgtype.Int8{{}, {Int64: 90_000, Valid: true}, {}}
	now := time.Now()
	tx, err := e.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	rows, err := tx.Query(ctx, claimStagedSQL, []string{"answers", "answers", "answers"}, reqs, users, codes,
		[]time.Time{now, now, now}, holds, []bool{true, true, true}, time.Minute)
	require.NoError(t, err)
	got, err := itemRows(rows, 3, func(r *outcomeRow) []any { return append([]any{&r.out}, r.row.holdDest()...) })
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	for i, r := range got {
		require.Equal(t, "claimed", r.out, reqs[i])
		c := r.row.claim("answers", reqs[i], users[i])
		require.Equal(t, codes[i], c.CodeID, reqs[i])
		var code string
		var claimedAt time.Time
		var heldUntil, reservedAt pgtype.Timestamptz
		require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT k.code, c.claimed_at, c.held_until, c.reserved_at
			FROM claims c JOIN codes k ON k.id = c.code_id WHERE c.pool_id = 'answers' AND c.request_id = $1`,
			reqs[i]).Scan(&code, &claimedAt, &heldUntil, &reservedAt))
		require.Equal(t, code, c.Code.Reveal(), reqs[i])
		require.True(t, claimedAt.Equal(c.ClaimedAt), "%s: claimed_at %v, answered %v", reqs[i], claimedAt, c.ClaimedAt)
		require.Equal(t, holds[i].Valid, heldUntil.Valid, reqs[i])
		require.Equal(t, holds[i].Valid, reservedAt.Valid, reqs[i])
		if holds[i].Valid {
			require.True(t, heldUntil.Time.Equal(c.HeldUntil), "%s: held_until", reqs[i])
			require.True(t, reservedAt.Time.Equal(c.ReservedAt), "%s: reserved_at", reqs[i])
			require.Equal(t, 90*time.Second, heldUntil.Time.Sub(reservedAt.Time))
		} else {
			require.True(t, c.HeldUntil.IsZero(), reqs[i])
			require.True(t, c.ReservedAt.IsZero(), reqs[i])
		}
	}
}
