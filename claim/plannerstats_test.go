package claim

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/pool"
)

// A probe table analyzed while empty, then filled by a sale: its
// statistics are refreshed once it has grown past ProbeStatsMinPages and
// four times what they counted, not again until it grows that much more,
// and the group commit's next plans probe each key through its own index.
// With the statistics of the empty table, the plans cached then probed a
// request's claim through the user index (every claim of the pool, for
// every item): the sale ran at a sixth of its speed (docs/BENCHMARKS.md, round eleven).
func TestRefreshProbeStats(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("big", 20_000, pool.Pool{RefillBatchSize: 10_000})
	for _, table := range ProbeTables {
		_, err := e.db.Pool.Exec(ctx, "VACUUM ANALYZE "+table)
		require.NoError(t, err)
	}
	_, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)

	// Plans cached while the tables are empty, as at the start of a sale.
	conn, plans := explainingConn(t, e.db.URL)
	_, err = conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan")
	require.NoError(t, err)
	ids := stagedIDs(t, conn, "big", 40)
	commit := rolledBackCommits(t, conn, "big", ids)
	commit(0)

	stale, err := RefreshProbeStats(ctx, e.db.Pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Empty(t, stale, "tables under the minimum size are left alone")

	// The sale fills claims and refusals; hold_releases stays empty.
	seedClaims(t, e.db.Pool, "big", 9000)
	_, err = e.db.Pool.Exec(ctx, `INSERT INTO refusals (pool_id, request_id, user_id, reason, expires_at)
		SELECT 'big', 'refused-' || g, 'refused-user-' || g, 'limit', now() + interval '1 hour'
		FROM generate_series(1, 3000) g`)
	require.NoError(t, err)
	seen := len(plans())
	commit(1)
	for _, plan := range plans()[seen:] {
		if bad := crosswiseProbes(plan); len(bad) > 0 {
			t.Logf("before the refresh, a cached plan probes through another index: %v", bad)
		}
	}

	stale, err = RefreshProbeStats(ctx, e.db.Pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Equal(t, []string{"claims", "refusals"}, stale)
	require.InDelta(t, 9000, claimsTuples(t, e), 500, "claims analyzed")
	stale, err = RefreshProbeStats(ctx, e.db.Pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Empty(t, stale, "fresh statistics are left alone")

	// The ANALYZE dropped the cached plans: the next ones probe each key
	// through its own index and read no table whole.
	seen = len(plans())
	commit(2)
	after := plans()[seen:]
	require.NotEmpty(t, after)
	all := strings.Join(after, "\n")
	require.Contains(t, all, "claims_request_key")
	require.Contains(t, all, "claims_user_slot_key")
	require.Contains(t, all, "refusals_pkey")
	for _, plan := range after {
		require.Empty(t, crosswiseProbes(plan), "a probe reads the pool's claims through another index:\n%s", plan)
		for _, bad := range []string{"Seq Scan", "Hash Anti Join", "Bitmap Heap Scan on refusals", "Merge Anti Join"} {
			require.NotContains(t, plan, bad, "a group commit statement reads a table whole:\n%s", plan)
		}
	}
}

// A probe table never analyzed (a new database, autovacuum not yet come
// by) is left alone however large it grows: the planner reckons with its
// size on disk, so the group commit's plans, cached while it was empty and
// made again once it is large, probe each key through its own index.
func TestRefreshProbeStatsLeavesTablesNeverAnalyzed(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	e.refilled("fresh", 20_000, pool.Pool{RefillBatchSize: 10_000})
	require.Equal(t, -1.0, claimsTuples(t, e), "claims never analyzed")

	conn, plans := explainingConn(t, e.db.URL)
	_, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan")
	require.NoError(t, err)
	ids := stagedIDs(t, conn, "fresh", 16)
	commit := rolledBackCommits(t, conn, "fresh", ids)
	commit(0) // plans cached while claims is empty

	seedClaims(t, e.db.Pool, "fresh", 9000)
	stale, err := RefreshProbeStats(ctx, e.db.Pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Empty(t, stale)
	require.Equal(t, -1.0, claimsTuples(t, e), "claims still never analyzed")

	seen := len(plans())
	commit(1)
	// A session that plans the statement now, with claims large.
	fresh, freshPlans := explainingConn(t, e.db.URL)
	_, err = fresh.Exec(ctx, "SET plan_cache_mode = force_generic_plan")
	require.NoError(t, err)
	rolledBackCommits(t, fresh, "fresh", ids)(0)
	after := append(plans()[seen:], freshPlans()...)
	require.NotEmpty(t, after)
	all := strings.Join(after, "\n")
	require.Contains(t, all, "claims_request_key")
	require.Contains(t, all, "claims_user_slot_key")
	for _, plan := range after {
		require.Empty(t, crosswiseProbes(plan), "a probe reads the pool's claims through another index:\n%s", plan)
		require.NotContains(t, plan, "Seq Scan", "a group commit statement reads a table whole:\n%s", plan)
	}
}

// The group commit itself refreshes the statistics early in a sale: on a
// claims table analyzed while empty, and with no job running, claims has
// statistics once a little over a thousand claims went through it, so the
// plans that probed it wrongly lived for a thousand claims, not until the
// next refill job.
func TestGroupCommitRefreshesProbeStats(t *testing.T) {
	ctx, e := start(t)
	e.fillStaged("sale", 3000, pool.Pool{})
	_, err := e.db.Pool.Exec(ctx, "VACUUM ANALYZE claims")
	require.NoError(t, err)
	require.Zero(t, claimsTuples(t, e))

	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > 1200 {
					return
				}
				res, err := e.svc.Claim(ctx, Request{PoolID: "sale", UserID: fmt.Sprint("u", i), RequestID: fmt.Sprint("r", i)})
				if !assertNoError(t, err) {
					return
				}
				assert.Equal(t, PathRedis, res.Path)
			}
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool { return claimsTuples(t, e) >= 1000 }, 10*time.Second, 20*time.Millisecond,
		"claims analyzed after its first thousand claims")
	e.audit("sale")
}

// rolledBackCommits returns a function that runs round r's group commit of
// eight fresh requests for codes ids[8r:8r+8] of poolID on conn, in a
// transaction rolled back: it plans (and caches) the statement without
// changing anything.
func rolledBackCommits(t *testing.T, conn *pgx.Conn, poolID string, ids []int64) func(round int) {
	return func(round int) {
		t.Helper()
		ctx := t.Context()
		n := 8
		pools, reqs, users, started := make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
		holds, popped := make([]pgtype.Int8, n), make([]bool, n)
		for i := range n {
			pools[i], reqs[i], users[i], started[i], popped[i] = poolID, uuidLike("r", round, i), uuidLike("u", round, i), time.Now(), true
		}
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		rows, err := tx.Query(ctx, claimStagedSQL, pools, reqs, users, ids[round*n:round*n+n], started, holds, popped, time.Minute)
		require.NoError(t, err)
		rows.Close()
		require.NoError(t, rows.Err())
		require.NoError(t, tx.Rollback(ctx))
	}
}

// claimsTuples is how many rows the planner's statistics count in claims.
func claimsTuples(t *testing.T, e *env) float64 {
	t.Helper()
	var n float64
	require.NoError(t, e.db.Pool.QueryRow(t.Context(), "SELECT reltuples FROM pg_class WHERE oid = to_regclass('claims')").Scan(&n))
	return n
}
